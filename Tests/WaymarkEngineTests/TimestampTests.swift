import Foundation
import PropertyBased
import Testing
import WaymarkEngine

@Suite struct TimestampTests {
    @Test(arguments: [
        ("2026-11-20T18:04:05+01:00", Int64(1_795_194_245_000)),
        ("2026-11-20T17:04:05Z", 1_795_194_245_000),
        ("2026-11-20t17:04:05z", 1_795_194_245_000),
        ("2026-11-20 17:04:05.5Z", 1_795_194_245_500),
        ("2026-11-20T17:04:05.123456789Z", 1_795_194_245_123),
        ("2026-11-20T12:04:05.01-05:00", 1_795_194_245_010),
        ("1970-01-01T00:00:00Z", 0),
        ("2000-02-29T00:00:00Z", 951_782_400_000),
    ])
    func parsesValidForms(text: String, millis: Int64) throws {
        #expect(try Timestamp.parseRFC3339(text).get().milliseconds == millis)
    }

    @Test(arguments: [
        ("1969-12-31T23:59:59Z", "outside accepted range"),
        ("2201-01-01T00:00:00Z", "outside accepted range"),
        ("9999-01-01T00:00:00Z", "outside accepted range"),
        ("2026-13-01T00:00:00Z", "month"),
        ("2026-02-29T00:00:00Z", "does not exist"),
        ("2026-04-31T00:00:00Z", "does not exist"),
        ("2026-01-01T24:00:00Z", "hour"),
        ("2026-01-01T23:60:00Z", "minute"),
        ("2026-12-31T23:59:60Z", "leap seconds"),
        ("2026-01-01T00:00:00.000", "offset"),
        ("2026-01-01T00:00:00+0100", "offset"),
        ("2026-01-01T00:00:00+24:00", "offset hours"),
        ("2026-01-01T00:00:00.Z", "fraction"),
        ("2026-01-01T00:00:00Zjunk", "unexpected bytes"),
        ("2026-01-01", "too short"),
        ("20260101T000000Z0000", "-"),
    ])
    func rejectsWithReason(text: String, reasonContains: String) {
        switch Timestamp.parseRFC3339(text) {
        case .success(let t): Issue.record("accepted \(text) as \(t)")
        case .failure(let e): #expect(e.reason.contains(reasonContains), "\(e.reason)")
        }
    }

    @Test func formatsRoundTrip() throws {
        let t = ts("2026-03-29T01:02:03.004+02:00")
        #expect(t.description == "2026-03-28T23:02:03.004Z")
        #expect(try Timestamp.parseRFC3339(t.description).get() == t)
    }

    /// Random components and offsets, compared with Foundation's Gregorian calendar.
    @Test func agreesWithFoundation() async {
        let gen = zip(Gen.int(in: 1970...2200), Gen.int(in: 1...12), Gen.int(in: 1...31), Gen.int(in: 0...86_399),
                      Gen.int(in: -(23 * 60 + 59)...(23 * 60 + 59)), Gen.int(in: 0...999))
        await propertyCheck(count: 300, input: gen) { year, month, day0, sec, offMin, ms in
            var cal = Calendar(identifier: .gregorian)
            cal.timeZone = TimeZone(identifier: "UTC")!
            let firstOfMonth = cal.date(from: DateComponents(year: year, month: month, day: 1))!
            let day = min(day0, cal.range(of: .day, in: .month, for: firstOfMonth)!.count)
            let comps = DateComponents(year: year, month: month, day: day, hour: sec / 3600, minute: (sec / 60) % 60, second: sec % 60)
            let localAsUTC = Int64((cal.date(from: comps)!.timeIntervalSince1970).rounded())
            let expected = (localAsUTC - Int64(offMin) * 60) * 1000 + Int64(ms)
            let sign = offMin < 0 ? "-" : "+"
            let text = String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03d%@%02d:%02d", year, month, day, sec / 3600,
                              (sec / 60) % 60, sec % 60, ms, sign, abs(offMin) / 60, abs(offMin) % 60)
            let parsed = try Timestamp.parseRFC3339(text).get()
            #expect(parsed.milliseconds == expected, "\(text)")
            let iso = ISO8601DateFormatter()
            iso.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            if let d = iso.date(from: text) {
                #expect(Int64((d.timeIntervalSince1970 * 1000).rounded()) == parsed.milliseconds, "\(text)")
            } else {
                Issue.record("Foundation rejected \(text)")
            }
            // And our UTC formatting parses back, and Foundation's ISO 8601 parser agrees with it.
            let utc = parsed.description
            #expect(try Timestamp.parseRFC3339(utc).get() == parsed)
            if let d = iso.date(from: utc) {
                #expect(Int64((d.timeIntervalSince1970 * 1000).rounded()) == parsed.milliseconds, "\(utc)")
            } else {
                Issue.record("Foundation rejected \(utc)")
            }
        }
    }

    @Test func durations() {
        #expect(TimeSpan.parse("24h") == .hours(24))
        #expect(TimeSpan.parse("1h30m") == .minutes(90))
        #expect(TimeSpan.parse("7d") == .days(7))
        #expect(TimeSpan.parse("500ms") == TimeSpan(milliseconds: 500))
        #expect(TimeSpan.parse("2w") == .days(14))
        #expect(TimeSpan.parse("") == nil)
        #expect(TimeSpan.parse("5") == nil)
        #expect(TimeSpan.parse("5y") == nil)
        #expect(TimeSpan.parse("-5m") == nil)
        #expect(TimeSpan.days(1).adding(.hours(2)).description == "1d2h")
    }
}

extension TimeSpan {
    func adding(_ o: TimeSpan) -> TimeSpan { TimeSpan(milliseconds: milliseconds + o.milliseconds) }
}
