/// An error from the Redis client, with enough context to act on and nothing more.
///
/// Context is the server's `host:port` and the *name* of the command involved (`SET`, `EVALSHA`),
/// never argument values, which may hold personal data. Error *replies* from the server
/// (`-ERR ...`) are not thrown by pipelines: they come back as ``RedisReply/error(_:)`` values.
public struct RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What went wrong.
    public enum Kind: String, Sendable, Equatable {
        /// The TCP connection could not be established (after the configured attempts), or the
        /// post-connect `SELECT` was refused.
        case connectFailed
        /// The server refused `AUTH`. Not retried: a wrong password does not fix itself.
        case authFailed
        /// TLS could not be set up or the server's certificate was refused (untrusted chain, expired,
        /// or not naming the server). Not retried: the message says which, in OpenSSL's words.
        case tlsFailed
        /// The connection broke while a call was in flight. The call's commands may have been
        /// applied fully, partly or not at all. The next call reconnects.
        case connectionLost
        /// A read or write exceeded ``RedisConfiguration/commandTimeout``. The connection was
        /// dropped; the commands may still be applied by the server. The next call reconnects.
        case timeout
        /// The server sent bytes that are not valid RESP, or hiredis failed internally.
        case protocolError
        /// A bad argument or configuration value (port out of range, empty command, ...).
        case invalidArgument
        /// The connection was closed with ``RedisConnection/close()``.
        case closed
        /// Redis Cluster could not serve the call for now: `CLUSTERDOWN` or `TRYAGAIN` persisted through
        /// the connection's short retries, or a command was redirected too often (a failover or a
        /// slot migration in progress). Other commands of the pipeline may have been applied. Retry later.
        case clusterUnavailable
        /// The writes were applied on the master but fewer replicas than
        /// ``RedisConfiguration/replicaAcknowledgements`` confirmed them in time: a failover now could
        /// lose them. Retry (idempotent writes) once replicas catch up.
        case notReplicated
    }

    /// What went wrong.
    public let kind: Kind
    /// Human-readable detail (hiredis or server text, counts); never command argument values.
    public let message: String
    /// `host:port` of the server, when known.
    public let endpoint: String?
    /// Name of the command involved (for example `EVALSHA`), when known.
    public let command: String?
    /// Source location where the error was raised (`file:line`), for debugging.
    public let location: String

    /// Creates an error.
    public init(_ kind: Kind, _ message: String, endpoint: String? = nil, command: String? = nil,
                fileID: String = #fileID, line: Int = #line) {
        self.kind = kind
        self.message = message
        self.endpoint = endpoint
        self.command = command
        self.location = "\(fileID):\(line)"
    }

    public var description: String {
        var text = "redis \(kind.rawValue): \(message)"
        if let command { text += " [command \(command)]" }
        if let endpoint { text += " [\(endpoint)]" }
        return text
    }

    /// Equality ignores ``location``.
    public static func == (lhs: RedisError, rhs: RedisError) -> Bool {
        lhs.kind == rhs.kind && lhs.message == rhs.message && lhs.endpoint == rhs.endpoint && lhs.command == rhs.command
    }
}
