import Testing
import WaymarkEngine

// MARK: - Helpers (fileprivate: other test files define `profile`, `rules`, `engine`...)

/// A profile that can be reached on every channel, in UTC.
fileprivate func reachable(_ id: String) -> CustomerProfile {
    CustomerProfile(customerID: id, timezone: "UTC", locale: "en",
                    contacts: [.sms: "+4700000000", .email: "a@example.com", .push: "tok"],
                    consent: [.sms: true, .email: true, .push: true])
}

/// No quiet hours, no caps, step channel order.
fileprivate func openRules(globalControl: Double = 0) -> Rules {
    Rules(defaultTimezone: "UTC", quietHours: QuietHoursRules(defaultWindow: nil), frequencyCaps: [],
          channelOrder: .journey, experiments: ExperimentRules(globalControlPercent: globalControl))
}

fileprivate func makeEngine(_ journeys: [JourneyDefinition], _ r: Rules = openRules()) -> JourneyEngine {
    do { return try JourneyEngine(journeys: journeys, rules: r) } catch { fatalError("\(error)") }
}

fileprivate func event(_ id: String, _ type: String, _ at: Timestamp, customer: String,
                       _ attrs: [String: AttributeValue] = [:]) -> Touchpoint {
    Touchpoint(eventID: id, customerID: customer, type: type, occurredAt: at, source: "test", attributes: attrs)
}

fileprivate let t0 = ts("2026-05-04T10:00:00Z")

/// The first customer id `c-<n>` for which `predicate` holds (deterministic).
fileprivate func customer(_ predicate: (String) -> Bool) -> String {
    for n in 0..<100_000 where predicate("c-\(n)") { return "c-\(n)" }
    fatalError("no customer found")
}

fileprivate func send(_ id: String, _ template: String, channels: [Channel] = [.sms], transactional: Bool = false,
                      variants: [String: StepVariant] = [:]) -> Step {
    Step(id: id, action: .send(SendStep(channels: channels, template: template, transactional: transactional)), variants: variants)
}

/// Unkeyed journey on `ping`: a marketing send and a transactional send, both at once.
fileprivate func promo(_ x: Experiment?, steps: [Step]? = nil, cooldown: TimeSpan? = .zero) -> JourneyDefinition {
    JourneyDefinition(name: "promo", version: 1, entry: [EntryTrigger(event: EventMatcher(type: "ping"))],
                      stages: [Stage(name: "main", steps: steps ?? [send("offer", "offer_tpl"),
                                                                      send("receipt", "receipt_tpl", channels: [.email], transactional: true)])],
                      reentryCooldown: cooldown, experiment: x)
}

fileprivate let abExperiment = Experiment(name: "promo_test", arms: [ExperimentArm(name: "A", weight: 1), ExperimentArm(name: "B", weight: 1)],
                                          holdoutPercent: 40)

@Suite struct ExperimentTests {
    // MARK: Assignment golden values

    /// Golden values from an independent implementation (python3), pinned so assignment stays stable across
    /// processes, machines and releases:
    /// ```python
    /// M=(1<<64)-1
    /// def draw(salt,purpose,cust,key):
    ///     h=0xcbf29ce484222325
    ///     for part in (salt,purpose,cust,key):
    ///         for b in part.encode('utf-8')+b'\xff':
    ///             h=((h^b)*0x100000001b3)&M
    ///     z=(h+0x9E3779B97F4A7C15)&M
    ///     z=((z^(z>>30))*0xBF58476D1CE4E5B9)&M
    ///     z=((z^(z>>27))*0x94D049BB133111EB)&M
    ///     z^=z>>31
    ///     return (z>>11)/2**53
    /// print(repr(draw("cart_test","arm","c-1","k-1")))
    /// ```
    @Test(arguments: [
        ("cart_test", "arm", "c-1", "k-1", 0.5075565864247991),
        ("cart_test", "holdout", "c-1", "k-1", 0.10693472912989066),
        ("cart_test", "arm", "c-2", "", 0.8410780557464308),
        ("waymark-global-control", "global_control", "c-1", "", 0.35913501127798464),
        ("", "", "", "", 0.8109183319937353),
        ("salt-ø", "arm", "kunde-æå", "cart-77", 0.3596572920652483),
        ("exp", "holdout", "c-100000", "cart_3", 0.05046559011865115),
        ("welcome_ab", "arm", "0", "0", 0.2097729611401189),
    ])
    func drawGoldenValues(salt: String, purpose: String, customer: String, key: String, expected: Double) {
        #expect(Assignment.draw(salt: salt, purpose: purpose, customerID: customer, key: key) == expected)
    }

    @Test func armAndGlobalControlFollowTheirDraws() {
        let x = Experiment(name: "exp", salt: "s1", arms: [ExperimentArm(name: "A", weight: 2), ExperimentArm(name: "B", weight: 1),
                                                          ExperimentArm(name: "C", weight: 1)], holdoutPercent: 15)
        let gc = ExperimentRules(globalControlPercent: 7, globalControlSalt: "gsalt")
        for n in 0..<2_000 {
            let c = "c-\(n)", k = n % 3 == 0 ? "" : "cart-\(n % 7)"
            let h = Assignment.draw(salt: "s1", purpose: "holdout", customerID: c, key: k)
            let a = Assignment.draw(salt: "s1", purpose: "arm", customerID: c, key: k) * 4
            let want = h * 100 < 15 ? "holdout" : a < 2 ? "A" : a < 3 ? "B" : "C"
            #expect(Assignment.arm(in: x, customerID: c, key: k) == want)
            let g = Assignment.draw(salt: "gsalt", purpose: "global_control", customerID: c, key: "") * 100 < 7
            #expect(Assignment.inGlobalControl(gc, customerID: c) == g)
        }
        // No holdout: never "holdout"; 0 % global control: nobody.
        let noHold = Experiment(name: "exp", arms: x.arms)
        #expect((0..<500).allSatisfy { Assignment.arm(in: noHold, customerID: "c-\($0)", key: "") != Experiment.holdoutArm })
        #expect((0..<500).allSatisfy { !Assignment.inGlobalControl(ExperimentRules(), customerID: "c-\($0)") })
        // The salt defaults to the experiment name.
        #expect(Experiment(name: "n", arms: x.arms).salt == "n")
    }

    // MARK: Split

    @Test func splitMatchesWeightsWithinTolerance() {
        let x = Experiment(name: "split", arms: [ExperimentArm(name: "A", weight: 50), ExperimentArm(name: "B", weight: 30),
                                                 ExperimentArm(name: "C", weight: 20)], holdoutPercent: 10)
        let n = 100_000
        var counts: [String: Int] = [:]
        for i in 0..<n { counts[Assignment.arm(in: x, customerID: "cust-\(i)", key: ""), default: 0] += 1 }
        let expected: [String: Double] = ["holdout": 0.10, "A": 0.45, "B": 0.27, "C": 0.18]
        #expect(Set(counts.keys) == Set(expected.keys))
        var chi2 = 0.0
        for (arm, share) in expected {
            let e = share * Double(n), o = Double(counts[arm] ?? 0)
            chi2 += (o - e) * (o - e) / e
        }
        // df = 3, p = 0.001 critical value 16.266.
        #expect(chi2 < 16.266, "chi² = \(chi2), counts \(counts)")
        let holdShare = Double(counts["holdout"] ?? 0) / Double(n)
        #expect(abs(holdShare - 0.10) < 0.005, "holdout share \(holdShare)")

        // Keyed: the same customer with different keys is split too (per instance, not per customer).
        var keyed: [String: Int] = [:]
        for i in 0..<20_000 { keyed[Assignment.arm(in: x, customerID: "c-1", key: "cart-\(i)"), default: 0] += 1 }
        var chi2k = 0.0
        for (arm, share) in expected {
            let e = share * 20_000, o = Double(keyed[arm] ?? 0)
            chi2k += (o - e) * (o - e) / e
        }
        #expect(chi2k < 16.266, "keyed chi² = \(chi2k), counts \(keyed)")

        // A different salt gives an independent split: 2x2 contingency (arm A or not, under two salts).
        let y = Experiment(name: "split", salt: "other", arms: x.arms, holdoutPercent: 10)
        var table = [[0.0, 0.0], [0.0, 0.0]]
        for i in 0..<n {
            let a = Assignment.arm(in: x, customerID: "cust-\(i)", key: "") == "A" ? 1 : 0
            let b = Assignment.arm(in: y, customerID: "cust-\(i)", key: "") == "A" ? 1 : 0
            table[a][b] += 1
        }
        var chiInd = 0.0
        for r in 0..<2 { for c in 0..<2 {
            let e = (table[r][0] + table[r][1]) * (table[0][c] + table[1][c]) / Double(n)
            chiInd += (table[r][c] - e) * (table[r][c] - e) / e
        } }
        // df = 1, p = 0.001 critical value 10.828.
        #expect(chiInd < 10.828, "independence chi² = \(chiInd), table \(table)")

        // Global control share.
        let gc = ExperimentRules(globalControlPercent: 5)
        let inGC = (0..<n).filter { Assignment.inGlobalControl(gc, customerID: "cust-\($0)") }.count
        #expect(abs(Double(inGC) / Double(n) - 0.05) < 0.005, "global control share \(Double(inGC) / Double(n))")
    }

    // MARK: Holdout and global control in the engine

    @Test func holdoutEntersIsSuppressedButGetsTransactional() {
        let c = customer { Assignment.arm(in: abExperiment, customerID: $0, key: "") == Experiment.holdoutArm }
        let e = makeEngine([promo(abExperiment)])
        let r = e.process(CustomerState(), customerID: c, profile: reachable(c), touchpoints: [event("e1", "ping", t0, customer: c)],
                          now: t0, timing: .replay)
        let entered = r.decisions.first { $0.reason == .journeyEntered }
        #expect(entered?.arm == "holdout" && entered?.journey == "promo")
        let held = r.decisions.filter { $0.reason == .suppressedHoldout }
        #expect(held.count == 1)
        #expect(held.first?.rule == "experiment:promo_test:holdout" && held.first?.step == "offer" && held.first?.arm == "holdout")
        #expect(held.first?.messageID != nil)
        // Only the transactional message goes out, tagged with the arm.
        #expect(r.messages.map(\.template) == ["receipt_tpl"])
        #expect(r.messages.allSatisfy { $0.arm == "holdout" })
        #expect(r.decisions.filter { $0.reason == .sent }.map(\.step) == ["receipt"])
        // Every decision of the instance carries the arm.
        #expect(r.decisions.allSatisfy { $0.arm == "holdout" }, "\(r.decisions.map { "\($0.reason) \($0.arm ?? "nil")" })")
        #expect(r.state.arms == [ArmRecord(experiment: "promo_test", key: "", arm: "holdout", at: t0)])
        #expect(r.state.counter(journey: "promo", kind: .entered) == 1)
    }

    @Test func globalControlIsSuppressedInEveryJourney() {
        let gcRules = openRules(globalControl: 20)
        let c = customer { Assignment.inGlobalControl(gcRules.experiments, customerID: $0) }
        let other = customer { !Assignment.inGlobalControl(gcRules.experiments, customerID: $0)
            && Assignment.arm(in: abExperiment, customerID: $0, key: "") == "A" }
        // One journey with an experiment, one without.
        var plain = promo(nil)
        plain.name = "plain"
        plain.entry = [EntryTrigger(event: EventMatcher(type: "pong"))]
        let e = makeEngine([promo(abExperiment), plain], gcRules)
        let r = e.process(CustomerState(), customerID: c, profile: reachable(c),
                          touchpoints: [event("e1", "ping", t0, customer: c), event("e2", "pong", t0, customer: c)], now: t0, timing: .replay)
        let held = r.decisions.filter { $0.reason == .suppressedHoldout }
        #expect(held.map(\.journey) == ["promo", "plain"])
        #expect(held.allSatisfy { $0.rule == "experiment:global_control" && $0.arm == "global_control" && $0.step == "offer" })
        #expect(r.messages.map(\.template) == ["receipt_tpl", "receipt_tpl"])
        #expect(r.messages.allSatisfy { $0.arm == "global_control" })
        #expect(r.decisions.allSatisfy { $0.arm == "global_control" })
        #expect(r.decisions.filter { $0.reason == .journeyEntered }.count == 2)

        // Outside the group: the experiment journey gets its arm, the plain one none.
        let r2 = e.process(CustomerState(), customerID: other, profile: reachable(other),
                           touchpoints: [event("e1", "ping", t0, customer: other), event("e2", "pong", t0, customer: other)],
                           now: t0, timing: .replay)
        #expect(r2.decisions.filter { $0.reason == .suppressedHoldout }.isEmpty)
        #expect(r2.messages.count == 4)
        #expect(r2.messages.filter { $0.journey == "promo" }.allSatisfy { $0.arm == "A" })
        #expect(r2.messages.filter { $0.journey == "plain" }.allSatisfy { $0.arm == "" })
        #expect(r2.decisions.filter { $0.journey == "promo" }.allSatisfy { $0.arm == "A" })
        #expect(r2.decisions.filter { $0.journey == "plain" }.allSatisfy { $0.arm == nil })
    }

    @Test func armIsRecordedOnEveryDecisionAndMessage() {
        let c = customer { Assignment.arm(in: abExperiment, customerID: $0, key: "") == "B" }
        let steps = [send("first", "t1"), Step(id: "w", action: .wait(.hours(2))), send("second", "t2", channels: [.push])]
        let e = makeEngine([promo(abExperiment, steps: steps)])
        let r1 = e.process(CustomerState(), customerID: c, profile: reachable(c), touchpoints: [event("e1", "ping", t0, customer: c)],
                           now: t0, timing: .replay)
        #expect(r1.state.instances.map(\.arm) == ["B"])
        #expect(r1.nextWakeUp == t0.adding(.hours(2)))
        let r2 = e.wake(r1.state, customerID: c, profile: reachable(c), now: t0.adding(.hours(3)), timing: .replay)
        let all = r1.decisions + r2.decisions
        #expect(all.contains { $0.reason == .journeyCompleted })
        #expect(all.allSatisfy { $0.arm == "B" }, "\(all.map { "\($0.reason) \($0.arm ?? "nil")" })")
        #expect((r1.messages + r2.messages).map(\.arm) == ["B", "B"])
        #expect((r1.messages + r2.messages).map(\.template) == ["t1", "t2"])
    }

    // MARK: Variants

    @Test func variantsOverrideTemplateChannelsWaitAndSkip() {
        let c = customer { Assignment.arm(in: abExperiment, customerID: $0, key: "") == "A" }
        let d = customer { Assignment.arm(in: abExperiment, customerID: $0, key: "") == "B" }
        let steps = [
            send("hello", "hello_a", channels: [.sms], variants: ["B": StepVariant(template: "hello_b", channels: [.email, .sms])]),
            Step(id: "pause", action: .wait(.hours(1)), variants: ["B": StepVariant(duration: .hours(5))]),
            send("nudge", "nudge_tpl", channels: [.push], variants: ["B": StepVariant(skip: true)]),
            send("bye", "bye_tpl", channels: [.sms]),
        ]
        let e = makeEngine([promo(abExperiment, steps: steps)])
        func run(_ id: String) -> (first: EngineResult, later: EngineResult) {
            let r = e.process(CustomerState(), customerID: id, profile: reachable(id), touchpoints: [event("e1", "ping", t0, customer: id)],
                              now: t0, timing: .replay)
            return (r, e.wake(r.state, customerID: id, profile: reachable(id), now: t0.adding(.hours(10)), timing: .replay))
        }
        let a = run(c), b = run(d)
        // Template and channels.
        #expect(a.first.messages.map(\.template) == ["hello_a"] && a.first.messages.map(\.channel) == [.sms])
        #expect(b.first.messages.map(\.template) == ["hello_b"] && b.first.messages.map(\.channel) == [.email])
        #expect(b.first.messages.first?.fallbackChannels == [.sms])
        // Wait duration.
        #expect(a.first.nextWakeUp == t0.adding(.hours(1)))
        #expect(b.first.nextWakeUp == t0.adding(.hours(5)))
        // Skip: B never runs the nudge (no message, no decision), A does.
        #expect(a.later.messages.map(\.template) == ["nudge_tpl", "bye_tpl"])
        #expect(b.later.messages.map(\.template) == ["bye_tpl"])
        #expect(!b.later.decisions.contains { $0.step == "nudge" })
        #expect(b.later.messages.first?.createdAt == t0.adding(.hours(5)))
        #expect(a.later.messages.first?.createdAt == t0.adding(.hours(1)))
    }

    @Test func holdoutRunsStepsAsWritten() {
        // Variants are per arm name; the holdout arm takes the step's own wait.
        let c = customer { Assignment.arm(in: abExperiment, customerID: $0, key: "") == Experiment.holdoutArm }
        let steps = [Step(id: "pause", action: .wait(.hours(1)), variants: ["A": StepVariant(duration: .hours(4)), "B": StepVariant(duration: .hours(6))]),
                     send("hello", "hello_tpl")]
        let e = makeEngine([promo(abExperiment, steps: steps)])
        let r = e.process(CustomerState(), customerID: c, profile: reachable(c), touchpoints: [event("e1", "ping", t0, customer: c)],
                          now: t0, timing: .replay)
        #expect(r.nextWakeUp == t0.adding(.hours(1)))
    }

    @Test func branchOnJourneyArm() {
        let a = customer { Assignment.arm(in: abExperiment, customerID: $0, key: "") == "A" }
        let b = customer { Assignment.arm(in: abExperiment, customerID: $0, key: "") == "B" }
        let h = customer { Assignment.arm(in: abExperiment, customerID: $0, key: "") == Experiment.holdoutArm }
        let steps = [
            Step(id: "route", action: .branch(cases: [BranchCase(condition: Condition([Clause(.journey("arm"), .equals(.string("B")))]),
                                                                 target: .step("b_send"))], otherwise: .next)),
            send("a_send", "a_tpl"),
            Step(id: "a_done", action: .branch(cases: [], otherwise: .end)),
            send("b_send", "b_tpl"),
        ]
        let e = makeEngine([promo(abExperiment, steps: steps)])
        func templates(_ id: String) -> [String] {
            e.process(CustomerState(), customerID: id, profile: reachable(id), touchpoints: [event("e1", "ping", t0, customer: id)],
                      now: t0, timing: .replay).messages.map(\.template)
        }
        #expect(templates(a) == ["a_tpl"])
        #expect(templates(b) == ["b_tpl"])
        #expect(templates(h) == [])  // holdout takes the A path, suppressed
        // journey.arm in a journey without an experiment is absent: exists(false) holds.
        let noX = [Step(id: "route", action: .branch(cases: [BranchCase(condition: Condition([Clause(.journey("arm"), .exists(false))]),
                                                                       target: .step("none"))], otherwise: .end)),
                   send("none", "none_tpl")]
        let e2 = makeEngine([promo(nil, steps: noX)])
        #expect(e2.process(CustomerState(), customerID: a, profile: reachable(a), touchpoints: [event("e1", "ping", t0, customer: a)],
                           now: t0, timing: .replay).messages.map(\.template) == ["none_tpl"])
    }

    // MARK: Re-assignment

    @Test func weightChangeKeepsAssignedArmsAndRemovedArmsAreRedrawn() {
        let old = Experiment(name: "promo_test", arms: [ExperimentArm(name: "A", weight: 1000), ExperimentArm(name: "B", weight: 1)])
        let new = Experiment(name: "promo_test", arms: [ExperimentArm(name: "A", weight: 1), ExperimentArm(name: "B", weight: 1000)])
        let x = customer { Assignment.arm(in: old, customerID: $0, key: "") == "A" && Assignment.arm(in: new, customerID: $0, key: "") == "B" }
        let y = customer { $0 != x && Assignment.arm(in: new, customerID: $0, key: "") == "B" }
        let e1 = makeEngine([promo(old)])
        let r1 = e1.process(CustomerState(), customerID: x, profile: reachable(x), touchpoints: [event("e1", "ping", t0, customer: x)],
                            now: t0, timing: .replay)
        #expect(r1.messages.map(\.arm) == ["A", "A"])
        #expect(r1.state.instances.isEmpty)  // completed; the arm record stays
        #expect(r1.state.arms.map(\.arm) == ["A"])
        // Weights flip: X re-enters (unkeyed, cooldown zero) and keeps A.
        let e2 = makeEngine([promo(new)])
        let later = t0.adding(.hours(1))
        let r2 = e2.process(r1.state, customerID: x, profile: reachable(x), touchpoints: [event("e2", "ping", later, customer: x)],
                            now: later, timing: .replay)
        #expect(r2.decisions.first { $0.reason == .journeyEntered }?.arm == "A")
        #expect(r2.messages.map(\.arm) == ["A", "A"])
        #expect(r2.state.arms == [ArmRecord(experiment: "promo_test", key: "", arm: "A", at: later)])
        // The kept arm survives the state encoding.
        let stored = try! CustomerState(decoding: r1.state.encoded())
        #expect(e2.process(stored, customerID: x, profile: reachable(x), touchpoints: [event("e2", "ping", later, customer: x)],
                           now: later, timing: .replay).messages.map(\.arm) == ["A", "A"])
        // A new customer is drawn with the new weights.
        let ry = e2.process(CustomerState(), customerID: y, profile: reachable(y), touchpoints: [event("e1", "ping", later, customer: y)],
                            now: later, timing: .replay)
        #expect(ry.messages.map(\.arm) == ["B", "B"])
        // Arm A removed: X is drawn again (among B, C) and the record is replaced.
        let removed = Experiment(name: "promo_test", arms: [ExperimentArm(name: "B", weight: 1), ExperimentArm(name: "C", weight: 1)])
        let redraw = Assignment.arm(in: removed, customerID: x, key: "")
        let r3 = makeEngine([promo(removed)]).process(r2.state, customerID: x, profile: reachable(x),
                                                      touchpoints: [event("e3", "ping", later.adding(.hours(1)), customer: x)],
                                                      now: later.adding(.hours(1)), timing: .replay)
        #expect(r3.messages.map(\.arm) == [redraw, redraw])
        #expect(r3.state.arms.map(\.arm) == [redraw])
        // Another experiment (different name) is assigned independently of the kept record.
        let renamed = Experiment(name: "promo_test_2", arms: new.arms)
        let r4 = makeEngine([promo(renamed)]).process(r1.state, customerID: x, profile: reachable(x),
                                                      touchpoints: [event("e4", "ping", later, customer: x)], now: later, timing: .replay)
        let fresh = Assignment.arm(in: renamed, customerID: x, key: "")
        #expect(r4.messages.map(\.arm) == [fresh, fresh])
        #expect(Set(r4.state.arms.map(\.experiment)) == ["promo_test", "promo_test_2"])
    }

    @Test func keptHoldoutIsRedrawnWhenTheHoldoutIsRemoved() {
        let c = customer { Assignment.arm(in: abExperiment, customerID: $0, key: "") == Experiment.holdoutArm }
        let r1 = makeEngine([promo(abExperiment)]).process(CustomerState(), customerID: c, profile: reachable(c),
                                                           touchpoints: [event("e1", "ping", t0, customer: c)], now: t0, timing: .replay)
        #expect(r1.state.arms.map(\.arm) == ["holdout"])
        // Smaller holdout: still held out (nobody re-assigned).
        var smaller = abExperiment
        smaller.holdoutPercent = 1
        let later = t0.adding(.hours(1))
        let r2 = makeEngine([promo(smaller)]).process(r1.state, customerID: c, profile: reachable(c),
                                                      touchpoints: [event("e2", "ping", later, customer: c)], now: later, timing: .replay)
        #expect(r2.decisions.first { $0.reason == .journeyEntered }?.arm == "holdout")
        // No holdout any more: drawn among the arms.
        var none = abExperiment
        none.holdoutPercent = 0
        let r3 = makeEngine([promo(none)]).process(r1.state, customerID: c, profile: reachable(c),
                                                   touchpoints: [event("e2", "ping", later, customer: c)], now: later, timing: .replay)
        let want = Assignment.arm(in: none, customerID: c, key: "")
        #expect(want != "holdout")
        #expect(r3.decisions.first { $0.reason == .journeyEntered }?.arm == want)
        #expect(r3.messages.count == 2)
        #expect(r3.state.arms.map(\.arm) == [want])
    }

    @Test func keyedInstancesAreAssignedPerKey() {
        let x = Experiment(name: "cart_x", arms: [ExperimentArm(name: "A", weight: 1), ExperimentArm(name: "B", weight: 1)], holdoutPercent: 20)
        let j = JourneyDefinition(name: "cart", version: 1, key: "cart_id", entry: [EntryTrigger(event: EventMatcher(type: "cart_abandoned"))],
                                  stages: [Stage(name: "main", steps: [send("remind", "r")])], experiment: x)
        let e = makeEngine([j])
        let events = (0..<12).map { event("e\($0)", "cart_abandoned", t0, customer: "c-9", ["cart_id": .string("k\($0)")]) }
        let r = e.process(CustomerState(), customerID: "c-9", profile: reachable("c-9"), touchpoints: events, now: t0, timing: .replay)
        for n in 0..<12 {
            let want = Assignment.arm(in: x, customerID: "c-9", key: "k\(n)")
            #expect(r.decisions.first { $0.reason == .journeyEntered && $0.instanceKey == "k\(n)" }?.arm == want)
        }
        #expect(Set(r.state.arms.map(\.key)) == Set((0..<12).map { "k\($0)" }))
    }

    // MARK: Configuration checks

    @Test func invalidExperimentsAreRejected() {
        func rejects(_ x: Experiment?, steps: [Step]? = nil, r: Rules = openRules()) -> Bool {
            (try? JourneyEngine(journeys: [promo(x, steps: steps)], rules: r)) == nil
        }
        let arms = [ExperimentArm(name: "A", weight: 1), ExperimentArm(name: "B", weight: 1)]
        #expect(rejects(Experiment(name: "x", arms: [ExperimentArm(name: "A", weight: 1)])))
        #expect(rejects(Experiment(name: "x", arms: [ExperimentArm(name: "A", weight: 1), ExperimentArm(name: "A", weight: 1)])))
        #expect(rejects(Experiment(name: "x", arms: [ExperimentArm(name: "A", weight: 1), ExperimentArm(name: "holdout", weight: 1)])))
        #expect(rejects(Experiment(name: "x", arms: [ExperimentArm(name: "A", weight: 0), ExperimentArm(name: "B", weight: 1)])))
        #expect(rejects(Experiment(name: "x", arms: arms, holdoutPercent: 50)))
        #expect(rejects(Experiment(name: "", arms: arms)))
        #expect(rejects(Experiment(name: "x", arms: arms), steps: [send("s", "t", variants: ["Z": StepVariant(skip: true)])]))
        #expect(rejects(nil, steps: [send("s", "t", variants: ["A": StepVariant(skip: true)])]))
        #expect(rejects(nil, r: openRules(globalControl: 50)))
        #expect(!rejects(Experiment(name: "x", arms: arms, holdoutPercent: 49.9)))
        // The same experiment in two journeys.
        var other = promo(Experiment(name: "x", arms: arms))
        other.name = "other"
        #expect((try? JourneyEngine(journeys: [promo(Experiment(name: "x", arms: arms)), other], rules: openRules())) == nil)
    }

    // MARK: State coding

    @Test func stateWithArmsAndConversionsRoundTrips() throws {
        let x = customer { Assignment.arm(in: abExperiment, customerID: $0, key: "") == "B" }
        // A live state: an instance waiting, an open window with its last message, a held message with an arm.
        let steps = [send("first", "t1"), Step(id: "w", action: .wait(.hours(2))), send("second", "t2")]
        var j = promo(abExperiment, steps: steps)
        j.goal = ConversionGoal(event: EventMatcher(type: "purchase"), window: .days(2))
        var night = openRules()
        night.quietHours = QuietHoursRules(defaultWindow: QuietWindow(startMinute: 0, endMinute: 23 * 60 + 59, rule: "quiet_hours:default"))
        let r = makeEngine([j], night).process(CustomerState(), customerID: x, profile: reachable(x),
                                               touchpoints: [event("e1", "ping", t0, customer: x)], now: t0, timing: .replay)
        #expect(r.state.instances.first?.arm == "B")
        #expect(r.state.arms.count == 1 && r.state.conversions.count == 1)
        #expect(r.state.deferred.first?.message.arm == "B")
        #expect(r.state.conversions.first?.lastMessage != nil && r.state.conversions.first?.lastStep == "first")
        #expect(try CustomerState(decoding: r.state.encoded()) == r.state)

        // Every field set by hand, including a window without a last message.
        var s = CustomerState()
        s.clock = t0
        s.arms = [ArmRecord(experiment: "e", key: "", arm: "A", at: t0.adding(.days(-3))),
                  ArmRecord(experiment: "e", key: "k-ø", arm: "global_control", at: t0)]
        s.conversions = [OpenConversion(journey: "j", version: 7, key: "k", arm: "holdout", enteredAt: t0.adding(.hours(-1)),
                                        closesAt: t0.adding(.days(2)), lastMessage: MessageID(raw: 0xDEAD_BEEF_0000_0001),
                                        lastStep: "remind", lastChannel: .push),
                         OpenConversion(journey: "j2", version: 1, key: "", arm: "", enteredAt: t0, closesAt: Timestamp(milliseconds: Int64.max / 4))]
        s.instances = [JourneyInstance(journey: "j", version: 7, key: "k", enteredAt: t0, stage: "main", stageEnteredAt: t0,
                                       stagesReached: [], step: "w", wakeAt: t0.adding(.hours(1)), causedBy: "e1", sendSequence: 1,
                                       context: [], arm: "holdout")]
        #expect(try CustomerState(decoding: s.encoded()) == s)
        #expect(s.encoded()[2] == 3)
    }

    @Test func formatVersion2StillDecodes() throws {
        // No v2 fixture is checked in: build v2 bytes from a v3 encoding. v2 lacks the instance arm string
        // (last field of an instance), the message arm and the arms/conversions sections at the end.
        var s = CustomerState()
        s.clock = t0
        s.instances = [JourneyInstance(journey: "j", version: 2, key: "k", enteredAt: t0, stage: "main", stageEnteredAt: t0,
                                       stagesReached: [StageVisit(stage: "main", at: t0)], step: "w", wakeAt: t0.adding(.hours(1)),
                                       causedBy: "e1", sendSequence: 3, context: [ContextField(name: "cart_id", value: .string("k"))])]
        let v3 = s.encoded()
        // Tail of v3: instance arm "" (0), then ended, recent, caps, deferred, counters, arms, conversions counts (all 0).
        #expect(Array(v3.suffix(8)) == [0, 0, 0, 0, 0, 0, 0, 0])
        var v2 = Array(v3.dropLast(8)) + [0, 0, 0, 0, 0]
        v2[2] = 2
        let decoded = try CustomerState(decoding: v2)
        #expect(decoded == s)
        #expect(decoded.instances.first?.arm == "" && decoded.arms.isEmpty && decoded.conversions.isEmpty)
        // Without instances: only the two trailing sections differ.
        var t = CustomerState()
        t.clock = t0
        t.ended = [EndedInstance(journey: "j", key: "k", endedAt: t0)]
        t.counters = [FunnelCounter(journey: "j", stage: "", kind: .entered, count: 4)]
        var w = Array(t.encoded().dropLast(2))
        w[2] = 2
        #expect(try CustomerState(decoding: w) == t)
        // A v2 reader's bytes with v3 tails are rejected as trailing garbage, and vice versa truncated.
        var bad = t.encoded()
        bad[2] = 2
        #expect(throws: StateDecodingError.self) { try CustomerState(decoding: bad) }
        var short = w
        short[2] = 3
        #expect(throws: StateDecodingError.self) { try CustomerState(decoding: short) }
    }
}
