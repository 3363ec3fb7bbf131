import Foundation
import Logging
import Synchronization
import WaymarkThreads
#if canImport(Glibc)
import Glibc
#endif

/// A minimal HTTP/1.1 server on threads it owns, for operations endpoints and test fakes.
///
/// **Threads.** One *poller* thread accepts connections and watches idle keep-alive connections
/// with `poll(2)`; when one becomes readable it is queued for a fixed pool of *worker* threads
/// (``HTTPServerConfiguration/workerThreads``), which read one request, run the handler, write the
/// response and hand the connection back. Idle connections therefore never hold a worker, and
/// nothing here runs on Swift's cooperative pool. All are ``OwnedThread``s.
///
/// **Protocol.** Requests with `Content-Length` bodies (`Expect: 100-continue` honoured), keep-alive
/// and pipelining. Malformed requests get `400` (oversized heads `431`, bodies `413`, `Transfer-Encoding`
/// `501`, other versions `505`) and the connection is closed; the server keeps serving others. No TLS:
/// bind to loopback or put it behind the platform's ingress.
///
/// **Lifecycle.** ``start(_:router:logger:)`` binds and listens before returning, so ``port`` is
/// usable at once. ``shutdown()`` stops accepting, lets requests already in handlers finish (their
/// responses say `Connection: close`), closes every connection and the listening socket, and returns
/// when all threads have exited — the port is free again.
public final class HTTPServer: Sendable {
    /// The bound address, as configured.
    public let host: String
    /// The bound port (the kernel's pick when the configuration said 0).
    public let port: Int
    private let core: ServerCore
    private let threads: [OwnedThread]

    /// `host:port`, for logs.
    public var address: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    private init(core: ServerCore, threads: [OwnedThread]) {
        self.core = core
        self.host = core.configuration.host
        self.port = core.port
        self.threads = threads
    }

    deinit {
        // Threads hold the core, not the server: ask them to stop; each OwnedThread's deinit waits.
        core.requestStop()
    }

    /// Binds, listens and starts the poller and worker threads.
    /// - Parameters:
    ///   - configuration: address, limits and timeouts; validated first.
    ///   - router: the handlers. Requests run on the server's worker threads.
    ///   - logger: receives start/stop events (metadata `http.server.address`) and, at debug level,
    ///     rejected requests (status and reason only; never bodies, headers or query strings).
    /// - Throws: ``HTTPServerError`` — `invalidArgument`, `bindFailed` or `systemError`.
    public static func start(_ configuration: HTTPServerConfiguration = HTTPServerConfiguration(),
                             router: HTTPRouter,
                             logger: Logger = Logger(label: "waymark.http.server")) throws(HTTPServerError) -> HTTPServer {
        try configuration.validate()
        let (listenFD, port) = try Socket.listen(host: configuration.host, port: configuration.port)
        var pipeFDs: [Int32] = [0, 0]
        guard pipe(&pipeFDs) == 0 else {
            let message = Socket.errorText("pipe2")
            close(listenFD)
            throw HTTPServerError(.systemError, message)
        }
        for fd in pipeFDs {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        var logger = logger
        let address = configuration.host.contains(":") ? "[\(configuration.host)]:\(port)" : "\(configuration.host):\(port)"
        logger[metadataKey: "http.server.address"] = "\(address)"
        let core = ServerCore(configuration: configuration, router: router, logger: logger, listenFD: listenFD,
                              port: port, wakeRead: pipeFDs[0], wakeWrite: pipeFDs[1])
        var threads = [OwnedThread(name: "http-poll-\(port)")]
        for index in 0..<configuration.workerThreads {
            threads.append(OwnedThread(name: "http-\(port)-\(index)"))
        }
        threads[0].submit { core.pollLoop() }
        for thread in threads.dropFirst() { thread.submit { core.workerLoop() } }
        logger.info("HTTP server listening", metadata: ["http.server.workers": "\(configuration.workerThreads)"])
        return HTTPServer(core: core, threads: threads)
    }

    /// Counters since start.
    public var statistics: HTTPServerStatistics {
        HTTPServerStatistics(acceptedConnections: core.accepted.load(ordering: .relaxed),
                             openConnections: core.open.load(ordering: .relaxed),
                             requests: core.requests.load(ordering: .relaxed))
    }

    /// Stops the server and waits until every thread has exited and the port is released.
    ///
    /// Handlers already running finish and their responses are sent with `Connection: close`;
    /// connections waiting for a worker are closed unanswered. Safe to call more than once.
    public func shutdown() async {
        core.requestStop()
        await core.waitUntilStopped()
        for thread in threads { thread.shutdown() }  // already idle: returns at once
    }
}

/// Counters of an ``HTTPServer``.
public struct HTTPServerStatistics: Sendable, Equatable {
    /// TCP connections accepted since start.
    public var acceptedConnections: Int
    /// TCP connections open now.
    public var openConnections: Int
    /// Requests answered (by handlers or with an error status) since start.
    public var requests: Int
}

/// One client connection: its socket and bytes read but not yet consumed.
private final class Connection {
    let fd: Int32
    var buffer: [UInt8] = []
    var idleSince: ContinuousClock.Instant

    init(fd: Int32, now: ContinuousClock.Instant) {
        self.fd = fd
        self.idleSince = now
    }
}

/// State shared by the poller and workers. Mutable fields are guarded by `condition`;
/// a `Connection` is touched by one thread at a time (handed over under the lock).
private final class ServerCore: @unchecked Sendable {
    let configuration: HTTPServerConfiguration
    let router: HTTPRouter
    let logger: Logger
    let listenFD: Int32
    let port: Int
    let wakeRead: Int32
    let wakeWrite: Int32
    let limits: HTTPParserLimits

    let accepted = Atomic<Int>(0)
    let open = Atomic<Int>(0)
    let requests = Atomic<Int>(0)

    private let condition = NSCondition()
    private var ready: [Connection] = []
    private var returned: [Connection] = []
    private var busy: Set<Int32> = []
    private var stopping = false
    private var runningThreads: Int
    private var stopWaiters: [CheckedContinuation<Void, Never>] = []

    init(configuration: HTTPServerConfiguration, router: HTTPRouter, logger: Logger, listenFD: Int32, port: Int,
         wakeRead: Int32, wakeWrite: Int32) {
        self.configuration = configuration
        self.router = router
        self.logger = logger
        self.listenFD = listenFD
        self.port = port
        self.wakeRead = wakeRead
        self.wakeWrite = wakeWrite
        self.limits = HTTPParserLimits(maxHeaderBytes: configuration.maxHeaderBytes,
                                       maxHeaderCount: configuration.maxHeaderCount,
                                       maxBodyBytes: configuration.maxBodyBytes)
        self.runningThreads = configuration.workerThreads + 1
    }

    deinit {
        close(wakeRead)
        close(wakeWrite)
    }

    // MARK: Stopping

    func requestStop() {
        condition.lock()
        let first = !stopping
        stopping = true
        if first {
            // Unblock workers reading a half-received request; responses can still be written.
            for fd in busy { Glibc.shutdown(fd, Int32(SHUT_RD)) }
        }
        condition.broadcast()
        condition.unlock()
        if first {
            wake()
            logger.info("HTTP server stopping")
        }
    }

    func waitUntilStopped() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            condition.lock()
            if runningThreads == 0 {
                condition.unlock()
                continuation.resume()
            } else {
                stopWaiters.append(continuation)
                condition.unlock()
            }
        }
    }

    private func threadExited() {
        condition.lock()
        runningThreads -= 1
        let waiters = runningThreads == 0 ? stopWaiters : []
        if runningThreads == 0 { stopWaiters = [] }
        condition.unlock()
        for waiter in waiters { waiter.resume() }
    }

    private var isStopping: Bool {
        condition.lock()
        defer { condition.unlock() }
        return stopping
    }

    private func wake() {
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)  // a full pipe already means "wake up"
    }

    // MARK: Poller

    func pollLoop() {
        Socket.blockSIGPIPEOnCurrentThread()
        let clock = ContinuousClock()
        let keepAlive = configuration.keepAliveTimeout
        var idle: [Connection] = []
        var fds: [pollfd] = []
        while true {
            condition.lock()
            if stopping {
                idle.append(contentsOf: returned)
                returned = []
                condition.unlock()
                break
            }
            let back = returned
            returned = []
            condition.unlock()

            let now = clock.now
            for connection in back {
                connection.idleSince = now
                idle.append(connection)
            }
            var earliest: ContinuousClock.Instant?
            idle.removeAll { connection in
                if now - connection.idleSince >= keepAlive {
                    closeConnection(connection)
                    return true
                }
                if earliest.map({ connection.idleSince < $0 }) ?? true { earliest = connection.idleSince }
                return false
            }
            let canAccept = open.load(ordering: .relaxed) < configuration.maxConnections
            fds.removeAll(keepingCapacity: true)
            fds.append(pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0))
            fds.append(pollfd(fd: listenFD, events: canAccept ? Int16(POLLIN) : 0, revents: 0))
            for connection in idle { fds.append(pollfd(fd: connection.fd, events: Int16(POLLIN), revents: 0)) }
            var timeout: Int32 = 1000
            if let earliest {
                let remaining = (earliest + keepAlive) - now
                timeout = Int32(clamping: max(1, min(1000, Socket.milliseconds(remaining) + 1)))
            }
            let count = poll(&fds, nfds_t(fds.count), timeout)
            if count < 0 {
                if errno != EINTR { logger.error("poll failed", metadata: ["error": "\(Socket.errorText("poll"))"]) }
                continue
            }
            if count == 0 { continue }
            if fds[0].revents != 0 { drainWakePipe() }
            // fds[2...] mirror `idle` in order.
            var readyNow: [Connection] = []
            var stillIdle: [Connection] = []
            for (offset, connection) in idle.enumerated() {
                if fds[offset + 2].revents != 0 { readyNow.append(connection) } else { stillIdle.append(connection) }
            }
            idle = stillIdle
            // New connections join the idle set; their first bytes are picked up on the next poll.
            if fds[1].revents & Int16(POLLIN) != 0 { acceptAll(into: &idle, now: clock.now) }
            if !readyNow.isEmpty {
                condition.lock()
                ready.append(contentsOf: readyNow)
                condition.broadcast()
                condition.unlock()
            }
        }
        close(listenFD)
        for connection in idle { closeConnection(connection) }
        threadExited()
    }

    private func drainWakePipe() {
        var scratch = [UInt8](repeating: 0, count: 64)
        while read(wakeRead, &scratch, scratch.count) > 0 {}
    }

    private func acceptAll(into idle: inout [Connection], now: ContinuousClock.Instant) {
        while open.load(ordering: .relaxed) < configuration.maxConnections {
            let fd = accept(listenFD, nil, nil)
            if fd < 0 {
                switch errno {
                case EAGAIN, EWOULDBLOCK, EINTR, ECONNABORTED: return
                default:
                    // EMFILE and friends: leave the backlog alone until the next wake-up.
                    logger.warning("accept failed", metadata: ["error": "\(Socket.errorText("accept"))"])
                    return
                }
            }
            Socket.configureClient(fd, ioTimeout: configuration.ioTimeout)
            accepted.add(1, ordering: .relaxed)
            open.add(1, ordering: .relaxed)
            idle.append(Connection(fd: fd, now: now))
        }
    }

    private func closeConnection(_ connection: Connection) {
        close(connection.fd)
        let before = open.subtract(1, ordering: .relaxed).oldValue
        if before >= configuration.maxConnections { wake() }  // the poller may resume accepting
    }

    // MARK: Workers

    func workerLoop() {
        Socket.blockSIGPIPEOnCurrentThread()
        var scratch = [UInt8](repeating: 0, count: 64 * 1024)
        while let connection = nextReady() {
            serve(connection, scratch: &scratch)
        }
        threadExited()
    }

    private func nextReady() -> Connection? {
        condition.lock()
        while ready.isEmpty && !stopping { condition.wait() }
        if stopping {
            let abandoned = ready
            ready = []
            condition.unlock()
            for connection in abandoned { closeConnection(connection) }
            return nil
        }
        let connection = ready.removeFirst()
        busy.insert(connection.fd)
        condition.unlock()
        return connection
    }

    /// Ends a worker's turn with `connection`: back to the poller, or closed.
    private func release(_ connection: Connection, keep: Bool) {
        condition.lock()
        busy.remove(connection.fd)
        let keep = keep && !stopping
        if keep { returned.append(connection) }
        condition.unlock()
        if keep { wake() } else { closeConnection(connection) }
    }

    private enum ReadResult { case data, endOfStream, timedOut, failed }

    private func readMore(_ connection: Connection, scratch: inout [UInt8]) -> ReadResult {
        while true {
            let count = scratch.withUnsafeMutableBytes { recv(connection.fd, $0.baseAddress, $0.count, 0) }
            if count > 0 {
                connection.buffer.append(contentsOf: scratch[0..<count])
                return .data
            }
            if count == 0 { return .endOfStream }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return .timedOut
            default: return .failed
            }
        }
    }

    /// Serves requests on `connection` until its buffer is empty (then hands it back) or it closes.
    private func serve(_ connection: Connection, scratch: inout [UInt8]) {
        while true {
            // The head.
            let head: HTTPRequestHead
            let headLength: Int
            parse: while true {
                switch HTTPRequestParser.parseHead(connection.buffer, limits: limits) {
                case .head(let parsed, let length):
                    head = parsed
                    headLength = length
                    break parse
                case .failure(let status, let reason):
                    reject(connection, status: status, reason: reason)
                    return
                case .incomplete:
                    switch readMore(connection, scratch: &scratch) {
                    case .data: continue
                    case .timedOut where !connection.buffer.isEmpty:
                        reject(connection, status: 408, reason: "request head not received in time")
                        return
                    case .timedOut, .endOfStream, .failed:
                        release(connection, keep: false)
                        return
                    }
                }
            }
            // The body.
            let total = headLength + head.contentLength
            if connection.buffer.count < total && head.expectsContinue {
                guard Socket.sendAll(connection.fd, Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)) else {
                    release(connection, keep: false)
                    return
                }
            }
            while connection.buffer.count < total {
                switch readMore(connection, scratch: &scratch) {
                case .data: continue
                case .timedOut:
                    reject(connection, status: 408, reason: "request body not received in time")
                    return
                case .endOfStream, .failed:
                    release(connection, keep: false)
                    return
                }
            }
            let body = Array(connection.buffer[headLength..<total])
            connection.buffer.removeFirst(total)
            let request = HTTPRequest(method: head.method, path: head.path, query: head.query, version: head.version,
                                      headers: head.headers, body: body)
            var response: HTTPResponse
            do {
                response = try router.respond(to: request)
            } catch {
                logger.error("HTTP handler failed", metadata: [
                    "http.method": "\(head.method)", "http.path": "\(head.path)",
                    "error.type": "\(String(reflecting: type(of: error)))",
                ])
                response = .text("internal server error\n", status: 500)
            }
            if !(200...599).contains(response.status) {
                logger.error("HTTP handler returned an invalid status", metadata: [
                    "http.path": "\(head.path)", "http.status": "\(response.status)",
                ])
                response = .text("internal server error\n", status: 500)
            }
            let keepAlive = head.keepAlive && !isStopping
                && !(response.headers["Connection"]?.lowercased().contains("close") ?? false)
            requests.add(1, ordering: .relaxed)
            let bytes = Self.serialize(response, omitBody: head.method == "HEAD", keepAlive: keepAlive)
            guard Socket.sendAll(connection.fd, bytes) else {
                release(connection, keep: false)
                return
            }
            guard keepAlive else {
                // Bytes of a next request are waiting: closing on them would reset the connection.
                if !connection.buffer.isEmpty { Socket.lingeringClose(connection.fd) }
                release(connection, keep: false)
                return
            }
            if connection.buffer.isEmpty {
                release(connection, keep: true)
                return
            }
            // Pipelined: the next request is (partly) buffered already; serve it on this turn.
        }
    }

    /// Answers `status` with `reason` as text, then closes after draining what the client still sends
    /// (closing with unread bytes would reset the connection and could destroy the response in flight).
    private func reject(_ connection: Connection, status: Int, reason: String) {
        requests.add(1, ordering: .relaxed)
        logger.debug("HTTP request rejected", metadata: ["http.status": "\(status)", "reason": "\(reason)"])
        let bytes = Self.serialize(.text(reason + "\n", status: status), omitBody: false, keepAlive: false)
        if Socket.sendAll(connection.fd, bytes) {
            Socket.lingeringClose(connection.fd)
        }
        release(connection, keep: false)
    }

    static func serialize(_ response: HTTPResponse, omitBody: Bool, keepAlive: Bool) -> [UInt8] {
        var head = "HTTP/1.1 \(response.status) \(HTTPResponse.reasonPhrase(response.status))\r\n"
        for (name, value) in response.headers {
            if HTTPHeaders.same(name, "Content-Length") || HTTPHeaders.same(name, "Connection") { continue }
            // Never let a handler's value split the head.
            guard !name.utf8.contains(where: { $0 == 13 || $0 == 10 }),
                  !value.utf8.contains(where: { $0 == 13 || $0 == 10 }) else { continue }
            head += "\(name): \(value)\r\n"
        }
        let bodyAllowed = response.status != 204 && response.status != 304
        if bodyAllowed { head += "Content-Length: \(response.body.count)\r\n" }
        head += keepAlive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n"
        var bytes = Array(head.utf8)
        if bodyAllowed && !omitBody { bytes.append(contentsOf: response.body) }
        return bytes
    }
}

/// Thin wrappers over the socket calls the server needs (Linux).
enum Socket {
    static func errorText(_ call: String) -> String {
        "\(call): \(String(cString: strerror(errno)))"
    }

    static func milliseconds(_ duration: Duration) -> Int {
        let (seconds, attoseconds) = duration.components
        return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    }

    static func blockSIGPIPEOnCurrentThread() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Creates a non-blocking listening socket bound to `host:port`; returns it and the bound port.
    static func listen(host: String, port: Int) throws(HTTPServerError) -> (Int32, Int) {
        let literal = host == "localhost" ? "127.0.0.1" : host
        var v4 = sockaddr_in()
        var v6 = sockaddr_in6()
        let family: Int32
        if inet_pton(AF_INET, literal, &v4.sin_addr) == 1 {
            family = AF_INET
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = in_port_t(UInt16(port).bigEndian)
        } else if inet_pton(AF_INET6, literal, &v6.sin6_addr) == 1 {
            family = AF_INET6
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = in_port_t(UInt16(port).bigEndian)
        } else {
            throw HTTPServerError(.invalidArgument, "host must be an IPv4/IPv6 literal or localhost, got '\(host)'")
        }
        let address = family == AF_INET6 ? "[\(host)]:\(port)" : "\(host):\(port)"
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HTTPServerError(.systemError, errorText("socket"), address: address) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound: Int32 = family == AF_INET
            ? withUnsafePointer(to: &v4) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            : withUnsafePointer(to: &v6) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        guard bound == 0 else {
            let message = errorText("bind")
            close(fd)
            throw HTTPServerError(.bindFailed, message, address: address)
        }
        guard Glibc.listen(fd, 128) == 0 else {
            let message = errorText("listen")
            close(fd)
            throw HTTPServerError(.systemError, message, address: address)
        }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else {
            let message = errorText("getsockname")
            close(fd)
            throw HTTPServerError(.systemError, message, address: address)
        }
        let boundPort: UInt16 = withUnsafePointer(to: &storage) { pointer in
            family == AF_INET
                ? pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
                : pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
        }
        return (fd, Int(boundPort))
    }

    /// Blocking mode with read/write timeouts, and no Nagle delay on small responses.
    static func configureClient(_ fd: Int32, ioTimeout: Duration) {
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~Int32(O_NONBLOCK)) }
        let ms = milliseconds(ioTimeout)
        var timeout = timeval(tv_sec: ms / 1000, tv_usec: (ms % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Writes all of `bytes`; `false` if the peer is gone or the write timed out.
    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let sent = send(fd, buffer.baseAddress! + offset, buffer.count - offset, Int32(MSG_NOSIGNAL))
                if sent > 0 {
                    offset += sent
                } else if sent < 0 && errno == EINTR {
                    continue
                } else {
                    return false
                }
            }
            return true
        }
    }

    /// Half-closes, then discards what the peer still sends (at most 1 MiB, for at most ~0.5 s)
    /// so the kernel does not answer unread data with a reset before the peer read our response.
    static func lingeringClose(_ fd: Int32) {
        Glibc.shutdown(fd, Int32(SHUT_WR))
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var scratch = [UInt8](repeating: 0, count: 16 * 1024)
        var drained = 0
        let deadline = ContinuousClock.now + .milliseconds(500)
        while drained < 1 << 20 && ContinuousClock.now < deadline {
            let count = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count > 0 { drained += count } else if count < 0 && errno == EINTR { continue } else { break }
        }
    }
}
