/// How an ``HTTPServer`` listens and what it accepts.
///
/// The defaults suit an operations endpoint (`/metrics`, `/healthz`, `/readyz`) on loopback.
/// ``validate()`` is called by ``HTTPServer/start(_:router:logger:)``.
public struct HTTPServerConfiguration: Sendable, Equatable {
    /// Address to bind: an IPv4 or IPv6 literal (`127.0.0.1`, `0.0.0.0`, `::1`), or `localhost`.
    public var host: String
    /// TCP port; `0` lets the kernel pick a free one (read it back from ``HTTPServer/port``).
    public var port: Int
    /// Threads that read requests and run handlers. A handler that blocks holds one of them.
    public var workerThreads: Int
    /// Open connections at most; further clients wait in the listen backlog.
    public var maxConnections: Int
    /// Largest request head (request line and header fields); larger answers `431`.
    public var maxHeaderBytes: Int
    /// Most header fields per request; more answers `431`.
    public var maxHeaderCount: Int
    /// Largest request body; larger answers `413` (before the body is read).
    public var maxBodyBytes: Int
    /// Bound on each socket read once a request has begun, and on each write.
    /// A request that stalls longer is answered `408` and the connection closed.
    public var ioTimeout: Duration
    /// An idle keep-alive connection is closed after this long.
    public var keepAliveTimeout: Duration

    /// Creates a configuration; every parameter has a default.
    /// - Parameters:
    ///   - host: bind address (default `127.0.0.1`).
    ///   - port: TCP port (default 0: any free port).
    ///   - workerThreads: request-handling threads (default 2).
    ///   - maxConnections: open connections at most (default 128).
    ///   - maxHeaderBytes: request head limit (default 16 KiB).
    ///   - maxHeaderCount: header field limit (default 100).
    ///   - maxBodyBytes: request body limit (default 1 MiB).
    ///   - ioTimeout: per-read/-write bound within a request (default 10 s).
    ///   - keepAliveTimeout: idle connection lifetime (default 15 s).
    public init(
        host: String = "127.0.0.1",
        port: Int = 0,
        workerThreads: Int = 2,
        maxConnections: Int = 128,
        maxHeaderBytes: Int = 16 * 1024,
        maxHeaderCount: Int = 100,
        maxBodyBytes: Int = 1 << 20,
        ioTimeout: Duration = .seconds(10),
        keepAliveTimeout: Duration = .seconds(15)
    ) {
        self.host = host
        self.port = port
        self.workerThreads = workerThreads
        self.maxConnections = maxConnections
        self.maxHeaderBytes = maxHeaderBytes
        self.maxHeaderCount = maxHeaderCount
        self.maxBodyBytes = maxBodyBytes
        self.ioTimeout = ioTimeout
        self.keepAliveTimeout = keepAliveTimeout
    }

    /// Checks every field.
    /// - Throws: ``HTTPServerError`` with kind ``HTTPServerError/Kind/invalidArgument`` naming the bad field.
    public func validate() throws(HTTPServerError) {
        func invalid(_ message: String) -> HTTPServerError { HTTPServerError(.invalidArgument, message) }
        if host.isEmpty || host.utf8.contains(0) { throw invalid("host must be a non-empty address") }
        if !(0...65_535).contains(port) { throw invalid("port must be in 0...65535, got \(port)") }
        if !(1...256).contains(workerThreads) { throw invalid("workerThreads must be in 1...256, got \(workerThreads)") }
        if maxConnections < 1 { throw invalid("maxConnections must be at least 1") }
        if maxHeaderBytes < 256 { throw invalid("maxHeaderBytes must be at least 256") }
        if maxHeaderCount < 1 { throw invalid("maxHeaderCount must be at least 1") }
        if maxBodyBytes < 0 { throw invalid("maxBodyBytes must not be negative") }
        if ioTimeout < .milliseconds(1) { throw invalid("ioTimeout must be at least 1 ms") }
        if keepAliveTimeout < .milliseconds(1) { throw invalid("keepAliveTimeout must be at least 1 ms") }
    }
}

/// An error starting an ``HTTPServer``. Once running, the server does not throw: bad requests are
/// answered with 4xx statuses and logged at debug level.
public struct HTTPServerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What went wrong.
    public enum Kind: String, Sendable, Equatable {
        /// A configuration value is out of range or the host is not an address literal.
        case invalidArgument
        /// The address could not be bound (port in use, no permission, address not local).
        case bindFailed
        /// A socket, pipe or `listen` call failed.
        case systemError
    }

    /// What went wrong.
    public let kind: Kind
    /// Human-readable detail, including `strerror` text for system calls.
    public let message: String
    /// `host:port` the server tried to listen on, when known.
    public let address: String?
    /// Source location where the error was raised (`file:line`).
    public let location: String

    /// Creates an error.
    public init(_ kind: Kind, _ message: String, address: String? = nil, fileID: String = #fileID, line: Int = #line) {
        self.kind = kind
        self.message = message
        self.address = address
        self.location = "\(fileID):\(line)"
    }

    public var description: String {
        var text = "http server \(kind.rawValue): \(message)"
        if let address { text += " [\(address)]" }
        return text
    }

    /// Equality ignores ``location``.
    public static func == (lhs: HTTPServerError, rhs: HTTPServerError) -> Bool {
        lhs.kind == rhs.kind && lhs.message == rhs.message && lhs.address == rhs.address
    }
}
