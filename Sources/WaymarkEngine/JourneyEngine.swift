/// How the engine's clock advances while processing a call.
public enum Timing: Sendable, Hashable {
    /// Live workers: every decision in the call is taken at `now` (the wall clock). Timers due
    /// before an event's `occurred_at` still fire before that event, so event-time order holds.
    case live
    /// Replay: each event is processed at its own `occurred_at` and each timer at its due time
    /// (timers fire in event time); `now` bounds the timers fired after the last event.
    case replay
}

/// Everything one engine call produces.
public struct EngineResult: Sendable, Hashable {
    /// The customer's new state, to store (compare-and-set) in place of the old one.
    public var state: CustomerState
    /// Decisions to publish on `journey.decisions`, in the order they were taken.
    public var decisions: [Decision]
    /// Messages to publish on `outbound.<channel>`.
    public var messages: [OutboundMessage]
    /// When the engine must be called again for this customer (earliest timer or deferred release).
    public var nextWakeUp: Timestamp?
    /// Touchpoints skipped because their event id was already processed.
    public var duplicateEvents: Int
}

/// A journey or rule set the engine refuses to run.
public struct EngineConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    public var journey: String?
    public var message: String
    public init(journey: String?, message: String) { self.journey = journey; self.message = message }
    public var description: String { journey.map { "journey '\($0)': \(message)" } ?? message }
}

/// The pure journey engine: customer state + profile + touchpoints + clock in; new state,
/// decisions, messages and the next wake-up out. No I/O, no clock, no randomness: the same inputs
/// give byte-identical outputs.
///
/// Build one per configuration (it precomputes indexes) and share it across threads.
public struct JourneyEngine: Sendable {
    public let journeys: [JourneyDefinition]
    public let rules: Rules
    /// The quiet-hours evaluator (also for sender workers' send-time re-check).
    public let quietHours: QuietHours
    let compiled: [CompiledJourney]
    let journeyIndex: [String: Int]
    /// Event type → journeys (indices, ascending) that react to it.
    let interest: [String: [Int]]
    let maxCapWindow: Int64

    /// Validates and compiles journeys and rules.
    public init(journeys: [JourneyDefinition], rules: Rules, zones: ZoneCache = .shared) throws(EngineConfigError) {
        var index: [String: Int] = [:]
        var compiled: [CompiledJourney] = []
        var interest: [String: [Int]] = [:]
        for (n, j) in journeys.enumerated() {
            if index[j.name] != nil { throw EngineConfigError(journey: j.name, message: "defined twice") }
            if let x = j.experiment, journeys[..<n].contains(where: { $0.experiment?.name == x.name }) {
                throw EngineConfigError(journey: j.name, message: "experiment '\(x.name)' is also run by another journey")
            }
            index[j.name] = n
            let cj = try CompiledJourney(j)
            compiled.append(cj)
            for t in cj.eventTypes where interest[t]?.last != n { interest[t, default: []].append(n) }
        }
        guard zones.isKnown(rules.defaultTimezone) else {
            throw EngineConfigError(journey: nil, message: "unknown default timezone '\(rules.defaultTimezone)'")
        }
        for c in rules.frequencyCaps {
            if c.limit < 1 { throw EngineConfigError(journey: nil, message: "cap '\(c.name)': limit must be at least 1") }
            if c.window.milliseconds <= 0 { throw EngineConfigError(journey: nil, message: "cap '\(c.name)': window must be positive") }
            if let j = c.journey, index[j] == nil {
                throw EngineConfigError(journey: nil, message: "cap '\(c.name)' names unknown journey '\(j)'")
            }
        }
        let gc = rules.experiments.globalControlPercent
        if !(gc >= 0 && gc < 50) { throw EngineConfigError(journey: nil, message: "global control group must be at least 0 % and below 50 %") }
        if rules.quietHours.spread.milliseconds < 0 { throw EngineConfigError(journey: nil, message: "spread must not be negative") }
        self.journeys = journeys
        self.rules = rules
        self.quietHours = QuietHours(rules: rules.quietHours, defaultTimezone: rules.defaultTimezone, zones: zones)
        self.compiled = compiled
        self.journeyIndex = index
        self.interest = interest
        self.maxCapWindow = rules.frequencyCaps.map(\.window.milliseconds).max() ?? 0
    }

    /// Processes a batch of touchpoints for one customer (in partition order) and every timer due
    /// up to `now`.
    ///
    /// - Parameters:
    ///   - state: The customer's stored state (`CustomerState()` for a new customer).
    ///   - customerID: The customer (touchpoints for other customers are ignored).
    ///   - profile: The latest profile, or `nil` if none is known yet.
    ///   - touchpoints: Events in partition order; duplicates (by event id) are skipped.
    ///   - now: Live: the wall clock. Replay: fire timers up to here after the last event.
    ///   - timing: ``Timing/live`` or ``Timing/replay``.
    ///   - watermark: Live: the event time up to which the customer's partition has been read.
    ///     Timers and releases due after it wait (events before their due time, such as the
    ///     purchase that exits a cart reminder, may still be in the backlog). `nil`: caught up,
    ///     fire everything due up to `now`. Never below the events passed in this call.
    public func process(_ state: CustomerState, customerID: String, profile: CustomerProfile?,
                        touchpoints: [Touchpoint], now: Timestamp, timing: Timing = .live,
                        watermark: Timestamp? = nil) -> EngineResult {
        var run = Run(engine: self, state: state, customerID: customerID, profile: profile)
        run.clock = timing == .live ? max(now, state.clock) : state.clock
        for e in touchpoints where e.customerID == customerID {
            let fp = StableHash.of(e.eventID)
            if run.state.recentEvents.contains(where: { $0.fingerprint == fp }) {
                run.duplicates += 1
                run.decisions.append(Decision(reason: .suppressedDuplicate, rule: "dedup:event_id", customerID: customerID,
                                              decidedAt: run.clock, causedBy: e.eventID, detail: "event type \(e.type)"))
                continue
            }
            let eventTime = timing == .live ? min(e.occurredAt, now) : e.occurredAt
            run.fireTimers(upTo: eventTime, replay: timing == .replay)
            if timing == .replay { run.advanceClock(to: e.occurredAt) }
            run.base = timing == .live ? eventTime : run.clock
            run.eventTime = eventTime
            run.state.recentEvents.append(ProcessedEvent(fingerprint: fp, at: run.clock))
            run.handle(e)
        }
        var limit = now
        if timing == .live, let watermark {
            limit = min(now, max(watermark, touchpoints.map { min($0.occurredAt, now) }.max() ?? watermark))
        }
        run.fireTimers(upTo: limit, replay: timing == .replay)
        run.flush()
        run.compact()
        run.prune()
        return EngineResult(state: run.state, decisions: run.decisions, messages: run.messages,
                            nextWakeUp: run.state.nextWakeUp, duplicateEvents: run.duplicates)
    }

    /// Fires due timers and deferred releases only (a scheduler wake-up); see ``process(_:customerID:profile:touchpoints:now:timing:watermark:)``.
    public func wake(_ state: CustomerState, customerID: String, profile: CustomerProfile?, now: Timestamp,
                     timing: Timing = .live, watermark: Timestamp? = nil) -> EngineResult {
        process(state, customerID: customerID, profile: profile, touchpoints: [], now: now, timing: timing, watermark: watermark)
    }
}

// MARK: - Compiled journeys

struct StepLocation: Sendable, Hashable {
    var stage: Int
    var index: Int
}

struct CompiledJourney: Sendable {
    let def: JourneyDefinition
    let stageIndex: [String: Int]
    let stepLocation: [String: StepLocation]
    /// Whether any transition can leave the stage (otherwise finishing its steps completes the instance).
    let stageHasOutgoing: [Bool]
    let eventTypes: [String]

    init(_ j: JourneyDefinition) throws(EngineConfigError) {
        func fail(_ m: String) -> EngineConfigError { EngineConfigError(journey: j.name, message: m) }
        if j.name.isEmpty { throw fail("name must not be empty") }
        if j.stages.isEmpty { throw fail("needs at least one stage (or top-level steps)") }
        if j.entry.isEmpty { throw fail("needs at least one entry trigger") }
        var stageIndex: [String: Int] = [:]
        var stepLocation: [String: StepLocation] = [:]
        var types: [String] = []
        for (si, s) in j.stages.enumerated() {
            if stageIndex[s.name] != nil { throw fail("stage '\(s.name)' defined twice") }
            stageIndex[s.name] = si
            for (i, st) in s.steps.enumerated() {
                if st.id.isEmpty || st.id.unicodeScalars.contains(where: { $0.value < 32 }) { throw fail("invalid step id '\(st.id)'") }
                if stepLocation[st.id] != nil { throw fail("step '\(st.id)' defined twice") }
                stepLocation[st.id] = StepLocation(stage: si, index: i)
            }
        }
        func check(_ t: StepTarget, in stage: Int, at step: String) throws(EngineConfigError) {
            switch t {
            case .next, .end: break
            case .step(let id):
                guard let loc = stepLocation[id] else { throw fail("step '\(step)' jumps to unknown step '\(id)'") }
                if loc.stage != stage { throw fail("step '\(step)' jumps to step '\(id)' in another stage; use a stage target") }
            case .stage(let name):
                if stageIndex[name] == nil { throw fail("step '\(step)' jumps to unknown stage '\(name)'") }
            }
        }
        for e in j.entry { types.append(e.event.type) }
        for (si, s) in j.stages.enumerated() {
            for st in s.steps {
                switch st.action {
                case .send(let send):
                    if send.channels.isEmpty { throw fail("send step '\(st.id)' needs at least one channel") }
                    if send.template.isEmpty { throw fail("send step '\(st.id)' needs a template") }
                    if let e = send.expiresAfter, e.milliseconds <= 0 { throw fail("send step '\(st.id)': expires_after must be positive") }
                case .wait(let d):
                    if d.milliseconds < 0 { throw fail("wait step '\(st.id)' has a negative duration") }
                case .waitForEvent(let w):
                    if w.timeout.milliseconds <= 0 { throw fail("wait_for step '\(st.id)' needs a positive timeout") }
                    try check(w.onEvent, in: si, at: st.id)
                    try check(w.onTimeout, in: si, at: st.id)
                    types.append(w.event.type)
                case .branch(let cases, let otherwise):
                    for c in cases { try check(c.target, in: si, at: st.id) }
                    try check(otherwise, in: si, at: st.id)
                }
            }
        }
        var outgoing = [Bool](repeating: false, count: j.stages.count)
        for t in j.transitions {
            guard let to = stageIndex[t.to] else { throw fail("transition on '\(t.on.type)' goes to unknown stage '\(t.to)'") }
            for f in t.from where stageIndex[f] == nil { throw fail("transition on '\(t.on.type)' comes from unknown stage '\(f)'") }
            for (si, s) in j.stages.enumerated() where si != to && (t.from.isEmpty || t.from.contains(s.name)) { outgoing[si] = true }
            types.append(t.on.type)
        }
        for x in j.exits { types.append(x.on.type) }
        if let k = j.key, k.isEmpty { throw fail("key must not be empty") }
        if let x = j.experiment {
            if x.name.isEmpty { throw fail("experiment needs a name") }
            if x.arms.count < 2 { throw fail("experiment '\(x.name)' needs at least two arms") }
            var names = Set<String>()
            for a in x.arms {
                if a.name.isEmpty || a.name == Experiment.holdoutArm || a.name == Experiment.globalControlArm
                    || a.name.unicodeScalars.contains(where: { $0.value < 32 }) {
                    throw fail("experiment '\(x.name)': invalid arm name '\(a.name)'")
                }
                if !names.insert(a.name).inserted { throw fail("experiment '\(x.name)': arm '\(a.name)' defined twice") }
                if !(a.weight > 0) || !a.weight.isFinite { throw fail("experiment '\(x.name)': arm '\(a.name)' needs a positive weight") }
            }
            if !(x.holdoutPercent >= 0 && x.holdoutPercent < 50) {
                throw fail("experiment '\(x.name)': holdout must be at least 0 % and below 50 %")
            }
            for s in j.stages {
                for st in s.steps {
                    for arm in st.variants.keys.sorted() where !names.contains(arm) {
                        throw fail("step '\(st.id)' has a variant for unknown arm '\(arm)' (arms: \(x.arms.map(\.name).joined(separator: ", ")))")
                    }
                }
            }
        } else {
            for s in j.stages {
                for st in s.steps where !st.variants.isEmpty {
                    throw fail("step '\(st.id)' has variants but the journey has no experiment")
                }
            }
        }
        if let g = j.goal {
            if g.window.milliseconds <= 0 { throw fail("goal needs a positive window") }
            types.append(g.event.type)
        }
        self.def = j
        self.stageIndex = stageIndex
        self.stepLocation = stepLocation
        self.stageHasOutgoing = outgoing
        var seen = Set<String>()
        self.eventTypes = types.filter { seen.insert($0).inserted }
    }
}

// MARK: - One engine call

struct SendCandidate {
    enum Kind {
        /// A send step that just ran.
        case new(SendPlan)
        /// A message held for quiet hours whose release time came.
        case release(DeferredMessage)
        /// A send that waited for the customer's profile: it arrived, or the wait is over.
        case awaitingProfile(DeferredMessage)

        /// The held message behind a release.
        var held: DeferredMessage? {
            switch self {
            case .new: nil
            case .release(let d), .awaitingProfile(let d): d
            }
        }

        /// The journey and instance key the send belongs to.
        var instance: (journey: String, key: String) {
            switch self {
            case .new(let n): (n.journey, n.key)
            case .release(let d), .awaitingProfile(let d): (d.message.journey, d.instanceKey)
            }
        }
    }
    var seq: Int
    var priority: Int
    var createdAt: Timestamp
    var kind: Kind
}

struct Run {
    static let deadMarker = "\u{1}ended"
    static let maxContextFields = 32
    static let maxContextStringBytes = 256
    static let maxStageVisits = 16

    let engine: JourneyEngine
    var state: CustomerState
    let customerID: String
    let profile: CustomerProfile?
    var clock: Timestamp = Timestamp(milliseconds: 0)
    /// Start of waits and timeouts set now: the event's time (live: clamped to `now`) or the due
    /// time of the timer being fired, so "1 h after the cart was abandoned" holds despite lag.
    var base: Timestamp = Timestamp(milliseconds: 0)
    /// The time of the event being handled (live: clamped to `now`). Unlike `base` in replay, which
    /// never goes back, this is the event's own time even when it arrived out of order: conversion
    /// windows are judged by it.
    var eventTime: Timestamp = Timestamp(milliseconds: 0)
    var decisions: [Decision] = []
    var messages: [OutboundMessage] = []
    var candidates: [SendCandidate] = []
    var seq = 0
    var duplicates = 0
    var hasDead = false

    init(engine: JourneyEngine, state: CustomerState, customerID: String, profile: CustomerProfile?) {
        self.engine = engine; self.state = state; self.customerID = customerID; self.profile = profile
    }

    var rules: Rules { engine.rules }

    /// Moves the effective clock forward (never back); sends gathered at the old clock are
    /// arbitrated first, because they compete only with sends decided at the same instant.
    mutating func advanceClock(to t: Timestamp) {
        guard t > clock else { return }
        flush()
        clock = t
    }

    // MARK: Timers

    mutating func fireTimers(upTo limit: Timestamp, replay: Bool) {
        var guardCount = 0
        while guardCount < 100_000 {
            guardCount += 1
            var bestDue: Timestamp? = nil
            var bestInstance = -1
            var bestDeferred = -1
            for (i, inst) in state.instances.enumerated() {
                if let w = inst.wakeAt, w <= limit, bestDue == nil || w < bestDue! { bestDue = w; bestInstance = i }
            }
            for (i, d) in state.deferred.enumerated() {
                // A send waiting for the profile is due as soon as one is known, else at its deadline.
                let profileArrived = d.hold == .awaitingProfile && profile != nil
                let due = profileArrived ? min(d.message.sendAfter, clock) : d.message.sendAfter
                guard due <= limit || profileArrived else { continue }
                if bestDue == nil || due < bestDue! { bestDue = due; bestInstance = -1; bestDeferred = i }
            }
            guard let due = bestDue else {
                // Replay: sends gathered at the current instant may be deferred to a release before
                // `limit`; decide them and look again, so the release fires at its own time and not
                // only when a later event of this customer comes along. (Live: every deferral ends
                // after `now`, and a batch's sends are arbitrated together at the end.)
                if replay && !candidates.isEmpty && limit > clock { flush(); continue }
                return
            }
            if replay && due > clock {
                // Decide the sends of the current instant first (their deferrals may fall before
                // `due`), then move the clock; either may change what is due, so rescan.
                if candidates.isEmpty { advanceClock(to: due) } else { flush() }
                continue
            }
            base = replay ? clock : due
            if bestInstance >= 0 {
                fireInstance(bestInstance)
            } else {
                let d = state.deferred.remove(at: bestDeferred)
                let kind: SendCandidate.Kind = d.hold == .awaitingProfile ? .awaitingProfile(d) : .release(d)
                candidates.append(SendCandidate(seq: nextSeq(), priority: d.message.priority, createdAt: d.message.createdAt,
                                                kind: kind))
            }
            compact()
        }
    }

    mutating func fireInstance(_ i: Int) {
        let inst = state.instances[i]
        state.instances[i].wakeAt = nil
        guard let j = engine.journeyIndex[inst.journey] else {
            endInstance(i, nil, reason: .journeyExited, rule: "definition:journey_missing"); return
        }
        let cj = engine.compiled[j]
        guard let loc = cj.stepLocation[inst.step] else {
            endInstance(i, cj, reason: .journeyExited, rule: "definition:step_missing"); return
        }
        switch cj.def.stages[loc.stage].steps[loc.index].action {
        case .wait: continueAt(i, cj, from: loc, target: .next)
        case .waitForEvent(let w): continueAt(i, cj, from: loc, target: w.onTimeout)
        default: continueAt(i, cj, from: loc, target: .next)
        }
    }

    // MARK: Events

    mutating func handle(_ e: Touchpoint) {
        guard let interested = engine.interest[e.type] else { return }
        for j in interested {
            let cj = engine.compiled[j]
            if cj.def.goal != nil && !state.conversions.isEmpty { checkGoal(cj, e) }
            let count = state.instances.count
            for i in 0..<count where state.instances[i].journey == cj.def.name && state.instances[i].step != Run.deadMarker {
                handleInstance(i, cj, e)
            }
            compact()
            if !cj.def.exits.isEmpty && !(state.deferred.isEmpty && candidates.isEmpty) { cancelHeldAfterCompletion(cj, e) }
            if entryMatches(cj, e) { tryEnter(cj, e) }
            compact()
        }
    }

    /// Whether `e` satisfies one of the journey's entry triggers. Kept out of `handle` (a
    /// non-mutating helper): Swift 6.3.1's optimizer crashes on the loop inlined there.
    func entryMatches(_ cj: CompiledJourney, _ e: Touchpoint) -> Bool {
        let triggers = cj.def.entry
        for index in triggers.indices {
            let filter = triggers[index].event.filter, profile = triggers[index].profile
            guard triggers[index].event.type == e.type else { continue }
            if eval(filter, event: e.attributes, context: nil) && eval(profile, event: nil, context: nil) { return true }
        }
        return false
    }

    /// An instance that finished its steps may still have a message held (for quiet hours or for the
    /// profile) or not yet decided; an exit event for it (same key) cancels that message too.
    mutating func cancelHeldAfterCompletion(_ cj: CompiledJourney, _ e: Touchpoint) {
        let name = cj.def.name
        for x in cj.def.exits where x.on.type == e.type && eval(x.on.filter, event: e.attributes, context: nil) {
            // Held messages, and sends of this call not decided yet (live: they are decided at `now`,
            // after this exit happened; replay: only those of this very instant are still pending).
            var held: [String] = state.deferred.filter { $0.message.journey == name }.map(\.instanceKey)
            for c in candidates where c.kind.instance.journey == name { held.append(c.kind.instance.key) }
            var keys: [String] = []
            for key in held where !keys.contains(key) {
                if state.instances.contains(where: { $0.journey == name && $0.key == key }) { continue }
                if x.on.sameKey, let k = cj.def.key, e.attributes[k]?.keyString != key { continue }
                keys.append(key)
            }
            for k in keys {
                let ghost = JourneyInstance(journey: name, version: cj.def.version, key: k, enteredAt: clock, stage: "",
                                           stageEnteredAt: clock, stagesReached: [], step: "", wakeAt: nil,
                                           causedBy: e.eventID, sendSequence: 0, context: [])
                cancelDeferred(of: ghost, rule: "exit:\(e.type)")
            }
            return
        }
    }

    func keyMatches(_ m: EventMatcher, _ e: Touchpoint, _ inst: JourneyInstance, _ cj: CompiledJourney) -> Bool {
        guard m.sameKey, let k = cj.def.key else { return true }
        return e.attributes[k]?.keyString == inst.key
    }

    func matches(_ m: EventMatcher, _ e: Touchpoint, _ inst: JourneyInstance, _ cj: CompiledJourney) -> Bool {
        m.type == e.type && keyMatches(m, e, inst, cj) && eval(m.filter, event: e.attributes, context: nil)
    }

    mutating func handleInstance(_ i: Int, _ cj: CompiledJourney, _ e: Touchpoint) {
        let inst = state.instances[i]
        for x in cj.def.exits where matches(x.on, e, inst, cj) {
            state.instances[i].causedBy = e.eventID
            if x.converted && cj.def.goal == nil { convert(cj, key: inst.key, rule: "exit:\(e.type)", causedBy: e.eventID) }
            endInstance(i, cj, reason: x.converted ? .journeyConverted : .journeyExited, rule: "exit:\(e.type)")
            return
        }
        if inst.wakeAt != nil, let loc = cj.stepLocation[inst.step],
           case .waitForEvent(let w) = cj.def.stages[loc.stage].steps[loc.index].action, matches(w.event, e, inst, cj) {
            merge(e, into: i)
            state.instances[i].wakeAt = nil
            continueAt(i, cj, from: loc, target: w.onEvent)
            return
        }
        for t in cj.def.transitions where t.to != inst.stage && (t.from.isEmpty || t.from.contains(inst.stage)) && matches(t.on, e, inst, cj) {
            guard let to = cj.stageIndex[t.to] else { return }
            merge(e, into: i)
            state.instances[i].wakeAt = nil
            enterStage(i, cj, to, rule: "transition:\(e.type)")
            runSteps(i, cj, stage: to, from: 0)
            return
        }
    }

    mutating func tryEnter(_ cj: CompiledJourney, _ e: Touchpoint) {
        let name = cj.def.name
        var key = ""
        if let k = cj.def.key {
            guard let v = e.attributes[k]?.keyString, !v.isEmpty else { return }
            key = v
        }
        var active = 0
        for inst in state.instances where inst.step != Run.deadMarker {
            if inst.journey == name && inst.key == key { return }
            active += 1
        }
        if let ended = state.ended.last(where: { $0.journey == name && $0.key == key }) {
            guard let cooldown = cj.def.reentryCooldown else { return }
            if clock < ended.endedAt.adding(cooldown) { return }
        }
        if active >= rules.maxInstancesPerCustomer { return }
        let arm = assignArm(cj, key: key)
        let inst = JourneyInstance(journey: name, version: cj.def.version, key: key, enteredAt: clock,
                                   stage: cj.def.stages[0].name, stageEnteredAt: clock, stagesReached: [], step: "",
                                   wakeAt: nil, causedBy: e.eventID, sendSequence: 0, context: [], arm: arm)
        state.instances.append(inst)
        openConversionWindow(cj, key: key, arm: arm)
        let i = state.instances.count - 1
        merge(e, into: i)
        decisions.append(lifecycle(.journeyEntered, rule: "entry:\(e.type)", state.instances[i], stage: nil))
        bump(name, "", .entered)
        enterStage(i, cj, 0, rule: "entry:\(e.type)")
        runSteps(i, cj, stage: 0, from: 0)
    }

    /// Copies the event's scalar attributes into the instance context (bounded).
    mutating func merge(_ e: Touchpoint, into i: Int) {
        state.instances[i].causedBy = e.eventID
        guard !e.attributes.isEmpty else { return }
        var ctx = state.instances[i].context
        for k in e.attributes.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
            let v = e.attributes[k]!
            guard v.isScalar else { continue }
            if case .string(let s) = v, s.utf8.count > Run.maxContextStringBytes { continue }
            if let idx = ctx.firstIndex(where: { $0.name == k }) { ctx[idx].value = v }
            else if ctx.count < Run.maxContextFields { ctx.append(ContextField(name: k, value: v)) }
        }
        ctx.sort { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
        state.instances[i].context = ctx
    }

    // MARK: Steps

    mutating func continueAt(_ i: Int, _ cj: CompiledJourney, from loc: StepLocation, target: StepTarget) {
        switch target {
        case .next: runSteps(i, cj, stage: loc.stage, from: loc.index + 1)
        case .step(let id): runSteps(i, cj, stage: loc.stage, from: cj.stepLocation[id]?.index ?? Int.max)
        case .end: finishStage(i, cj, loc.stage)
        case .stage(let name):
            guard let s = cj.stageIndex[name] else { finishStage(i, cj, loc.stage); return }
            enterStage(i, cj, s, rule: "step:\(cj.def.stages[loc.stage].steps[loc.index].id)")
            runSteps(i, cj, stage: s, from: 0)
        }
    }

    mutating func runSteps(_ i: Int, _ cj: CompiledJourney, stage startStage: Int, from start: Int) {
        var stage = startStage
        var pos = start
        var budget = 64
        while true {
            let steps = cj.def.stages[stage].steps
            if pos >= steps.count { finishStage(i, cj, stage); return }
            budget -= 1
            if budget < 0 { endInstance(i, cj, reason: .journeyExited, rule: "loop_guard:64_steps_without_wait"); return }
            let step = steps[pos]
            state.instances[i].step = step.id
            let variant = step.variants.isEmpty ? nil : step.variants[state.instances[i].arm]
            if variant?.skip == true { pos += 1; continue }
            switch step.action {
            case .send(let s):
                enqueue(i, cj, step.id, s, variant: variant)
                pos += 1
            case .wait(let d):
                state.instances[i].wakeAt = base.adding(variant?.duration ?? d)
                return
            case .waitForEvent(let w):
                state.instances[i].wakeAt = base.adding(variant?.duration ?? w.timeout)
                return
            case .branch(let cases, let otherwise):
                var target = otherwise
                let ctx = state.instances[i].context
                let arm = state.instances[i].arm
                for c in cases where eval(c.condition, event: nil, context: ctx, arm: arm) { target = c.target; break }
                switch target {
                case .next: pos += 1
                case .step(let id): pos = cj.stepLocation[id]?.index ?? Int.max
                case .end: finishStage(i, cj, stage); return
                case .stage(let name):
                    guard let s = cj.stageIndex[name] else { finishStage(i, cj, stage); return }
                    enterStage(i, cj, s, rule: "step:\(step.id)")
                    stage = s; pos = 0
                }
            }
        }
    }

    mutating func finishStage(_ i: Int, _ cj: CompiledJourney, _ stage: Int) {
        state.instances[i].step = ""
        state.instances[i].wakeAt = nil
        if !cj.stageHasOutgoing[stage] {
            endInstance(i, cj, reason: .journeyCompleted, rule: "steps_finished")
        }
    }

    mutating func enterStage(_ i: Int, _ cj: CompiledJourney, _ s: Int, rule: String) {
        let name = cj.def.stages[s].name
        state.instances[i].stage = name
        state.instances[i].stageEnteredAt = clock
        state.instances[i].step = ""
        state.instances[i].stagesReached.append(StageVisit(stage: name, at: clock))
        if state.instances[i].stagesReached.count > Run.maxStageVisits { state.instances[i].stagesReached.removeFirst() }
        decisions.append(lifecycle(.stageReached, rule: rule, state.instances[i], stage: name))
        bump(cj.def.name, name, .stageReached)
    }

    mutating func endInstance(_ i: Int, _ cj: CompiledJourney?, reason: DecisionReason, rule: String) {
        let inst = state.instances[i]
        decisions.append(lifecycle(reason, rule: rule, inst, stage: inst.stage))
        switch reason {
        case .journeyConverted: bump(inst.journey, "", .converted)
        case .journeyCompleted: bump(inst.journey, "", .completed)
        default: bump(inst.journey, "", .exited)
        }
        if reason != .journeyCompleted { cancelDeferred(of: inst, rule: rule) }
        if cj?.def.goal == nil { state.conversions.removeAll { $0.journey == inst.journey && $0.key == inst.key } }
        if cj?.def.reentryCooldown != .zero {
            state.ended.removeAll { $0.journey == inst.journey && $0.key == inst.key }
            state.ended.append(EndedInstance(journey: inst.journey, key: inst.key, endedAt: clock))
        }
        state.instances[i].step = Run.deadMarker
        state.instances[i].wakeAt = nil
        hasDead = true
    }

    mutating func compact() {
        guard hasDead else { return }
        state.instances.removeAll { $0.step == Run.deadMarker }
        hasDead = false
    }

    /// Drops messages of an exited instance that are still held for quiet hours (not yet published),
    /// also the ones queued in this call.
    mutating func cancelDeferred(of inst: JourneyInstance, rule: String) {
        var kept: [DeferredMessage] = []
        for d in state.deferred {
            if d.message.journey == inst.journey && d.instanceKey == inst.key {
                state.capHistory.removeAll { $0.messageID == d.message.messageID }
                decisions.append(messageDecision(.cancelledJourneyExit, rule: rule, d.message, key: d.instanceKey, skipped: []))
            } else { kept.append(d) }
        }
        state.deferred = kept
        var keptCandidates: [SendCandidate] = []
        for c in candidates {
            if let d = c.kind.held, d.message.journey == inst.journey && d.instanceKey == inst.key {
                state.capHistory.removeAll { $0.messageID == d.message.messageID }
                decisions.append(messageDecision(.cancelledJourneyExit, rule: rule, d.message, key: d.instanceKey, skipped: []))
            } else if case .new(let n) = c.kind, n.journey == inst.journey && n.key == inst.key {
                // Decided in this call but not yet evaluated: the customer already left the journey.
                decisions.append(Decision(reason: .cancelledJourneyExit, rule: rule, customerID: customerID, journey: n.journey,
                                          journeyVersion: n.version, instanceKey: n.key.isEmpty ? nil : n.key,
                                          stage: n.stage.isEmpty ? nil : n.stage, step: n.step, messageID: n.messageID,
                                          priority: n.priority, decidedAt: clock, causedBy: n.causedBy,
                                          arm: n.arm.isEmpty ? nil : n.arm))
            } else { keptCandidates.append(c) }
        }
        candidates = keptCandidates
    }

    mutating func enqueue(_ i: Int, _ cj: CompiledJourney, _ stepID: String, _ step: SendStep, variant: StepVariant?) {
        var s = step
        if let v = variant {
            if let t = v.template { s.template = t }
            if let c = v.channels { s.channels = c }
            if let p = v.priority { s.priority = p }
        }
        let inst = state.instances[i]
        let id = MessageID(journey: inst.journey, version: inst.version, customerID: customerID, step: stepID,
                           causedBy: inst.causedBy, instanceKey: inst.key, sequence: inst.sendSequence)
        state.instances[i].sendSequence += 1
        if !s.transactional && (inst.arm == Experiment.holdoutArm || inst.arm == Experiment.globalControlArm) {
            let rule = inst.arm == Experiment.holdoutArm
                ? "experiment:\(cj.def.experiment?.name ?? cj.def.name):holdout" : "experiment:global_control"
            let stageName = cj.def.stages.count == 1 && cj.def.stages[0].name == "main" ? nil : inst.stage
            decisions.append(Decision(reason: .suppressedHoldout, rule: rule, customerID: customerID, journey: inst.journey,
                                      journeyVersion: inst.version, instanceKey: inst.key.isEmpty ? nil : inst.key,
                                      stage: stageName, step: stepID, messageID: id, priority: s.priority, decidedAt: clock,
                                      causedBy: inst.causedBy, detail: "template \(s.template)", arm: inst.arm))
            return
        }
        var vars: [String: AttributeValue] = [:]
        if let names = s.variables {
            for n in names {
                if n.hasPrefix("profile.") {
                    let k = String(n.dropFirst(8))
                    if let v = profileValue(k) { vars[k] = v }
                } else {
                    let k = n.hasPrefix("event.") ? String(n.dropFirst(6)) : n
                    if let v = inst.contextValue(k) { vars[k] = v }
                }
            }
        } else {
            for f in inst.context { vars[f.name] = f.value }
        }
        let stageName = cj.def.stages.count == 1 && cj.def.stages[0].name == "main" ? "" : inst.stage
        // Due at `base` in event time (the causing event plus the waits before it; live: clamped to the
        // wall clock): expiry counts from there, not from when a worker got round to it.
        let ttl = s.expiresAfter ?? rules.defaultExpiry
        candidates.append(SendCandidate(seq: nextSeq(), priority: s.priority, createdAt: clock, kind: .new(SendPlan(
            messageID: id, journey: inst.journey, version: inst.version, key: inst.key, stage: stageName, step: stepID,
            template: s.template, priority: s.priority, transactional: s.transactional, channels: s.channels,
            causedBy: inst.causedBy, variables: vars, createdAt: clock, expiresAt: base.adding(ttl),
            expiryRule: "expiry:\(ttl)", mayAwaitProfile: true, arm: inst.arm))))
    }

    mutating func nextSeq() -> Int { seq += 1; return seq }

    // MARK: Experiments and conversions

    /// The arm of a new instance: the global control group first, then the arm kept in state for
    /// this experiment and key (so a weight change re-assigns nobody), then a fresh draw. A kept arm
    /// the experiment no longer has (removed arm, holdout set to 0) is drawn again.
    mutating func assignArm(_ cj: CompiledJourney, key: String) -> String {
        if Assignment.inGlobalControl(rules.experiments, customerID: customerID) { return Experiment.globalControlArm }
        guard let x = cj.def.experiment else { return "" }
        if let r = state.arms.lastIndex(where: { $0.experiment == x.name && $0.key == key }) {
            let kept = state.arms[r].arm
            if x.arms.contains(where: { $0.name == kept }) || (kept == Experiment.holdoutArm && x.holdoutPercent > 0) {
                state.arms[r].at = clock
                return kept
            }
            state.arms.remove(at: r)
        }
        let arm = Assignment.arm(in: x, customerID: customerID, key: key)
        state.arms.append(ArmRecord(experiment: x.name, key: key, arm: arm, at: clock))
        if state.arms.count > ArmRecord.limit { state.arms.removeFirst(state.arms.count - ArmRecord.limit) }
        return arm
    }

    /// Opens the instance's conversion window: until the goal's window has passed since entry (in
    /// event time), or for journeys without a goal until the instance ends.
    mutating func openConversionWindow(_ cj: CompiledJourney, key: String, arm: String) {
        guard cj.def.goal != nil || cj.def.exits.contains(where: \.converted) else { return }
        let closes = cj.def.goal.map { eventTime.adding($0.window) } ?? Timestamp(milliseconds: Int64.max / 4)
        state.conversions.removeAll { $0.journey == cj.def.name && $0.key == key }
        state.conversions.append(OpenConversion(journey: cj.def.name, version: cj.def.version, key: key, arm: arm,
                                                enteredAt: eventTime, closesAt: closes))
        if state.conversions.count > OpenConversion.limit { state.conversions.removeFirst(state.conversions.count - OpenConversion.limit) }
    }

    /// A goal event converts every open window of the journey it matches (same key for keyed
    /// journeys unless the goal says otherwise), once each, if it happened (event time) inside it.
    mutating func checkGoal(_ cj: CompiledJourney, _ e: Touchpoint) {
        guard let goal = cj.def.goal, goal.event.type == e.type, eval(goal.event.filter, event: e.attributes, context: nil) else { return }
        let keys = state.conversions.filter { w in
            guard w.journey == cj.def.name, eventTime >= w.enteredAt, eventTime < w.closesAt else { return false }
            if goal.event.sameKey, let k = cj.def.key { return e.attributes[k]?.keyString == w.key }
            return true
        }.map(\.key)
        for key in keys { convert(cj, key: key, rule: "goal:\(e.type)", causedBy: e.eventID) }
    }

    /// Records the conversion of the window (journey, key), attributed to its arm and last message.
    mutating func convert(_ cj: CompiledJourney, key: String, rule: String, causedBy: String) {
        guard let w = state.conversions.firstIndex(where: { $0.journey == cj.def.name && $0.key == key }) else { return }
        let c = state.conversions.remove(at: w)
        let stage = state.instances.first { $0.journey == c.journey && $0.key == key && $0.step != Run.deadMarker }?.stage
        let single = cj.def.stages.count == 1 && cj.def.stages[0].name == "main"
        decisions.append(Decision(reason: .converted, rule: rule, customerID: customerID, journey: c.journey, journeyVersion: c.version,
                                  instanceKey: key.isEmpty ? nil : key, stage: single ? nil : stage,
                                  step: c.lastMessage == nil ? nil : c.lastStep, channel: c.lastChannel, messageID: c.lastMessage,
                                  decidedAt: clock, causedBy: causedBy, arm: c.arm.isEmpty ? nil : c.arm,
                                  elapsedMilliseconds: max(0, eventTime.milliseconds - c.enteredAt.milliseconds)))
    }

    mutating func bump(_ journey: String, _ stage: String, _ kind: FunnelCounter.Kind) {
        if let idx = state.counters.firstIndex(where: { $0.journey == journey && $0.stage == stage && $0.kind == kind }) {
            if state.counters[idx].count < UInt32.max { state.counters[idx].count += 1 }
            return
        }
        state.counters.append(FunnelCounter(journey: journey, stage: stage, kind: kind, count: 1))
        state.counters.sort {
            if $0.journey != $1.journey { return $0.journey.utf8.lexicographicallyPrecedes($1.journey.utf8) }
            if $0.stage != $1.stage { return $0.stage.utf8.lexicographicallyPrecedes($1.stage.utf8) }
            return $0.kind < $1.kind
        }
    }

    func lifecycle(_ reason: DecisionReason, rule: String, _ inst: JourneyInstance, stage: String?) -> Decision {
        Decision(reason: reason, rule: rule, customerID: customerID, journey: inst.journey, journeyVersion: inst.version,
                 instanceKey: inst.key.isEmpty ? nil : inst.key, stage: stage, step: nil, decidedAt: clock,
                 causedBy: inst.causedBy, arm: inst.arm.isEmpty ? nil : inst.arm)
    }

    func messageDecision(_ reason: DecisionReason, rule: String, _ m: OutboundMessage, key: String,
                         skipped: [ChannelRejection], channel: Channel? = nil, detail: String? = nil) -> Decision {
        Decision(reason: reason, rule: rule, customerID: customerID, journey: m.journey, journeyVersion: m.journeyVersion,
                 instanceKey: key.isEmpty ? nil : key, stage: m.stage.isEmpty ? nil : m.stage, step: m.step,
                 channel: channel ?? m.channel, messageID: m.messageID, priority: m.priority, decidedAt: clock,
                 sendAfter: reason == .sent || reason == .fallbackChannel || reason == .deferredQuietHours
                     || reason == .deferredAwaitingProfile ? m.sendAfter : nil,
                 expiresAt: m.expiresAt, causedBy: m.causedBy, skipped: skipped, detail: detail, arm: m.arm.isEmpty ? nil : m.arm)
    }

    // MARK: Conditions

    func profileValue(_ name: String) -> AttributeValue? {
        guard let p = profile else { return nil }
        if let v = p.attributes[name] { return v }
        switch name {
        case "timezone": return p.timezone.map { .string($0) }
        case "locale": return p.locale.map { .string($0) }
        default: return nil
        }
    }

    func eval(_ c: Condition, event: [String: AttributeValue]?, context: [ContextField]?, arm: String = "") -> Bool {
        for clause in c.clauses {
            let v: AttributeValue?
            switch clause.field {
            case .profile(let n): v = profileValue(n)
            case .journey(let n): v = n == "arm" && !arm.isEmpty ? .string(arm) : nil
            case .event(let n):
                if let event { v = event[n] }
                else if let context { v = context.first(where: { $0.name == n })?.value }
                else { v = nil }
            }
            if !Run.test(clause.predicate, v) { return false }
        }
        return true
    }

    static func equal(_ a: AttributeValue, _ b: AttributeValue) -> Bool {
        if case .number(let x) = a, let y = b.numberValue { return x == y }
        if case .number(let y) = b, let x = a.numberValue { return x == y }
        guard let x = a.keyString, let y = b.keyString else { return a == b }
        return x == y
    }

    static func test(_ p: FieldMatch, _ v: AttributeValue?) -> Bool {
        switch p {
        case .exists(let want):
            if let v, v != .null { return want }
            return !want
        case .equals(let x): return v.map { equal($0, x) } ?? false
        case .notEquals(let x): return !(v.map { equal($0, x) } ?? false)
        case .oneOf(let xs): return v.map { v in xs.contains { equal(v, $0) } } ?? false
        case .noneOf(let xs): return !(v.map { v in xs.contains { equal(v, $0) } } ?? false)
        case .greaterThan(let x): return (v?.numberValue).map { $0 > x } ?? false
        case .atLeast(let x): return (v?.numberValue).map { $0 >= x } ?? false
        case .lessThan(let x): return (v?.numberValue).map { $0 < x } ?? false
        case .atMost(let x): return (v?.numberValue).map { $0 <= x } ?? false
        }
    }

    // MARK: Pruning

    mutating func prune() {
        state.clock = max(state.clock, clock)
        let now = state.clock.milliseconds
        let d = rules.dedup
        state.recentEvents.removeAll { now - $0.at.milliseconds > d.maxAge.milliseconds }
        if state.recentEvents.count > d.maxEvents { state.recentEvents.removeFirst(state.recentEvents.count - d.maxEvents) }
        let horizon = now - engine.maxCapWindow
        state.capHistory.removeAll { $0.at.milliseconds <= horizon }
        let memory = rules.endedInstanceMemory.milliseconds
        // Windows stay a little past their end: a goal event still in a backlog counts in event time.
        if !state.conversions.isEmpty { state.conversions.removeAll { now - $0.closesAt.milliseconds > d.maxAge.milliseconds } }
        if !state.arms.isEmpty {
            let live = state.instances
            state.arms.removeAll { r in
                !r.key.isEmpty && now - r.at.milliseconds > memory && !live.contains { $0.key == r.key && !$0.arm.isEmpty }
            }
        }
        state.ended.removeAll { e in
            let age = now - e.endedAt.milliseconds
            if age > memory { return true }
            if let j = engine.journeyIndex[e.journey], let cd = engine.compiled[j].def.reentryCooldown {
                return age >= cd.milliseconds
            }
            return false
        }
    }
}
