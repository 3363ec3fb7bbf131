import Testing
import WaymarkEngine

@Suite struct QuietHoursTests {
    let qh = QuietHours(rules: QuietHoursRules(defaultWindow: nightWindow, spread: .zero), defaultTimezone: "Europe/Oslo")

    func oslo(_ tz: String = "Europe/Oslo") -> CustomerProfile { profile(tz) }

    @Test(arguments: [
        // Oslo spring forward 2026-03-29 02:00 -> 03:00: the window ends at 08:00 CEST, not 08:00 CET.
        ("Europe/Oslo", "2026-03-28T22:00:00+01:00", "2026-03-29T08:00:00+02:00"),
        // Oslo fall back 2026-10-25 03:00 -> 02:00.
        ("Europe/Oslo", "2026-10-24T23:00:00+02:00", "2026-10-25T08:00:00+01:00"),
        ("Europe/Oslo", "2026-10-25T02:30:00+01:00", "2026-10-25T08:00:00+01:00"),
        // New York spring forward 2026-03-08 and fall back 2026-11-01.
        ("America/New_York", "2026-03-07T22:00:00-05:00", "2026-03-08T08:00:00-04:00"),
        ("America/New_York", "2026-10-31T22:30:00-04:00", "2026-11-01T08:00:00-05:00"),
        ("America/New_York", "2026-11-01T01:30:00-05:00", "2026-11-01T08:00:00-05:00"),
    ])
    func windowEndOnDSTNights(zone: String, at: String, end: String) {
        #expect(qh.check(channel: .sms, transactional: false, profile: oslo(zone), at: ts(at))
                == .quiet(rule: "quiet_hours:default", endsAt: ts(end)))
        // One millisecond before the end is still quiet; the end itself is not.
        #expect(qh.check(channel: .sms, transactional: false, profile: oslo(zone), at: ts(end).adding(TimeSpan(milliseconds: -1))) != .allowed)
        #expect(qh.check(channel: .sms, transactional: false, profile: oslo(zone), at: ts(end)) == .allowed)
    }

    @Test func localClockNotFixedOffset() {
        // 06:30Z on 2026-03-29 is 08:30 in Oslo (CEST); a fixed +01:00 would wrongly say 07:30 = quiet.
        #expect(qh.check(channel: .sms, transactional: false, profile: oslo(), at: ts("2026-03-29T06:30:00Z")) == .allowed)
        // 2026-11-01T12:30Z is 07:30 in New York after the fall back: quiet (a stale -04:00 would say 08:30).
        #expect(qh.check(channel: .sms, transactional: false, profile: oslo("America/New_York"), at: ts("2026-11-01T12:30:00Z")) != .allowed)
    }

    /// Found by the reference-model property test (seeds around the Los Angeles fall-back night): a clock
    /// that falls back into the window must end it at the end's *second* occurrence, never at or before now.
    @Test func clockFallingBackIntoTheWindow() {
        let w = QuietWindow(startMinute: 30, endMinute: 90, rule: "quiet_hours:night")  // 00:30–01:30
        let q = QuietHours(rules: QuietHoursRules(defaultWindow: w, spread: .zero), defaultTimezone: "UTC")
        // 2026-11-01 09:10Z is 01:10 PST, after 01:59 PDT fell back to 01:00: quiet until 01:30 PST (09:30Z).
        #expect(q.check(channel: .sms, transactional: false, profile: oslo("America/Los_Angeles"), at: ts("2026-11-01T09:10:00Z"))
                == .quiet(rule: "quiet_hours:night", endsAt: ts("2026-11-01T09:30:00Z")))
        let id = MessageID(journey: "j", version: 1, customerID: "c", step: "s", causedBy: "e", instanceKey: "", sequence: 0)
        let release = q.releaseTime(messageID: id, channel: .sms, transactional: false, profile: oslo("America/Los_Angeles"),
                                    at: ts("2026-11-01T09:10:00Z"))
        #expect(release?.release == ts("2026-11-01T09:30:00Z"))
    }

    @Test func windowEndInsideSpringForwardGap() {
        let w = QuietWindow(startMinute: 23 * 60, endMinute: 2 * 60 + 30, rule: "quiet_hours:late")
        let q = QuietHours(rules: QuietHoursRules(defaultWindow: w, spread: .zero), defaultTimezone: "Europe/Oslo")
        // 02:30 does not exist on 2026-03-29 in Oslo: the window ends at the jump (03:00 CEST = 01:00Z).
        #expect(q.check(channel: .sms, transactional: false, profile: oslo(), at: ts("2026-03-29T01:00:00+01:00"))
                == .quiet(rule: "quiet_hours:late", endsAt: ts("2026-03-29T01:00:00Z")))
    }

    @Test(arguments: [
        ("2026-06-10T20:59:59+02:00", false), ("2026-06-10T21:00:00+02:00", true), ("2026-06-10T23:59:00+02:00", true),
        ("2026-06-11T00:00:00+02:00", true), ("2026-06-11T07:59:59.999+02:00", true), ("2026-06-11T08:00:00+02:00", false),
        ("2026-06-11T12:00:00+02:00", false),
    ])
    func windowCrossingMidnight(at: String, quiet: Bool) {
        let v = qh.check(channel: .sms, transactional: false, profile: oslo(), at: ts(at))
        #expect((v != .allowed) == quiet)
        if case .quiet(_, let end) = v {
            #expect(end == ts(at.hasPrefix("2026-06-10") ? "2026-06-11T08:00:00+02:00" : "2026-06-11T08:00:00+02:00"))
        }
    }

    @Test func daytimeWindowAndOverridesAndExemptions() {
        let lunch = QuietWindow(startMinute: 12 * 60, endMinute: 13 * 60, rule: "quiet_hours:push")
        let off = QuietWindow(startMinute: 0, endMinute: 0, rule: "quiet_hours:email")
        let q = QuietHours(rules: QuietHoursRules(defaultWindow: nightWindow, channelWindows: [.push: lunch, .email: off],
                                                  exemptTransactional: true, spread: .zero), defaultTimezone: "Europe/Oslo")
        let p = oslo()
        #expect(q.check(channel: .push, transactional: false, profile: p, at: ts("2026-06-10T12:30:00+02:00"))
                == .quiet(rule: "quiet_hours:push", endsAt: ts("2026-06-10T13:00:00+02:00")))
        #expect(q.check(channel: .push, transactional: false, profile: p, at: ts("2026-06-10T23:00:00+02:00")) == .allowed)
        #expect(q.check(channel: .email, transactional: false, profile: p, at: ts("2026-06-10T23:00:00+02:00")) == .allowed)
        #expect(q.check(channel: .sms, transactional: true, profile: p, at: ts("2026-06-10T23:00:00+02:00")) == .allowed)
        #expect(q.check(channel: .sms, transactional: false, profile: p, at: ts("2026-06-10T23:00:00+02:00")) != .allowed)
    }

    @Test func unknownOrMissingZoneUsesDefault() {
        let at = ts("2026-06-10T21:30:00+02:00")  // quiet in Oslo, 15:30 in New York
        #expect(qh.check(channel: .sms, transactional: false, profile: oslo("Mars/Olympus_Mons"), at: at) != .allowed)
        #expect(qh.check(channel: .sms, transactional: false, profile: nil, at: at) != .allowed)
        #expect(qh.check(channel: .sms, transactional: false, profile: oslo("America/New_York"), at: at) == .allowed)
    }

    @Test func spreadIsStableAndBounded() {
        let q = QuietHours(rules: QuietHoursRules(defaultWindow: nightWindow, spread: .minutes(30)), defaultTimezone: "Europe/Oslo")
        let end = ts("2026-06-11T08:00:00+02:00")
        var distinct = Set<Int64>()
        for n in 0..<200 {
            let id = MessageID(journey: "j", version: 1, customerID: "c-\(n)", step: "s", causedBy: "e", instanceKey: "", sequence: 0)
            let r1 = q.releaseTime(messageID: id, channel: .sms, transactional: false, profile: oslo(), at: ts("2026-06-10T23:00:00+02:00"))!
            let r2 = q.releaseTime(messageID: id, channel: .sms, transactional: false, profile: oslo(), at: ts("2026-06-11T03:00:00+02:00"))!
            #expect(r1.release == r2.release)
            #expect(r1.release >= end && r1.release < end.adding(.minutes(30)))
            distinct.insert(r1.release.milliseconds)
        }
        #expect(distinct.count > 150)
    }
}
