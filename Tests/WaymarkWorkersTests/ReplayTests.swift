import Foundation
import Testing
import WaymarkConfig
import WaymarkControl
import WaymarkEngine
import WaymarkKafka
import WaymarkRedis
import WaymarkWorkers

@Suite("Replay dry run on the real stack", .serialized)
struct ReplayTests {
    static let t0 = JourneyWorkerTests.t0

    @Test("a stricter cap removes exactly the messages an independent count predicts; nothing is written or published")
    func stricterCap() async throws {
        try await Harness.with { h in
            let clock = TestClock(Self.t0)
            let env = h.environment(clock: clock)
            let worker = JourneyWorker(environment: env, client: h.client, redis: h.redis)
            let scheduler = Scheduler(environment: env, client: h.client, redis: h.redis)
            let services = Task { try await withThrowingTaskGroup(of: Void.self) { g in
                g.addTask { try await worker.run() }
                g.addTask { try await scheduler.run() }
                try await g.waitForAll()
            } }
            let customers = (1...6).map { "c-\($0)" }
            for c in customers {
                try await h.produce("customers", key: c, json: #"{"customer_id":"\#(c)","timezone":"Europe/Oslo","contacts":{"email":"\#(c)@example.com"},"consent":{"email":true},"preferred_channels":["email"]}"#)
            }
            #expect(try await h.eventually { worker.stats.profiles == customers.count })
            // Two abandoned carts per customer (the second only for the first four), 2 h apart;
            // each gets a reminder after 1 h. The clock moves like live time would.
            var produced = 0
            for (round, offset) in [(1, TimeSpan.zero), (2, TimeSpan.hours(2))] {
                let at = Self.t0.adding(offset)
                clock.set(at)
                for c in customers where round == 1 || Int(c.dropFirst(2))! <= 4 {
                    try await h.produce("touchpoints", key: c, json: #"{"event_id":"e-\#(c)-\#(round)","customer_id":"\#(c)","type":"cart_abandoned","occurred_at":"\#(at)","attributes":{"cart_id":"k-\#(c)-\#(round)","value":50}}"#)
                    produced += 1
                }
                let target = produced
                #expect(try await h.eventually { worker.stats.touchpoints == target })
                clock.set(at.adding(.hours(1)).adding(.seconds(1)))
                let ticks = scheduler.stats.ticks
                #expect(try await h.eventually { scheduler.stats.ticks >= ticks + 3 })
            }
            worker.stop(); scheduler.stop()
            try await services.value

            // Independent count from what was actually published: with at most one abandoned-cart
            // message per week, every customer keeps only the first.
            let published = try await h.read("outbound.email", expected: 10).compactMap { InvariantAudit.message($0.value!) }
            #expect(published.count == 10)
            let perCustomer = Dictionary(grouping: published.filter { $0.journey == "abandoned_cart" }, by: \.customer)
            let expectedRemoved = perCustomer.values.reduce(0) { $0 + max($1.count - 1, 0) }
            #expect(expectedRemoved == 4)

            // New rules: abandoned_cart_per_week 2 → 1.
            let rulesDir = h.stack.directory.appendingPathComponent("new-rules")
            try FileManager.default.createDirectory(at: rulesDir, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: Harness.repoRoot + "/config/journeys", toPath: rulesDir.appendingPathComponent("journeys").path)
            let rules = try String(contentsOfFile: Harness.repoRoot + "/config/rules.yaml", encoding: .utf8)
            let stricter = rules.replacingOccurrences(of: "journey: abandoned_cart, limit: 2", with: "journey: abandoned_cart, limit: 1")
            #expect(stricter != rules)
            try stricter.write(to: rulesDir.appendingPathComponent("rules.yaml"), atomically: true, encoding: .utf8)

            // Snapshot of everything live before the dry run.
            let redis = try await RedisConnection.connect(h.redis)
            func snapshot() async throws -> [String: [UInt8]] {
                let keys = try await redis.send(RedisCommand("KEYS", "*")).array?.compactMap(\.string) ?? []
                var out: [String: [UInt8]] = [:]
                for key in keys { out[key] = try await redis.send(RedisCommand("DUMP", key)).bytes ?? [] }
                return out
            }
            let admin = try KafkaAdmin(client: h.client)
            let topics = h.settings.kafka.allTopics.map(\.name)
            let redisBefore = try await snapshot()
            let endsBefore = try await admin.endOffsets(topics: topics).mapValues(\.high)

            let history = try await ReplayDryRun.readHistory(
                client: h.client, admin: admin, touchpointTopics: ["touchpoints", "deliveries"], customersTopic: "customers",
                outboundTopics: h.settings.kafka.channels.map { "outbound.\($0)" })
            let proposed = try JourneyLoader.loadEngine(configDirectory: rulesDir.path)
            let dryRun = ReplayDryRun(current: h.engine, proposed: proposed, from: Self.t0, to: Self.t0.adding(.days(1)))
            let report = dryRun.run(events: history.events, profiles: history.profiles, published: history.published)

            #expect(report.changes.filter { $0.kind == .removed }.count == expectedRemoved)
            #expect(report.changes.filter { $0.kind != .removed }.isEmpty, "\(report.changes.filter { $0.kind != .removed })")
            #expect(Set(report.changes.map(\.customer)) == Set(perCustomer.filter { $0.value.count > 1 }.keys))
            #expect(report.changes.allSatisfy { $0.journey == "abandoned_cart" })

            // The same rules change nothing.
            let same = ReplayDryRun(current: h.engine, proposed: h.engine, from: Self.t0, to: Self.t0.adding(.days(1)))
                .run(events: history.events, profiles: history.profiles, published: history.published)
            #expect(same.changes.isEmpty, "\(same.changes)")

            #expect(try await snapshot() == redisBefore)
            #expect(try await admin.endOffsets(topics: topics).mapValues(\.high) == endsBefore)
            await redis.close()
        }
    }
}
