import PropertyBased
import Testing
import WaymarkEngine

// MARK: - Helpers (fileprivate)

fileprivate func reachable(_ id: String) -> CustomerProfile {
    CustomerProfile(customerID: id, timezone: "UTC", locale: "en",
                    contacts: [.sms: "+4700000000", .email: "a@example.com", .push: "tok"],
                    consent: [.sms: true, .email: true, .push: true])
}

/// No quiet hours, no caps: every send of a reachable customer goes out when decided.
fileprivate let openRules = Rules(defaultTimezone: "UTC", quietHours: QuietHoursRules(defaultWindow: nil), frequencyCaps: [],
                                  channelOrder: .journey)

fileprivate func makeEngine(_ journeys: [JourneyDefinition]) -> JourneyEngine {
    do { return try JourneyEngine(journeys: journeys, rules: openRules) } catch { fatalError("\(error)") }
}

fileprivate let start = ts("2026-03-02T00:00:00Z")
fileprivate let goalWindow = TimeSpan.days(2)
/// Waits end 7 s past a whole minute; events happen on whole minutes, so no timer coincides with an event.
fileprivate let waitA = TimeSpan(milliseconds: 3 * 3_600_000 + 7_000)
fileprivate let waitB = TimeSpan(milliseconds: 9 * 3_600_000 + 7_000)
fileprivate let cartExperiment = Experiment(name: "cart_exp", arms: [ExperimentArm(name: "A", weight: 1), ExperimentArm(name: "B", weight: 1)],
                                            holdoutPercent: 30)

/// Keyed cart journey: wait (3 h, arm B 9 h), one reminder (arm B another template), optionally a long trailing
/// wait (so the instance stays active until the purchase), exit on purchase of the same cart (converted).
fileprivate func cartJourney(goal: Bool = true, linger: Bool = false, cooldown: TimeSpan? = .zero, exit: Bool = true,
                             experiment: Experiment? = cartExperiment, window: TimeSpan = goalWindow) -> JourneyDefinition {
    var steps = [
        Step(id: "wait", action: .wait(waitA), variants: experiment == nil ? [:] : ["B": StepVariant(duration: waitB)]),
        Step(id: "remind", action: .send(SendStep(channels: [.email], template: "cart_reminder")),
             variants: experiment == nil ? [:] : ["B": StepVariant(template: "cart_reminder_b")]),
    ]
    if linger { steps.append(Step(id: "linger", action: .wait(.days(30)))) }
    return JourneyDefinition(
        name: "cart", version: 1, key: "cart_id",
        entry: [EntryTrigger(event: EventMatcher(type: "cart_abandoned"))],
        stages: [Stage(name: "main", steps: steps)],
        exits: exit ? [ExitGoal(on: EventMatcher(type: "purchase"), converted: true)] : [],
        reentryCooldown: cooldown, experiment: experiment,
        goal: goal ? ConversionGoal(event: EventMatcher(type: "purchase"), window: window) : nil)
}

fileprivate func cartEvent(_ id: String, _ type: String, _ at: Timestamp, _ cart: String?, customer: String) -> Touchpoint {
    Touchpoint(eventID: id, customerID: customer, type: type, occurredAt: at, source: "test",
               attributes: cart.map { ["cart_id": .string($0)] } ?? [:])
}

/// A conversion as compared between engine and reference.
fileprivate struct Conv: Hashable, Comparable, CustomStringConvertible {
    var key: String
    var arm: String
    var at: Int64
    var elapsed: Int64
    var message: String?
    var step: String?
    var channel: Channel?
    var cause: String
    static func < (a: Conv, b: Conv) -> Bool { (a.at, a.key, a.cause) < (b.at, b.key, b.cause) }
    var description: String {
        "\(key)[\(arm)] @\(Timestamp(milliseconds: at)) +\(elapsed)ms by \(cause) ← \(message ?? "none")/\(step ?? "-")/\(channel?.rawValue ?? "-")"
    }

    init(key: String, arm: String, at: Int64, elapsed: Int64, message: String?, step: String?, channel: Channel?, cause: String) {
        self.key = key; self.arm = arm; self.at = at; self.elapsed = elapsed; self.message = message; self.step = step
        self.channel = channel; self.cause = cause
    }

    init(_ d: Decision) {
        self.init(key: d.instanceKey ?? "", arm: d.arm ?? "", at: d.decidedAt.milliseconds, elapsed: d.elapsedMilliseconds ?? -1,
                  message: d.messageID?.description, step: d.step, channel: d.channel, cause: d.causedBy ?? "")
    }
}

fileprivate func conversions(_ ds: [Decision]) -> [Conv] { ds.filter { $0.reason == .converted }.map(Conv.init).sorted() }

// MARK: - Reference model

/// A deliberately simple model of conversion attribution, written from the contract (not from the
/// engine's code): one customer, one keyed journey (wait, one reminder, maybe a long trailing wait; exit
/// on purchase of the same cart), no caps, no quiet hours, a reachable profile.
///
/// - An instance for cart k starts at an entry event when none is active for k and the re-entry rule
///   allows it (cooldown zero: always; a cooldown: not before the previous instance's end + cooldown;
///   `nil`: never again). Its arm is ``Assignment/arm(in:customerID:key:)`` for (customer, k).
/// - It is active until a purchase of k ends it, or until it runs out of steps (right after the
///   reminder, or after the trailing wait).
/// - The reminder is sent at entry + wait(arm) if the instance is still active and not held out.
/// - With a goal: the instance's window is [entry, entry + W); a new instance for k replaces the window
///   of the previous one. The first purchase of k at t inside the window converts it, once,
///   attributed to its arm and the reminder if sent before t, whether or not the instance ended.
/// - Without a goal: a purchase that ends an active instance converts it (at the exit).
fileprivate struct AttributionModel {
    var customer: String
    var goal: Bool
    var linger: Bool
    var cooldown: TimeSpan?
    var experiment: Experiment

    struct Instance { var entry: Int64; var cause: String; var arm: String; var sendAt: Int64; var endAt: Int64; var sendDone = false }
    struct Window { var entry: Int64; var arm: String; var message: String? = nil }

    struct Output {
        var conversions: [Conv] = []
        var entries: [String] = []
        var sends: [String] = []
        var exits: [String] = []
    }

    func run(_ events: [Touchpoint], until end: Timestamp) -> Output {
        var active: [String: Instance] = [:]
        var windows: [String: Window] = [:]
        var ended: [String: Int64] = [:]
        var out = Output()
        let W = goalWindow.milliseconds

        func advance(to t: Int64) {
            while true {
                // The earliest timer due at or before t (sends before completions at the same instant).
                var best: (key: String, due: Int64)? = nil
                for (k, i) in active {
                    let due = i.sendDone ? i.endAt : i.sendAt
                    if due <= t, best == nil || due < best!.due || (due == best!.due && k < best!.key) { best = (k, due) }
                }
                guard let (k, due) = best else { return }
                var i = active[k]!
                if !i.sendDone {
                    i.sendDone = true
                    active[k] = i
                    if i.arm != Experiment.holdoutArm {
                        let id = MessageID(journey: "cart", version: 1, customerID: customer, step: "remind", causedBy: i.cause,
                                           instanceKey: k, sequence: 0).description
                        windows[k]?.message = id
                        out.sends.append("\(k)[\(i.arm)] \(i.arm == "B" ? "cart_reminder_b" : "cart_reminder") @\(Timestamp(milliseconds: due))")
                    }
                } else {
                    active[k] = nil
                    if cooldown != .zero { ended[k] = due }
                    if !goal { windows[k] = nil }
                }
            }
        }

        for e in events {
            let t = e.occurredAt.milliseconds
            advance(to: t)
            guard let k = e.attributes["cart_id"]?.keyString else { continue }
            if e.type == "purchase" {
                if goal, let w = windows[k], w.entry <= t, t < w.entry + W {
                    out.conversions.append(Conv(key: k, arm: w.arm, at: t, elapsed: t - w.entry, message: w.message,
                                                step: w.message == nil ? nil : "remind", channel: w.message == nil ? nil : .email,
                                                cause: e.eventID))
                    windows[k] = nil
                }
                if let i = active[k] {
                    if !goal, let w = windows[k] {
                        out.conversions.append(Conv(key: k, arm: w.arm, at: t, elapsed: t - i.entry, message: w.message,
                                                    step: w.message == nil ? nil : "remind", channel: w.message == nil ? nil : .email,
                                                    cause: e.eventID))
                        windows[k] = nil
                    }
                    active[k] = nil
                    if cooldown != .zero { ended[k] = t }
                    out.exits.append("\(k) @\(Timestamp(milliseconds: t))")
                }
            } else if e.type == "cart_abandoned" {
                if active[k] != nil { continue }
                if let end = ended[k] {
                    guard let cd = cooldown else { continue }
                    if t < end + cd.milliseconds { continue }
                }
                let arm = Assignment.arm(in: experiment, customerID: customer, key: k)
                let sendAt = t + (arm == "B" ? waitB : waitA).milliseconds
                active[k] = Instance(entry: t, cause: e.eventID, arm: arm, sendAt: sendAt,
                                     endAt: linger ? sendAt + TimeSpan.days(30).milliseconds : sendAt)
                windows[k] = Window(entry: t, arm: arm)
                out.entries.append("\(k)[\(arm)] @\(Timestamp(milliseconds: t))")
            }
        }
        advance(to: end.milliseconds)
        return out
    }
}

/// A random stream for one customer over ~10 days.
struct AttributionCase: CustomStringConvertible {
    var seed: UInt64
    var customer: String
    var goal: Bool
    var linger: Bool
    var cooldown: TimeSpan?
    var events: [Touchpoint]
    var end: Timestamp

    var description: String {
        "AttributionCase(seed: \(seed), customer: \(customer), goal: \(goal), linger: \(linger), cooldown: \(cooldown.map { "\($0)" } ?? "never"), events: \(events.count))"
    }

    init(seed: UInt64) {
        self.seed = seed
        var g = SplitMix(seed: seed)
        customer = "cust-\(g.next() % 1_000_000)"
        goal = g.chance(0.8)
        linger = g.chance(0.5)
        let cooldowns: [TimeSpan?] = [.zero, .zero, .hours(12), .days(1), nil]
        cooldown = g.pick(cooldowns)
        let carts = ["k1", "k2", "k3"]
        var raw: [(t: Int64, n: Int, e: Touchpoint)] = []
        var entries: [(cart: String, t: Int64)] = []
        for n in 0..<g.int(1...30) {
            let cart = g.pick(carts)
            var t = start.milliseconds + Int64(g.int(0...39)) * 6 * 3_600_000
            if g.chance(0.5) { t += Int64(g.int(0...359)) * 60_000 }
            let purchase = g.chance(0.4)
            if purchase, g.chance(0.35), let prior = entries.filter({ $0.cart == cart }).randomElement(using: &g) {
                // Right at, just before or just after the window's end.
                t = prior.t + goalWindow.milliseconds + Int64(g.pick([-60_000, 0, 60_000]))
            }
            if !purchase { entries.append((cart, t)) }
            let e = cartEvent("ev-\(n)", purchase ? "purchase" : "cart_abandoned", Timestamp(milliseconds: t), cart, customer: customer)
            raw.append((t, n, e))
        }
        raw.sort { ($0.t, $0.n) < ($1.t, $1.n) }
        events = raw.map(\.e)
        end = Timestamp(milliseconds: (raw.last?.t ?? start.milliseconds) + TimeSpan.days(1).milliseconds)
    }
}

let attributionCases = Gen.uint64(in: 0 ... .max).map { AttributionCase(seed: $0) }

@Suite struct AttributionReferenceTests {
    enum Mode: CaseIterable { case replayBatch, replayPerEvent, liveWithWakeUps }

    /// Runs the engine in replay timing: one call per event (state stored and reloaded between calls) or
    /// all events in one call; or live, one call per event at its time with the scheduler's wake-ups in
    /// between (`nextWakeUp`); then a final wake at `end`.
    fileprivate func engineRun(_ c: AttributionCase, mode: Mode) -> (decisions: [Decision], messages: [OutboundMessage]) {
        let e = makeEngine([cartJourney(goal: c.goal, linger: c.linger, cooldown: c.cooldown)])
        let p = reachable(c.customer)
        var state = CustomerState()
        var ds: [Decision] = []
        var ms: [OutboundMessage] = []
        if mode == .liveWithWakeUps {
            func wakeUps(upTo t: Timestamp) {
                var guardCount = 0
                while let w = state.nextWakeUp, w <= t, guardCount < 1000 {
                    guardCount += 1
                    let r = e.wake(state, customerID: c.customer, profile: p, now: w)
                    ds += r.decisions; ms += r.messages; state = r.state
                }
            }
            for ev in c.events {
                wakeUps(upTo: ev.occurredAt)
                let r = e.process(state, customerID: c.customer, profile: p, touchpoints: [ev], now: ev.occurredAt)
                ds += r.decisions; ms += r.messages; state = r.state
            }
            wakeUps(upTo: c.end)
            return (ds, ms)
        }
        if mode == .replayPerEvent {
            for ev in c.events {
                let r = e.process(state, customerID: c.customer, profile: p, touchpoints: [ev], now: ev.occurredAt, timing: .replay)
                ds += r.decisions
                ms += r.messages
                state = try! CustomerState(decoding: r.state.encoded())
            }
        } else {
            let r = e.process(state, customerID: c.customer, profile: p, touchpoints: c.events, now: c.events.last?.occurredAt ?? start,
                              timing: .replay)
            ds += r.decisions
            ms += r.messages
            state = r.state
        }
        let r = e.wake(state, customerID: c.customer, profile: p, now: c.end, timing: .replay)
        return (ds + r.decisions, ms + r.messages)
    }

    @Test func conversionsMatchTheReferenceModel() async {
        await propertyCheck(count: 300, input: attributionCases) { c in
            let model = AttributionModel(customer: c.customer, goal: c.goal, linger: c.linger, cooldown: c.cooldown, experiment: cartExperiment)
            let want = model.run(c.events, until: c.end)
            let stream = c.events.map { "\($0.eventID) \($0.type) \($0.attributes["cart_id"]?.keyString ?? "") @\($0.occurredAt)" }
            for mode in Mode.allCases {
                let (ds, ms) = engineRun(c, mode: mode)
                let got = conversions(ds)
                #expect(got == want.conversions.sorted(), "\(mode)\nstream:\n\(stream.joined(separator: "\n"))")
                let entries = ds.filter { $0.reason == .journeyEntered }
                    .map { "\($0.instanceKey ?? "")[\($0.arm ?? "")] @\($0.decidedAt)" }
                #expect(entries == want.entries, "\(mode)")
                let sends = ms.map { m in "\(m.variables["cart_id"]?.keyString ?? "")[\(m.arm)] \(m.template) @\(m.createdAt)" }
                #expect(sends.sorted() == want.sends.sorted(), "\(mode)")
                #expect(ds.filter { $0.reason == .sent }.count == ms.count)
                let exits = ds.filter { $0.reason == .journeyConverted }.map { "\($0.instanceKey ?? "") @\($0.decidedAt)" }
                #expect(exits == want.exits, "\(mode)")
                // Every converted decision is well-formed.
                for d in ds where d.reason == .converted {
                    #expect(d.journey == "cart" && d.journeyVersion == 1 && d.customerID == c.customer)
                    #expect(d.rule == (c.goal ? "goal:purchase" : "exit:purchase"))
                }
                // Holdout instances never get a message.
                #expect(!ds.contains { $0.reason == .sent && $0.arm == Experiment.holdoutArm })
            }
        }
    }

    /// The generator reaches the interesting cases (so the property is not vacuous).
    @Test func generatorCoversTheCases() {
        var holdoutConversions = 0, attributed = 0, unattributed = 0, afterEnd = 0, boundaryMisses = 0, total = 0
        for seed in UInt64(0)..<300 {
            let c = AttributionCase(seed: seed &* 0x9E37_79B9_7F4A_7C15)
            let model = AttributionModel(customer: c.customer, goal: c.goal, linger: c.linger, cooldown: c.cooldown, experiment: cartExperiment)
            let out = model.run(c.events, until: c.end)
            total += out.conversions.count
            holdoutConversions += out.conversions.filter { $0.arm == Experiment.holdoutArm }.count
            attributed += out.conversions.filter { $0.message != nil }.count
            unattributed += out.conversions.filter { $0.message == nil && $0.arm != Experiment.holdoutArm }.count
            afterEnd += out.conversions.filter { $0.elapsed > waitB.milliseconds && !c.linger && c.goal }.count
            for e in c.events where e.type == "purchase" {
                let t = e.occurredAt.milliseconds
                if c.events.contains(where: { $0.type == "cart_abandoned" && $0.attributes == e.attributes
                    && $0.occurredAt.milliseconds + goalWindow.milliseconds == t }) { boundaryMisses += 1 }
            }
        }
        #expect(total > 300 && holdoutConversions > 30 && attributed > 50 && unattributed > 30 && afterEnd > 10 && boundaryMisses > 10,
                "total \(total) holdout \(holdoutConversions) attributed \(attributed) unattributed \(unattributed) afterEnd \(afterEnd) boundary \(boundaryMisses)")
    }

    // MARK: Targeted cases

    fileprivate func replay(_ j: JourneyDefinition, _ customer: String, _ events: [Touchpoint], until end: Timestamp) -> [Decision] {
        let e = makeEngine([j])
        let r = e.process(CustomerState(), customerID: customer, profile: reachable(customer), touchpoints: events,
                          now: events.map(\.occurredAt).max()!, timing: .replay)
        return r.decisions + e.wake(r.state, customerID: customer, profile: reachable(customer), now: end, timing: .replay).decisions
    }

    fileprivate func customerWithArm(_ arm: String, key: String = "k1") -> String {
        for n in 0..<100_000 where Assignment.arm(in: cartExperiment, customerID: "c-\(n)", key: key) == arm { return "c-\(n)" }
        fatalError("no customer")
    }

    @Test func purchaseAfterTheReminderWithinTheWindowConverts() {
        let c = customerWithArm("A")
        let ds = replay(cartJourney(), c, [cartEvent("e1", "cart_abandoned", start, "k1", customer: c),
                                           cartEvent("e2", "purchase", start.adding(.days(1)), "k1", customer: c)],
                        until: start.adding(.days(3)))
        let id = MessageID(journey: "cart", version: 1, customerID: c, step: "remind", causedBy: "e1", instanceKey: "k1", sequence: 0)
        // The instance completed after the reminder; the purchase a day later still counts.
        #expect(ds.contains { $0.reason == .journeyCompleted })
        #expect(conversions(ds) == [Conv(key: "k1", arm: "A", at: start.adding(.days(1)).milliseconds, elapsed: TimeSpan.days(1).milliseconds,
                                         message: id.description, step: "remind", channel: .email, cause: "e2")])
        let d = ds.first { $0.reason == .converted }!
        #expect(d.rule == "goal:purchase" && d.stage == nil && d.instanceKey == "k1")
    }

    @Test func windowIsHalfOpen() {
        let c = customerWithArm("A")
        let at = start.adding(goalWindow)
        let miss = replay(cartJourney(), c, [cartEvent("e1", "cart_abandoned", start, "k1", customer: c),
                                             cartEvent("e2", "purchase", at, "k1", customer: c)], until: at.adding(.days(1)))
        #expect(conversions(miss).isEmpty)
        let justIn = at.adding(TimeSpan(milliseconds: -1))
        let hit = replay(cartJourney(), c, [cartEvent("e1", "cart_abandoned", start, "k1", customer: c),
                                            cartEvent("e2", "purchase", justIn, "k1", customer: c)], until: at.adding(.days(1)))
        #expect(conversions(hit).map(\.elapsed) == [goalWindow.milliseconds - 1])
        // Entry instant itself is inside.
        let same = replay(cartJourney(), c, [cartEvent("e1", "cart_abandoned", start, "k1", customer: c),
                                             cartEvent("e2", "purchase", start, "k1", customer: c)], until: at)
        #expect(conversions(same).map(\.elapsed) == [0])
        #expect(conversions(same).first?.message == nil)
    }

    @Test func purchaseOfAnotherCartDoesNotConvert() {
        let c = customerWithArm("A")
        let ds = replay(cartJourney(), c, [cartEvent("e1", "cart_abandoned", start, "k1", customer: c),
                                           cartEvent("e2", "purchase", start.adding(.hours(5)), "k2", customer: c),
                                           cartEvent("e3", "purchase", start.adding(.hours(6)), nil, customer: c)],
                        until: start.adding(.days(3)))
        #expect(conversions(ds).isEmpty)
        #expect(!ds.contains { $0.reason == .journeyConverted })
        // A goal that ignores the key converts every open window.
        var anyCart = cartJourney(exit: false)
        anyCart.goal = ConversionGoal(event: EventMatcher(type: "purchase", sameKey: false), window: goalWindow)
        let ds2 = replay(anyCart, c, [cartEvent("e1", "cart_abandoned", start, "k1", customer: c),
                                      cartEvent("e2", "cart_abandoned", start, "k2", customer: c),
                                      cartEvent("e3", "purchase", start.adding(.hours(6)), nil, customer: c)],
                         until: start.adding(.days(3)))
        #expect(Set(conversions(ds2).map(\.key)) == ["k1", "k2"])
    }

    @Test func goalFilterIsApplied() {
        let c = customerWithArm("A")
        var j = cartJourney(exit: false)
        j.goal = ConversionGoal(event: EventMatcher(type: "purchase", filter: Condition([Clause(.event("value"), .atLeast(10))])),
                                window: goalWindow)
        let small = Touchpoint(eventID: "e2", customerID: c, type: "purchase", occurredAt: start.adding(.hours(1)),
                               attributes: ["cart_id": .string("k1"), "value": .number(5)])
        let big = Touchpoint(eventID: "e3", customerID: c, type: "purchase", occurredAt: start.adding(.hours(2)),
                             attributes: ["cart_id": .string("k1"), "value": .number(50)])
        let ds = replay(j, c, [cartEvent("e1", "cart_abandoned", start, "k1", customer: c), small, big], until: start.adding(.days(3)))
        #expect(conversions(ds).map(\.cause) == ["e3"])
    }

    @Test func goalEventBeforeEntryDoesNotConvert() {
        let c = customerWithArm("A")
        let ds = replay(cartJourney(), c, [cartEvent("e0", "purchase", start, "k1", customer: c),
                                           cartEvent("e1", "cart_abandoned", start.adding(.hours(1)), "k1", customer: c)],
                        until: start.adding(.days(3)))
        #expect(conversions(ds).isEmpty)
        #expect(ds.contains { $0.reason == .journeyEntered })
    }

    @Test func lateGoalEventBeforeEntryDoesNotConvertLive() {
        // Live: the purchase (09:00) arrives after the entry (10:00) was processed; it happened before the
        // window opened, so it is no conversion of that instance.
        let c = customerWithArm("A")
        let e = makeEngine([cartJourney(exit: false)])
        let entry = start.adding(.hours(10))
        let r1 = e.process(CustomerState(), customerID: c, profile: reachable(c),
                           touchpoints: [cartEvent("e1", "cart_abandoned", entry, "k1", customer: c)], now: entry)
        let r2 = e.process(r1.state, customerID: c, profile: reachable(c),
                           touchpoints: [cartEvent("e0", "purchase", start.adding(.hours(9)), "k1", customer: c)],
                           now: entry.adding(.minutes(5)))
        #expect(conversions(r2.decisions).isEmpty)
    }

    @Test func lateGoalEventBeforeEntryDoesNotConvertReplay() {
        // In replay the clock never moves back: the window must be judged by the purchase's own time
        // (09:00, before the 10:00 entry that precedes it in partition order), not the clock. (This
        // test found that bug; live timing, above, never had it.)
        let c = customerWithArm("A")
        let e = makeEngine([cartJourney(exit: false)])
        let entry = start.adding(.hours(10))
        let r = e.process(CustomerState(), customerID: c, profile: reachable(c),
                          touchpoints: [cartEvent("e1", "cart_abandoned", entry, "k1", customer: c),
                                        cartEvent("e0", "purchase", start.adding(.hours(9)), "k1", customer: c)],
                          now: entry.adding(.minutes(5)), timing: .replay)
        #expect(conversions(r.decisions).isEmpty, "\(conversions(r.decisions))")
    }

    @Test func eachInstanceConvertsAtMostOnce() {
        let c = customerWithArm("A")
        // No exit on purchase: the instance lives on, the window sees three purchases.
        let ds = replay(cartJourney(linger: true, exit: false), c,
                        [cartEvent("e1", "cart_abandoned", start, "k1", customer: c),
                         cartEvent("e2", "purchase", start.adding(.hours(1)), "k1", customer: c),
                         cartEvent("e3", "purchase", start.adding(.hours(5)), "k1", customer: c),
                         cartEvent("e4", "purchase", start.adding(.days(1)), "k1", customer: c)],
                        until: start.adding(.days(3)))
        #expect(conversions(ds).map(\.cause) == ["e2"])
        #expect(conversions(ds).first?.message == nil)  // before the reminder (3 h)
        // The reminder still goes out after the conversion (no exit).
        #expect(ds.contains { $0.reason == .sent })
    }

    @Test func holdoutInstancesConvertWithoutAMessage() {
        let c = customerWithArm(Experiment.holdoutArm)
        let ds = replay(cartJourney(), c, [cartEvent("e1", "cart_abandoned", start, "k1", customer: c),
                                           cartEvent("e2", "purchase", start.adding(.hours(20)), "k1", customer: c)],
                        until: start.adding(.days(3)))
        #expect(ds.contains { $0.reason == .suppressedHoldout && $0.rule == "experiment:cart_exp:holdout" })
        #expect(!ds.contains { $0.reason == .sent })
        #expect(conversions(ds) == [Conv(key: "k1", arm: "holdout", at: start.adding(.hours(20)).milliseconds,
                                         elapsed: TimeSpan.hours(20).milliseconds, message: nil, step: nil, channel: nil, cause: "e2")])
    }

    @Test func conversionGoesToTheLastMessageBeforeIt() {
        let c = customerWithArm("A")
        let j = JourneyDefinition(
            name: "cart", version: 1, key: "cart_id", entry: [EntryTrigger(event: EventMatcher(type: "cart_abandoned"))],
            stages: [Stage(name: "main", steps: [
                Step(id: "first", action: .send(SendStep(channels: [.sms], template: "t1"))),
                Step(id: "w", action: .wait(.hours(4))),
                Step(id: "second", action: .send(SendStep(channels: [.push], template: "t2"))),
            ])],
            experiment: cartExperiment, goal: ConversionGoal(event: EventMatcher(type: "purchase"), window: goalWindow))
        func last(_ after: TimeSpan) -> Conv? {
            conversions(replay(j, c, [cartEvent("e1", "cart_abandoned", start, "k1", customer: c),
                                      cartEvent("e2", "purchase", start.adding(after), "k1", customer: c)],
                               until: start.adding(.days(3)))).first
        }
        let first = MessageID(journey: "cart", version: 1, customerID: c, step: "first", causedBy: "e1", instanceKey: "k1", sequence: 0)
        let second = MessageID(journey: "cart", version: 1, customerID: c, step: "second", causedBy: "e1", instanceKey: "k1", sequence: 1)
        let a = last(.hours(2)), b = last(.hours(6))
        #expect(a?.message == first.description && a?.step == "first" && a?.channel == .sms)
        #expect(b?.message == second.description && b?.step == "second" && b?.channel == .push)
    }

    @Test func withoutGoalAConvertingExitIsTheConversion() {
        let c = customerWithArm("B")
        // Trailing wait keeps the instance active until the purchase.
        let j = cartJourney(goal: false, linger: true)
        let ds = replay(j, c, [cartEvent("e1", "cart_abandoned", start, "k1", customer: c),
                               cartEvent("e2", "purchase", start.adding(.days(5)), "k1", customer: c)],
                        until: start.adding(.days(6)))
        let id = MessageID(journey: "cart", version: 1, customerID: c, step: "remind", causedBy: "e1", instanceKey: "k1", sequence: 0)
        // No window: five days after entry still converts, at the exit.
        #expect(conversions(ds) == [Conv(key: "k1", arm: "B", at: start.adding(.days(5)).milliseconds, elapsed: TimeSpan.days(5).milliseconds,
                                         message: id.description, step: "remind", channel: .email, cause: "e2")])
        #expect(ds.first { $0.reason == .converted }?.rule == "exit:purchase")
        #expect(ds.contains { $0.reason == .journeyConverted })
        // Converted decision precedes the lifecycle exit.
        let ci = ds.firstIndex { $0.reason == .converted }!, xi = ds.firstIndex { $0.reason == .journeyConverted }!
        #expect(ci < xi)

        // A non-converting exit is no conversion.
        var plainExit = cartJourney(goal: false, linger: true)
        plainExit.exits = [ExitGoal(on: EventMatcher(type: "purchase"), converted: false)]
        let ds2 = replay(plainExit, c, [cartEvent("e1", "cart_abandoned", start, "k1", customer: c),
                                        cartEvent("e2", "purchase", start.adding(.hours(1)), "k1", customer: c)],
                         until: start.adding(.days(1)))
        #expect(conversions(ds2).isEmpty && ds2.contains { $0.reason == .journeyExited })

        // Completed before the purchase: nothing left to convert.
        let ds3 = replay(cartJourney(goal: false), c, [cartEvent("e1", "cart_abandoned", start, "k1", customer: c),
                                                        cartEvent("e2", "purchase", start.adding(.days(1)), "k1", customer: c)],
                         until: start.adding(.days(2)))
        #expect(conversions(ds3).isEmpty)

        // Without an experiment: converted, with no arm.
        let ds4 = replay(cartJourney(goal: false, linger: true, experiment: nil), c,
                         [cartEvent("e1", "cart_abandoned", start, "k1", customer: c),
                          cartEvent("e2", "purchase", start.adding(.hours(1)), "k1", customer: c)], until: start.adding(.days(1)))
        #expect(conversions(ds4).map(\.arm) == [""])
        #expect(ds4.first { $0.reason == .converted }?.arm == nil)
    }

    @Test func liveTimingCountsTheWindowInEventTime() {
        // A purchase inside the window that is processed late (backlog) still converts; elapsed is event time.
        let c = customerWithArm("A")
        let e = makeEngine([cartJourney()])
        let r1 = e.process(CustomerState(), customerID: c, profile: reachable(c),
                           touchpoints: [cartEvent("e1", "cart_abandoned", start, "k1", customer: c)], now: start)
        let bought = start.adding(.days(1))
        let r2 = e.process(r1.state, customerID: c, profile: reachable(c),
                           touchpoints: [cartEvent("e2", "purchase", bought, "k1", customer: c)], now: start.adding(.days(3)))
        #expect(conversions(r2.decisions).map(\.elapsed) == [TimeSpan.days(1).milliseconds])
        // Outside the window in event time: no conversion even if processed promptly.
        let late = start.adding(.days(2))
        let r3 = e.process(r1.state, customerID: c, profile: reachable(c),
                           touchpoints: [cartEvent("e2", "purchase", late, "k1", customer: c)], now: late)
        #expect(conversions(r3.decisions).isEmpty)
    }

    @Test func reentrySupersedesTheWindowOfTheEndedInstance() {
        // The first instance completed (reminder sent); the cart is abandoned again inside the first window:
        // the new instance's window replaces it, so the purchase converts the second instance only.
        let c = customerWithArm("A")
        let ds = replay(cartJourney(), c, [cartEvent("e1", "cart_abandoned", start, "k1", customer: c),
                                           cartEvent("e2", "cart_abandoned", start.adding(.hours(10)), "k1", customer: c),
                                           cartEvent("e3", "purchase", start.adding(.hours(11)), "k1", customer: c)],
                        until: start.adding(.days(3)))
        #expect(ds.filter { $0.reason == .journeyEntered }.count == 2)
        #expect(conversions(ds).map(\.elapsed) == [TimeSpan.hours(1).milliseconds])
        #expect(conversions(ds).first?.message == nil)  // the second instance's reminder is not due yet
    }
}
