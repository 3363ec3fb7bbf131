import WaymarkEngine
import WaymarkWire

/// The one mapping from records to KPI counters: which decision on `journey.decisions` and which
/// receipt on `deliveries` counts where (see ``KPIMetric`` for what each counter means). Used by
/// `waymark worker kpis` and by the tests' independent recount.
public enum KPIRollup {
    /// One counter increment for a journey's hour.
    public struct Increment: Sendable, Hashable {
        public var journey: String
        /// Hour start, ms since the epoch.
        public var hour: Int64
        public var cell: KPICell
        public init(journey: String, hour: Int64, cell: KPICell) { self.journey = journey; self.hour = hour; self.cell = cell }
    }

    /// The hour (start, ms) a time falls in.
    public static func hour(of t: Timestamp) -> Int64 {
        let ms = t.milliseconds
        return ms - ((ms % 3_600_000) + 3_600_000) % 3_600_000
    }

    /// What a decision adds. Decisions without a journey (an event id seen twice) add nothing.
    ///
    /// Counted once per message: `decided` on `sent` and `fallback_channel` by the journey (a quiet-hours
    /// deferral counts when it is released, not when it is held); a sender's fallback to the next
    /// channel after a provider failure (rule `provider…`) is not a new decision. `suppressed` counts
    /// every rule refusal, also a sender's at send time (so a message can be decided, then suppressed).
    public static func increments(for d: Decision) -> [Increment] {
        guard let journey = d.journey else { return [] }
        let arm = d.arm ?? ""
        let stage = d.stage ?? "", step = d.step ?? "", channel = d.channel?.rawValue ?? ""
        let hour = hour(of: d.decidedAt)
        func one(_ cell: KPICell) -> [Increment] { [Increment(journey: journey, hour: hour, cell: cell)] }
        switch d.reason {
        case .journeyEntered: return one(KPICell(.entered, arm: arm))
        case .stageReached: return one(KPICell(.stageReached, stage: stage, arm: arm))
        case .journeyExited: return one(KPICell(.exited, stage: stage, arm: arm))
        case .journeyCompleted: return one(KPICell(.completed, stage: stage, arm: arm))
        case .journeyConverted: return []  // the `converted` decision beside it is the conversion
        case .converted:
            var out = one(KPICell(.converted, stage: stage, step: step, channel: channel, arm: arm))
            if let ms = d.elapsedMilliseconds {
                out += one(KPICell(.timeToConvert, arm: arm, bucket: TimeToConvert.bucket(milliseconds: ms)))
            }
            return out
        case .sent, .fallbackChannel:
            if d.rule.hasPrefix("provider") { return [] }
            return one(KPICell(.decided, stage: stage, step: step, channel: channel, arm: arm))
        case .suppressedHoldout: return one(KPICell(.heldOut, stage: stage, step: step, arm: arm))
        case .suppressedFrequencyCap, .suppressedNoConsent, .suppressedNoContact, .suppressedDuplicate, .suppressedExpired,
             .cancelledJourneyExit:
            return one(KPICell(.suppressed, stage: stage, step: step, channel: channel, arm: arm))
        case .deferredQuietHours, .deferredAwaitingProfile: return []
        }
    }

    /// What a receipt adds (per step, channel and arm; receipts carry no stage).
    public static func increments(for r: DeliveryReceipt) -> [Increment] {
        guard !r.journey.isEmpty else { return [] }
        let metric: KPIMetric
        switch r.outcome {
        case .sent: metric = .sent
        case .delivered: metric = .delivered
        case .read: metric = .read
        case .failed: metric = .failed
        case .clicked: metric = .clicked
        case .unsubscribed: metric = .unsubscribed
        }
        return [Increment(journey: r.journey, hour: hour(of: r.at), cell: KPICell(metric, step: r.step, channel: r.channel.rawValue, arm: r.arm))]
    }
}
