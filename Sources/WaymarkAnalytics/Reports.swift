import WaymarkEngine

// The report documents behind `waymark report journey|experiment` (and `waymark funnel`). Built from
// a ``KPISeries`` and the journey definition by ``JourneyReport/init(series:journey:)`` and
// ``ExperimentReport/init(series:journey:)``; encoded as `--json` as they are (field names are
// the JSON keys, camelCase), rendered for the terminal by ``ReportText`` and as a page by ``ReportHTML``.
// Rates are fractions in [0, 1] (nil when the denominator is 0); times are milliseconds.

/// The range a report covers, as RFC 3339 UTC strings (hour-aligned).
public struct ReportRange: Sendable, Hashable, Codable {
    public var from: String
    public var to: String
    public init(from: String, to: String) { self.from = from; self.to = to }
}

/// A journey's funnel and KPIs over a range.
public struct JourneyReport: Sendable, Hashable, Codable {
    public var journey: String
    public var range: ReportRange
    /// Instances started in the range.
    public var entered: Int64
    public var converted: Int64
    /// converted / entered.
    public var conversionRate: Double?
    /// In declaration order.
    public var stages: [StageRow]
    public var timeToConvert: Percentiles?
    public var channels: [ChannelRow]
    /// Send steps in declaration order.
    public var steps: [StepRow]
    /// Per arm (control first, then the other arms, the holdout and the global control group), when
    /// the journey runs an experiment.
    public var arms: [ArmRow]
    public var daily: [DayRow]
}

/// One stage of the funnel.
public struct StageRow: Sendable, Hashable, Codable {
    public var stage: String
    /// Instances that entered the stage.
    public var reached: Int64
    /// reached / the journey's entered (the bar length in charts).
    public var shareOfEntered: Double?
    /// The next stage's reached / this stage's reached (nil for the last stage).
    public var conversionToNext: Double?
    /// 1 − conversionToNext.
    public var dropOff: Double?
    /// Instances that ended in this stage: through a non-converting exit, or by running out of steps.
    public var exitedHere: Int64
    public var completedHere: Int64
    public var convertedHere: Int64
}

/// Time-to-convert percentiles (milliseconds; bucket upper bounds, see ``TimeToConvert``).
public struct Percentiles: Sendable, Hashable, Codable {
    public var count: Int64
    public var p50: Double
    public var p90: Double
    public var p99: Double
}

/// KPIs of one channel (or one step, one arm: the same counters).
public struct MessageCounts: Sendable, Hashable, Codable {
    public var decided: Int64 = 0
    public var suppressed: Int64 = 0
    public var heldOut: Int64 = 0
    public var sent: Int64 = 0
    public var delivered: Int64 = 0
    public var read: Int64 = 0
    public var failed: Int64 = 0
    public var clicked: Int64 = 0
    public var unsubscribed: Int64 = 0
    /// Conversions whose last message was of this channel / step / arm.
    public var converted: Int64 = 0
    /// delivered / sent.
    public var deliveryRate: Double?
    /// clicked / delivered.
    public var clickThroughRate: Double?
    /// converted / sent.
    public var conversionRate: Double?
    /// unsubscribed / delivered.
    public var unsubscribeRate: Double?
    public init() {}
}

public struct ChannelRow: Sendable, Hashable, Codable {
    public var channel: String
    public var counts: MessageCounts
}

public struct StepRow: Sendable, Hashable, Codable {
    public var step: String
    public var stage: String
    public var counts: MessageCounts
}

public struct ArmRow: Sendable, Hashable, Codable {
    public var arm: String
    public var entered: Int64
    public var converted: Int64
    public var conversionRate: Double?
    public var counts: MessageCounts
}

/// One UTC day (`2026-12-07`).
public struct DayRow: Sendable, Hashable, Codable {
    public var day: String
    public var entered: Int64
    public var sent: Int64
    public var delivered: Int64
    public var clicked: Int64
    public var converted: Int64
}

/// A proportion with its 95 % confidence interval.
public struct Proportion: Sendable, Hashable, Codable {
    public var successes: Int64
    public var trials: Int64
    public var rate: Double?
    /// Wilson score interval.
    public var low: Double?
    public var high: Double?
}

/// One arm compared with a reference arm (the control, or the holdout).
public struct Comparison: Sendable, Hashable, Codable {
    /// The reference arm's name.
    public var against: String
    /// (rate − reference rate) / reference rate; nil when the reference rate is 0.
    public var relativeLift: Double?
    /// rate − reference rate.
    public var absoluteDifference: Double?
    /// Two-proportion z-test (pooled), two-sided.
    public var z: Double?
    public var pValue: Double?
}

/// An experiment's result over a range.
public struct ExperimentReport: Sendable, Hashable, Codable {
    public var experiment: String
    public var journey: String
    public var range: ReportRange
    /// The first arm.
    public var control: String
    public var holdoutPercent: Double
    public var arms: [ExperimentArmResult]
    /// Chi-squared test of independence over every arm except the holdout and global control (k × 2); nil with fewer than two arms with exposures.
    public var chiSquared: ChiSquared?
    /// A plain sentence: "B beats A, p = 0.003", "not significant yet: about 1,900 more exposures needed", …
    public var verdict: String
    /// "Journey vs holdout: +12.0 % conversions, p = 0.04" when the experiment has a holdout with exposures.
    public var holdoutVerdict: String?
    public var daily: [ExperimentDay]
}

public struct ExperimentArmResult: Sendable, Hashable, Codable {
    public var arm: String
    /// Configured share of instances (after the holdout), nil for the holdout / global control rows.
    public var configuredShare: Double?
    /// Exposures = instances entered; conversions within the goal window.
    public var conversion: Proportion
    public var vsControl: Comparison?
    public var vsHoldout: Comparison?
    public var messages: MessageCounts
    public var timeToConvert: Percentiles?
}

public struct ChiSquared: Sendable, Hashable, Codable {
    public var statistic: Double
    public var degreesOfFreedom: Int
    public var pValue: Double
}

public struct ExperimentDay: Sendable, Hashable, Codable {
    public var day: String
    /// Arm → (exposures, conversions) that day.
    public var arms: [String: DayArm]
}

public struct DayArm: Sendable, Hashable, Codable {
    public var exposures: Int64
    public var conversions: Int64
}
