import Foundation
import Logging
import ServiceLifecycle
import ServiceLifecycleTestKit
import Synchronization
import Testing
import WaymarkTestSupport
import WaymarkEngine
import WaymarkWire
import WaymarkKafka
import WaymarkRedis
import WaymarkState
import WaymarkWorkers

/// Workers as swift-service-lifecycle services: cancellation and graceful shutdown end them, and
/// readiness tells the truth about Redis and Kafka.
@Suite("Worker lifecycle on the real stack", .serialized)
struct LifecycleTests {
    /// Runs `service` in a task and reports when it has ended.
    final class Running: Sendable {
        final class Flag: Sendable { let value = Mutex(false) }
        let task: Task<Void, any Error>
        private let ended = Flag()
        init(_ service: any Service) {
            let ended = ended
            task = Task { defer { ended.value.withLock { $0 = true } }; try await service.run() }
        }
        var hasEnded: Bool { ended.value.withLock { $0 } }
    }

    @Test("cancelling idle workers ends them promptly (they used to poll or spin forever)")
    func cancellationEndsIdleWorkers() async throws {
        try await TestStack.with { h in
            let env = h.environment(clock: TestClock(JourneyWorkerTests.t0))
            let services: [any Service] = [
                JourneyWorker(environment: env, client: h.client, redis: h.redis),
                Scheduler(environment: env, client: h.client, redis: h.redis),
                SenderWorker(environment: env, channels: [.sms], provider: try FileProvider(path: h.local.directory.appendingPathComponent("p.jsonl").path),
                             client: h.client, redis: h.redis),
            ]
            let running = services.map(Running.init)
            try await Task.sleep(for: .seconds(3))  // connected, subscribed, idle
            #expect(running.allSatisfy { !$0.hasEnded })
            for r in running { r.task.cancel() }
            #expect(try await h.eventually(timeout: .seconds(15)) { running.allSatisfy(\.hasEnded) })
        }
    }

    @Test("graceful shutdown of a ServiceGroup drains: the batch in flight is published and committed")
    func gracefulShutdownDrains() async throws {
        try await TestStack.with { h in
            let clock = TestClock(JourneyWorkerTests.t0)
            let worker = JourneyWorker(environment: h.environment(clock: clock), client: h.client, redis: h.redis)
            var logger = Logger(label: "test.group")
            logger.logLevel = .warning
            try await testGracefulShutdown { trigger in
                let group = ServiceGroup(services: [worker], logger: logger)
                let running = Task { try await group.run() }
                let events = (0..<500).map { i in
                    (key: Optional("c-\(i % 50)"), value: Array(#"{"event_id":"g-\#(i)","customer_id":"c-\#(i % 50)","type":"page_view","occurred_at":"\#(JourneyWorkerTests.t0)"}"#.utf8))
                }
                try await h.produce("touchpoints", events)
                #expect(try await h.eventually { worker.stats.touchpoints > 0 })
                trigger.triggerGracefulShutdown()
                try await running.value
            }
            // Everything read was processed, published and committed before the worker left.
            let lag = try await KafkaAdmin(client: h.client).lag(group: h.settings.kafka.journeyGroup, topics: ["touchpoints"])
            let committed = 500 - lag.map(\.lag).reduce(0, +)
            #expect(committed == worker.stats.touchpoints, "committed \(committed), processed \(worker.stats.touchpoints)")
        }
    }

    /// Polls `condition` every 50 ms until it holds or `seconds` pass.
    static func within(_ seconds: Double, _ condition: @Sendable () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return condition()
    }

    @Test("readiness follows Redis and Kafka: a frozen Redis makes it unready within seconds, and ready again after")
    func readinessTellsTheTruth() async throws {
        try await TestStack.with { h in
            var logger = Logger(label: "test.probe")
            logger.logLevel = .critical
            let probe = DependencyProbe(redis: h.redis, client: h.client, topic: "touchpoints", logger: logger, freshness: .seconds(3))
            let running = Running(probe)
            let ready = await Self.within(20) { probe.readiness().isReady }
            #expect(ready)
            guard let redis = h.local.redis?.process else { Issue.record("no local redis"); return }
            let frozenAt = ContinuousClock.now
            redis.send(signal: SIGSTOP)
            let unready = await Self.within(10) { !probe.readiness().isReady }
            let noticedAfter = ContinuousClock.now - frozenAt
            let detail = probe.readiness().detail
            redis.send(signal: SIGCONT)
            #expect(unready, "still ready with Redis frozen")
            #expect(noticedAfter >= .seconds(1), "unready too soon to be the freeze: \(noticedAfter)")
            #expect(detail.contains("redis"), "\(detail)")
            let again = await Self.within(15) { probe.readiness().isReady }
            #expect(again)
            running.task.cancel()
            let ended = await Self.within(15) { running.hasEnded }
            #expect(ended)
        }
    }

    @Test("unreadable state is never overwritten or skipped silently: events dead-lettered, wake-ups postponed, customers without state leave the due index")
    func unreadableState() async throws {
        try await TestStack.with { h in
            let keys = KeySpace(prefix: h.settings.redis.keyPrefix, shards: h.settings.redis.shards)
            let redis = try await RedisConnection.connect(h.redis)
            let garbage: [UInt8] = [0x57, 0x4D, 0x09, 0xFF]  // a format this version does not know
            _ = try await redis.send(RedisCommand("HSET", keys.state("c-bad"), "v", "7", "s", garbage))
            let now = JourneyWorkerTests.t0
            _ = try await redis.send(RedisCommand("ZADD", keys.due(shard: keys.shard(of: "c-bad")), Int(now.milliseconds - 1_000), "c-bad"))
            _ = try await redis.send(RedisCommand("ZADD", keys.due(shard: keys.shard(of: "c-gone")), Int(now.milliseconds - 1_000), "c-gone"))
            try await h.withWorkers(clock: TestClock(now)) { worker, scheduler in
                try await h.produce("touchpoints", key: "c-bad", json: #"{"event_id":"u-1","customer_id":"c-bad","type":"page_view","occurred_at":"\#(now)"}"#)
                let dlq = try await h.read("touchpoints.dlq", expected: 1)
                #expect(dlq.first?.header(DeadLetterHeaders.Name.reason) == Array("unreadable_state".utf8))
                let ticks = scheduler.stats.ticks
                #expect(try await h.eventually { scheduler.stats.ticks >= ticks + 3 })
            }
            // The state is exactly as it was; its wake-up moved a minute into the (wall-clock) future; the
            // customer without state left the index.
            let stored = try await redis.send(RedisCommand("HGET", keys.state("c-bad"), "s"))
            #expect(stored.bytes == garbage)
            let score = try await redis.send(RedisCommand("ZSCORE", keys.due(shard: keys.shard(of: "c-bad")), "c-bad")).string.flatMap(Double.init)
            #expect((score ?? 0) > Double(now.milliseconds))
            #expect(try await redis.send(RedisCommand("ZSCORE", keys.due(shard: keys.shard(of: "c-gone")), "c-gone")) == .null)
            await redis.close()
        }
    }
}
