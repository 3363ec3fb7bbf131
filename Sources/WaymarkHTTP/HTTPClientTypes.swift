/// How an ``HTTPClient`` connects. Every field has a default; production code usually sets
/// ``caBundlePath`` (if the provider uses a private CA) and the timeouts from configuration.
public struct HTTPClientConfiguration: Sendable, Equatable {
    /// Bound on a whole request (connect, TLS handshake, send, wait, receive) when a call gives none.
    public var timeout: Duration
    /// Bound on connecting (TCP and TLS handshake) when a call gives none.
    public var connectTimeout: Duration
    /// PEM file of CA certificates to trust instead of the system store; `nil` uses the system store.
    public var caBundlePath: String?
    /// Verify the server's certificate chain and host name (default `true`). Turning this off is for
    /// local experiments only; production configuration validation should reject it.
    public var verifyTLS: Bool
    /// Follow `3xx` redirects (default `false`: a redirect is returned as the response).
    public var followRedirects: Bool
    /// Concurrent connections to one host at most; further requests to it wait for a free one
    /// (the wait counts against their timeout).
    public var maxConnectionsPerHost: Int
    /// Connections kept open for reuse across all hosts at most.
    public var maxIdleConnections: Int
    /// An idle connection older than this is not reused (closed instead).
    public var maxIdleTime: Duration
    /// Largest response body accepted; larger fails with ``HTTPClientError/Kind/responseTooLarge``.
    public var maxResponseBodyBytes: Int
    /// `User-Agent` sent when the request has none.
    public var userAgent: String

    /// Creates a configuration; every parameter has a default.
    /// - Parameters:
    ///   - timeout: whole-request bound (default 10 s).
    ///   - connectTimeout: connect and TLS handshake bound (default 3 s).
    ///   - caBundlePath: CA certificates file (default: system store).
    ///   - verifyTLS: verify certificate and host name (default `true`).
    ///   - followRedirects: follow redirects (default `false`).
    ///   - maxConnectionsPerHost: concurrent connections per host (default 16).
    ///   - maxIdleConnections: connection cache size (default 32).
    ///   - maxIdleTime: idle connection reuse limit (default 30 s).
    ///   - maxResponseBodyBytes: response body limit (default 1 MiB).
    ///   - userAgent: default `User-Agent` (default `waymark`).
    public init(
        timeout: Duration = .seconds(10),
        connectTimeout: Duration = .seconds(3),
        caBundlePath: String? = nil,
        verifyTLS: Bool = true,
        followRedirects: Bool = false,
        maxConnectionsPerHost: Int = 16,
        maxIdleConnections: Int = 32,
        maxIdleTime: Duration = .seconds(30),
        maxResponseBodyBytes: Int = 1 << 20,
        userAgent: String = "waymark"
    ) {
        self.timeout = timeout
        self.connectTimeout = connectTimeout
        self.caBundlePath = caBundlePath
        self.verifyTLS = verifyTLS
        self.followRedirects = followRedirects
        self.maxConnectionsPerHost = maxConnectionsPerHost
        self.maxIdleConnections = maxIdleConnections
        self.maxIdleTime = maxIdleTime
        self.maxResponseBodyBytes = maxResponseBodyBytes
        self.userAgent = userAgent
    }

    /// Checks every field.
    /// - Throws: ``HTTPClientError`` with kind ``HTTPClientError/Kind/invalidRequest`` naming the bad field.
    public func validate() throws(HTTPClientError) {
        func invalid(_ message: String) -> HTTPClientError { HTTPClientError(.invalidRequest, message) }
        if timeout < .milliseconds(1) { throw invalid("timeout must be at least 1 ms") }
        if connectTimeout < .milliseconds(1) { throw invalid("connectTimeout must be at least 1 ms") }
        if let caBundlePath, caBundlePath.isEmpty || caBundlePath.utf8.contains(0) {
            throw invalid("caBundlePath must be a non-empty path")
        }
        if maxConnectionsPerHost < 1 { throw invalid("maxConnectionsPerHost must be at least 1") }
        if maxIdleConnections < 1 { throw invalid("maxIdleConnections must be at least 1") }
        if maxIdleTime < .seconds(1) { throw invalid("maxIdleTime must be at least 1 s") }
        if maxResponseBodyBytes < 0 { throw invalid("maxResponseBodyBytes must not be negative") }
        if userAgent.utf8.contains(where: { $0 < 0x20 }) { throw invalid("userAgent must not contain control characters") }
    }
}

/// A response received by ``HTTPClient``. Every status, including `4xx` and `5xx`, is a response:
/// only transport failures throw.
public struct HTTPClientResponse: Sendable {
    /// The status code of the final response.
    public var status: Int
    /// Header fields of the final response (interim `100 Continue` responses are dropped).
    public var headers: HTTPHeaders
    /// The body bytes (at most ``HTTPClientConfiguration/maxResponseBodyBytes``).
    public var body: [UInt8]

    /// Creates a response.
    public init(status: Int, headers: HTTPHeaders = [:], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// A request that did not produce a response.
///
/// Context is the *origin* (`https://host:port`) and curl's message. Never the path or query string
/// (they may identify a customer), never header values or bodies.
///
/// For retry decisions: ``Kind/connectFailed`` and ``Kind/invalidURL`` mean the server never saw the
/// request; ``Kind/timeout`` and ``Kind/connectionLost`` mean it may have processed it (send an
/// idempotency key and retry safely).
public struct HTTPClientError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What went wrong.
    public enum Kind: String, Sendable, Equatable {
        /// The request or connect timeout expired (curl error 28).
        case timeout
        /// The host name did not resolve or the TCP connection was refused or unreachable.
        case connectFailed
        /// TLS failed: handshake, certificate verification, host name mismatch, unreadable CA file.
        case tls
        /// The URL is malformed or not `http`/`https`.
        case invalidURL
        /// A header name or value, the method, or a configuration value is not acceptable.
        case invalidRequest
        /// The connection broke after the request was (partly) sent, or the server sent nothing.
        case connectionLost
        /// The response body exceeded ``HTTPClientConfiguration/maxResponseBodyBytes``.
        case responseTooLarge
        /// The calling task was cancelled; the request was abandoned.
        case cancelled
        /// The client was shut down.
        case closed
        /// Any other curl failure; see ``message`` and ``curlCode``.
        case other
    }

    /// What went wrong.
    public let kind: Kind
    /// curl's error text or our own detail.
    public let message: String
    /// `scheme://host:port` of the request, when known.
    public let origin: String?
    /// The `CURLcode`, when curl reported the failure.
    public let curlCode: Int?
    /// Source location where the error was raised (`file:line`).
    public let location: String

    /// Creates an error.
    public init(_ kind: Kind, _ message: String, origin: String? = nil, curlCode: Int? = nil,
                fileID: String = #fileID, line: Int = #line) {
        self.kind = kind
        self.message = message
        self.origin = origin
        self.curlCode = curlCode
        self.location = "\(fileID):\(line)"
    }

    public var description: String {
        var text = "http client \(kind.rawValue): \(message)"
        if let curlCode { text += " [curl \(curlCode)]" }
        if let origin { text += " [\(origin)]" }
        return text
    }

    /// Equality ignores ``location``.
    public static func == (lhs: HTTPClientError, rhs: HTTPClientError) -> Bool {
        lhs.kind == rhs.kind && lhs.message == rhs.message && lhs.origin == rhs.origin && lhs.curlCode == rhs.curlCode
    }
}
