import Foundation
import Logging
import Synchronization
import Testing
@testable import WaymarkHTTP
#if canImport(Glibc)
import Glibc
#endif

private func operationsRouter() -> HTTPRouter {
    var router = HTTPRouter()
    router.addOperationsRoutes(metrics: PrometheusExporter())
    router.post("/echo") { request in
        var response = HTTPResponse(status: 200, body: request.body)
        response.headers.add("X-Method", request.method)
        response.headers.add("X-Query", request.query ?? "-")
        return response
    }
    router.get("/boom") { _ in throw CancellationError() }
    return router
}

@Suite("HTTP request parser")
struct ParserTests {
    let limits = HTTPParserLimits(maxHeaderBytes: 1024, maxHeaderCount: 10, maxBodyBytes: 100)

    private func parse(_ text: String) -> HTTPHeadParse {
        HTTPRequestParser.parseHead(Array(text.utf8), limits: limits)
    }

    private func status(_ text: String) -> Int? {
        if case .failure(let status, _) = parse(text) { return status }
        return nil
    }

    @Test("a valid head with query, headers and body length")
    func valid() throws {
        guard case .head(let head, let length) = parse("POST /a/b?x=1&y=%20z HTTP/1.1\r\nHost: h\r\nContent-Length:  5 \r\n\r\nhello") else {
            Issue.record("not parsed")
            return
        }
        #expect(length == 63)
        #expect(head.method == "POST")
        #expect(head.path == "/a/b")
        #expect(head.query == "x=1&y=%20z")
        #expect(head.contentLength == 5)
        #expect(head.headers["content-length"] == "5")
        #expect(head.keepAlive)
        let request = HTTPRequest(method: "GET", path: "/", query: head.query)
        #expect(request.queryItems.map(\.name) == ["x", "y"])
        #expect(request.queryItems.map(\.value) == ["1", " z"])
    }

    @Test("incomplete heads wait for more bytes")
    func incomplete() {
        #expect(parse("GET / HTTP/1.1\r\nHost: x\r\n") == .incomplete)
        #expect(parse("GE") == .incomplete)
        #expect(parse("") == .incomplete)
    }

    @Test("malformed requests map to the right status", arguments: [
        ("GARBAGE\r\n\r\n", 400),
        ("GET /\r\n\r\n", 400),
        ("GET  / HTTP/1.1\r\n\r\n", 400),
        ("GET http://x/ HTTP/1.1\r\n\r\n", 400),
        ("G(T / HTTP/1.1\r\n\r\n", 400),
        ("GET / HTTP/2.0\r\n\r\n", 505),
        ("GET / FTP/1.1\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\n folded: x\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nX: a\u{1}b\r\n\r\n", 400),
        ("GET / HTTP/1.1\nHost: x\n\n", 400),
        ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413),
        ("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 413),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    ])
    func malformed(request: String, expected: Int) {
        #expect(status(request) == expected, "\(request.debugDescription)")
    }

    @Test("oversized heads answer 431")
    func oversizedHead() {
        #expect(status("GET /" + String(repeating: "a", count: 2000)) == 431)
        let many = (0..<11).map { "X-\($0): v\r\n" }.joined()
        #expect(status("GET / HTTP/1.1\r\n\(many)\r\n") == 431)
    }

    @Test("Connection semantics: 1.1 keeps alive unless close; 1.0 closes")
    func connection() {
        if case .head(let head, _) = parse("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n") { #expect(!head.keepAlive) }
        if case .head(let head, _) = parse("GET / HTTP/1.0\r\n\r\n") { #expect(!head.keepAlive) }
        if case .head(let head, _) = parse("\r\nGET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n") {
            #expect(head.keepAlive && head.expectsContinue)
        } else {
            Issue.record("leading CRLF not skipped")
        }
    }
}

@Suite("HTTP server")
struct ServerTests {
    @Test("GET /healthz answers 200 ok; unknown path 404; wrong method 405; HEAD has no body")
    func basics() async throws {
        try await withServer(router: operationsRouter()) { server in
            #expect(server.port > 0)
            let client = try RawClient.connect(port: server.port)
            try await client.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            let health = try await client.readResponse()
            #expect(health.status == 200)
            #expect(health.body == "ok\n")
            #expect(health.head.contains("Connection: keep-alive"))
            try await client.send("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(try await client.readResponse().status == 404)
            try await client.send("POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            let wrongMethod = try await client.readResponse()
            #expect(wrongMethod.status == 405)
            #expect(wrongMethod.head.contains("Allow: GET, HEAD"))
            try await client.send("GET /boom HTTP/1.1\r\n\r\n")
            #expect(try await client.readResponse().status == 500)
            try await client.send("HEAD /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
            let head = try await client.readToEnd()
            #expect(statusLine(head) == "HTTP/1.1 200 OK")
            #expect(head.contains("Content-Length: 3\r\n"))
            #expect(head.hasSuffix("\r\n\r\n"))
            #expect(server.statistics.acceptedConnections == 1)
            #expect(server.statistics.requests == 5)
        }
    }

    @Test("readiness follows the worker's closure")
    func readiness() async throws {
        let state = Mutex(Readiness(isReady: false, detail: "kafka: no partitions"))
        var router = HTTPRouter()
        router.addOperationsRoutes(metrics: PrometheusExporter()) { state.withLock { $0 } }
        try await withServer(router: router) { server in
            let client = try RawClient.connect(port: server.port)
            try await client.send("GET /readyz HTTP/1.1\r\n\r\n")
            let notReady = try await client.readResponse()
            #expect(notReady.status == 503)
            #expect(notReady.body == "kafka: no partitions\n")
            state.withLock { $0 = .ready }
            try await client.send("GET /readyz HTTP/1.1\r\n\r\n")
            #expect(try await client.readResponse().status == 200)
        }
    }

    @Test("POST body, query and pipelined requests on one connection")
    func echoAndPipelining() async throws {
        try await withServer(router: operationsRouter()) { server in
            let client = try RawClient.connect(port: server.port)
            let one = "POST /echo?a=1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
            let two = "POST /echo HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye"
            try await client.send(one + two)
            let text = try await client.readToEnd()
            let responses = text.components(separatedBy: "HTTP/1.1 200 OK")
            #expect(responses.count == 3)
            #expect(text.contains("X-Query: a=1\r\n"))
            #expect(text.contains("\r\n\r\nhello"))
            #expect(text.hasSuffix("\r\n\r\nbye"))
        }
    }

    @Test("Expect: 100-continue gets an interim response before the body is sent")
    func expectContinue() async throws {
        try await withServer(router: operationsRouter()) { server in
            let client = try RawClient.connect(port: server.port)
            try await client.send("POST /echo HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
            #expect(try await client.readResponse().status == 100)
            try await client.send("data")
            let response = try await client.readResponse()
            #expect(response.status == 200)
            #expect(response.body == "data")
        }
    }

    @Test("a malformed request line answers 400, closes, and the server keeps serving")
    func malformedKeepsServing() async throws {
        try await withServer(router: operationsRouter()) { server in
            for garbage in ["HELLO\r\n\r\n", "GET / HTTP/1.1\r\nX\u{0}: y\r\n\r\n", "\u{16}\u{3}\u{1}\u{2}\u{0}\u{1}\r\n\r\n",
                            "GET / HTTP/1.1\nHost: x\n\n"] {
                let bad = try RawClient.connect(port: server.port)
                try await bad.send(garbage)
                let answer = try await bad.readToEnd()
                #expect(statusLine(answer) == "HTTP/1.1 400 Bad Request", "\(garbage.debugDescription)")
                #expect(answer.contains("Connection: close"))
            }
            let binary = try RawClient.connect(port: server.port)
            try await binary.send((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7919) })
            #expect(statusLine(try await binary.readToEnd()).hasPrefix("HTTP/1.1 4"))
            let good = try RawClient.connect(port: server.port)
            try await good.send("GET /healthz HTTP/1.1\r\n\r\n")
            #expect(try await good.readResponse().status == 200)
        }
    }

    @Test("a body over the limit answers 413 without being read; an oversized head 431")
    func oversize() async throws {
        try await withServer(HTTPServerConfiguration(maxHeaderBytes: 1024, maxBodyBytes: 1000),
                             router: operationsRouter()) { server in
            let big = try RawClient.connect(port: server.port)
            try await big.send("POST /echo HTTP/1.1\r\nContent-Length: 1001\r\n\r\n" + String(repeating: "x", count: 1001))
            let answer = try await big.readToEnd()
            #expect(statusLine(answer) == "HTTP/1.1 413 Content Too Large")
            let huge = try RawClient.connect(port: server.port)
            try await huge.send("POST /echo HTTP/1.1\r\nContent-Length: 50000000\r\n\r\n")
            #expect(statusLine(try await huge.readToEnd()) == "HTTP/1.1 413 Content Too Large")
            let longHead = try RawClient.connect(port: server.port)
            try await longHead.send("GET /healthz HTTP/1.1\r\nX-Pad: \(String(repeating: "p", count: 2000))\r\n\r\n")
            #expect(statusLine(try await longHead.readToEnd()) == "HTTP/1.1 431 Request Header Fields Too Large")
            let exact = try RawClient.connect(port: server.port)
            try await exact.send("POST /echo HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + String(repeating: "x", count: 1000))
            let ok = try await exact.readResponse()
            #expect(ok.status == 200 && ok.body.count == 1000)
        }
    }

    @Test("a request that stalls mid-head answers 408 after the I/O timeout")
    func stalledRequest() async throws {
        try await withServer(HTTPServerConfiguration(ioTimeout: .milliseconds(200)), router: operationsRouter()) { server in
            let client = try RawClient.connect(port: server.port)
            try await client.send("GET /healthz HTTP/1.1\r\nHost")
            let started = ContinuousClock.now
            let answer = try await client.readToEnd()
            #expect(statusLine(answer) == "HTTP/1.1 408 Request Timeout")
            #expect(ContinuousClock.now - started < .seconds(3))
        }
    }

    @Test("idle keep-alive connections are closed after the keep-alive timeout")
    func keepAliveTimeout() async throws {
        try await withServer(HTTPServerConfiguration(keepAliveTimeout: .milliseconds(200)), router: operationsRouter()) { server in
            let client = try RawClient.connect(port: server.port)
            try await client.send("GET /healthz HTTP/1.1\r\n\r\n")
            #expect(try await client.readResponse().status == 200)
            #expect(try await client.readToEnd() == "")  // closed by the server, well before the 5 s read timeout
            try await Task.sleep(for: .milliseconds(50))
            #expect(server.statistics.openConnections == 0)
        }
    }

    @Test("64 concurrent clients with slow handlers are all served by 4 workers")
    func concurrentClients() async throws {
        var router = HTTPRouter()
        let inFlight = Mutex((now: 0, peak: 0))
        router.get("/slow") { request in
            inFlight.withLock { $0.now += 1; $0.peak = max($0.peak, $0.now) }
            usleep(20_000)
            inFlight.withLock { $0.now -= 1 }
            return .text(request.query ?? "")
        }
        try await withServer(HTTPServerConfiguration(workerThreads: 4), router: router) { server in
            let started = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<64 {
                    group.addTask {
                        let client = try RawClient.connect(port: server.port)
                        try await client.send("GET /slow?\(index) HTTP/1.1\r\n\r\n")
                        let response = try await client.readResponse()
                        #expect(response.status == 200)
                        #expect(response.body == "\(index)")
                    }
                }
                try await group.waitForAll()
            }
            // Handlers really ran side by side on the 4 workers (never more).
            let peak = inFlight.withLock { $0.peak }
            #expect(peak >= 2 && peak <= 4, "peak concurrency \(peak)")
            _ = started
            #expect(server.statistics.acceptedConnections == 64)
        }
    }

    @Test("shutdown releases the port and closes open connections")
    func shutdownReleasesPort() async throws {
        let server = try HTTPServer.start(router: operationsRouter())
        let port = server.port
        let idle = try RawClient.connect(port: port)
        try await idle.send("GET /healthz HTTP/1.1\r\n\r\n")
        #expect(try await idle.readResponse().status == 200)
        await server.shutdown()
        #expect(try await idle.readToEnd() == "")
        #expect(throws: (any Error).self) { try RawClient.connect(port: port) }
        let again = try HTTPServer.start(HTTPServerConfiguration(port: port), router: operationsRouter())
        #expect(again.port == port)
        await again.shutdown()
        await again.shutdown()  // idempotent
    }

    @Test("start errors are typed: port in use, bad host, bad configuration")
    func startErrors() async throws {
        try await withServer(router: HTTPRouter()) { server in
            let error = #expect(throws: HTTPServerError.self) {
                _ = try HTTPServer.start(HTTPServerConfiguration(port: server.port), router: HTTPRouter())
            }
            #expect(error?.kind == .bindFailed)
            #expect(error?.address == "127.0.0.1:\(server.port)")
        }
        #expect(throws: HTTPServerError(.invalidArgument, "host must be an IPv4/IPv6 literal or localhost, got 'example.com'")) {
            _ = try HTTPServer.start(HTTPServerConfiguration(host: "example.com"), router: HTTPRouter())
        }
        #expect(throws: HTTPServerError(.invalidArgument, "workerThreads must be in 1...256, got 0")) {
            _ = try HTTPServer.start(HTTPServerConfiguration(workerThreads: 0), router: HTTPRouter())
        }
    }
}
