import Foundation
import Hummingbird
import Logging
import Synchronization

/// A fake webhook provider for tests: a Hummingbird application on a free loopback port that records
/// every request and can be told to fail or be slow.
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
/// let provider = try await FakeProvider.start()
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
        /// Header fields as received (names lowercased).
        public var headers: [String: String]
        /// The body bytes.
        public var body: [UInt8]
        /// The status the provider answered (or will answer, while a delay runs).
        public var status: Int
        /// When the request arrived.
        public var receivedAt: ContinuousClock.Instant

        /// The `Idempotency-Key` header, if sent.
        public var idempotencyKey: String? { headers["idempotency-key"] }
        /// The body as UTF-8 text.
        public var bodyText: String { String(decoding: body, as: UTF8.self) }
        /// `true` when the provider answered 2xx.
        public var accepted: Bool { (200..<300).contains(status) }
    }

    private let core: Core
    private let task: Task<Void, any Error>

    /// The port the provider listens on.
    public let port: Int
    /// A URL to configure as the webhook endpoint: `http://127.0.0.1:<port>/webhook`.
    public var url: String { "http://127.0.0.1:\(port)/webhook" }

    private init(core: Core, task: Task<Void, any Error>, port: Int) {
        self.core = core; self.task = task; self.port = port
    }

    /// Starts a provider on a free loopback port; returns once it accepts connections.
    /// - Parameter logger: the application's logger (default label `waymark.test.fake-provider`, warnings only).
    public static func start(logger: Logger? = nil) async throws -> FakeProvider {
        let core = Core()
        let router = Router()
        router.on("/**", method: .post) { request, context in try await core.handle(request, context) }
        router.on("/**", method: .get) { request, context in try await core.handle(request, context) }
        let (task, port) = try await serveOnFreeLoopbackPort(router, logger: logger, label: "waymark.test.fake-provider")
        return FakeProvider(core: core, task: task, port: port)
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
        task.cancel()
        _ = try? await task.value
    }
}

/// Why the provider could not start.
public enum FakeProviderError: Error { case notListening }

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

    func handle(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let now = ContinuousClock.now
        let body = try await request.body.collect(upTo: 8 << 20)
        var headers: [String: String] = [:]
        for field in request.headers { headers[field.name.canonicalName] = field.value }
        let (status, delay, sequence) = state.withLock { state -> (Int, Duration, Int) in
            let status: Int
            if state.failNext > 0 {
                state.failNext -= 1
                status = state.failNextStatus
            } else {
                status = state.failAllStatus ?? 200
            }
            state.requests.append(FakeProvider.RecordedRequest(
                method: request.method.rawValue, path: request.uri.path, headers: headers, body: Array(buffer: body),
                status: status, receivedAt: now))
            return (status, state.delay, state.requests.count)
        }
        var waited = Duration.zero
        while waited < delay && !stopping.load(ordering: .relaxed) {
            let step = min(.milliseconds(10), delay - waited)
            try? await Task.sleep(for: step)
            waited += step
        }
        let text = (200..<300).contains(status) ? #"{"id":"\#(sequence)","status":"accepted"}"#
            : #"{"error":"fake provider failure","status":\#(status)}"#
        return Response(status: .init(code: status), headers: [.contentType: "application/json"],
                        body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
}

/// Runs `router` on a free loopback port (the fakes' shared start); returns the server's task and its
/// port once it accepts connections. Without `logger`, logs warnings only under `label`.
func serveOnFreeLoopbackPort(_ router: Router<BasicRequestContext>, logger: Logger?, label: String) async throws -> (Task<Void, any Error>, Int) {
    let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
    var quiet = logger ?? Logger(label: label)
    if logger == nil { quiet.logLevel = .warning }
    let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                          onServerRunning: { channel in
                              portContinuation.yield(channel.localAddress?.port ?? 0)
                              portContinuation.finish()
                          }, logger: quiet)
    let task = Task { try await app.run() }
    var port = 0
    for await p in ports { port = p }
    guard port > 0 else { task.cancel(); throw FakeProviderError.notListening }
    return (task, port)
}
