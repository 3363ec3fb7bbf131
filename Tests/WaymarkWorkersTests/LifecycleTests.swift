import Foundation
import Logging
import ServiceLifecycle
import ServiceLifecycleTestKit
import Synchronization
import Testing
import WaymarkEngine
import WaymarkKafka
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
        try await Harness.with { h in
            let env = h.environment(clock: TestClock(JourneyWorkerTests.t0))
            let services: [any Service] = [
                JourneyWorker(environment: env, client: h.client, redis: h.redis),
                Scheduler(environment: env, client: h.client, redis: h.redis),
                SenderWorker(environment: env, channels: [.sms], provider: try FileProvider(path: h.stack.directory.appendingPathComponent("p.jsonl").path),
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
        try await Harness.with { h in
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
        try await Harness.with { h in
            var logger = Logger(label: "test.probe")
            logger.logLevel = .critical
            let probe = DependencyProbe(redis: h.redis, client: h.client, topic: "touchpoints", logger: logger, freshness: .seconds(3))
            let running = Running(probe)
            let ready = await Self.within(20) { probe.readiness().isReady }
            #expect(ready)
            guard let redis = h.stack.redis?.process else { Issue.record("no local redis"); return }
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
}
