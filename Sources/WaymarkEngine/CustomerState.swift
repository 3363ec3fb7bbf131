/// Everything the engine remembers about one customer. A value type: the engine returns a new one.
///
/// Stored as one Redis value per customer via ``encoded()`` / ``init(decoding:)`` (see
/// `StateCoding.swift` for the format). Every collection is bounded:
/// - ``recentEvents``: at most ``DedupRules/maxEvents`` ids, none older than ``DedupRules/maxAge``;
/// - ``capHistory``: entries older than the longest cap window are pruned;
/// - ``instances``: at most ``Rules/maxInstancesPerCustomer``; ``ended`` pruned after ``Rules/endedInstanceMemory``;
/// - ``JourneyInstance/stagesReached``: the last 16 stage entries; ``JourneyInstance/context``: 32 scalar fields.
public struct CustomerState: Sendable, Hashable {
    /// Latest effective clock the engine processed for this customer (monotonic).
    public var clock: Timestamp
    /// Active journey instances, in the order they were started.
    public var instances: [JourneyInstance]
    /// Recently ended instances (for re-entry cooldowns), oldest first.
    public var ended: [EndedInstance]
    /// Fingerprints of recently processed event ids, oldest first.
    public var recentEvents: [ProcessedEvent]
    /// Sends and reservations (deferred messages) counted by frequency caps, sorted by time.
    public var capHistory: [CapEntry]
    /// Messages held until the end of quiet hours, sorted by release time then message id.
    public var deferred: [DeferredMessage]
    /// Funnel counters, sorted by journey, stage, kind.
    public var counters: [FunnelCounter]
    /// Experiment arms given to this customer, oldest first (bounded to ``ArmRecord/limit``), so a
    /// later weight change re-assigns nobody.
    public var arms: [ArmRecord]
    /// Instances whose conversion window is open, oldest first (bounded to ``OpenConversion/limit``).
    public var conversions: [OpenConversion]

    /// An empty state for a customer never seen before.
    public init() {
        clock = Timestamp(milliseconds: 0)
        instances = []; ended = []; recentEvents = []; capHistory = []; deferred = []; counters = []; arms = []; conversions = []
    }

    /// Earliest pending timer or deferred release, for the scheduler's index.
    public var nextWakeUp: Timestamp? {
        var best: Timestamp? = nil
        for i in instances { if let w = i.wakeAt, best == nil || w < best! { best = w } }
        for d in deferred where best == nil || d.message.sendAfter < best! { best = d.message.sendAfter }
        return best
    }

    /// Counter value (0 when absent).
    public func counter(journey: String, stage: String = "", kind: FunnelCounter.Kind) -> Int {
        counters.first { $0.journey == journey && $0.stage == stage && $0.kind == kind }.map { Int($0.count) } ?? 0
    }
}

/// One running instance of a journey.
public struct JourneyInstance: Sendable, Hashable {
    public var journey: String
    /// Journey version at entry (used in message ids).
    public var version: Int
    /// Value of the journey's key attribute (empty for unkeyed journeys).
    public var key: String
    public var enteredAt: Timestamp
    public var stage: String
    public var stageEnteredAt: Timestamp
    /// Last stage entries (bounded to 16), oldest first.
    public var stagesReached: [StageVisit]
    /// Step the instance is at (a `wait` / `wait_for` it is blocked on), or empty when idle in its stage.
    public var step: String
    /// When the current wait ends (`wait`) or times out (`wait_for`).
    public var wakeAt: Timestamp?
    /// Event id that caused the current run of steps.
    public var causedBy: String
    /// Number of send steps run (part of message ids so loops get fresh ids).
    public var sendSequence: Int
    /// Scalar attributes of the entry event, updated by later matched events; sorted by name.
    public var context: [ContextField]
    /// Experiment arm (`holdout`, `global_control`), or empty when the journey runs no experiment.
    public var arm: String

    public init(journey: String, version: Int, key: String, enteredAt: Timestamp, stage: String,
                stageEnteredAt: Timestamp, stagesReached: [StageVisit], step: String, wakeAt: Timestamp?,
                causedBy: String, sendSequence: Int, context: [ContextField], arm: String = "") {
        self.journey = journey; self.version = version; self.key = key; self.enteredAt = enteredAt
        self.stage = stage; self.stageEnteredAt = stageEnteredAt; self.stagesReached = stagesReached
        self.step = step; self.wakeAt = wakeAt; self.causedBy = causedBy; self.sendSequence = sendSequence
        self.context = context; self.arm = arm
    }

    /// Context value by name.
    public func contextValue(_ name: String) -> AttributeValue? {
        for f in context where f.name == name { return f.value }
        return nil
    }
}

/// A stage an instance entered and when.
public struct StageVisit: Sendable, Hashable {
    public var stage: String
    public var at: Timestamp
    public init(stage: String, at: Timestamp) { self.stage = stage; self.at = at }
}

/// A named scalar in an instance's context.
public struct ContextField: Sendable, Hashable {
    public var name: String
    public var value: AttributeValue
    public init(name: String, value: AttributeValue) { self.name = name; self.value = value }
}

/// An instance that ended, remembered for re-entry rules.
public struct EndedInstance: Sendable, Hashable {
    public var journey: String
    public var key: String
    public var endedAt: Timestamp
    public init(journey: String, key: String, endedAt: Timestamp) { self.journey = journey; self.key = key; self.endedAt = endedAt }
}

/// A processed event id, stored as its FNV-1a 64 fingerprint.
public struct ProcessedEvent: Sendable, Hashable {
    public var fingerprint: UInt64
    public var at: Timestamp
    public init(fingerprint: UInt64, at: Timestamp) { self.fingerprint = fingerprint; self.at = at }
}

/// A send (or a deferred message's reservation) as seen by frequency caps.
public struct CapEntry: Sendable, Hashable {
    /// Planned send time (`send_after`).
    public var at: Timestamp
    public var channel: Channel
    public var journey: String
    public var transactional: Bool
    public var messageID: MessageID
    public init(at: Timestamp, channel: Channel, journey: String, transactional: Bool, messageID: MessageID) {
        self.at = at; self.channel = channel; self.journey = journey; self.transactional = transactional
        self.messageID = messageID
    }
}

/// A message held back: until quiet hours end, or until the customer's profile arrives.
public struct DeferredMessage: Sendable, Hashable {
    /// Why a message is held.
    public enum Hold: UInt8, Sendable, Hashable {
        /// Decided and holding its frequency-cap slot; `message.sendAfter` is the release time.
        case quietHours = 0
        /// Not decided yet: the customer had no profile (so no consent) when the step became due.
        /// `message.channel` and `message.fallbackChannels` are the step's channels in step order,
        /// and `message.sendAfter` is the deadline: decided as soon as a profile is known, and
        /// suppressed (`consent:no_profile`) if none arrived by then. Holds no cap slot.
        case awaitingProfile = 1
    }
    public var message: OutboundMessage
    public var instanceKey: String
    /// The rule that holds it (`quiet_hours:<window>` or `consent:awaiting_profile`).
    public var rule: String
    public var hold: Hold
    public init(message: OutboundMessage, instanceKey: String, rule: String, hold: Hold = .quietHours) {
        self.message = message; self.instanceKey = instanceKey; self.rule = rule; self.hold = hold
    }
}

/// A per-customer funnel counter.
public struct FunnelCounter: Sendable, Hashable {
    public enum Kind: UInt8, Sendable, Hashable, Comparable {
        case entered = 0, stageReached = 1, converted = 2, exited = 3, completed = 4
        public static func < (a: Kind, b: Kind) -> Bool { a.rawValue < b.rawValue }
    }
    public var journey: String
    /// Stage for `.stageReached`, empty otherwise.
    public var stage: String
    public var kind: Kind
    public var count: UInt32
    public init(journey: String, stage: String, kind: Kind, count: UInt32) {
        self.journey = journey; self.stage = stage; self.kind = kind; self.count = count
    }
}

/// An experiment arm given to a customer (for one instance key; empty for unkeyed journeys).
public struct ArmRecord: Sendable, Hashable {
    /// At most this many are kept; the oldest go first.
    public static let limit = 32
    public var experiment: String
    public var key: String
    public var arm: String
    /// When it was given (keyed ones are forgotten ``Rules/endedInstanceMemory`` later unless in use).
    public var at: Timestamp
    public init(experiment: String, key: String, arm: String, at: Timestamp) {
        self.experiment = experiment; self.key = key; self.arm = arm; self.at = at
    }
}

/// A journey instance whose conversion goal may still be reached (it may have ended already: a
/// purchase two days after the last reminder still counts within the window).
public struct OpenConversion: Sendable, Hashable {
    /// At most this many windows are open per customer; the oldest close first.
    public static let limit = 16
    public var journey: String
    public var version: Int
    public var key: String
    public var arm: String
    public var enteredAt: Timestamp
    /// The goal must happen before this (entry + ``ConversionGoal/window``).
    public var closesAt: Timestamp
    /// The last message decided for the instance before now, if any (what the conversion is attributed to).
    public var lastMessage: MessageID?
    public var lastStep: String
    public var lastChannel: Channel?
    public init(journey: String, version: Int, key: String, arm: String, enteredAt: Timestamp, closesAt: Timestamp,
                lastMessage: MessageID? = nil, lastStep: String = "", lastChannel: Channel? = nil) {
        self.journey = journey; self.version = version; self.key = key; self.arm = arm; self.enteredAt = enteredAt
        self.closesAt = closesAt; self.lastMessage = lastMessage; self.lastStep = lastStep; self.lastChannel = lastChannel
    }
}
