import Foundation

/// How a ``RedisConnection`` reaches and prepares its server.
///
/// Every field has a default suited to a local server; production code usually sets
/// `host`, `port`, `password` and `database` from configuration and keeps the rest.
/// ``validate()`` is called by ``RedisConnection/connect(_:logger:)``, so a bad value is a typed
/// ``RedisError`` with kind ``RedisError/Kind/invalidArgument`` rather than a crash.
public struct RedisConfiguration: Sendable, Equatable {
    /// How the server is deployed.
    public enum Mode: String, Sendable, Equatable, CaseIterable {
        /// One server (or a primary behind a stable address): every command goes to ``host``:``port``.
        case standalone
        /// Redis Cluster: ``host``:``port`` and ``seeds`` are where the slot map is first read from;
        /// commands go to the master owning their key's slot (see ``RedisConnection``).
        case cluster
    }

    /// TLS to the server (or to every cluster node): whom to trust and what to present.
    public struct TLS: Sendable, Equatable {
        /// PEM file of the certificate authorities that may sign the server's certificate;
        /// `nil` trusts the system's store (right for managed services with public certificates).
        public var caFile: String?
        /// PEM client certificate (chain) for servers that require one (`tls-auth-clients yes`).
        public var certificateFile: String?
        /// PEM private key of ``certificateFile``.
        public var keyFile: String?
        /// Name the server's certificate must carry, also sent as SNI. `nil` checks each server
        /// against the host it is reached at (``RedisConfiguration/host``, or a cluster node's
        /// address from the slot map); set it when nodes are reached by IP but certified by name.
        public var serverName: String?

        /// Creates TLS settings; every parameter defaults to `nil`.
        public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil,
                    serverName: String? = nil) {
            self.caFile = caFile
            self.certificateFile = certificateFile
            self.keyFile = keyFile
            self.serverName = serverName
        }
    }

    /// Standalone server or Redis Cluster.
    public var mode: Mode
    /// TLS settings; `nil` speaks plain TCP. The server's certificate is always verified
    /// (chain and name): there is deliberately no switch to turn verification off.
    public var tls: TLS?
    /// Further cluster nodes (`host:port`) to read the slot map from when ``host``:``port`` does not
    /// answer. Ignored in standalone mode.
    public var seeds: [String]
    /// Host name or IP address. Resolution happens on the connection's own thread.
    public var host: String
    /// TCP port, 1...65535.
    public var port: Int
    /// ACL user name for `AUTH username password` (Redis 6+). `nil` sends `AUTH password`.
    public var username: String?
    /// Password sent with `AUTH` after every (re)connect. `nil` skips `AUTH`.
    public var password: String?
    /// Database index selected with `SELECT` after every (re)connect; `0` skips `SELECT`.
    public var database: Int
    /// Bound on establishing the TCP connection.
    public var connectTimeout: Duration
    /// Bound on each socket read or write while a command or pipeline runs; `nil` waits forever.
    ///
    /// When it expires the call throws ``RedisError/Kind/timeout`` and the connection is dropped
    /// (replies still in flight could no longer be matched to their commands); the next call reconnects.
    public var commandTimeout: Duration?
    /// How many connection attempts a call makes when the connection is down (at least 1).
    public var reconnectAttempts: Int
    /// Pause before the second attempt; it doubles for each further attempt up to ``maxReconnectBackoff``.
    public var reconnectBackoff: Duration
    /// Upper bound of the pause between attempts.
    public var maxReconnectBackoff: Duration
    /// Replicas that must acknowledge a pipeline's writes before the call returns (`WAIT`), so a
    /// failover cannot lose what the caller was told is stored; 0 (the default) does not wait.
    /// A call whose writes reach fewer replicas throws ``RedisError/Kind/notReplicated``.
    public var replicaAcknowledgements: Int
    /// How long `WAIT` waits for ``replicaAcknowledgements``.
    public var replicaAcknowledgementTimeout: Duration

    /// Creates a configuration; every parameter has a default.
    /// - Parameters:
    ///   - mode: standalone server or Redis Cluster (default standalone).
    ///   - seeds: further cluster nodes as `host:port` (default none; cluster mode only).
    ///   - host: host name or address (default `127.0.0.1`).
    ///   - port: TCP port (default 6379).
    ///   - username: ACL user for `AUTH` (default none).
    ///   - password: password for `AUTH` (default none: no `AUTH`).
    ///   - database: database for `SELECT` (default 0).
    ///   - connectTimeout: TCP connect bound (default 2 s).
    ///   - commandTimeout: per-read/-write bound while a call runs (default 5 s; `nil` waits forever).
    ///   - reconnectAttempts: connection attempts per call while the connection is down (default 3).
    ///   - reconnectBackoff: first pause between attempts, doubling (default 50 ms).
    ///   - maxReconnectBackoff: longest pause between attempts (default 1 s).
    ///   - replicaAcknowledgements: replicas that must acknowledge writes (`WAIT`; default 0: none).
    ///   - replicaAcknowledgementTimeout: how long `WAIT` waits (default 500 ms).
    ///   - tls: TLS settings (default `nil`: plain TCP).
    public init(
        mode: Mode = .standalone,
        seeds: [String] = [],
        host: String = "127.0.0.1",
        port: Int = 6379,
        username: String? = nil,
        password: String? = nil,
        database: Int = 0,
        connectTimeout: Duration = .seconds(2),
        commandTimeout: Duration? = .seconds(5),
        reconnectAttempts: Int = 3,
        reconnectBackoff: Duration = .milliseconds(50),
        maxReconnectBackoff: Duration = .seconds(1),
        replicaAcknowledgements: Int = 0,
        replicaAcknowledgementTimeout: Duration = .milliseconds(500),
        tls: TLS? = nil
    ) {
        self.tls = tls
        self.replicaAcknowledgements = replicaAcknowledgements
        self.replicaAcknowledgementTimeout = replicaAcknowledgementTimeout
        self.mode = mode
        self.seeds = seeds
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.reconnectAttempts = reconnectAttempts
        self.reconnectBackoff = reconnectBackoff
        self.maxReconnectBackoff = maxReconnectBackoff
    }

    /// `host:port`, used as context in errors and logs.
    public var endpoint: String { "\(host):\(port)" }

    /// Checks every field.
    /// - Throws: ``RedisError`` with kind ``RedisError/Kind/invalidArgument`` naming the bad field.
    public func validate() throws(RedisError) {
        func invalid(_ message: String) -> RedisError {
            RedisError(.invalidArgument, message, endpoint: endpoint)
        }
        if host.isEmpty || host.utf8.contains(0) { throw invalid("host must be a non-empty name without NUL bytes") }
        if !(1...65_535).contains(port) { throw invalid("port must be in 1...65535, got \(port)") }
        if database < 0 || database > Int(Int32.max) { throw invalid("database must be >= 0, got \(database)") }
        if connectTimeout <= .zero { throw invalid("connectTimeout must be positive") }
        if let commandTimeout, commandTimeout <= .zero { throw invalid("commandTimeout must be positive or nil") }
        if reconnectAttempts < 1 { throw invalid("reconnectAttempts must be at least 1, got \(reconnectAttempts)") }
        if reconnectBackoff < .zero || maxReconnectBackoff < .zero { throw invalid("backoff must not be negative") }
        if username != nil && password == nil { throw invalid("username given without password") }
        if replicaAcknowledgements < 0 { throw invalid("replicaAcknowledgements must be >= 0, got \(replicaAcknowledgements)") }
        if replicaAcknowledgementTimeout <= .zero { throw invalid("replicaAcknowledgementTimeout must be positive") }
        if mode == .cluster && database != 0 { throw invalid("Redis Cluster has only database 0, got \(database)") }
        if let tls {
            if (tls.certificateFile == nil) != (tls.keyFile == nil) {
                throw invalid("TLS client certificate and key go together: give both or neither")
            }
            for (name, path) in [("CA file", tls.caFile), ("client certificate", tls.certificateFile),
                                 ("client key", tls.keyFile)] {
                if let path, !FileManager.default.isReadableFile(atPath: path) {
                    throw invalid("TLS \(name) '\(path)' is not a readable file")
                }
            }
            if let serverName = tls.serverName, serverName.isEmpty || serverName.utf8.contains(0) {
                throw invalid("TLS server name must be non-empty without NUL bytes")
            }
        }
        for seed in seeds where Self.parseEndpoint(seed) == nil {
            throw invalid("seed '\(seed)' is not host:port with a port in 1...65535")
        }
    }

    /// Every `host:port` to read a cluster's slot map from: ``endpoint`` first, then ``seeds``.
    public var seedEndpoints: [String] {
        var all = [endpoint]
        for seed in seeds where !all.contains(seed) { all.append(seed) }
        return all
    }

    /// Splits `host:port` (the host may be a bracketed IPv6 address); `nil` if malformed.
    public static func parseEndpoint(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(text[text.index(after: colon)...]), (1...65_535).contains(port) else { return nil }
        return (host, port)
    }
}
