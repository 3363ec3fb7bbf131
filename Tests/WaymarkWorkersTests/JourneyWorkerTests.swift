import Foundation
import Testing
import WaymarkTestSupport
import WaymarkEngine
import WaymarkWire
import WaymarkKafka
import WaymarkWorkers

@Suite("Journey worker and scheduler end to end on the real stack", .serialized)
struct JourneyWorkerTests {
    // 2026-11-26 12:00 in Oslo (11:00Z): daytime, no quiet hours.
    static let t0 = Timestamp(milliseconds: 1_796_122_800_000 - 86_400_000 * 5)

    @Test("a scripted abandoned cart yields exactly the engine's messages and decisions, released on time",
          arguments: TestStack.RedisTopology.allCases)
    func scriptedStream(redis topology: TestStack.RedisTopology) async throws {
        try await TestStack.with(redis: topology) { h in
            let clock = TestClock(Self.t0)
            let env = h.environment(clock: clock)
            let worker = JourneyWorker(environment: env, client: h.client, redis: h.redis)
            let scheduler = Scheduler(environment: env, client: h.client, redis: h.redis)
            let tasks = Task { try await withThrowingTaskGroup(of: Void.self) { g in
                g.addTask { try await worker.run() }
                g.addTask { try await scheduler.run() }
                try await g.waitForAll()
            } }

            let profile = #"{"customer_id":"c-1","timezone":"Europe/Oslo","contacts":{"sms":"+4790000001","email":"c1@example.com"},"consent":{"sms":true,"email":true},"preferred_channels":["sms","email"]}"#
            try await h.produce("customers", key: "c-1", json: profile)
            #expect(try await h.eventually { worker.stats.profiles == 1 })
            let abandoned = #"{"event_id":"e-1","customer_id":"c-1","type":"cart_abandoned","occurred_at":"\#(Self.t0)","source":"web","attributes":{"cart_id":"k-1","value":59.9,"currency":"EUR"}}"#
            try await h.produce("touchpoints", key: "c-1", json: abandoned)
            // The same event again (a producer retry): no effect.
            try await h.produce("touchpoints", key: "c-1", json: abandoned)
            #expect(try await h.eventually { worker.stats.touchpoints == 2 })
            #expect(worker.stats.duplicates == 1)

            // Nothing is sent before the 1 h wait is over…
            clock.set(Self.t0.adding(.minutes(59)))
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await h.read("outbound.sms", timeout: .milliseconds(800)).isEmpty)
            // …and the reminder is released once it is.
            let due = Self.t0.adding(.hours(1))
            clock.set(due.adding(.seconds(1)))
            let sms = try await h.read("outbound.sms", expected: 1)
            #expect(sms.count == 1)

            // What the pure engine decides for the same inputs, independently of Kafka and Redis.
            let parser = RecordParser()
            let p = try parser.profile(key: ArraySlice("c-1".utf8), value: ArraySlice(profile.utf8)).get()
            let t = try parser.touchpoint(key: ArraySlice("c-1".utf8), value: ArraySlice(abandoned.utf8), now: Self.t0).get()
            let first = h.engine.process(CustomerState(), customerID: "c-1", profile: p, touchpoints: [t], now: Self.t0)
            let second = h.engine.wake(first.state, customerID: "c-1", profile: p, now: due.adding(.seconds(1)))
            #expect(first.messages.isEmpty)
            #expect(second.messages.count == 1)
            let expected = try #require(second.messages.first)
            #expect(expected.channel == .sms)
            #expect(sms.first.map { Array($0.value!) } == expected.jsonBytes())
            let message = jsonObject(sms.first?.value)
            #expect(message["message_id"] as? String == expected.messageID.description)
            // The shipped journey's experiment: the cart's arm (from the stable hash) picks the first reminder's copy.
            let experiment = try #require(h.engine.journeys.first { $0.name == "abandoned_cart" }?.experiment)
            let arm = Assignment.arm(in: experiment, customerID: "c-1", key: "k-1")
            #expect(arm != Experiment.holdoutArm)
            #expect(message["arm"] as? String == arm)
            #expect(message["template"] as? String == (arm == "B" ? "cart_reminder_1_offer" : "cart_reminder_1"))
            #expect(message["caused_by"] as? String == "e-1")
            #expect(sms.first?.key.map { String(decoding: $0, as: UTF8.self) } == "c-1")

            // Decisions on the topic are exactly the engine's decisions (order within a call kept).
            let expectedDecisions = (first.decisions + second.decisions).filter { $0.reason != .suppressedDuplicate }.map { $0.jsonBytes() }
            let decisions = try await h.read("journey.decisions", expected: expectedDecisions.count + 1)
            // A record published again by outbox recovery carries the same id: count it once.
            var seen = Set<[UInt8]>()
            let published = decisions.filter { seen.insert($0.header(recordIDHeader) ?? []).inserted }.map { Array($0.value!) }
            #expect(decisions.allSatisfy { $0.header(recordIDHeader) != nil })
            #expect(published.filter { !String(decoding: $0, as: UTF8.self).contains("suppressed_duplicate") } == expectedDecisions)
            #expect(published.contains { String(decoding: $0, as: UTF8.self).contains("suppressed_duplicate") })

            worker.stop()
            scheduler.stop()
            try await tasks.value
        }
    }

    @Test("bad input goes to the dead-letter topic with reasons; the worker keeps going and commits")
    func deadLetters() async throws {
        try await TestStack.with(extraYAML: "  unknown_customer: dead_letter\n") { h in
            let clock = TestClock(Self.t0)
            let worker = JourneyWorker(environment: h.environment(clock: clock), client: h.client, redis: h.redis)
            let task = Task { try await worker.run() }
            try await h.produce("customers", key: "c-ok", json: #"{"customer_id":"c-ok","timezone":"Europe/Oslo"}"#)
            let good = #"{"event_id":"e-ok","customer_id":"c-ok","type":"page_view","occurred_at":"\#(Self.t0)"}"#
            var bad: [(key: String?, value: [UInt8], reason: String)] = [
                ("c-1", Array("{not json".utf8), "invalid_json"),
                ("c-1", Array(#"{"customer_id":"c-1","type":"x","occurred_at":"\#(Self.t0)"}"#.utf8), "missing_field"),
                ("c-1", Array(#"{"event_id":1,"customer_id":"c-1","type":"x","occurred_at":"\#(Self.t0)"}"#.utf8), "wrong_type"),
                ("c-1", Array(#"{"event_id":"e","customer_id":"c-1","type":"x","occurred_at":"\#(Self.t0)"#.utf8) + [0xFF, 0xFE] + Array("\"}".utf8), "invalid_utf8"),
                ("c-1", [UInt8](repeating: UInt8(ascii: " "), count: 2 * 1024 * 1024 - 200), "oversize"),
                (nil, Array(good.utf8), "null_key"),
                ("c-1", Array(#"{"event_id":"e-9","customer_id":"c-1","type":"x","occurred_at":"9999-01-01T00:00:00Z"}"#.utf8), "absurd_timestamp"),
                ("c-nobody", Array(#"{"event_id":"e-8","customer_id":"c-nobody","type":"page_view","occurred_at":"\#(Self.t0)"}"#.utf8), "unknown_customer"),
            ]
            bad.append(("c-ok", Array(good.utf8), ""))
            try await h.produce("touchpoints", bad.map { ($0.key, $0.value) })
            let dlq = try await h.read("touchpoints.dlq", expected: bad.count - 1)
            let reasons = dlq.map { String(decoding: $0.header(DeadLetterHeaders.Name.reason) ?? [], as: UTF8.self) }
            #expect(reasons.sorted() == bad.dropLast().map(\.reason).sorted())
            // Original bytes are kept.
            #expect(dlq.first { $0.header(DeadLetterHeaders.Name.reason) == Array("invalid_json".utf8) }?.value.map(Array.init) == Array("{not json".utf8))
            // The good record after the bad ones was processed: the worker is alive and moved on.
            #expect(try await h.eventually { worker.stats.touchpoints == 2 })
            #expect(try await h.eventually {
                let lag = try await KafkaAdmin(client: h.client).lag(group: h.settings.kafka.journeyGroup, topics: ["touchpoints"])
                return lag.map(\.lag).reduce(0, +) == 0
            })
            worker.stop()
            try await task.value
        }
    }
}
