import Foundation
import Testing
import WaymarkEngine
import WaymarkWire
import WaymarkSample

private let now = Timestamp(milliseconds: 1_795_700_000_000)  // 2026-11-26
private let parser = RecordParser()

private func parse(_ json: String, key: String? = "c-42") -> Result<Touchpoint, Rejection> {
    parser.touchpoint(key: key.map { ArraySlice(Array($0.utf8)) }, value: ArraySlice(Array(json.utf8)), now: now)
}

private func reason(_ result: Result<Touchpoint, Rejection>) -> RejectionReason? {
    if case .failure(let rejection) = result { return rejection.reason }
    return nil
}

@Suite("Touchpoint and profile parsing")
struct RecordParserTests {
    @Test("the contract's example touchpoint parses with typed attributes")
    func contractExample() throws {
        let json = """
            {"event_id": "e-8f1c", "customer_id": "c-42", "type": "cart_abandoned",
             "occurred_at": "2026-11-20T18:04:05+01:00", "source": "web",
             "attributes": {"cart_id": "k-77", "value": 59.90, "currency": "EUR", "items": [1, {"a": null}], "gift": false}}
            """
        let touchpoint = try parse(json).get()
        #expect(touchpoint.eventID == "e-8f1c")
        #expect(touchpoint.type == "cart_abandoned")
        #expect(touchpoint.source == "web")
        #expect(touchpoint.occurredAt.description.hasPrefix("2026-11-20T17:04:05"))
        #expect(touchpoint.attributes["value"] == .number(59.9))
        #expect(touchpoint.attributes["cart_id"] == .string("k-77"))
        #expect(touchpoint.attributes["gift"] == .bool(false))
        #expect(touchpoint.attributes["items"] == .array([.number(1), .object(["a": .null])]))
    }

    @Test("optional fields may be absent; unknown fields are ignored; escapes decode")
    func optionalAndUnknown() throws {
        let t = try parse(#"{"event_id":"e\u00e9","customer_id":"c-42","type":"x","occurred_at":"2026-11-20T18:04:05Z","extra":{"deep":[true]},"attributes":{"note":"a\nb\/"}}"#).get()
        #expect(t.eventID == "eé")
        #expect(t.attributes["note"] == .string("a\nb/"))
        #expect(t.source == nil)
    }

    @Test("bad input gets the right dead-letter reason", arguments: [
        ("not json at all", RejectionReason.invalidJSON),
        (#"{"event_id":"e","customer_id":"c-42","type":"x","occurred_at":"2026-11-20T18:04:05Z""#, .invalidJSON),
        (#"{"event_id":"e","customer_id":"c-42","type":"x","occurred_at":"2026-11-20T18:04:05Z"} trailing"#, .invalidJSON),
        (#"["event_id"]"#, .invalidJSON),
        (#"{"customer_id":"c-42","type":"x","occurred_at":"2026-11-20T18:04:05Z"}"#, .missingField),
        (#"{"event_id":"e","customer_id":"c-42","type":"x"}"#, .missingField),
        (#"{"event_id":42,"customer_id":"c-42","type":"x","occurred_at":"2026-11-20T18:04:05Z"}"#, .wrongType),
        (#"{"event_id":"e","customer_id":"c-42","type":"x","occurred_at":1700000000}"#, .wrongType),
        (#"{"event_id":"e","customer_id":"c-42","type":"x","occurred_at":"2026-11-20T18:04:05Z","attributes":[1]}"#, .wrongType),
        (#"{"event_id":"","customer_id":"c-42","type":"x","occurred_at":"2026-11-20T18:04:05Z"}"#, .emptyField),
        (#"{"event_id":"e","customer_id":"c-42","type":"x","occurred_at":"yesterday"}"#, .invalidTimestamp),
        (#"{"event_id":"e","customer_id":"c-42","type":"x","occurred_at":"2026-11-20T18:04:05"}"#, .invalidTimestamp),
        (#"{"event_id":"e","customer_id":"c-42","type":"x","occurred_at":"9999-12-31T23:59:59Z"}"#, .absurdTimestamp),
        (#"{"event_id":"e","customer_id":"c-42","type":"x","occurred_at":"2027-06-01T00:00:00Z"}"#, .absurdTimestamp),
        (#"{"event_id":"e","customer_id":"c-7","type":"x","occurred_at":"2026-11-20T18:04:05Z"}"#, .keyMismatch),
        (#"{"event_id":"e\ud800","customer_id":"c-42","type":"x","occurred_at":"2026-11-20T18:04:05Z"}"#, .invalidUTF8),
        // Duplicate keys (which one would count is a guess), at the top level and inside attributes.
        (#"{"event_id":"e","customer_id":"c-42","type":"x","type":"y","occurred_at":"2026-11-20T18:04:05Z"}"#, .duplicateKey),
        (#"{"event_id":"e","customer_id":"c-42","type":"x","occurred_at":"2026-11-20T18:04:05Z","attributes":{"v":1,"v":2}}"#, .duplicateKey),
        // Valid JSON numbers a double cannot hold are not syntax errors.
        (#"{"event_id":"e","customer_id":"c-42","type":"x","occurred_at":"2026-11-20T18:04:05Z","attributes":{"v":1e400}}"#, .numberOutOfRange),
        (#"{"event_id":"e","customer_id":"c-42","type":"x","occurred_at":"2026-11-20T18:04:05Z","attributes":{"v":-1e400}}"#, .numberOutOfRange),
        // Ids that cannot key state or be typed by an operator.
        (#"{"event_id":"   ","customer_id":"c-42","type":"x","occurred_at":"2026-11-20T18:04:05Z"}"#, .invalidID),
        (#"{"event_id":"e\u0000","customer_id":"c-42","type":"x","occurred_at":"2026-11-20T18:04:05Z"}"#, .invalidID),
        (#"{"event_id":"e","customer_id":"c-42","type":"x\u001b[2J","occurred_at":"2026-11-20T18:04:05Z"}"#, .invalidID),
        (#"{"event_id":" e","customer_id":"c-42","type":"x","occurred_at":"2026-11-20T18:04:05Z"}"#, .invalidID),
        ("{\"event_id\":\"\(String(repeating: "e", count: 10_000))\",\"customer_id\":\"c-42\",\"type\":\"x\",\"occurred_at\":\"2026-11-20T18:04:05Z\"}", .invalidID),
        // More than ten years old (the default bound; worker.max_event_age_days or --max-event-age-days change it).
        (#"{"event_id":"e","customer_id":"c-42","type":"x","occurred_at":"2015-01-01T00:00:00Z"}"#, .absurdTimestamp),
    ])
    func rejections(json: String, expected: RejectionReason) {
        #expect(reason(parse(json)) == expected)
    }

    @Test("invalid UTF-8 bytes, null key, null value, oversize and deep nesting are rejected, not crashed on")
    func hostileBytes() {
        var bytes = Array(#"{"event_id":"e","customer_id":"c-42","type":"x"#.utf8) + [0xC3, 0x28] + Array(#"","occurred_at":"2026-11-20T18:04:05Z"}"#.utf8)
        #expect(reason(parser.touchpoint(key: ArraySlice("c-42".utf8), value: ArraySlice(bytes), now: now)) == .invalidUTF8)
        bytes = Array(#"{"event_id":"e","customer_id":"c-42","type":"x","occurred_at":"2026-11-20T18:04:05Z"}"#.utf8)
        #expect(reason(parser.touchpoint(key: nil, value: ArraySlice(bytes), now: now)) == .nullKey)
        #expect(reason(parser.touchpoint(key: ArraySlice("c-42".utf8), value: nil, now: now)) == .nullValue)
        let huge = ArraySlice([UInt8](repeating: UInt8(ascii: " "), count: 2 * 1024 * 1024))
        #expect(reason(parser.touchpoint(key: ArraySlice("c-42".utf8), value: huge, now: now)) == .oversize)
        let deep = String(repeating: "[", count: 10_000)
        #expect(reason(parse(#"{"event_id":"e","customer_id":"c-42","type":"x","occurred_at":"2026-11-20T18:04:05Z","attributes":{"a":\#(deep)}}"#)) == .invalidJSON)
    }

    @Test("mutated documents never crash the parser (10k deterministic mutants)")
    func fuzz() {
        var rng = SeededRandom(seed: 99)
        let seeds = RetailDay(seed: 1, customers: 40).generate()
        var rejected = 0
        for i in 0..<10_000 {
            var bytes = seeds[i % seeds.count].value
            for _ in 0..<(1 + Int(rng.next() % 4)) {
                let at = Int(rng.next() % UInt64(bytes.count))
                switch rng.next() % 4 {
                case 0: bytes[at] = UInt8(truncatingIfNeeded: rng.next())
                case 1: bytes.remove(at: at)
                case 2: bytes.insert(UInt8(truncatingIfNeeded: rng.next()), at: at)
                default: bytes.insert(contentsOf: bytes[at..<min(bytes.count, at + 8)], at: at)
                }
            }
            let key = ArraySlice(Array(seeds[i % seeds.count].key.utf8))
            if case .failure = parser.touchpoint(key: key, value: ArraySlice(bytes), now: now) { rejected += 1 }
            _ = parser.profile(key: key, value: ArraySlice(bytes))
        }
        #expect(rejected > 5_000)  // most mutants are invalid; all were handled without crashing
    }

    @Test("every record of a generated retail day parses, and agrees with Foundation's JSON parser")
    func sampleDayParses() throws {
        let day = RetailDay(seed: 3, customers: 300).generate()
        for record in day {
            let key = ArraySlice(Array(record.key.utf8))
            let object = try JSONSerialization.jsonObject(with: Data(record.value)) as! [String: Any]
            switch record.kind {
            case .touchpoint:
                let t = try parser.touchpoint(key: key, value: ArraySlice(record.value), now: Timestamp(milliseconds: record.timestamp)).get()
                #expect(t.eventID == object["event_id"] as? String)
                #expect(t.occurredAt.milliseconds == record.timestamp)
                let attributes = object["attributes"] as! [String: Any]
                #expect(t.attributes.count == attributes.count)
                if let value = attributes["value"] as? Double { #expect(t.attributes["value"] == .number(value)) }
            case .profile:
                let p = try parser.profile(key: key, value: ArraySlice(record.value)).get()
                #expect(p.timezone == object["timezone"] as? String)
                #expect(p.preferredChannels.map(\.rawValue) == object["preferred_channels"] as? [String])
                #expect(p.consent[.sms] == (object["consent"] as! [String: Bool])["sms"])
            }
        }
    }

    @Test("profiles: wrong types are rejected; duplicate channels in preferences collapse")
    func profiles() throws {
        func profile(_ json: String) -> Result<CustomerProfile, Rejection> {
            parser.profile(key: ArraySlice("c-42".utf8), value: ArraySlice(Array(json.utf8)))
        }
        let ok = try profile(#"{"customer_id":"c-42","timezone":"Europe/Oslo","contacts":{"sms":"+4790000000","email":"a@example.com","push":"fcm:abc-123"},"consent":{"sms":true},"preferred_channels":["sms","sms","email"]}"#).get()
        #expect(ok.contacts == [.sms: "+4790000000", .email: "a@example.com", .push: "fcm:abc-123"])
        #expect(ok.preferredChannels == [.sms, .email])
        if case .failure(let r) = profile(#"{"customer_id":"c-42","consent":{"sms":"yes"}}"#) { #expect(r.reason == .wrongType) } else { Issue.record("accepted") }
        if case .failure(let r) = profile(#"{"customer_id":"c-9"}"#) { #expect(r.reason == .keyMismatch) } else { Issue.record("accepted") }
        if case .failure(let r) = profile(#"{"timezone":"UTC"}"#) { #expect(r.reason == .missingField) } else { Issue.record("accepted") }
    }

    @Test("profiles: every field is checked; a bad one rejects the profile with a reason naming the field", arguments: [
        (#"{"customer_id":"c-42","timezone":"Mars/Olympus"}"#, RejectionReason.invalidTimezone),
        (#"{"customer_id":"c-42","timezone":"Europe/Oslo","locale":"not a locale"}"#, .invalidLocale),
        (#"{"customer_id":"c-42","contacts":{"sms":"not-a-phone"}}"#, .invalidContact),
        (#"{"customer_id":"c-42","contacts":{"sms":"+47"}}"#, .invalidContact),
        (#"{"customer_id":"c-42","contacts":{"whatsapp":"004790000000"}}"#, .invalidContact),
        (#"{"customer_id":"c-42","contacts":{"email":"nope"}}"#, .invalidContact),
        (#"{"customer_id":"c-42","contacts":{"email":"a b@example.com"}}"#, .invalidContact),
        (#"{"customer_id":"c-42","contacts":{"push":"has space"}}"#, .invalidContact),
        (#"{"customer_id":"c-42","contacts":{"carrier_pigeon":"coo"}}"#, .unknownChannel),
        (#"{"customer_id":"c-42","consent":{"carrier_pigeon":true}}"#, .unknownChannel),
        (#"{"customer_id":"c-42","preferred_channels":["carrier_pigeon"]}"#, .unknownChannel),
        (#"{"customer_id":"c-42","customer_id":"c-42"}"#, .duplicateKey),
        (#"{"customer_id":"c-42","attributes":{"score":1e999}}"#, .numberOutOfRange),
    ])
    func strictProfiles(json: String, expected: RejectionReason) {
        let result = parser.profile(key: ArraySlice("c-42".utf8), value: ArraySlice(Array(json.utf8)))
        guard case .failure(let rejection) = result else { Issue.record("accepted \(json)"); return }
        #expect(rejection.reason == expected)
        // The reason never quotes the value (it may be personal data).
        for secret in ["not-a-phone", "nope", "carrier_pigeon", "Mars", "has space", "004790000000"] {
            #expect(!rejection.detail.contains(secret))
        }
    }

    @Test("profile ids follow the id rules; a tombstone (null value) is an erasure")
    func tombstonesAndProfileIDs() throws {
        func update(_ key: String?, _ json: String?) -> Result<ProfileUpdate, Rejection> {
            parser.profileUpdate(key: key.map { ArraySlice(Array($0.utf8)) }, value: json.map { ArraySlice(Array($0.utf8)) })
        }
        #expect(try update("c-42", nil).get() == .erase(customerID: "c-42"))
        #expect(try update("c-42", #"{"customer_id":"c-42"}"#).get() == .profile(CustomerProfile(customerID: "c-42")))
        if case .failure(let r) = update(nil, nil) { #expect(r.reason == .nullKey) } else { Issue.record("accepted") }
        if case .failure(let r) = update("  ", nil) { #expect(r.reason == .invalidID) } else { Issue.record("accepted") }
        if case .failure(let r) = update("c\u{0}1", #"{"customer_id":"c\u00001"}"#) { #expect(r.reason == .invalidID) } else { Issue.record("accepted") }
    }

    @Test("the age bound is configurable and named in the rejection")
    func ageBound() throws {
        let old = #"{"event_id":"e","customer_id":"c-42","type":"x","occurred_at":"2012-03-04T05:06:07Z"}"#
        guard case .failure(let r) = parse(old) else { Issue.record("accepted"); return }
        #expect(r.reason == .absurdTimestamp && r.detail.contains("worker.max_event_age_days"))
        let archive = RecordParser(limits: IngestLimits(maxAge: .zero))
        #expect((try? archive.touchpoint(key: ArraySlice("c-42".utf8), value: ArraySlice(Array(old.utf8)), now: now).get()) != nil)
    }
}

@Suite("Decision records")
struct DecisionParsingTests {
    @Test("every decision the engine writes reads back equal, skipped channels and optional fields included")
    func roundTrip() throws {
        let t = Timestamp(milliseconds: 1_795_700_000_000)
        let id = MessageID(journey: "abandoned_cart", version: 3, customerID: "c-42", step: "remind", causedBy: "e-1", instanceKey: "k-7", sequence: 0)
        let decisions = [
            Decision(reason: .fallbackChannel, rule: "consent:sms", customerID: "c-42", journey: "abandoned_cart", journeyVersion: 3,
                     instanceKey: "k-7", stage: "main", step: "remind", channel: .email, messageID: id, priority: 5, decidedAt: t,
                     sendAfter: t, expiresAt: t.adding(.hours(12)), causedBy: "e-1",
                     skipped: [ChannelRejection(channel: .sms, reason: .suppressedNoConsent, rule: "consent:sms")], detail: "with \"quotes\""),
            Decision(reason: .journeyEntered, rule: "entry:cart_abandoned", customerID: "c-1", decidedAt: t),
        ]
        for decision in decisions {
            #expect(try RecordParser().decision(decision.jsonBytes()).get() == decision)
        }
        if case .failure(let r) = RecordParser().decision(Array("{\"reason\":\"nope\"}".utf8)) { #expect(r.reason == .wrongType) } else { Issue.record("accepted") }
        if case .failure(let r) = RecordParser().decision(Array("not json".utf8)) { #expect(r.reason == .invalidJSON) } else { Issue.record("accepted") }
    }
}
