import Testing
import WaymarkEngine

/// Relevance in event time, replayed releases, and sends held for a late profile.
@Suite struct RelevanceTests {
    func outcomes(_ r: EngineResult) -> [DecisionReason] { r.decisions.map(\.reason).filter(\.isMessageOutcome) }

    /// The replay cases of issue 8, with the shipped rules' 21:00–08:00 window and no spread: a
    /// post-purchase SMS deferred at 22:17 in Los Angeles is released at 08:00 whatever comes next.
    @Test(arguments: [
        ("A: next event six days later", ["2026-03-16T12:00:00-07:00"]),
        ("B: another event that night", ["2026-03-10T22:30:00-07:00"]),
        ("C: nothing after", [String]()),
    ])
    func replayReleasesDeferralsAtTheirOwnTime(_ name: String, later: [String]) {
        let e = engine([instantJourney("post_purchase", trigger: "pos_purchase")], rules(spread: .zero))
        let la = profile("America/Los_Angeles", channels: [.sms])
        var events = [tp("e1", "pos_purchase", "2026-03-10T22:17:00-07:00")]
        for (i, t) in later.enumerated() { events.append(tp("e\(i + 2)", "page_view", t)) }
        let r = e.process(CustomerState(), customerID: "c-1", profile: la, touchpoints: events,
                          now: ts("2026-03-31T00:00:00Z"), timing: .replay)
        #expect(r.messages.count == 1, "\(name)")
        #expect(r.messages.first?.sendAfter == ts("2026-03-11T08:00:00-07:00"), "\(name)")
        #expect(r.messages.first?.channel == .sms)
        #expect(outcomes(r) == [.deferredQuietHours, .sent], "\(name)")
    }

    /// A worker catching up on a backlog (or a new consumer group) judges a message against the
    /// moment its step became due, not the moment it got round to it.
    @Test func backlogDoesNotSendStaleMessages() {
        let e = engine([instantJourney("confirm", trigger: "purchase", channels: [.sms], expires: .hours(2), transactional: true),
                        abandonedCart(wait: .hours(1))], rules())
        let weekOld = "2026-11-13T23:11:00+01:00"
        let now = ts("2026-11-20T00:11:00+01:00")
        let r = e.process(CustomerState(), customerID: "c-1", profile: profile(),
                          touchpoints: [tp("e1", "purchase", weekOld), tp("e2", "cart_abandoned", "2026-11-17T12:00:00+01:00", ["cart_id": .string("k")])],
                          now: now)
        #expect(r.messages.isEmpty)
        let expired = r.decisions.filter { $0.reason == .suppressedExpired }.sorted { ($0.journey ?? "") > ($1.journey ?? "") }
        #expect(expired.count == 2)
        // Transactional exemptions cover quiet hours and caps, never relevance.
        #expect(expired[0].journey == "confirm" && expired[0].rule == "expiry:2h" && expired[0].expiresAt == ts(weekOld).adding(.hours(2)))
        // The cart reminder was due an hour after the cart was abandoned; its 48 h ran out before now.
        #expect(expired[1].journey == "abandoned_cart" && expired[1].expiresAt == ts("2026-11-17T13:00:00+01:00").adding(.hours(48)))
        #expect(expired.allSatisfy { $0.detail?.hasPrefix("expired at") == true })
        // Less lag: the same reminder is still relevant and goes out now (not at the due time).
        let fresh = e.process(CustomerState(), customerID: "c-1", profile: profile(),
                              touchpoints: [tp("e2", "cart_abandoned", "2026-11-19T12:00:00+01:00", ["cart_id": .string("k")])],
                              now: ts("2026-11-19T14:30:00+01:00"))
        #expect(fresh.messages.count == 1 && fresh.messages[0].sendAfter == ts("2026-11-19T14:30:00+01:00"))
        #expect(fresh.messages[0].expiresAt == ts("2026-11-19T13:00:00+01:00").adding(.hours(48)))
    }

    /// While the customer's partition is behind, timers due after the event-time watermark wait:
    /// the purchase that exits the cart reminder may still be unread.
    @Test func timersWaitForTheWatermark() {
        let e = engine([abandonedCart(wait: .hours(1))], rules(quiet: nil))
        let cart = tp("e1", "cart_abandoned", "2026-11-19T12:00:00+01:00", ["cart_id": .string("k")])
        let now = ts("2026-11-19T14:00:00+01:00")
        let held = e.process(CustomerState(), customerID: "c-1", profile: profile(), touchpoints: [cart], now: now,
                             watermark: cart.occurredAt)
        #expect(held.messages.isEmpty && held.nextWakeUp == ts("2026-11-19T13:00:00+01:00"))
        // The purchase 30 minutes after the cart is read next: the reminder is never sent.
        let bought = e.process(held.state, customerID: "c-1", profile: profile(),
                               touchpoints: [tp("e2", "purchase", "2026-11-19T12:30:00+01:00", ["cart_id": .string("k")])], now: now,
                               watermark: ts("2026-11-19T12:30:00+01:00"))
        #expect(bought.messages.isEmpty && bought.state.instances.isEmpty)
        #expect(bought.decisions.contains { $0.reason == .journeyConverted })
        // Caught up without a purchase: it fires.
        let caughtUp = e.wake(held.state, customerID: "c-1", profile: profile(), now: now)
        #expect(caughtUp.messages.count == 1)
    }

    @Test func lateProfileReleasesTheHeldSend() {
        var journey = instantJourney("welcome", channels: [.sms, .email])
        if case .send(var s) = journey.stages[0].steps[0].action {
            s.variables = ["profile.tier"]
            journey.stages[0].steps[0].action = .send(s)
        }
        var r = rules(quiet: nil)
        r.channelOrder = .customerPreference
        let e = engine([journey], r)
        let at = ts("2026-06-10T12:00:00+02:00")
        let first = e.process(CustomerState(), customerID: "c-1", profile: nil, touchpoints: [tp("e1", "ping", "2026-06-10T12:00:00+02:00")], now: at)
        #expect(outcomes(first) == [.deferredAwaitingProfile] && first.messages.isEmpty)
        #expect(first.state.deferred.first?.hold == .awaitingProfile && first.state.capHistory.isEmpty)
        // Nothing changes while there is still no profile and the wait is not over.
        let still = e.wake(first.state, customerID: "c-1", profile: nil, now: at.adding(.minutes(5)))
        #expect(still.decisions.isEmpty && still.state == first.state.withClock(still.state.clock))
        // The profile arrives 7 minutes later: decided then, with its preference and attributes.
        var p = profile(channels: [.sms, .email], attributes: ["tier": .string("gold")])
        p.preferredChannels = [.email]
        let later = at.adding(.minutes(7))
        let released = e.wake(first.state, customerID: "c-1", profile: p, now: later)
        #expect(outcomes(released) == [.sent])
        #expect(released.messages.count == 1)
        let m = released.messages[0]
        #expect(m.channel == .email && m.fallbackChannels == [.sms] && m.sendAfter == later && m.variables["tier"] == .string("gold"))
        #expect(m.messageID == first.decisions.first { $0.reason == .deferredAwaitingProfile }?.messageID)
        #expect(m.expiresAt == at.adding(.hours(48)) && m.locale == "nb-NO")
        #expect(released.state.deferred.isEmpty && released.nextWakeUp == nil)
        // The hold never outlives the message: a 10-minute message waits 10 minutes, not 15.
        let short = engine([instantJourney("flash", expires: .minutes(10))], rules(quiet: nil))
        let h = short.process(CustomerState(), customerID: "c-1", profile: nil, touchpoints: [tp("e1", "ping", "2026-06-10T12:00:00+02:00")], now: at)
        #expect(h.nextWakeUp == at.adding(.minutes(10)))
        #expect(outcomes(short.wake(h.state, customerID: "c-1", profile: nil, now: at.adding(.minutes(10)))) == [.suppressedExpired])
    }

    @Test func exitCancelsASendWaitingForTheProfile() {
        let e = engine([abandonedCart(wait: .zero)], rules(quiet: nil))
        let at = "2026-06-10T12:00:00+02:00"
        let held = e.process(CustomerState(), customerID: "c-1", profile: nil,
                             touchpoints: [tp("e1", "cart_abandoned", at, ["cart_id": .string("k")])], now: ts(at))
        #expect(outcomes(held) == [.deferredAwaitingProfile])
        let bought = e.process(held.state, customerID: "c-1", profile: profile(),
                               touchpoints: [tp("e2", "purchase", "2026-06-10T12:01:00+02:00", ["cart_id": .string("k")])],
                               now: ts("2026-06-10T12:01:00+02:00"))
        #expect(outcomes(bought) == [.cancelledJourneyExit], "\(bought.decisions.map { ($0.reason, $0.rule) })")
        #expect(bought.messages.isEmpty && bought.state.deferred.isEmpty)
    }

    @Test func noProfileWaitDecidesAtOnce() {
        var r = rules()
        r.consent.profileWait = .zero
        let e = engine([instantJourney("welcome")], r)
        let at = "2026-06-10T12:00:00+02:00"
        let d = e.process(CustomerState(), customerID: "c-1", profile: nil, touchpoints: [tp("e1", "ping", at)], now: ts(at))
        #expect(outcomes(d) == [.suppressedNoConsent] && d.decisions.last?.detail == nil)
    }

    /// States written before sends could wait for a profile (format 1) still load.
    @Test func formatOneStatesStillDecode() throws {
        let e = engine([instantJourney("welcome")], rules(spread: .zero))
        let r = e.process(CustomerState(), customerID: "c-1", profile: profile(), touchpoints: [tp("e1", "ping", "2026-06-10T22:00:00+02:00")],
                          now: ts("2026-06-10T22:00:00+02:00"))
        var state = r.state
        state.counters = []
        #expect(state.deferred.count == 1)
        #expect(state.instances.isEmpty && state.arms.isEmpty && state.conversions.isEmpty)
        // Format 3 ends with: …, message arm (""), instance key (""), rule, hold byte, counters (0),
        // arms (0), conversion windows (0). Format 1 has neither the hold byte (format 2) nor the arm
        // and the two lists (format 3).
        let rule = Array(state.deferred[0].rule.utf8)
        var v1 = state.encoded()
        let n = v1.count
        #expect(v1[2] == 3 && Array(v1[(n - 4 - rule.count)..<(n - 4)]) == rule && v1[n - 4] == DeferredMessage.Hold.quietHours.rawValue
                && Array(v1.suffix(3)) == [0, 0, 0] && v1[n - 6 - rule.count] == 0 && v1[n - 7 - rule.count] == 0)
        v1.removeLast(2)
        v1.remove(at: n - 4)
        v1.remove(at: n - 7 - rule.count)
        v1[2] = 1
        let decoded = try CustomerState(decoding: v1)
        #expect(decoded == state && decoded.deferred[0].hold == .quietHours)
        #expect(decoded.encoded() == state.encoded())
        var unknownHold = state.encoded()
        unknownHold[n - 4] = 9
        #expect(throws: StateDecodingError.self) { try CustomerState(decoding: unknownHold) }
    }
}

extension CustomerState {
    func withClock(_ t: Timestamp) -> CustomerState { var s = self; s.clock = t; return s }
}
