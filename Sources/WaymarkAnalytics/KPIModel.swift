import WaymarkEngine

/// What a KPI counter counts. Raw values are part of the stored field names (see ``KPICell``):
/// never rename one.
public enum KPIMetric: String, Sendable, Hashable, CaseIterable, Codable {
    /// Instances started (`journey_entered`); per arm. These are the experiment's exposures.
    case entered
    /// Instances that entered a stage (`stage_reached`); per stage and arm.
    case stageReached = "stage"
    /// Messages the journey decided to send (`sent`, `fallback_channel`, `deferred_quiet_hours`
    /// decisions of the journey worker); per stage, step, channel and arm.
    case decided
    /// Messages not sent for a rule (cap, consent, contact, expiry, duplicate, cancelled on exit), at
    /// decision or at send time; per stage, step, channel (when known) and arm.
    case suppressed
    /// Messages withheld because the instance is in the holdout or the global control group.
    case heldOut = "held_out"
    /// Accepted by the provider (`message_sent` receipt); per step, channel and arm.
    case sent
    /// Provider receipts (`message_delivered`, …); per step, channel and arm.
    case delivered, read, failed, clicked, unsubscribed
    /// Conversions (the journey's goal within its window); per arm, and the stage, step and channel
    /// of the last message before it (empty when the instance got none).
    case converted
    /// Instances that ended without converting through an exit goal (`journey_exited`); per stage and arm.
    case exited
    /// Instances that ran out of steps (`journey_completed`); per stage and arm.
    case completed
    /// Conversions by time from entry, in ``TimeToConvert`` buckets (the cell's ``KPICell/bucket``); per arm.
    case timeToConvert = "ttc"
}

/// One counter of a journey in one hour: a metric and the dimensions it is broken down by (empty
/// strings where a dimension does not apply).
public struct KPICell: Sendable, Hashable, Codable {
    public var metric: KPIMetric
    public var stage: String
    public var step: String
    public var channel: String
    public var arm: String
    /// ``KPIMetric/timeToConvert`` only: the ``TimeToConvert`` bucket index.
    public var bucket: Int

    public init(_ metric: KPIMetric, stage: String = "", step: String = "", channel: String = "", arm: String = "", bucket: Int = 0) {
        self.metric = metric; self.stage = stage; self.step = step; self.channel = channel; self.arm = arm; self.bucket = bucket
    }

    /// Separates the parts of a stored field name (a control character, which stage names, step ids,
    /// channel and arm names never contain).
    public static let separator: Character = "\u{1F}"

    /// The Redis hash field: `metric␟stage␟step␟channel␟arm`, metric `ttc:<bucket>` for time to convert.
    public var field: String {
        let m = metric == .timeToConvert ? "ttc:\(bucket)" : metric.rawValue
        return [m, stage, step, channel, arm].joined(separator: String(Self.separator))
    }

    /// Parses ``field``; nil for fields this version does not know (they are ignored, not fatal).
    public init?(field: String) {
        let parts = field.split(separator: Self.separator, omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 5 else { return nil }
        var bucket = 0
        let metric: KPIMetric
        if parts[0].hasPrefix("ttc:") {
            guard let b = Int(parts[0].dropFirst(4)), b >= 0, b < TimeToConvert.bucketCount else { return nil }
            metric = .timeToConvert; bucket = b
        } else {
            guard let m = KPIMetric(rawValue: parts[0]), m != .timeToConvert else { return nil }
            metric = m
        }
        self.init(metric, stage: parts[1], step: parts[2], channel: parts[3], arm: parts[4], bucket: bucket)
    }
}

/// Time-to-convert histogram buckets: bucket 0 is under one minute, bucket i ≥ 1 is
/// [60 s · 2^((i−1)/2), 60 s · 2^(i/2)), the last one open-ended (from about 91 days). Percentiles
/// read from it are the bucket's upper bound, so they are at most √2 too high.
public enum TimeToConvert {
    public static let bucketCount = 36

    /// The bucket of a duration in milliseconds.
    public static func bucket(milliseconds: Int64) -> Int {
        if milliseconds < 60_000 { return 0 }
        var i = 1
        while i < bucketCount - 1 && Double(milliseconds) >= upperBound(i) { i += 1 }
        return i
    }

    /// The exclusive upper bound of bucket `i` in milliseconds (+∞ for the last).
    public static func upperBound(_ i: Int) -> Double {
        if i >= bucketCount - 1 { return .infinity }
        return 60_000 * pow2(Double(i) / 2)
    }

    private static func pow2(_ x: Double) -> Double {
        // 2^x for x = n/2 without Foundation: whole powers times √2 for the half.
        let whole = Int(x)
        var v = 1.0
        for _ in 0..<whole { v *= 2 }
        return x - Double(whole) > 0.25 ? v * 1.4142135623730951 : v
    }
}

/// A journey's counters over a time range, hour by hour, as read from Redis (or built in a test).
public struct KPISeries: Sendable, Hashable {
    public var journey: String
    /// First hour included (ms since the epoch, a multiple of 3,600,000).
    public var from: Int64
    /// End of the range (exclusive, hour-aligned).
    public var to: Int64
    /// Hour start (ms since the epoch) → counters of that hour. Hours without counters are absent.
    public var hours: [Int64: [KPICell: Int64]]

    public init(journey: String, from: Int64, to: Int64, hours: [Int64: [KPICell: Int64]] = [:]) {
        self.journey = journey; self.from = from; self.to = to; self.hours = hours
    }

    /// The counters summed over the whole range.
    public var totals: [KPICell: Int64] {
        var out: [KPICell: Int64] = [:]
        for (_, cells) in hours { for (cell, n) in cells { out[cell, default: 0] += n } }
        return out
    }

    /// The counters summed per UTC day (day start ms → counters), days in order.
    public var daily: [(day: Int64, cells: [KPICell: Int64])] {
        var days: [Int64: [KPICell: Int64]] = [:]
        for (hour, cells) in hours {
            let day = hour - ((hour % 86_400_000) + 86_400_000) % 86_400_000
            for (cell, n) in cells { days[day, default: [:]][cell, default: 0] += n }
        }
        return days.keys.sorted().map { ($0, days[$0]!) }
    }
}
