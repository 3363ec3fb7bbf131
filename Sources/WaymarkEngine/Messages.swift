/// A message a journey decided to send, published on `outbound.<channel>` (contract §2).
///
/// Sender workers must not call the provider before ``sendAfter``, must drop it after
/// ``expiresAt``, must re-check quiet hours with ``QuietHours`` at call time, and must use
/// ``messageID`` as the provider idempotency key.
public struct OutboundMessage: Sendable, Hashable {
    /// Deterministic id (see ``MessageID``).
    public var messageID: MessageID
    public var customerID: String
    public var channel: Channel
    public var journey: String
    /// Journey version of the instance that produced the message.
    public var journeyVersion: Int
    /// Stage the instance was in when the step ran (empty for single-stage journeys).
    public var stage: String
    public var step: String
    public var template: String
    /// Higher wins when messages compete for a capped slot.
    public var priority: Int
    /// Transactional messages may be exempt from quiet hours and caps (rules decide).
    public var transactional: Bool
    /// Effective time the step ran (decision time).
    public var createdAt: Timestamp
    /// Earliest provider call; later than `createdAt` after a quiet-hours deferral.
    public var sendAfter: Timestamp
    /// After this the message must not be sent.
    public var expiresAt: Timestamp
    /// The event id that caused the step.
    public var causedBy: String
    /// Recipient locale from the profile, if known.
    public var locale: String?
    /// Template variables.
    public var variables: [String: AttributeValue]
    /// Remaining channels (in order) that passed consent and contact checks at decision time, for
    /// the sender's fallback after a permanent provider failure.
    public var fallbackChannels: [Channel]
    /// The instance's experiment arm (empty when its journey runs no experiment).
    public var arm: String

    public init(messageID: MessageID, customerID: String, channel: Channel, journey: String, journeyVersion: Int,
                stage: String, step: String, template: String, priority: Int, transactional: Bool,
                createdAt: Timestamp, sendAfter: Timestamp, expiresAt: Timestamp, causedBy: String,
                locale: String?, variables: [String: AttributeValue], fallbackChannels: [Channel], arm: String = "") {
        self.messageID = messageID; self.customerID = customerID; self.channel = channel
        self.journey = journey; self.journeyVersion = journeyVersion; self.stage = stage; self.step = step
        self.template = template; self.priority = priority; self.transactional = transactional
        self.createdAt = createdAt; self.sendAfter = sendAfter; self.expiresAt = expiresAt
        self.causedBy = causedBy; self.locale = locale; self.variables = variables
        self.fallbackChannels = fallbackChannels; self.arm = arm
    }
}

/// Why a decision was taken. Raw values are the `reason` strings on `journey.decisions`.
public enum DecisionReason: String, Sendable, Hashable, CaseIterable {
    // Message outcomes.
    /// Sent on the first eligible channel, now (or released after a deferral).
    case sent
    /// Sent now on a later channel because earlier ones failed a rule (see `skipped`).
    case fallbackChannel = "fallback_channel"
    /// Held until the end of the recipient's quiet hours (see `send_after`).
    case deferredQuietHours = "deferred_quiet_hours"
    /// Held because the customer has no profile yet: decided when one arrives, suppressed
    /// (`consent:no_profile`) if none has by `send_after` (see ``ConsentRules/profileWait``).
    case deferredAwaitingProfile = "deferred_awaiting_profile"
    case suppressedFrequencyCap = "suppressed_frequency_cap"
    case suppressedNoConsent = "suppressed_no_consent"
    case suppressedNoContact = "suppressed_no_contact"
    /// An event id seen before (idempotency) or a message id already decided.
    case suppressedDuplicate = "suppressed_duplicate"
    case suppressedExpired = "suppressed_expired"
    /// A deferred message dropped because its journey instance exited (e.g. the cart was bought).
    case cancelledJourneyExit = "cancelled_journey_exit"
    /// Not sent because the instance is in the experiment's holdout or the global control group
    /// (rule `experiment:<name>:holdout` or `experiment:global_control`); counted as an exposure.
    case suppressedHoldout = "suppressed_holdout"
    // Journey lifecycle (for funnels and "why" questions).
    case journeyEntered = "journey_entered"
    case stageReached = "stage_reached"
    /// An exit goal marked as conversion matched.
    case journeyConverted = "journey_converted"
    /// A non-goal exit matched, or the definition no longer has the instance's step.
    case journeyExited = "journey_exited"
    /// The instance ran out of steps with no way to leave its stage.
    case journeyCompleted = "journey_completed"
    /// The journey's conversion goal was reached within its window: attributed to the instance, its
    /// arm and the last message decided before it (`message_id`, `step`, `channel`; null when the
    /// instance got none). `elapsed_ms` is the time since entry.
    case converted = "converted"

    /// Whether this decision is about a message (as opposed to the journey lifecycle).
    public var isMessageOutcome: Bool {
        switch self {
        case .journeyEntered, .stageReached, .journeyConverted, .journeyExited, .journeyCompleted, .converted: false
        default: true
        }
    }
}

/// A channel that was considered and rejected before the chosen one (or before suppression).
public struct ChannelRejection: Sendable, Hashable {
    public var channel: Channel
    public var reason: DecisionReason
    public var rule: String
    public init(channel: Channel, reason: DecisionReason, rule: String) {
        self.channel = channel; self.reason = reason; self.rule = rule
    }
}

/// One record on `journey.decisions`: a send, deferral, suppression or lifecycle change, with the
/// reason and the rule that produced it.
public struct Decision: Sendable, Hashable {
    public var reason: DecisionReason
    /// The rule that produced the outcome, e.g. `cap:sms_per_day`, `quiet_hours:default`,
    /// `consent:sms`, `dedup:event_id`, `exit:purchase`; `rules_passed` for a plain send.
    public var rule: String
    public var customerID: String
    public var journey: String?
    public var journeyVersion: Int?
    public var instanceKey: String?
    public var stage: String?
    public var step: String?
    public var channel: Channel?
    public var messageID: MessageID?
    public var priority: Int?
    /// Effective clock of the decision.
    public var decidedAt: Timestamp
    public var sendAfter: Timestamp?
    public var expiresAt: Timestamp?
    /// Event id that caused it.
    public var causedBy: String?
    /// Channels rejected before the outcome, in the order they were tried.
    public var skipped: [ChannelRejection]
    /// Extra explanation (e.g. which message displaced this one).
    public var detail: String?
    /// The instance's experiment arm (nil when its journey runs no experiment).
    public var arm: String?
    /// ``DecisionReason/converted``: milliseconds from the instance's entry to the conversion.
    public var elapsedMilliseconds: Int64?

    public init(reason: DecisionReason, rule: String, customerID: String, journey: String? = nil,
                journeyVersion: Int? = nil, instanceKey: String? = nil, stage: String? = nil, step: String? = nil,
                channel: Channel? = nil, messageID: MessageID? = nil, priority: Int? = nil, decidedAt: Timestamp,
                sendAfter: Timestamp? = nil, expiresAt: Timestamp? = nil, causedBy: String? = nil,
                skipped: [ChannelRejection] = [], detail: String? = nil, arm: String? = nil, elapsedMilliseconds: Int64? = nil) {
        self.reason = reason; self.rule = rule; self.customerID = customerID; self.journey = journey
        self.journeyVersion = journeyVersion; self.instanceKey = instanceKey; self.stage = stage; self.step = step
        self.channel = channel; self.messageID = messageID; self.priority = priority; self.decidedAt = decidedAt
        self.sendAfter = sendAfter; self.expiresAt = expiresAt; self.causedBy = causedBy
        self.skipped = skipped; self.detail = detail; self.arm = arm; self.elapsedMilliseconds = elapsedMilliseconds
    }
}
