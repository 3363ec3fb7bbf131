import Foundation
import Testing
import WaymarkEngine
import WaymarkIngest
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
        let t = try parse(#"{"event_id":"e\u00e9\n","customer_id":"c-42","type":"x","occurred_at":"2026-11-20T18:04:05Z","extra":{"deep":[true]}}"#).get()
        #expect(t.eventID == "eé\n")
        #expect(t.source == nil)
        #expect(t.attributes.isEmpty)
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

    @Test("profiles: wrong types are rejected; unknown channels are ignored")
    func profiles() throws {
        func profile(_ json: String) -> Result<CustomerProfile, Rejection> {
            parser.profile(key: ArraySlice("c-42".utf8), value: ArraySlice(Array(json.utf8)))
        }
        let ok = try profile(#"{"customer_id":"c-42","timezone":"Europe/Oslo","contacts":{"sms":"+47","pigeon":"coo"},"consent":{"sms":true},"preferred_channels":["pigeon","sms","sms"]}"#).get()
        #expect(ok.contacts == [.sms: "+47"])
        #expect(ok.preferredChannels == [.sms])
        if case .failure(let r) = profile(#"{"customer_id":"c-42","consent":{"sms":"yes"}}"#) { #expect(r.reason == .wrongType) } else { Issue.record("accepted") }
        if case .failure(let r) = profile(#"{"customer_id":"c-9"}"#) { #expect(r.reason == .keyMismatch) } else { Issue.record("accepted") }
        if case .failure(let r) = profile(#"{"timezone":"UTC"}"#) { #expect(r.reason == .missingField) } else { Issue.record("accepted") }
    }
}
