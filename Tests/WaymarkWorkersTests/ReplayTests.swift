import Foundation
import Testing
import WaymarkTestSupport
import WaymarkConfig
import WaymarkControl
import WaymarkEngine
import WaymarkKafka
import WaymarkRedis
import WaymarkState
import WaymarkWorkers

@Suite("Replay dry run on the real stack", .serialized)
struct ReplayTests {
    static let t0 = JourneyWorkerTests.t0

    /// Six customers with email consent; two abandoned carts 2 h apart for the first four, one for the
    /// others; a live journey worker and scheduler with a clock that moves like live time.
    func liveHistory(_ h: TestStack) async throws {
        let clock = TestClock(Self.t0)
        try await h.withWorkers(clock: clock) { worker, scheduler in
            let customers = (1...6).map { "c-\($0)" }
            for c in customers {
                try await h.produce("customers", key: c, json: #"{"customer_id":"\#(c)","timezone":"Europe/Oslo","contacts":{"email":"\#(c)@example.com"},"consent":{"email":true},"preferred_channels":["email"]}"#)
            }
            #expect(try await h.eventually { worker.stats.profiles == customers.count })
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
        }
    }

    /// A copy of config/ with abandoned_cart_per_week 2 → 1.
    func stricterRules(_ h: TestStack) throws -> String {
        let rulesDir = h.local.directory.appendingPathComponent("new-rules")
        if FileManager.default.fileExists(atPath: rulesDir.path) { return rulesDir.path }
        try FileManager.default.createDirectory(at: rulesDir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: TestStack.repoRoot + "/config/journeys", toPath: rulesDir.appendingPathComponent("journeys").path)
        let rules = try String(contentsOfFile: TestStack.repoRoot + "/config/rules.yaml", encoding: .utf8)
        let stricter = rules.replacingOccurrences(of: "journey: abandoned_cart, limit: 2", with: "journey: abandoned_cart, limit: 1")
        #expect(stricter != rules)
        try stricter.write(to: rulesDir.appendingPathComponent("rules.yaml"), atomically: true, encoding: .utf8)
        return rulesDir.path
    }


    @Test("a stricter cap removes exactly the messages an independent count predicts; nothing is written or published")
    func stricterCap() async throws {
        try await TestStack.with { h in
            try await liveHistory(h)

            // Independent count from what was actually published: with at most one abandoned-cart
            // message per week, every customer keeps only the first.
            let published = try await h.read("outbound.email", expected: 10).compactMap { InvariantAudit.message($0.value!) }
            #expect(published.count == 10)
            let perCustomer = Dictionary(grouping: published.filter { $0.journey == "abandoned_cart" }, by: \.customer)
            let expectedRemoved = perCustomer.values.reduce(0) { $0 + max($1.count - 1, 0) }
            #expect(expectedRemoved == 4)

            // New rules: abandoned_cart_per_week 2 → 1.
            let rulesDir = URL(fileURLWithPath: try stricterRules(h))

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

    @Test("rebuild: fenced workers wait; an interrupted rebuild resumes to the same state as an uninterrupted one; nothing is re-sent")
    func rebuild() async throws {
        try await TestStack.with { h in
            try await liveHistory(h)
            let proposed = try JourneyLoader.loadEngine(configDirectory: try stricterRules(h))
            let admin = try KafkaAdmin(client: h.client)
            let redis = try await RedisConnection.connect(h.redis)
            let keys = KeySpace(prefix: h.settings.redis.keyPrefix, shards: h.settings.redis.shards)
            let store = RedisStateStore(connection: redis, keys: keys)

            // A fence pauses a live worker; lifting it lets the held batch through.
            let clock = TestClock(Self.t0.adding(.hours(5)))
            let worker = JourneyWorker(environment: h.environment(clock: clock), client: h.client, redis: h.redis)
            let running = Task { try await worker.run() }
            let fence = Fence(connection: redis, keys: keys)
            #expect(try await fence.raise(holder: "test", ttlSeconds: 60))
            try await h.produce("touchpoints", key: "c-6", json: #"{"event_id":"e-late","customer_id":"c-6","type":"page_view","occurred_at":"\#(Self.t0.adding(.hours(5)))"}"#)
            try await Task.sleep(for: .seconds(3))
            #expect(worker.stats.touchpoints == 0)
            try await fence.lift(holder: "test")
            #expect(try await h.eventually { worker.stats.touchpoints == 1 })
            worker.stop()
            try await running.value

            let topics = h.settings.kafka.allTopics.map(\.name)
            let endsBefore = try await admin.endOffsets(topics: topics).mapValues(\.high)
            let now = Self.t0.adding(.days(1))
            func rebuild(into store: RedisStateStore, interruptAfter: Int?) async throws -> RebuildReport {
                var job = ReplayRebuild(current: h.engine, proposed: proposed, from: Self.t0, now: now, id: "r1")
                job.settle = .milliseconds(100)
                job.batchSize = 1
                job.interruptAfter = interruptAfter
                return try await job.run(store: store, client: h.client, admin: admin,
                                         touchpointTopics: ["touchpoints", "deliveries"], customersTopic: "customers")
            }
            // Interrupted after two customers: the fence stays up, the checkpoint remembers.
            await #expect(throws: RebuildInterrupted.self) { _ = try await rebuild(into: store, interruptAfter: 2) }
            #expect(try await fence.current() == "r1")
            let resumed = try await rebuild(into: store, interruptAfter: nil)
            #expect(resumed.resumedPast == 2 && resumed.customers == 6 && resumed.conflicts == 0)
            #expect(try await fence.current() == nil)

            // The same rebuild, uninterrupted, into a separate key space.
            let fresh = RedisStateStore(connection: redis, keys: KeySpace(prefix: "wm2", shards: keys.shards))
            let uninterrupted = try await rebuild(into: fresh, interruptAfter: nil)
            #expect(uninterrupted.rebuilt == 6 && uninterrupted.pastMessagesNotResent > 0)
            let customers = (1...6).map { "c-\($0)" }
            let a = try await store.load(customers), b = try await fresh.load(customers)
            for (x, y) in zip(a, b) {
                let sx = try CustomerState(decoding: x.state!), sy = try CustomerState(decoding: y.state!)
                #expect(sx == sy, "state of \(x.customer) differs after resuming")
                // The new cap in force: one abandoned-cart message per customer in the cap history.
                #expect(sx.capHistory.filter { $0.journey == "abandoned_cart" }.count == 1)
            }
            // Nothing was published by the rebuild.
            #expect(try await admin.endOffsets(topics: topics).mapValues(\.high) == endsBefore)
            await redis.close()
        }
    }
}
