import Foundation
import Testing
import WaymarkEngine
import WaymarkWire

@Suite struct EncodingTests {
    let message = OutboundMessage(
        messageID: MessageID(journey: "abandoned_cart", version: 3, customerID: "c-42", step: "remind", causedBy: "e-8f1c",
                             instanceKey: "k-77", sequence: 0),
        customerID: "c-42", channel: .sms, journey: "abandoned_cart", journeyVersion: 3, stage: "", step: "remind",
        template: "cart_reminder", priority: 5, transactional: false, createdAt: ts("2026-11-20T18:04:05+01:00"),
        sendAfter: ts("2026-11-21T08:12:00+01:00"), expiresAt: ts("2026-11-22T18:04:05+01:00"), causedBy: "e-8f1c",
        locale: "nb-NO", variables: ["value": .number(59.9), "cart_id": .string("k-77"), "note": .string("a \"quoted\"\n\u{1}line"),
                                     "n": .number(3), "tags": .array([.bool(true), .null])],
        fallbackChannels: [.email])

    @Test func messageJSONIsCanonicalAndValid() throws {
        let bytes = message.jsonBytes()
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.hasPrefix(#"{"caused_by":"e-8f1c","channel":"sms","created_at":"2026-11-20T17:04:05.000Z","#))
        #expect(text.contains(#""variables":{"cart_id":"k-77","n":3,"note":"a \"quoted\"\n\u0001line","tags":[true,null],"value":59.9}"#))
        let obj = try JSONSerialization.jsonObject(with: Data(bytes)) as! [String: Any]
        #expect(obj["message_id"] as? String == message.messageID.description)
        #expect(obj["send_after"] as? String == "2026-11-21T07:12:00.000Z")
        // Identical input, identical bytes, independent of dictionary order.
        var copy = message
        copy.variables = Dictionary(uniqueKeysWithValues: message.variables.reversed())
        #expect(copy.jsonBytes() == bytes)
    }

    @Test func decisionJSONHasEveryKey() throws {
        let d = Decision(reason: .fallbackChannel, rule: "consent:sms", customerID: "c-42", journey: "abandoned_cart", journeyVersion: 3,
                         channel: .email, messageID: message.messageID, decidedAt: ts("2026-11-20T18:04:05Z"),
                         skipped: [ChannelRejection(channel: .sms, reason: .suppressedNoConsent, rule: "consent:sms")])
        let obj = try JSONSerialization.jsonObject(with: Data(d.jsonBytes())) as! [String: Any]
        #expect(obj.keys.sorted() == ["arm", "caused_by", "channel", "customer_id", "decided_at", "detail", "expires_at", "instance_key", "journey",
                                      "journey_version", "message_id", "priority", "reason", "rule", "send_after", "skipped", "stage", "step"])
        #expect(obj["reason"] as? String == "fallback_channel" && obj["rule"] as? String == "consent:sms")
        #expect((obj["skipped"] as? [[String: String]])?.first?["reason"] == "suppressed_no_consent")
        #expect(obj["arm"] is NSNull && obj["elapsed_ms"] == nil)
        // A conversion carries its arm and the time since entry, and reads back the same.
        var c = d
        c.reason = .converted; c.rule = "goal:purchase"; c.arm = "B"; c.elapsedMilliseconds = 5_400_000; c.skipped = []
        let back = try RecordParser().decision(c.jsonBytes()).get()
        #expect(back == c)
    }

    // Every format Waymark writes is read back by its own decoder into the same value.

    @Test func touchpointAndReceiptRoundTrip() throws {
        let touchpoint = Touchpoint(eventID: "e-1", customerID: "c-42", type: "cart_abandoned", occurredAt: ts("2026-11-20T18:04:05.123+01:00"),
                                    source: "web", attributes: ["cart_id": .string("k-77"), "value": .number(59.9), "tags": .array([.bool(true)])])
        let now = ts("2026-11-21T00:00:00Z")
        #expect(try RecordParser().touchpoint(key: ArraySlice("c-42".utf8), value: ArraySlice(touchpoint.jsonBytes()), now: now).get() == touchpoint)
        var noSource = touchpoint; noSource.source = nil
        #expect(try RecordParser().touchpoint(key: ArraySlice("c-42".utf8), value: ArraySlice(noSource.jsonBytes()), now: now).get() == noSource)

        for outcome in DeliveryReceipt.Outcome.allCases {
            let receipt = DeliveryReceipt(outcome, for: message, at: ts("2026-11-21T07:12:01Z"), detail: outcome == .failed ? "expired" : nil)
            let read = try RecordParser().touchpoint(key: ArraySlice("c-42".utf8), value: ArraySlice(receipt.jsonBytes()), now: now).get()
            #expect(read.type == outcome.rawValue && read.source == DeliveryReceipt.source)
            #expect(DeliveryReceipt(read) == receipt)
            // Pinned: the id makes a receipt re-published after a crash a duplicate event.
            #expect(read.eventID == "r-\(message.messageID)-\(outcome.rawValue)-sms")
        }
        #expect(DeliveryReceipt(touchpoint) == nil)
    }

    @Test func profileRoundTrips() throws {
        let profile = CustomerProfile(customerID: "c-42", timezone: "Europe/Oslo", locale: "nb-NO",
                                      contacts: [.sms: "+4790000001", .email: "c42@example.com"], consent: [.sms: true, .email: false],
                                      preferredChannels: [.email, .sms], attributes: ["tier": .string("gold"), "score": .number(3)])
        #expect(try RecordParser().profile(key: ArraySlice("c-42".utf8), value: ArraySlice(profile.jsonBytes())).get() == profile)
        let bare = CustomerProfile(customerID: "c-7")
        #expect(try RecordParser().profile(key: ArraySlice("c-7".utf8), value: ArraySlice(bare.jsonBytes())).get() == bare)
    }

    @Test func outboundMessageRoundTrips() throws {
        #expect(try RecordParser().outbound(key: ArraySlice("c-42".utf8), value: ArraySlice(message.jsonBytes())).get() == message)
        #expect(try RecordParser().outbound(message.jsonBytes()).get() == message)
        // The experiment arm travels with the message (and is absent from messages of journeys without one).
        var armed = message
        armed.arm = "holdout"
        #expect(try RecordParser().outbound(armed.jsonBytes()).get() == armed)
        #expect(!String(decoding: message.jsonBytes(), as: UTF8.self).contains("\"arm\""))
        #expect(throws: Rejection.self) { try RecordParser().outbound(key: ArraySlice("c-9".utf8), value: ArraySlice(message.jsonBytes())).get() }
    }

    @Test func providerHandoffRoundTrips() throws {
        let handoff = ProviderHandoff(idempotencyKey: message.messageID.description, attempt: 2, handedAt: 1_790_000_000_123,
                                      to: "+4790000001", message: message)
        let line = handoff.jsonBytes()
        #expect(try ProviderHandoff.decode(line).get() == handoff)
        #expect(ProviderHandoff.idempotencyKey(ofLine: line) == message.messageID.description)
        #expect(ProviderHandoff.idempotencyKey(ofLine: Array(#"{"attempt":1}"#.utf8)) == nil)
        #expect(throws: Rejection.self) { try ProviderHandoff.decode(Array(#"{"idempotency_key":"x"}"#.utf8)).get() }
    }

    @Test func deadLetterHeadersRoundTripAndLastWins() {
        let info = DeadLetterHeaders(reason: "invalid_json", detail: "syntax error at byte 3", sourceTopic: "touchpoints",
                                     sourcePartition: 2, sourceOffset: 77, deadLetteredAt: 1_790_000_000_000)
        let headers = info.encoded.map { (name: $0.name, value: Optional(Array($0.value.utf8))) }
        #expect(DeadLetterHeaders(headers: headers) == info)
        #expect(Set(info.encoded.map(\.name)) == DeadLetterHeaders.Name.added)
        // Dead-lettered again after a redrive: the newest reason is the one that counts.
        let again = headers + [(name: DeadLetterHeaders.Name.reason, value: Optional(Array("key_mismatch".utf8))),
                               (name: DeadLetterHeaders.Name.redrivenFrom, value: Optional(Array("touchpoints.dlq:0:5".utf8)))]
        let read = DeadLetterHeaders(headers: again)
        #expect(read.reason == "key_mismatch" && read.redrivenFrom == "touchpoints.dlq:0:5" && read.sourceOffset == 77)
        #expect(DeadLetterHeaders(headers: []).reason == "unknown")
    }

    /// `--json` output: snake_case names, RFC 3339 times, dictionary keys untouched.
    @Test func operatorJSONConventions() throws {
        struct Row: Codable, Equatable {
            var messageID: String
            @RFC3339Time var deadLetteredAt: Int64
            @OptionalRFC3339Time var parkedUntil: Int64?
            var byTopic: [String: Int]
            var oldestAgeMs: Int
        }
        let row = Row(messageID: "m-1", deadLetteredAt: 1_790_000_000_123, parkedUntil: nil, byTopic: ["journey.decisions": 1, "outboundSMS": 2],
                      oldestAgeMs: 5)
        let text = String(decoding: try OperatorJSON.encoder().encode(row), as: UTF8.self)
        #expect(text.contains(#""message_id" : "m-1""#))
        #expect(text.contains(#""dead_lettered_at" : "2026-09-21T14:13:20.123Z""#))
        #expect(text.contains(#""parked_until" : null"#))
        #expect(text.contains(#""outboundSMS" : 2"#) && text.contains(#""oldest_age_ms" : 5"#))
        // (Foundation's snake_case decoding would look for `messageId`: output is one-way, read it as plain JSON.)
        let read = try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
        #expect(read.keys.sorted() == ["by_topic", "dead_lettered_at", "message_id", "oldest_age_ms", "parked_until"])
    }
}

private func ts(_ s: String) -> Timestamp {
    switch Timestamp.parseRFC3339(s) {
    case .success(let t): return t
    case .failure(let e): fatalError("bad test timestamp \(s): \(e)")
    }
}
