import Foundation
import Logging
import Synchronization
import WaymarkHTTP

/// A fake webhook provider for tests: an ``HTTPServer`` on a free loopback port that records every
/// request and can be told to fail or be slow.
///
/// Every request to any path is recorded (at receipt, before any delay) and then answered according
/// to the current behaviour, in this order of precedence:
/// 1. ``failNext(_:status:)``: the next *K* requests get `status` (default 503);
/// 2. ``failAll(status:)``: every request gets `status` until ``succeed()``;
/// 3. otherwise `200` with `{"id":"<n>","status":"accepted"}`.
///
/// ``delay(_:)`` makes every request wait before it is answered (a client timeout shorter than the
/// delay sees a timeout). Delays are cut short by ``shutdown()``.
///
/// ```swift
/// let provider = try FakeProvider.start()
/// provider.failNext(2, status: 503)
/// // ... run the sender against provider.url ...
/// #expect(provider.acceptedRequests.count == 1)
/// #expect(Set(provider.requests.compactMap(\.idempotencyKey)).count == 1)
/// await provider.shutdown()
/// ```
public final class FakeProvider: Sendable {
    /// One request as the provider saw it.
    public struct RecordedRequest: Sendable {
        /// Request method (`POST` for webhooks).
        public var method: String
        /// Request path, without the query.
        public var path: String
        /// Header fields as received.
        public var headers: HTTPHeaders
        /// The body bytes.
        public var body: [UInt8]
        /// The status the provider answered (or will answer, while a delay runs).
        public var status: Int
        /// When the request arrived.
        public var receivedAt: ContinuousClock.Instant

        /// The `Idempotency-Key` header, if sent.
        public var idempotencyKey: String? { headers["Idempotency-Key"] }
        /// The body as UTF-8 text.
        public var bodyText: String { String(decoding: body, as: UTF8.self) }
        /// `true` when the provider answered 2xx.
        public var accepted: Bool { (200..<300).contains(status) }
    }

    private let server: HTTPServer
    private let core: Core

    /// The port the provider listens on.
    public var port: Int { server.port }
    /// A URL to configure as the webhook endpoint: `http://127.0.0.1:<port>/webhook`.
    public var url: String { "http://127.0.0.1:\(server.port)/webhook" }
    /// Connection and request counters (connection reuse shows as fewer connections than requests).
    public var statistics: HTTPServerStatistics { server.statistics }

    private init(configuration: HTTPServerConfiguration, logger: Logger) throws(HTTPServerError) {
        let core = Core()
        var router = HTTPRouter()
        router.fallback = { request in core.handle(request) }
        self.core = core
        self.server = try HTTPServer.start(configuration, router: router, logger: logger)
    }

    /// Starts a provider on a free loopback port.
    /// - Parameters:
    ///   - workerThreads: how many requests it serves at once (slow responses hold one each; default 8).
    ///   - maxBodyBytes: largest request body accepted (default 4 MiB).
    ///   - logger: the server's logger (default label `waymark.test.fake-provider`).
    /// - Throws: ``HTTPServerError`` if it cannot listen.
    public static func start(workerThreads: Int = 8, maxBodyBytes: Int = 4 << 20,
                             logger: Logger = Logger(label: "waymark.test.fake-provider")) throws(HTTPServerError) -> FakeProvider {
        try FakeProvider(configuration: HTTPServerConfiguration(workerThreads: workerThreads, maxBodyBytes: maxBodyBytes),
                         logger: logger)
    }

    // MARK: Behaviour

    /// Answers the next `count` requests with `status` (then falls back to the other settings).
    public func failNext(_ count: Int, status: Int = 503) {
        core.state.withLock {
            $0.failNext = count
            $0.failNextStatus = status
        }
    }

    /// Answers every request with `status` (for example 500, 503 or 400) until ``succeed()``.
    public func failAll(status: Int) {
        core.state.withLock { $0.failAllStatus = status }
    }

    /// Clears ``failAll(status:)`` and ``failNext(_:status:)``: requests succeed again.
    public func succeed() {
        core.state.withLock {
            $0.failAllStatus = nil
            $0.failNext = 0
        }
    }

    /// Waits `delay` before answering each request (`.zero` to stop being slow).
    public func delay(_ delay: Duration) {
        core.state.withLock { $0.delay = delay }
    }

    // MARK: Observations

    /// Every request received, in arrival order.
    public var requests: [RecordedRequest] { core.state.withLock { $0.requests } }

    /// Requests answered 2xx.
    public var acceptedRequests: [RecordedRequest] { requests.filter(\.accepted) }

    /// How many requests carried each `Idempotency-Key` (only keys seen more than once are interesting).
    public var idempotencyKeyCounts: [String: Int] {
        requests.reduce(into: [:]) { counts, request in
            if let key = request.idempotencyKey { counts[key, default: 0] += 1 }
        }
    }

    /// Forgets recorded requests and resets behaviour to succeed without delay.
    public func reset() {
        core.state.withLock { $0 = Core.State() }
    }

    /// Stops the server (cutting delays short) and releases the port.
    public func shutdown() async {
        core.stopping.store(true, ordering: .relaxed)
        await server.shutdown()
    }
}

/// State shared by the provider and its handler (which runs on the server's worker threads).
private final class Core: Sendable {
    struct State {
        var requests: [FakeProvider.RecordedRequest] = []
        var failNext = 0
        var failNextStatus = 503
        var failAllStatus: Int?
        var delay: Duration = .zero
    }

    let state = Mutex(State())
    let stopping = Atomic(false)

    func handle(_ request: HTTPRequest) -> HTTPResponse {
        let now = ContinuousClock.now
        let (status, delay, sequence) = state.withLock { state -> (Int, Duration, Int) in
            let status: Int
            if state.failNext > 0 {
                state.failNext -= 1
                status = state.failNextStatus
            } else {
                status = state.failAllStatus ?? 200
            }
            state.requests.append(FakeProvider.RecordedRequest(
                method: request.method, path: request.path, headers: request.headers, body: request.body,
                status: status, receivedAt: now))
            return (status, state.delay, state.requests.count)
        }
        var waited = Duration.zero
        while waited < delay && !stopping.load(ordering: .relaxed) {
            let step = min(.milliseconds(10), delay - waited)
            Thread.sleep(forTimeInterval: Double(step.components.attoseconds) / 1e18 + Double(step.components.seconds))
            waited += step
        }
        if (200..<300).contains(status) {
            return .json(#"{"id":"\#(sequence)","status":"accepted"}"#, status: status)
        }
        return .json(#"{"error":"fake provider failure","status":\#(status)}"#, status: status)
    }
}
