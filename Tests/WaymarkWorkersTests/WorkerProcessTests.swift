import Foundation
import Testing
import WaymarkTestSupport
import WaymarkChaos
import AsyncHTTPClient
import NIOCore
import WaymarkKafka
import WaymarkLocalStack

@Suite("waymark worker processes", .serialized)
struct WorkerProcessTests {
    @Test("a journey worker process serves /readyz and /metrics, and on SIGTERM commits and exits 0 (every Redis deployment)",
          arguments: TestStack.RedisTopology.allCases)
    func journeyProcess(redis topology: TestStack.RedisTopology) async throws {
        try #require(FileManager.default.isExecutableFile(atPath: CrashTests.waymarkBinary))
        try await TestStack.with(redis: topology) { h in
            let port = try LocalTools.freePort()
            let config = h.local.directory.appendingPathComponent("w.yaml")
            try LocalSettings.write(
                to: config, bootstrap: h.settings.kafka.bootstrapServers, redisPort: h.settings.redis.port, shards: 16,
                topics: ["touchpoints: { partitions: 3 }", "customers: { partitions: 3 }", "deliveries: { partitions: 3 }",
                         "outbound: { partitions: 2 }", "decisions: { partitions: 2 }"],
                sections: "worker: { metrics_port: \(port) }\nsender: { provider: file }\n",
                clusterSeeds: h.settings.redis.mode == "cluster" ? h.settings.redis.seeds : [],
                tls: h.local.redisCertificates)
            let worker = ManagedProcess(executable: CrashTests.waymarkBinary,
                                        arguments: ["worker", "journey", "--config", config.path, "--journeys", TestStack.repoRoot + "/config", "--log-level", "info"],
                                        logFile: h.local.directory.appendingPathComponent("worker.log"))
            try worker.start()
            let client = HTTPClient(eventLoopGroupProvider: .singleton)
            func get(_ path: String) async throws -> (status: Int, body: String) {
                let response = try await client.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)"), timeout: .seconds(5))
                let body = try await response.body.collect(upTo: 1 << 20)
                return (Int(response.status.code), String(buffer: body))
            }
            let ready = try await h.eventually { (try? await get("/readyz"))?.status == 200 }
            #expect(ready, "never ready: \(worker.logTail())")
            #expect(try await get("/healthz").status == 200)

            let now = ISO8601DateFormatter().string(from: Date())
            try await h.produce("touchpoints", key: "c-9", json: #"{"event_id":"e-p1","customer_id":"c-9","type":"page_view","occurred_at":"\#(now)"}"#)
            func metrics() async -> String {
                (try? await get("/metrics"))?.body ?? ""
            }
            let counted = try await h.eventually { await metrics().contains("waymark_journey_records_total 1") }
            let text = await metrics()
            #expect(counted, "\(text)")

            // SIGTERM: graceful stop, offsets committed, exit status 0.
            worker.send(signal: SIGTERM)
            #expect(try await h.eventually(timeout: .seconds(20)) { !worker.isRunning })
            #expect(worker.logTail().contains("stopped cleanly"))
            let lag = try await KafkaAdmin(client: h.client).lag(group: h.settings.kafka.journeyGroup, topics: ["touchpoints"])
            #expect(lag.map(\.lag).reduce(0, +) == 0)
            try await client.shutdown()
        }
    }
}
