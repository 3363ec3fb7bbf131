/// A journey as loaded from `config/journeys/*.yaml` (see WaymarkConfig) or built in code.
///
/// A journey has one or more stages; each stage owns an ordered list of steps that run when the
/// instance enters the stage. Events move instances between stages (``transitions``) or end them
/// (``exits``). Keyed journeys (``key``) run one instance per distinct key value (per cart, per case).
public struct JourneyDefinition: Sendable, Hashable {
    /// Unique journey name, e.g. `abandoned_cart`.
    public var name: String
    /// Bumped by authors when the journey changes meaning; part of every message id.
    public var version: Int
    public var description: String
    /// Event attribute whose value keys instances (`cart_id`); `nil` = one instance per customer.
    public var key: String?
    /// Any matching trigger starts an instance (if none is active for the key).
    public var entry: [EntryTrigger]
    /// Stages in declaration order; the first is entered on entry. Never empty.
    public var stages: [Stage]
    public var transitions: [Transition]
    public var exits: [ExitGoal]
    /// Minimum time between an instance ending and a new one starting for the same key;
    /// `nil` means "never re-enter" (remembered for ``Rules/endedInstanceMemory``).
    public var reentryCooldown: TimeSpan?
    /// An A/B/n test over the journey's steps (see ``Experiment``); `nil`: every instance runs the
    /// steps as written.
    public var experiment: Experiment?
    /// What counts as a conversion, and for how long after entry; `nil`: a matching exit goal marked
    /// `converted` is the conversion, attributed at the moment it ends the instance.
    public var goal: ConversionGoal?

    public init(name: String, version: Int, description: String = "", key: String? = nil,
                entry: [EntryTrigger], stages: [Stage], transitions: [Transition] = [], exits: [ExitGoal] = [],
                reentryCooldown: TimeSpan? = .zero, experiment: Experiment? = nil, goal: ConversionGoal? = nil) {
        self.name = name; self.version = version; self.description = description; self.key = key
        self.entry = entry; self.stages = stages; self.transitions = transitions; self.exits = exits
        self.reentryCooldown = reentryCooldown; self.experiment = experiment; self.goal = goal
    }
}

/// An A/B/n experiment on a journey: every new instance is assigned one arm (or the holdout) from a
/// stable hash of the experiment salt, the customer id and the instance key, so replays, retries and
/// restarts give the same arm. The assignment is kept in customer state: changing weights later
/// re-assigns nobody already assigned. Steps change per arm through ``Step/variants``; branches can
/// test the arm (`journey.arm`).
public struct Experiment: Sendable, Hashable {
    /// Unique across journeys; names the assignments kept in state and the experiment report.
    public var name: String
    /// Mixed into the assignment hash; a new salt gives an independent split (for new customers).
    public var salt: String
    /// At least two arms (A/B/n). The first is the control that the others are compared with.
    public var arms: [ExperimentArm]
    /// Share of instances (0 ..< 50 %) held out: they enter, are tracked and converted like the
    /// others, and are sent no non-transactional message of this journey.
    public var holdoutPercent: Double

    public init(name: String, salt: String? = nil, arms: [ExperimentArm], holdoutPercent: Double = 0) {
        self.name = name; self.salt = salt ?? name; self.arms = arms; self.holdoutPercent = holdoutPercent
    }

    /// The arm name recorded for holdout instances.
    public static let holdoutArm = "holdout"
    /// The arm name recorded for members of the global control group (``ExperimentRules``).
    public static let globalControlArm = "global_control"
}

/// One arm of an experiment.
public struct ExperimentArm: Sendable, Hashable {
    public var name: String
    /// Relative weight (> 0); shares are weight / sum of weights, after the holdout is set aside.
    public var weight: Double
    public init(name: String, weight: Double) { self.name = name; self.weight = weight }
}

/// A journey's conversion goal: an event (type, attribute filter and for keyed journeys by default
/// the same key) within `window` of the instance's entry. Each instance converts at most once; the
/// conversion is attributed to the instance, its arm and the last message decided before it, and is
/// counted for holdout instances too (that is what makes the holdout comparison possible).
public struct ConversionGoal: Sendable, Hashable {
    public var event: EventMatcher
    /// Counted from the instance's entry, so every arm (and the holdout, which gets no message) is
    /// measured over the same span.
    public var window: TimeSpan
    public init(event: EventMatcher, window: TimeSpan) { self.event = event; self.window = window }
}

/// What a step does differently for one experiment arm. Unset fields keep the step's own value.
public struct StepVariant: Sendable, Hashable {
    /// Send steps: another template.
    public var template: String?
    /// Send steps: another channel order.
    public var channels: [Channel]?
    /// Send steps: another priority.
    public var priority: Int?
    /// `wait` steps: another duration; `wait_for` steps: another timeout.
    public var duration: TimeSpan?
    /// The arm skips the step (a send is not made, a wait does not wait).
    public var skip: Bool

    public init(template: String? = nil, channels: [Channel]? = nil, priority: Int? = nil, duration: TimeSpan? = nil, skip: Bool = false) {
        self.template = template; self.channels = channels; self.priority = priority; self.duration = duration; self.skip = skip
    }
}

/// Starts a journey instance.
public struct EntryTrigger: Sendable, Hashable {
    /// Event type and attribute filter.
    public var event: EventMatcher
    /// Condition on the profile (segment, persona, tier...); `Condition.always` when absent.
    public var profile: Condition
    public init(event: EventMatcher, profile: Condition = .always) { self.event = event; self.profile = profile }
}

/// Matches an event by type and attributes.
public struct EventMatcher: Sendable, Hashable {
    public var type: String
    /// Condition over `event.*` fields (the event's attributes).
    public var filter: Condition
    /// For keyed journeys: the event's key attribute must equal the instance key.
    /// Ignored for entry triggers and unkeyed journeys.
    public var sameKey: Bool
    public init(type: String, filter: Condition = .always, sameKey: Bool = true) {
        self.type = type; self.filter = filter; self.sameKey = sameKey
    }
}

/// A stage (`awareness`, `consideration`...) with the steps that run when it is entered.
public struct Stage: Sendable, Hashable {
    public var name: String
    public var steps: [Step]
    public init(name: String, steps: [Step]) { self.name = name; self.steps = steps }
}

/// Moves an instance to another stage when an event matches.
public struct Transition: Sendable, Hashable {
    public var on: EventMatcher
    /// Stages this applies in; empty = any stage.
    public var from: [String]
    public var to: String
    public init(on: EventMatcher, from: [String] = [], to: String) { self.on = on; self.from = from; self.to = to }
}

/// Ends an instance when an event matches.
public struct ExitGoal: Sendable, Hashable {
    public var on: EventMatcher
    /// `true`: counts as a conversion (`journey_converted`); `false`: a plain exit (`journey_exited`).
    public var converted: Bool
    public init(on: EventMatcher, converted: Bool = true) { self.on = on; self.converted = converted }
}

/// One step of a stage's program.
public struct Step: Sendable, Hashable {
    /// Unique within the journey.
    public var id: String
    public var action: StepAction
    /// Per experiment arm (by name): how the step differs. Arms not listed run it as written.
    public var variants: [String: StepVariant]
    public init(id: String, action: StepAction, variants: [String: StepVariant] = [:]) {
        self.id = id; self.action = action; self.variants = variants
    }
}

/// Where to continue after a step.
public enum StepTarget: Sendable, Hashable {
    /// The following step in the stage (or the end of the stage's steps).
    case next
    /// The step with this id in the same stage.
    case step(String)
    /// Move to another stage (runs its steps).
    case stage(String)
    /// Stop running steps in this stage.
    case end
}

/// What a step does.
public enum StepAction: Sendable, Hashable {
    case send(SendStep)
    /// Pause for a fixed time.
    case wait(TimeSpan)
    /// Pause until an event matches or the timeout passes.
    case waitForEvent(WaitForEvent)
    /// The first case whose condition holds decides the next step; otherwise `otherwise`.
    case branch(cases: [BranchCase], otherwise: StepTarget)
}

/// Sends one message on the first channel (in preference order) that passes every rule.
public struct SendStep: Sendable, Hashable {
    /// Channels in the journey's preference order.
    public var channels: [Channel]
    public var template: String
    public var priority: Int
    public var transactional: Bool
    /// Message lifetime, counted from the moment the step became due in event time (the causing
    /// event plus the waits before it); `nil` uses ``Rules/defaultExpiry``.
    public var expiresAfter: TimeSpan?
    /// Variables to pass (`cart_id`, `profile.tier`); `nil` passes all instance context fields.
    public var variables: [String]?
    public init(channels: [Channel], template: String, priority: Int = 0, transactional: Bool = false,
                expiresAfter: TimeSpan? = nil, variables: [String]? = nil) {
        self.channels = channels; self.template = template; self.priority = priority
        self.transactional = transactional; self.expiresAfter = expiresAfter; self.variables = variables
    }
}

/// Waits for an event (same key for keyed journeys unless `event.sameKey` is false).
public struct WaitForEvent: Sendable, Hashable {
    public var event: EventMatcher
    public var timeout: TimeSpan
    public var onEvent: StepTarget
    public var onTimeout: StepTarget
    public init(event: EventMatcher, timeout: TimeSpan, onEvent: StepTarget = .next, onTimeout: StepTarget = .next) {
        self.event = event; self.timeout = timeout; self.onEvent = onEvent; self.onTimeout = onTimeout
    }
}

/// A branch case.
public struct BranchCase: Sendable, Hashable {
    public var condition: Condition
    public var target: StepTarget
    public init(condition: Condition, target: StepTarget) { self.condition = condition; self.target = target }
}

/// A conjunction of clauses over event, instance-context and profile fields.
public struct Condition: Sendable, Hashable {
    public var clauses: [Clause]
    public init(_ clauses: [Clause] = []) { self.clauses = clauses }
    /// Always true.
    public static let always = Condition()
}

/// Which value a clause looks at.
public enum Field: Sendable, Hashable, CustomStringConvertible {
    /// An attribute of the event being matched, or for branches the instance context
    /// (scalar attributes of the entry event, updated by later matched events).
    case event(String)
    /// A profile attribute, or the pseudo-attributes `timezone` and `locale`.
    case profile(String)
    /// A property of the journey instance: `arm` (the experiment arm, `holdout` or `global_control`).
    case journey(String)

    public var description: String {
        switch self {
        case .event(let n): "event.\(n)"
        case .profile(let n): "profile.\(n)"
        case .journey(let n): "journey.\(n)"
        }
    }
}

/// A test on one field.
public enum FieldMatch: Sendable, Hashable {
    case equals(AttributeValue)
    case notEquals(AttributeValue)
    case oneOf([AttributeValue])
    case noneOf([AttributeValue])
    case greaterThan(Double)
    case atLeast(Double)
    case lessThan(Double)
    case atMost(Double)
    /// `true`: the field is present and not null; `false`: absent or null.
    case exists(Bool)
}

/// One `field predicate` pair.
public struct Clause: Sendable, Hashable {
    public var field: Field
    public var predicate: FieldMatch
    public init(_ field: Field, _ predicate: FieldMatch) { self.field = field; self.predicate = predicate }
}
