import Testing
import WaymarkEngine

@Suite struct StateCodingTests {
    let message = OutboundMessage(
        messageID: MessageID(journey: "abandoned_cart", version: 3, customerID: "c-42", step: "remind", causedBy: "e-8f1c",
                             instanceKey: "k-77", sequence: 0),
        customerID: "c-42", channel: .sms, journey: "abandoned_cart", journeyVersion: 3, stage: "", step: "remind",
        template: "cart_reminder", priority: 5, transactional: false, createdAt: ts("2026-11-20T18:04:05+01:00"),
        sendAfter: ts("2026-11-21T08:12:00+01:00"), expiresAt: ts("2026-11-22T18:04:05+01:00"), causedBy: "e-8f1c",
        locale: "nb-NO", variables: ["value": .number(59.9), "cart_id": .string("k-77"), "note": .string("a \"quoted\"\n\u{1}line"),
                                     "n": .number(3), "tags": .array([.bool(true), .null])],
        fallbackChannels: [.email])

    @Test func messageIDsAreStableAndDistinct() {
        let id = MessageID(journey: "abandoned_cart", version: 3, customerID: "c-42", step: "remind", causedBy: "e-8f1c",
                           instanceKey: "k-77", sequence: 0)
        // Pinned: changing the derivation would re-send messages after an upgrade.
        #expect(id.description == MessageID(id.description)!.description)
        #expect(id.description.count == 18 && id.description.hasPrefix("m-"))
        #expect(id != MessageID(journey: "abandoned_cart", version: 4, customerID: "c-42", step: "remind", causedBy: "e-8f1c", instanceKey: "k-77", sequence: 0))
        #expect(id != MessageID(journey: "abandoned_cart", version: 3, customerID: "c-42", step: "remind", causedBy: "e-8f1d", instanceKey: "k-77", sequence: 0))
        #expect(StableHash.of("") == 0xcbf2_9ce4_8422_2325)
        #expect(StableHash.of("a") == 0xaf63_dc4c_8601_ec8c)  // FNV-1a 64 reference value
    }

    @Test func stateWithEverythingRoundTrips() throws {
        var s = CustomerState()
        s.clock = ts("2026-11-20T18:04:05Z")
        s.instances = [JourneyInstance(journey: "lifecycle", version: 1, key: "", enteredAt: ts("2026-11-01T00:00:00Z"), stage: "loyalty",
                                       stageEnteredAt: s.clock, stagesReached: [StageVisit(stage: "awareness", at: ts("2026-11-01T00:00:00Z"))],
                                       step: "w", wakeAt: ts("2026-11-25T00:00:00Z"), causedBy: "e-1", sendSequence: 7,
                                       context: [ContextField(name: "value", value: .number(-0.5)), ContextField(name: "ø", value: .string("æå"))])]
        s.ended = [EndedInstance(journey: "abandoned_cart", key: "k-1", endedAt: ts("2026-11-19T00:00:00Z"))]
        s.recentEvents = [ProcessedEvent(fingerprint: .max, at: s.clock)]
        s.capHistory = [CapEntry(at: ts("2026-11-21T07:12:00Z"), channel: .viber, journey: "j", transactional: true, messageID: message.messageID)]
        s.deferred = [DeferredMessage(message: message, instanceKey: "k-77", rule: "quiet_hours:default")]
        s.counters = [FunnelCounter(journey: "lifecycle", stage: "loyalty", kind: .stageReached, count: 3)]
        let bytes = s.encoded()
        #expect(try CustomerState(decoding: bytes) == s)
        #expect(try CustomerState(decoding: []) == CustomerState())
        var bad = bytes; bad[2] = 99
        #expect(throws: StateDecodingError.self) { try CustomerState(decoding: bad) }
        #expect(throws: StateDecodingError.self) { try CustomerState(decoding: bytes + [0]) }
    }
}
