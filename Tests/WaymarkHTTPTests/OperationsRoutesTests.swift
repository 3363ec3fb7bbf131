import AsyncHTTPClient
import CoreMetrics
import Hummingbird
import HummingbirdTesting
import NIOCore
import Synchronization
import Testing
import WaymarkHTTP
import WaymarkHTTPTesting

@Suite("Operations routes and the fake provider (Hummingbird)")
struct OperationsRoutesTests {
    @Test("/healthz answers ok; /readyz follows the readiness closure with its detail; unknown paths 404")
    func probes() async throws {
        let state = Mutex(Readiness(isReady: false, detail: "redis: no answer"))
        let app = Application(router: OperationsRoutes.router(metrics: PrometheusExporter()) { state.withLock { $0 } })
        try await app.test(.router) { client in
            try await client.execute(uri: "/healthz", method: .get) { response in
                #expect(response.status == .ok && String(buffer: response.body) == "ok\n")
            }
            try await client.execute(uri: "/readyz", method: .get) { response in
                #expect(response.status == .serviceUnavailable && String(buffer: response.body) == "redis: no answer\n")
            }
            state.withLock { $0 = .ready }
            try await client.execute(uri: "/readyz", method: .get) { response in
                #expect(response.status == .ok && String(buffer: response.body) == "ready\n")
            }
            try await client.execute(uri: "/nosuch", method: .get) { response in #expect(response.status == .notFound) }
        }
    }

    @Test("counters, gauges and timers recorded through swift-metrics appear in /metrics with values and labels")
    func metrics() async throws {
        let exporter = PrometheusExporter()
        Counter(label: "waymark.test_events", dimensions: [("reason", "invalid_json")], factory: exporter.factory).increment(by: 3)
        Gauge(label: "waymark_test_lag", factory: exporter.factory).record(42)
        CoreMetrics.Timer(label: "waymark_test_batch_seconds", factory: exporter.factory).recordMilliseconds(12)
        let app = Application(router: OperationsRoutes.router(metrics: exporter))
        try await app.test(.router) { client in
            try await client.execute(uri: "/metrics", method: .get) { response in
                let text = String(buffer: response.body)
                #expect(response.status == .ok && response.headers[.contentType] == PrometheusExporter.contentType)
                #expect(text.contains(#"waymark_test_events{reason="invalid_json"} 3"#), "\(text)")
                #expect(text.contains("waymark_test_lag 42"), "\(text)")
                #expect(text.contains("waymark_test_batch_seconds_count 1"), "\(text)")
            }
        }
    }

    /// POSTs `body` with an `Idempotency-Key` to the fake provider; its status.
    static func post(_ client: HTTPClient, port: Int, key: String, body: String) async throws -> Int {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/webhook")
        request.method = .POST
        request.headers.add(name: "Idempotency-Key", value: key)
        request.body = .bytes(ByteBuffer(string: body))
        let response = try await client.execute(request, timeout: .seconds(5))
        _ = try await response.body.collect(upTo: 1 << 16)
        return Int(response.status.code)
    }

    @Test("the fake provider records requests, fails exactly K, fails all, is slow on demand, and stops listening on shutdown")
    func fakeProvider() async throws {
        let fake = try await FakeProvider.start()
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        fake.failNext(2, status: 503)
        var statuses: [Int] = []
        for _ in 0..<3 { statuses.append(try await Self.post(client, port: fake.port, key: "k-1", body: #"{"n":1}"#)) }
        #expect(statuses == [503, 503, 200])
        #expect(fake.requests.map(\.status) == [503, 503, 200])
        #expect(fake.requests.allSatisfy { $0.idempotencyKey == "k-1" && $0.path == "/webhook" && $0.bodyText == #"{"n":1}"# })
        fake.failAll(status: 400)
        #expect(try await Self.post(client, port: fake.port, key: "k-2", body: "{}") == 400)
        fake.succeed()
        fake.delay(.milliseconds(300))
        let started = ContinuousClock.now
        #expect(try await Self.post(client, port: fake.port, key: "k-3", body: "{}") == 200)
        #expect(ContinuousClock.now - started >= .milliseconds(300))
        #expect(fake.idempotencyKeyCounts == ["k-1": 3, "k-2": 1, "k-3": 1])
        await fake.shutdown()
        await #expect(throws: (any Error).self) { _ = try await Self.post(client, port: fake.port, key: "k-4", body: "{}") }
        try await client.shutdown()
    }
}
