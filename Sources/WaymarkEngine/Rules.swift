/// Delivery rules from `config/rules.yaml`: quiet hours, frequency caps, consent, expiry, dedup.
public struct Rules: Sendable, Hashable {
    /// Zone for customers without a profile or with an unknown zone.
    public var defaultTimezone: String
    public var quietHours: QuietHoursRules
    public var frequencyCaps: [FrequencyCap]
    /// Transactional messages are neither checked against nor counted toward caps.
    public var capsExemptTransactional: Bool
    public var consent: ConsentRules
    /// Message lifetime when a send step does not set one, counted from the moment the step became
    /// due in event time. It binds transactional messages too: a confirmation days late is not sent.
    public var defaultExpiry: TimeSpan
    public var channelOrder: ChannelOrder
    public var dedup: DedupRules
    /// New instances beyond this many active ones per customer are not started.
    public var maxInstancesPerCustomer: Int
    /// How long ended instances are remembered for re-entry cooldowns (and "never re-enter").
    public var endedInstanceMemory: TimeSpan
    /// The global control group across journeys.
    public var experiments: ExperimentRules

    public init(defaultTimezone: String = "UTC", quietHours: QuietHoursRules = QuietHoursRules(),
                frequencyCaps: [FrequencyCap] = [], capsExemptTransactional: Bool = true,
                consent: ConsentRules = ConsentRules(), defaultExpiry: TimeSpan = .hours(48),
                channelOrder: ChannelOrder = .customerPreference, dedup: DedupRules = DedupRules(),
                maxInstancesPerCustomer: Int = 32, endedInstanceMemory: TimeSpan = .days(90),
                experiments: ExperimentRules = ExperimentRules()) {
        self.defaultTimezone = defaultTimezone; self.quietHours = quietHours; self.frequencyCaps = frequencyCaps
        self.capsExemptTransactional = capsExemptTransactional; self.consent = consent
        self.defaultExpiry = defaultExpiry; self.channelOrder = channelOrder; self.dedup = dedup
        self.maxInstancesPerCustomer = maxInstancesPerCustomer; self.endedInstanceMemory = endedInstanceMemory
        self.experiments = experiments
    }
}

/// A global control group: a stable share of customers (by a hash of the salt and the customer id)
/// that every journey tracks under the arm `global_control` and sends no non-transactional message,
/// to measure what all journeys together add. 0 % (the default) turns it off.
public struct ExperimentRules: Sendable, Hashable {
    public var globalControlPercent: Double
    public var globalControlSalt: String
    public init(globalControlPercent: Double = 0, globalControlSalt: String = "waymark-global-control") {
        self.globalControlPercent = globalControlPercent; self.globalControlSalt = globalControlSalt
    }
}

/// How a send step's channel list is ordered for a customer.
public enum ChannelOrder: String, Sendable, Hashable {
    /// Exactly the step's order.
    case journey
    /// The step's channels that the customer lists in `preferred_channels` first (in the customer's
    /// order), then the remaining step channels in step order.
    case customerPreference = "customer_preference"
}

/// Consent policy.
public struct ConsentRules: Sendable, Hashable {
    /// If `true`, a customer with no profile is treated as consenting on every channel and the
    /// contact check is left to the sender. Default `false`: `suppressed_no_consent`.
    public var allowWithoutProfile: Bool
    /// If `false`, transactional messages skip the consent check (the contact check still applies).
    public var transactionalRequiresConsent: Bool
    /// How long a send for a customer without a profile is held waiting for one (profiles and
    /// touchpoints travel on different topics, so a worker may see events first). Counted from the
    /// moment the send is decided, capped by the message's expiry. Zero: decide at once
    /// (`suppressed_no_consent`). Not used when ``allowWithoutProfile`` is set.
    public var profileWait: TimeSpan
    public init(allowWithoutProfile: Bool = false, transactionalRequiresConsent: Bool = true, profileWait: TimeSpan = .minutes(15)) {
        self.allowWithoutProfile = allowWithoutProfile
        self.transactionalRequiresConsent = transactionalRequiresConsent
        self.profileWait = profileWait
    }
}

/// Bounds of the processed-event-id memory used for idempotency.
public struct DedupRules: Sendable, Hashable {
    /// At most this many recent event ids are remembered per customer (oldest dropped first).
    public var maxEvents: Int
    /// Ids older than this (by the engine clock) are forgotten.
    public var maxAge: TimeSpan
    public init(maxEvents: Int = 128, maxAge: TimeSpan = .days(7)) { self.maxEvents = maxEvents; self.maxAge = maxAge }
}

/// A local-time window `[start, end)` in minutes after midnight. `start > end` crosses midnight;
/// `start == end` is an empty window (no quiet hours).
public struct QuietWindow: Sendable, Hashable {
    public var startMinute: Int
    public var endMinute: Int
    /// Rule name in decisions, e.g. `quiet_hours:default`, `quiet_hours:sms`.
    public var rule: String
    public init(startMinute: Int, endMinute: Int, rule: String) {
        self.startMinute = startMinute; self.endMinute = endMinute; self.rule = rule
    }
    public var isEmpty: Bool { startMinute == endMinute }
    /// Whether a local minute-of-day falls inside.
    @inlinable public func contains(minuteOfDay m: Int) -> Bool {
        if startMinute < endMinute { return m >= startMinute && m < endMinute }
        if startMinute > endMinute { return m >= startMinute || m < endMinute }
        return false
    }
    /// Length of the window in minutes (local clock).
    public var lengthMinutes: Int { startMinute <= endMinute ? endMinute - startMinute : 1440 - startMinute + endMinute }
}

/// Quiet-hours configuration.
public struct QuietHoursRules: Sendable, Hashable {
    /// Window for channels without an override; `nil` = no quiet hours.
    public var defaultWindow: QuietWindow?
    /// Per-channel overrides; an empty window disables quiet hours for that channel.
    public var channelWindows: [Channel: QuietWindow]
    /// Transactional messages ignore quiet hours.
    public var exemptTransactional: Bool
    /// Deferred messages are released at the window end plus a stable per-message offset in
    /// `[0, spread)`, so thousands of customers are not released in the same second.
    public var spread: TimeSpan
    public init(defaultWindow: QuietWindow? = nil, channelWindows: [Channel: QuietWindow] = [:],
                exemptTransactional: Bool = true, spread: TimeSpan = .minutes(30)) {
        self.defaultWindow = defaultWindow; self.channelWindows = channelWindows
        self.exemptTransactional = exemptTransactional; self.spread = spread
    }
}

/// A rolling-window frequency cap. A cap applies to a message when its `channel` (if set) and
/// `journey` (if set) match; with neither set it is global.
///
/// Window semantics: a send at `t` occupies `[t, t + window)`. At most `limit` counted sends may
/// lie in any half-open interval of length `window`, so with `limit: 1, window: 24h` a send
/// exactly 24 h after the previous one is allowed and one 1 ms earlier is not. Deferred
/// messages count at their planned release time from the moment they are deferred.
public struct FrequencyCap: Sendable, Hashable {
    /// Used in decisions as `cap:<name>`.
    public var name: String
    public var limit: Int
    public var window: TimeSpan
    public var channel: Channel?
    public var journey: String?
    public init(name: String, limit: Int, window: TimeSpan, channel: Channel? = nil, journey: String? = nil) {
        self.name = name; self.limit = limit; self.window = window; self.channel = channel; self.journey = journey
    }
}

extension Rules {
    /// Whether `cap` counts a send on `channel` in `journey`: the channel and journey match and the
    /// send is not an exempt transactional one. The one definition the engine and reports share.
    public func capCounts(_ cap: FrequencyCap, channel: Channel, journey: String, transactional: Bool) -> Bool {
        if transactional && capsExemptTransactional { return false }
        if let c = cap.channel, c != channel { return false }
        if let j = cap.journey, j != journey { return false }
        return true
    }

    /// The entries of `history` that still occupy `cap` at `now`: counted by it, and planned at a
    /// time whose window `[at, at + window)` has not ended (sends held for later count already).
    public func capOccupancy(_ cap: FrequencyCap, history: [CapEntry], at now: Timestamp) -> [CapEntry] {
        history.filter { e in
            capCounts(cap, channel: e.channel, journey: e.journey, transactional: e.transactional)
                && e.at.milliseconds + cap.window.milliseconds > now.milliseconds
        }
    }
}
