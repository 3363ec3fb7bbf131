import Testing
import WaymarkEngine

@Suite struct EngineRuleTests {
    func reasons(_ r: EngineResult) -> [DecisionReason] { r.decisions.map(\.reason).filter(\.isMessageOutcome) }

    @Test func sendsImmediatelyOutsideQuietHours() {
        let e = engine([instantJourney("welcome")], rules())
        let r = e.process(CustomerState(), customerID: "c-1", profile: profile(), touchpoints: [tp("e1", "ping", "2026-06-10T12:00:00+02:00")],
                          now: ts("2026-06-10T12:00:01+02:00"))
        #expect(r.messages.count == 1)
        let m = r.messages[0]
        #expect(m.channel == .sms && m.template == "welcome_tpl" && m.causedBy == "e1" && m.customerID == "c-1")
        // Sent at the decision moment; expiry counts from the moment the step became due (the event).
        #expect(m.sendAfter == ts("2026-06-10T12:00:01+02:00") && m.expiresAt == ts("2026-06-10T12:00:00+02:00").adding(.hours(48)))
        #expect(reasons(r) == [.sent])
        #expect(r.decisions.map(\.reason) == [.journeyEntered, .stageReached, .journeyCompleted, .sent])
        #expect(r.state.instances.isEmpty)
        #expect(r.state.counter(journey: "welcome", kind: .entered) == 1)
        #expect(r.state.counter(journey: "welcome", kind: .completed) == 1)
    }

    @Test func deferredToWindowEndThenReleased() {
        let e = engine([instantJourney("welcome")], rules(spread: .minutes(30)))
        let r = e.process(CustomerState(), customerID: "c-1", profile: profile(), touchpoints: [tp("e1", "ping", "2026-03-28T22:00:00+01:00")],
                          now: ts("2026-03-28T22:00:00+01:00"))
        #expect(r.messages.isEmpty)
        let d = r.decisions.first { $0.reason == .deferredQuietHours }!
        #expect(d.rule == "quiet_hours:default")
        let end = ts("2026-03-29T08:00:00+02:00")
        #expect(d.sendAfter! >= end && d.sendAfter! < end.adding(.minutes(30)))
        #expect(r.nextWakeUp == d.sendAfter)
        // Waking early does nothing; waking at the release publishes with the planned send_after.
        let early = e.wake(r.state, customerID: "c-1", profile: profile(), now: end.adding(TimeSpan(milliseconds: -1)))
        #expect(early.messages.isEmpty && early.decisions.isEmpty)
        let r2 = e.wake(early.state, customerID: "c-1", profile: profile(), now: d.sendAfter!)
        #expect(r2.messages.count == 1 && r2.messages[0].sendAfter == d.sendAfter && r2.messages[0].messageID == d.messageID)
        #expect(r2.decisions.map(\.reason) == [.sent])
        #expect(r2.decisions[0].rule == "deferral_released:quiet_hours:default")
        #expect(r2.nextWakeUp == nil && r2.state.deferred.isEmpty)
    }

    @Test(arguments: [
        ("2026-06-10T20:59:00+02:00", nil as String?),
        ("2026-06-10T21:00:00+02:00", "2026-06-11T08:00:00+02:00"),
        ("2026-06-10T23:30:00+02:00", "2026-06-11T08:00:00+02:00"),
        ("2026-06-11T00:30:00+02:00", "2026-06-11T08:00:00+02:00"),
        ("2026-06-11T08:00:00+02:00", nil),
    ])
    func windowCrossingMidnight(at: String, release: String?) {
        let e = engine([instantJourney("welcome")], rules(spread: .zero))
        let r = e.process(CustomerState(), customerID: "c-1", profile: profile(), touchpoints: [tp("e1", "ping", at)], now: ts(at))
        if let release {
            #expect(reasons(r) == [.deferredQuietHours])
            #expect(r.state.deferred.first?.message.sendAfter == ts(release))
        } else {
            #expect(reasons(r) == [.sent])
        }
    }

    @Test func customerWithoutProfile() {
        let at = "2026-06-10T12:00:00+02:00"
        let strict = engine([instantJourney("welcome", channels: [.sms, .email])], rules())
        let r = strict.process(CustomerState(), customerID: "c-1", profile: nil, touchpoints: [tp("e1", "ping", at)], now: ts(at))
        #expect(r.messages.isEmpty)
        // Held for the profile (15 min by default), then decided without one.
        let held = r.decisions.first { $0.reason.isMessageOutcome }!
        #expect(held.reason == .deferredAwaitingProfile && held.rule == "consent:awaiting_profile")
        #expect(held.sendAfter == ts(at).adding(.minutes(15)) && r.nextWakeUp == held.sendAfter)
        let late = strict.wake(r.state, customerID: "c-1", profile: nil, now: ts(at).adding(.minutes(15)))
        let d = late.decisions.first { $0.reason.isMessageOutcome }!
        #expect(d.reason == .suppressedNoConsent && d.rule == "consent:no_profile" && d.detail == "no profile arrived within 15m")
        #expect(d.skipped.map(\.channel) == [.sms, .email])
        #expect(late.state.deferred.isEmpty && late.nextWakeUp == nil)
        // Configured to allow: sent, and quiet hours use the default zone (Oslo): 22:00 Oslo is deferred.
        let lax = engine([instantJourney("welcome")], rules(allowWithoutProfile: true))
        #expect(lax.process(CustomerState(), customerID: "c-1", profile: nil, touchpoints: [tp("e1", "ping", at)], now: ts(at)).messages.count == 1)
        let night = "2026-06-10T22:00:00+02:00"
        #expect(reasons(lax.process(CustomerState(), customerID: "c-1", profile: nil, touchpoints: [tp("e1", "ping", night)], now: ts(night))) == [.deferredQuietHours])
    }

    @Test func capWindowBoundaryIsExactly24Hours() {
        let cap = FrequencyCap(name: "sms_per_day", limit: 1, window: .hours(24), channel: .sms)
        let e = engine([instantJourney("welcome")], rules(quiet: nil, caps: [cap]))
        let t0 = ts("2026-06-10T12:00:00+02:00")
        let events = [
            Touchpoint(eventID: "e1", customerID: "c-1", type: "ping", occurredAt: t0),
            Touchpoint(eventID: "e2", customerID: "c-1", type: "ping", occurredAt: t0.adding(TimeSpan(milliseconds: 86_400_000 - 1))),
            Touchpoint(eventID: "e3", customerID: "c-1", type: "ping", occurredAt: t0.adding(.hours(24))),
            Touchpoint(eventID: "e4", customerID: "c-1", type: "ping", occurredAt: t0.adding(.hours(47))),
        ]
        let r = e.process(CustomerState(), customerID: "c-1", profile: profile(channels: [.sms]), touchpoints: events,
                          now: t0.adding(.hours(48)), timing: .replay)
        #expect(reasons(r) == [.sent, .suppressedFrequencyCap, .sent, .suppressedFrequencyCap])
        #expect(r.decisions.first { $0.reason == .suppressedFrequencyCap }?.rule == "cap:sms_per_day")
        #expect(r.messages.map(\.causedBy) == ["e1", "e3"])
    }

    @Test func higherPriorityWinsTheSlotRegardlessOfOrder() {
        let cap = FrequencyCap(name: "one_per_day", limit: 1, window: .hours(24))
        for journeys in [[instantJourney("low", priority: 1), instantJourney("high", priority: 9)],
                         [instantJourney("high", priority: 9), instantJourney("low", priority: 1)]] {
            let e = engine(journeys, rules(quiet: nil, caps: [cap]))
            let r = e.process(CustomerState(), customerID: "c-1", profile: profile(), touchpoints: [tp("e1", "ping", "2026-06-10T12:00:00Z")],
                              now: ts("2026-06-10T12:00:00Z"))
            #expect(r.messages.map(\.journey) == ["high"])
            #expect(r.decisions.first { $0.reason == .suppressedFrequencyCap }?.journey == "low")
        }
    }

    @Test func priorityTiesGoToTheEarliestCreated() {
        // Same priority, same event: the first step to run (journey order) wins.
        let cap = FrequencyCap(name: "one_per_day", limit: 1, window: .hours(24))
        let e = engine([instantJourney("a", priority: 3), instantJourney("b", priority: 3)], rules(quiet: nil, caps: [cap]))
        let r = e.process(CustomerState(), customerID: "c-1", profile: profile(), touchpoints: [tp("e1", "ping", "2026-06-10T12:00:00Z")],
                          now: ts("2026-06-10T12:00:00Z"))
        #expect(r.messages.map(\.journey) == ["a"])
        // Held for quiet hours: the earlier-created message keeps its slot against an equal priority...
        let e2 = engine([instantJourney("a", trigger: "x", priority: 3), instantJourney("b", trigger: "y", priority: 3),
                         instantJourney("c", trigger: "z", priority: 7)], rules(caps: [cap]))
        var s = e2.process(CustomerState(), customerID: "c-1", profile: profile(),
                           touchpoints: [tp("e1", "x", "2026-06-10T22:00:00+02:00"), tp("e2", "y", "2026-06-10T22:30:00+02:00")],
                           now: ts("2026-06-10T22:30:00+02:00"), timing: .replay)
        #expect(reasons(s) == [.deferredQuietHours, .suppressedFrequencyCap])
        #expect(s.state.deferred.map(\.message.journey) == ["a"])
        // ...but a higher priority released in the same window displaces it.
        s = e2.process(s.state, customerID: "c-1", profile: profile(), touchpoints: [tp("e3", "z", "2026-06-10T23:00:00+02:00")],
                       now: ts("2026-06-10T23:00:00+02:00"), timing: .replay)
        let displaced = s.decisions.first { $0.reason == .suppressedFrequencyCap }!
        #expect(displaced.journey == "a" && displaced.rule == "cap:one_per_day" && displaced.detail?.contains("displaced") == true)
        #expect(s.state.deferred.map(\.message.journey) == ["c"])
        let morning = e2.wake(s.state, customerID: "c-1", profile: profile(), now: ts("2026-06-11T09:00:00+02:00"))
        #expect(morning.messages.map(\.journey) == ["c"])
    }

    @Test func fallbackWhenFirstChannelLacksConsent() {
        let e = engine([instantJourney("welcome", channels: [.sms, .email, .push])], rules(quiet: nil))
        let p = profile(channels: [.sms, .email, .push], consent: [.email, .push])
        let r = e.process(CustomerState(), customerID: "c-1", profile: p, touchpoints: [tp("e1", "ping", "2026-06-10T12:00:00Z")],
                          now: ts("2026-06-10T12:00:00Z"))
        #expect(r.messages.map(\.channel) == [.email])
        #expect(r.messages[0].fallbackChannels == [.push])
        let d = r.decisions.first { $0.reason.isMessageOutcome }!
        #expect(d.reason == .fallbackChannel && d.rule == "consent:sms" && d.channel == .email)
        #expect(d.skipped == [ChannelRejection(channel: .sms, reason: .suppressedNoConsent, rule: "consent:sms")])
    }

    @Test("a channel the customer unsubscribed from is skipped whatever consent says; a global opt-out spares transactional messages only")
    func unsubscribedAndOptedOut() {
        let e = engine([instantJourney("welcome", channels: [.sms, .email]), instantJourney("receipt", trigger: "buy", channels: [.sms], transactional: true)],
                       rules(quiet: nil))
        var p = profile(channels: [.sms, .email], consent: [.sms, .email])
        p.withdrawn = [.sms]
        let now = ts("2026-06-10T12:00:00Z")
        var r = e.process(CustomerState(), customerID: "c-1", profile: p, touchpoints: [tp("e1", "ping", "2026-06-10T12:00:00Z")], now: now)
        #expect(r.messages.map(\.channel) == [.email])
        #expect(r.decisions.first { $0.reason.isMessageOutcome }?.skipped
                == [ChannelRejection(channel: .sms, reason: .suppressedNoConsent, rule: "consent:sms:unsubscribed")])
        // Withdrawn binds transactional messages too (a STOP means no SMS at all).
        r = e.process(CustomerState(), customerID: "c-1", profile: p, touchpoints: [tp("e2", "buy", "2026-06-10T12:00:00Z")], now: now)
        #expect(r.messages.isEmpty)
        p.withdrawn = []
        p.optedOut = true
        r = e.process(CustomerState(), customerID: "c-1", profile: p, touchpoints: [tp("e3", "ping", "2026-06-10T12:00:00Z")], now: now)
        #expect(r.messages.isEmpty)
        #expect(r.decisions.first { $0.reason.isMessageOutcome }?.rule == "consent:opted_out")
        r = e.process(CustomerState(), customerID: "c-1", profile: p, touchpoints: [tp("e4", "buy", "2026-06-10T12:00:00Z")], now: now)
        #expect(r.messages.map(\.channel) == [.sms])
    }

    @Test func fallbackWhenFirstChannelIsCapped() {
        let cap = FrequencyCap(name: "sms_per_day", limit: 1, window: .hours(24), channel: .sms)
        let e = engine([instantJourney("welcome", channels: [.sms, .email])], rules(quiet: nil, caps: [cap]))
        let r = e.process(CustomerState(), customerID: "c-1", profile: profile(),
                          touchpoints: [tp("e1", "ping", "2026-06-10T12:00:00Z"), tp("e2", "ping", "2026-06-10T13:00:00Z")],
                          now: ts("2026-06-10T13:00:00Z"), timing: .replay)
        #expect(r.messages.map(\.channel) == [.sms, .email])
        #expect(r.decisions.last { $0.reason.isMessageOutcome }?.rule == "cap:sms_per_day")
    }

    @Test func expiredDeferral() {
        let e = engine([instantJourney("flash_sale", channels: [.sms], expires: .hours(2))], rules())
        let r = e.process(CustomerState(), customerID: "c-1", profile: profile(), touchpoints: [tp("e1", "ping", "2026-06-10T22:00:00+02:00")],
                          now: ts("2026-06-10T22:00:00+02:00"))
        #expect(r.messages.isEmpty && r.state.deferred.isEmpty && r.state.capHistory.isEmpty)
        let d = r.decisions.first { $0.reason.isMessageOutcome }!
        #expect(d.reason == .suppressedExpired && d.rule == "expiry:2h")
        // A channel without quiet hours is used instead when one is listed.
        let e2 = engine([instantJourney("flash_sale", channels: [.sms, .email], expires: .hours(2))],
                        rules(channelWindows: [.email: QuietWindow(startMinute: 0, endMinute: 0, rule: "quiet_hours:email")]))
        let r2 = e2.process(CustomerState(), customerID: "c-1", profile: profile(), touchpoints: [tp("e1", "ping", "2026-06-10T22:00:00+02:00")],
                            now: ts("2026-06-10T22:00:00+02:00"))
        #expect(r2.messages.map(\.channel) == [.email])
        #expect(r2.decisions.first { $0.reason.isMessageOutcome }?.skipped.map(\.reason) == [.suppressedExpired])
    }

    @Test func keyedInstanceExitsOnlyOnItsOwnCart() {
        let e = engine([abandonedCart()], rules(quiet: nil))
        let p = profile()
        let r = e.process(CustomerState(), customerID: "c-1", profile: p, touchpoints: [
            tp("e1", "cart_abandoned", "2026-06-10T10:00:00Z", ["cart_id": .string("k-1"), "value": .number(59.9)]),
            tp("e2", "cart_abandoned", "2026-06-10T10:05:00Z", ["cart_id": .string("k-2"), "value": .number(12)]),
            tp("e3", "purchase", "2026-06-10T10:30:00Z", ["cart_id": .string("k-1")]),
        ], now: ts("2026-06-10T10:30:00Z"), timing: .replay)
        #expect(r.state.instances.map(\.key) == ["k-2"])
        #expect(r.decisions.contains { $0.reason == .journeyConverted && $0.instanceKey == "k-1" && $0.rule == "exit:purchase" })
        #expect(r.nextWakeUp == ts("2026-06-10T11:05:00Z"))
        let later = e.wake(r.state, customerID: "c-1", profile: p, now: ts("2026-06-10T12:00:00Z"), timing: .replay)
        #expect(later.messages.count == 1)
        #expect(later.messages[0].variables["cart_id"] == .string("k-2"))
        #expect(later.messages[0].step == "remind" && later.messages[0].causedBy == "e2")
        #expect(later.state.counter(journey: "abandoned_cart", kind: .converted) == 1)
        #expect(later.state.counter(journey: "abandoned_cart", kind: .completed) == 1)
        // A purchase without a cart id (or another cart) exits nothing.
        let other = e.process(r.state, customerID: "c-1", profile: p,
                              touchpoints: [tp("e4", "purchase", "2026-06-10T10:40:00Z", ["cart_id": .string("k-9")]),
                                            tp("e5", "purchase", "2026-06-10T10:41:00Z")],
                              now: ts("2026-06-10T10:41:00Z"), timing: .replay)
        #expect(other.state.instances.map(\.key) == ["k-2"])
    }

    @Test func exitCancelsHeldMessage() {
        let e = engine([abandonedCart()], rules())
        let p = profile()
        var r = e.process(CustomerState(), customerID: "c-1", profile: p,
                          touchpoints: [tp("e1", "cart_abandoned", "2026-06-10T21:00:00+02:00", ["cart_id": .string("k-1")])],
                          now: ts("2026-06-10T22:10:00+02:00"))
        #expect(reasons(r) == [.deferredQuietHours])
        r = e.process(r.state, customerID: "c-1", profile: p,
                      touchpoints: [tp("e2", "purchase", "2026-06-10T23:00:00+02:00", ["cart_id": .string("k-1")])],
                      now: ts("2026-06-10T23:00:00+02:00"))
        #expect(reasons(r) == [.cancelledJourneyExit])
        #expect(r.state.deferred.isEmpty && r.state.capHistory.isEmpty && r.nextWakeUp == nil)
    }

    @Test func duplicateEventIDsAreProcessedOnce() {
        let e = engine([abandonedCart()], rules(quiet: nil))
        let ev = tp("e1", "cart_abandoned", "2026-06-10T10:00:00Z", ["cart_id": .string("k-1")])
        let once = e.process(CustomerState(), customerID: "c-1", profile: profile(), touchpoints: [ev], now: ts("2026-06-10T10:00:00Z"))
        let twice = e.process(once.state, customerID: "c-1", profile: profile(), touchpoints: [ev], now: ts("2026-06-10T10:00:01Z"))
        #expect(twice.duplicateEvents == 1)
        #expect(twice.decisions.map(\.reason) == [.suppressedDuplicate])
        #expect(twice.state.instances == once.state.instances)
    }

    @Test func waitForEventBranchAndStages() {
        let j = JourneyDefinition(
            name: "lifecycle", version: 1,
            entry: [EntryTrigger(event: EventMatcher(type: "page_view"))],
            stages: [
                Stage(name: "awareness", steps: [
                    Step(id: "hello", action: .send(SendStep(channels: [.email], template: "hello"))),
                    Step(id: "await_click", action: .waitForEvent(WaitForEvent(
                        event: EventMatcher(type: "message_clicked"), timeout: .hours(24), onEvent: .next, onTimeout: .step("nudge")))),
                    Step(id: "thanks", action: .send(SendStep(channels: [.email], template: "thanks"))),
                    Step(id: "done", action: .branch(cases: [], otherwise: .end)),
                    Step(id: "nudge", action: .send(SendStep(channels: [.email], template: "nudge"))),
                ]),
                Stage(name: "consideration", steps: [
                    Step(id: "vip", action: .branch(cases: [BranchCase(condition: Condition([Clause(.event("value"), .atLeast(100))]), target: .step("vip_offer"))],
                                                    otherwise: .step("offer"))),
                    Step(id: "offer", action: .send(SendStep(channels: [.email], template: "offer"))),
                    Step(id: "stop", action: .branch(cases: [], otherwise: .end)),
                    Step(id: "vip_offer", action: .send(SendStep(channels: [.email], template: "vip_offer"))),
                ]),
            ],
            transitions: [Transition(on: EventMatcher(type: "product_view"), from: ["awareness"], to: "consideration")])
        let e = engine([j], rules(quiet: nil))
        let p = profile()
        // Timeout path.
        var r = e.process(CustomerState(), customerID: "c-1", profile: p, touchpoints: [tp("e1", "page_view", "2026-06-10T10:00:00Z")],
                          now: ts("2026-06-11T11:00:00Z"), timing: .replay)
        #expect(r.messages.map(\.template) == ["hello", "nudge"])
        #expect(r.state.instances.count == 1 && r.state.instances[0].step == "")  // idle in awareness, may still transition
        // Click path.
        r = e.process(CustomerState(), customerID: "c-1", profile: p,
                      touchpoints: [tp("e1", "page_view", "2026-06-10T10:00:00Z"), tp("e2", "message_clicked", "2026-06-10T11:00:00Z")],
                      now: ts("2026-06-12T00:00:00Z"), timing: .replay)
        #expect(r.messages.map(\.template) == ["hello", "thanks"])
        // Transition + branch on the event value.
        let r2 = e.process(r.state, customerID: "c-1", profile: p,
                           touchpoints: [tp("e3", "product_view", "2026-06-12T10:00:00Z", ["value": .number(250)])],
                           now: ts("2026-06-12T10:00:00Z"), timing: .replay)
        #expect(r2.messages.map(\.template) == ["vip_offer"])
        #expect(r2.messages[0].stage == "consideration")
        #expect(r2.state.counter(journey: "lifecycle", stage: "consideration", kind: .stageReached) == 1)
        #expect(r2.state.instances.isEmpty)  // consideration has no way out: completed
    }
}
