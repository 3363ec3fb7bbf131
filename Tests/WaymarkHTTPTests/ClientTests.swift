import CoreMetrics
import Foundation
import Logging
import Testing
import WaymarkHTTPTesting
@testable import WaymarkHTTP

/// Runs `body` with a fresh provider and client, shutting both down afterwards.
private func withProvider(_ configuration: HTTPClientConfiguration = HTTPClientConfiguration(),
                          workerThreads: Int = 8,
                          _ body: (FakeProvider, HTTPClient) async throws -> Void) async throws {
    let provider = try FakeProvider.start(workerThreads: workerThreads)
    let client = try HTTPClient(configuration: configuration)
    do {
        try await body(provider, client)
    } catch {
        await client.shutdown()
        await provider.shutdown()
        throw error
    }
    await client.shutdown()
    await provider.shutdown()
}

/// The kind of `HTTPClientError` `body` throws, or `nil` if it returns.
private func errorKind(_ body: () async throws(HTTPClientError) -> HTTPClientResponse) async -> HTTPClientError.Kind? {
    do {
        let response = try await body()
        Issue.record("expected an error, got status \(response.status)")
        return nil
    } catch {
        return error.kind
    }
}

@Suite("HTTP client against the fake provider")
struct ClientTests {
    @Test("a JSON POST with headers round-trips: body, Idempotency-Key and response all intact")
    func roundTrip() async throws {
        try await withProvider { provider, client in
            let json = #"{"message_id":"m-1","to":"+15550100","text":"Grüße 👋"}"#
            let response = try await client.post(url: provider.url + "?tenant=a",
                                                 headers: ["Idempotency-Key": "m-1", "Authorization": "Bearer t0k"],
                                                 body: Array(json.utf8))
            #expect(response.status == 200)
            #expect(response.headers["content-type"] == "application/json")
            #expect(String(decoding: response.body, as: UTF8.self) == #"{"id":"1","status":"accepted"}"#)
            let seen = try #require(provider.requests.first)
            #expect(provider.requests.count == 1)
            #expect(seen.method == "POST")
            #expect(seen.path == "/webhook")
            #expect(seen.bodyText == json)
            #expect(seen.idempotencyKey == "m-1")
            #expect(seen.headers["Authorization"] == "Bearer t0k")
            #expect(seen.headers["Content-Type"] == "application/json")
            #expect(seen.headers["User-Agent"] == "waymark")
            #expect(seen.headers["Expect"] == nil)
        }
    }

    @Test("4xx and 5xx are responses, not errors; failNext fails exactly K requests", arguments: [400, 500, 503])
    func errorStatuses(status: Int) async throws {
        try await withProvider { provider, client in
            provider.failAll(status: status)
            let failed = try await client.post(url: provider.url, body: Array("{}".utf8))
            #expect(failed.status == status)
            #expect(String(decoding: failed.body, as: UTF8.self).contains("fake provider failure"))
            provider.succeed()
            provider.failNext(2, status: status)
            var statuses: [Int] = []
            for index in 0..<4 {
                statuses.append(try await client.post(url: provider.url, headers: ["Idempotency-Key": "k\(index / 3)"],
                                                      body: []).status)
            }
            #expect(statuses == [status, status, 200, 200])
            #expect(provider.acceptedRequests.count == 2)
            #expect(provider.idempotencyKeyCounts == ["k0": 3, "k1": 1])
        }
    }

    @Test("a slow provider gives a typed timeout within the budget")
    func timeout() async throws {
        try await withProvider { provider, client in
            provider.delay(.seconds(10))
            let started = ContinuousClock.now
            let kind = await errorKind { () throws(HTTPClientError) in
                try await client.post(url: provider.url, body: Array("{}".utf8), timeout: .milliseconds(300))
            }
            let elapsed = ContinuousClock.now - started
            #expect(kind == .timeout)
            #expect(elapsed >= .milliseconds(290))
            #expect(elapsed < .seconds(5))  // far below the provider's 10 s: the timeout cut it short
            #expect(provider.requests.count == 1)  // the provider did receive it: a timeout is "maybe delivered"
            provider.delay(.zero)
            let after = try await client.post(url: provider.url, body: [])
            #expect(after.status == 200)  // the client is still usable
        }
    }

    @Test("connection refused is a typed connectFailed naming the origin, not the path or query")
    func connectionRefused() async throws {
        let server = try HTTPServer.start(router: HTTPRouter())
        let port = server.port
        await server.shutdown()
        let client = try HTTPClient()
        let started = ContinuousClock.now
        do {
            _ = try await client.post(url: "http://127.0.0.1:\(port)/hooks/customer-42?email=a@b.c", body: [])
            Issue.record("expected connectFailed")
        } catch {
            #expect(error.kind == .connectFailed)
            #expect(error.origin == "http://127.0.0.1:\(port)")
            #expect(!error.description.contains("customer-42"))
            #expect(!error.description.contains("a@b.c"))
        }
        #expect(ContinuousClock.now - started < .seconds(2))
        await client.shutdown()
    }

    @Test("invalid URLs are typed invalidURL before anything is sent",
          arguments: ["not a url", "ftp://127.0.0.1/x", "http://", "", "file:///etc/passwd", "http://exa mple.com/"])
    func invalidURL(url: String) async throws {
        let client = try HTTPClient()
        let kind = await errorKind { () throws(HTTPClientError) in try await client.post(url: url, body: []) }
        #expect(kind == .invalidURL)
        await client.shutdown()
    }

    @Test("header injection is refused")
    func invalidHeader() async throws {
        let client = try HTTPClient()
        let kind = await errorKind { () throws(HTTPClientError) in
            try await client.post(url: "http://127.0.0.1:1/", headers: ["X-A": "1\r\nX-B: 2"], body: [])
        }
        #expect(kind == .invalidRequest)
        await client.shutdown()
    }

    @Test("TLS to a plain-HTTP port is a typed tls error")
    func tlsFailure() async throws {
        try await withProvider { provider, client in
            let kind = await errorKind { () throws(HTTPClientError) in
                try await client.post(url: "https://127.0.0.1:\(provider.port)/webhook", body: [], timeout: .seconds(3))
            }
            #expect(kind == .tls)
        }
    }

    @Test("a CA bundle that cannot be read is a typed tls error")
    func badCABundle() async throws {
        try await withProvider(HTTPClientConfiguration(caBundlePath: "/nonexistent/ca.pem")) { provider, client in
            let kind = await errorKind { () throws(HTTPClientError) in
                try await client.post(url: "https://127.0.0.1:\(provider.port)/webhook", body: [])
            }
            #expect(kind == .tls)
        }
    }

    @Test("100 sequential requests reuse one TCP connection")
    func connectionReuse() async throws {
        try await withProvider { provider, client in
            for index in 0..<100 {
                let response = try await client.post(url: provider.url, headers: ["Idempotency-Key": "m-\(index)"],
                                                     body: Array(#"{"n":\#(index)}"#.utf8))
                #expect(response.status == 200)
            }
            #expect(provider.requests.count == 100)
            #expect(provider.statistics.acceptedConnections == 1)
        }
    }

    @Test("32 concurrent slow requests run in parallel on the client's one thread")
    func concurrency() async throws {
        try await withProvider(HTTPClientConfiguration(maxConnectionsPerHost: 16), workerThreads: 16) { provider, client in
            provider.delay(.seconds(1))
            let started = ContinuousClock.now
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<32 {
                    group.addTask {
                        try await client.post(url: provider.url, headers: ["Idempotency-Key": "c\(index)"], body: []).status
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses == Array(repeating: 200, count: 32))
            // Serially this is 32 s; 16 connections make it about 2 s (bound loose for loaded CI machines).
            #expect(ContinuousClock.now - started < .seconds(12))
            #expect(provider.statistics.acceptedConnections <= 16)
            #expect(Set(provider.requests.compactMap(\.idempotencyKey)).count == 32)
        }
    }

    @Test("cancelling the calling task abandons the request at once")
    func cancellation() async throws {
        try await withProvider { provider, client in
            provider.delay(.seconds(20))
            let task = Task { () async throws -> HTTPClientResponse in
                try await client.post(url: provider.url, body: [], timeout: .seconds(30))
            }
            try await Task.sleep(for: .milliseconds(100))
            let started = ContinuousClock.now
            task.cancel()
            let result = await task.result
            // Far below the provider's 20 s (a loose bound: CI machines are loaded).
            #expect(ContinuousClock.now - started < .seconds(8))
            guard case .failure(let error) = result else {
                Issue.record("expected cancellation")
                return
            }
            #expect((error as? HTTPClientError)?.kind == .cancelled)
        }
    }

    @Test("a response body over the limit is a typed responseTooLarge")
    func responseTooLarge() async throws {
        var router = HTTPRouter()
        router.get("/big") { _ in HTTPResponse(status: 200, body: Array(repeating: 65, count: 100_000)) }
        try await withServer(router: router) { server in
            let client = try HTTPClient(configuration: HTTPClientConfiguration(maxResponseBodyBytes: 10_000))
            let kind = await errorKind { () throws(HTTPClientError) in
                try await client.get(url: "http://127.0.0.1:\(server.port)/big")
            }
            #expect(kind == .responseTooLarge)
            await client.shutdown()
        }
    }

    @Test("after shutdown, calls fail with closed")
    func closed() async throws {
        let client = try HTTPClient()
        await client.shutdown()
        await client.shutdown()
        let kind = await errorKind { () throws(HTTPClientError) in try await client.post(url: "http://127.0.0.1:1/", body: []) }
        #expect(kind == .closed)
    }

    @Test("bad configuration is rejected with invalidRequest")
    func badConfiguration() {
        #expect(throws: HTTPClientError(.invalidRequest, "timeout must be at least 1 ms")) {
            _ = try HTTPClient(configuration: HTTPClientConfiguration(timeout: .zero))
        }
    }
}

@Suite("Prometheus metrics over HTTP")
struct MetricsTests {
    @Test("counters, gauges and timers recorded through swift-metrics appear in /metrics with values and labels")
    func exposition() async throws {
        let exporter = PrometheusExporter()
        let factory = exporter.factory
        Counter(label: "waymark.decisions", dimensions: [("reason", "quiet_hours")], factory: factory).increment(by: 3)
        Counter(label: "waymark.decisions", dimensions: [("reason", "cap")], factory: factory).increment()
        Gauge(label: "waymark.consumer.lag", dimensions: [("partition", "0")], factory: factory).record(42)
        let timer = Timer(label: "waymark.provider.latency", dimensions: [("provider", "webhook")], factory: factory)
        timer.recordMilliseconds(7)
        timer.recordMilliseconds(300)
        withMetricsFactory(factory) {
            Counter(label: "waymark.events").increment(by: 1000)  // task-local injection, no global bootstrap
        }

        var router = HTTPRouter()
        router.addOperationsRoutes(metrics: exporter)
        try await withServer(router: router) { server in
            let client = try HTTPClient()
            let response = try await client.get(url: "http://127.0.0.1:\(server.port)/metrics")
            await client.shutdown()
            #expect(response.status == 200)
            #expect(response.headers["Content-Type"] == PrometheusExporter.contentType)
            let lines = Set(String(decoding: response.body, as: UTF8.self).split(separator: "\n").map(String.init))
            for expected in [
                "# TYPE waymark_decisions counter",
                #"waymark_decisions{reason="quiet_hours"} 3"#,
                #"waymark_decisions{reason="cap"} 1"#,
                "# TYPE waymark_consumer_lag gauge",
                #"waymark_consumer_lag{partition="0"} 42.0"#,
                "# TYPE waymark_events counter",
                "waymark_events 1000",
                "# TYPE waymark_provider_latency histogram",
                #"waymark_provider_latency_bucket{provider="webhook",le="0.005"} 0"#,
                #"waymark_provider_latency_bucket{provider="webhook",le="0.01"} 1"#,
                #"waymark_provider_latency_bucket{provider="webhook",le="0.5"} 2"#,
                #"waymark_provider_latency_bucket{provider="webhook",le="+Inf"} 2"#,
                #"waymark_provider_latency_count{provider="webhook"} 2"#,
                #"waymark_provider_latency_sum{provider="webhook"} 0.307"#,
            ] {
                #expect(lines.contains(expected), "missing: \(expected)\n\(lines.sorted().joined(separator: "\n"))")
            }
        }
    }

    @Test("names are sanitised to the Prometheus alphabet")
    func sanitize() {
        #expect(PrometheusExporter.sanitize("waymark.http-client/latency") == "waymark_http_client_latency")
        #expect(PrometheusExporter.sanitize("2xx.rate") == "_xx_rate")
        #expect(PrometheusExporter.sanitize("p99_ok") == "p99_ok")
    }
}

@Suite("HTTP client over TLS", .enabled(if: TLSEchoServer.toolsAvailable, "needs openssl and python3 on PATH"))
struct TLSTests {
    @Test("verification: trusted CA succeeds; untrusted CA or wrong host name fail with tls; verifyTLS=false connects")
    func verification() async throws {
        let server = try await TLSEchoServer()
        defer { server.stop() }
        let url = "https://127.0.0.1:\(server.port)/hook"
        let body = Array(#"{"message_id":"m-9"}"#.utf8)

        let trusting = try HTTPClient(configuration: HTTPClientConfiguration(caBundlePath: server.certificatePath))
        let response = try await trusting.post(url: url, headers: ["Idempotency-Key": "m-9"], body: body)
        #expect(response.status == 201)
        #expect(response.body == body)
        let wrongName = await errorKind { () throws(HTTPClientError) in
            try await trusting.post(url: "https://localhost:\(server.port)/hook", body: body)
        }
        #expect(wrongName == .tls)  // the certificate names IP 127.0.0.1 only
        await trusting.shutdown()

        let systemStore = try HTTPClient()
        let untrusted = await errorKind { () throws(HTTPClientError) in try await systemStore.post(url: url, body: body) }
        #expect(untrusted == .tls)
        await systemStore.shutdown()

        let insecure = try HTTPClient(configuration: HTTPClientConfiguration(verifyTLS: false))
        #expect(try await insecure.post(url: url, body: body).status == 201)
        await insecure.shutdown()
    }
}
