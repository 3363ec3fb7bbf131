import CHiredis
import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Owns the hiredis context. Every method runs on the connection's ``OwnedThread`` only
/// (jobs there run one at a time), which is what makes the `@unchecked Sendable` sound.
final class RedisDriver: @unchecked Sendable {
    let configuration: RedisConfiguration
    private let logger: Logger
    private var context: UnsafeMutablePointer<redisContext>?
    private var hasConnected = false
    /// OpenSSL client context (`SSL_CTX *`), built from ``RedisConfiguration/tls`` on the first TLS connect.
    private var tlsContext: OpaquePointer?

    init(configuration: RedisConfiguration, logger: Logger) {
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "redis.endpoint"] = "\(configuration.endpoint)"
        self.logger = logger
    }

    deinit {
        disconnect()
        if let tlsContext { SSL_CTX_free(tlsContext) }
    }

    /// Blocks SIGPIPE on the calling (owned) thread: hiredis (and OpenSSL under it) use `write(2)`, and a write to a
    /// socket the server closed must become `EPIPE` (a typed error), not a process-killing signal.
    static func blockSIGPIPEOnCurrentThread() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    func disconnect() {
        if let context {
            redisFree(context)
            self.context = nil
        }
    }

    // MARK: Commands

    /// Runs `commands` as one pipeline, loading scripts on `NOSCRIPT` and re-sending those commands.
    func execute(_ commands: [RedisCommand]) throws(RedisError) -> [RedisReply] {
        guard !commands.isEmpty else { return [] }
        for command in commands where command.name.isEmpty || command.argumentCount == 0 {
            throw RedisError(.invalidArgument, "empty command name", endpoint: configuration.endpoint)
        }
        try ensureConnected(for: commands[0].name)
        var replies = try acknowledgedRoundTrip(commands, indices: commands.indices)

        var missing: [Int] = []
        for index in replies.indices where commands[index].script != nil {
            if case .error(let message) = replies[index], message.hasPrefix("NOSCRIPT") { missing.append(index) }
        }
        guard !missing.isEmpty else { return replies }

        // Load each missing script once, then re-send only the affected commands in their original order.
        var scripts: [RedisScript] = []
        for index in missing where !scripts.contains(commands[index].script!) { scripts.append(commands[index].script!) }
        logger.debug("loading scripts after NOSCRIPT", metadata: [
            "redis.scripts": "\(scripts.map(\.name))", "redis.resent": "\(missing.count)",
        ])
        let failures = try loadScripts(scripts)
        var resend: [Int] = []
        for index in missing {
            if let failure = failures[commands[index].script!.sha1] { replies[index] = failure } else { resend.append(index) }
        }
        if !resend.isEmpty {
            let again = try acknowledgedRoundTrip(commands, indices: resend)
            for (position, index) in resend.enumerated() { replies[index] = again[position] }
        }
        return replies
    }

    /// `SCRIPT LOAD`s `scripts`; returns the error reply for each script that failed to load.
    func loadScripts(_ scripts: [RedisScript]) throws(RedisError) -> [String: RedisReply] {
        guard !scripts.isEmpty else { return [:] }
        try ensureConnected(for: "SCRIPT")
        let loads = scripts.map { RedisCommand("SCRIPT", "LOAD", $0.source) }
        let replies = try roundTrip(loads, indices: loads.indices)
        var failures: [String: RedisReply] = [:]
        for (script, reply) in zip(scripts, replies) {
            if case .error(let message) = reply {
                logger.warning("SCRIPT LOAD failed", metadata: ["redis.script": "\(script.name)", "error.message": "\(message)"])
                failures[script.sha1] = reply
            } else if reply.string != script.sha1 {
                throw RedisError(.protocolError, "SCRIPT LOAD returned an unexpected hash for script '\(script.name)'",
                                 endpoint: configuration.endpoint, command: "SCRIPT")
            }
        }
        return failures
    }

    /// ``roundTrip(_:indices:)`` followed, when the commands may write and replica acknowledgements
    /// are configured, by `WAIT` in the same write; throws `notReplicated` if too few replicas confirmed.
    private func acknowledgedRoundTrip(_ commands: [RedisCommand], indices: some Collection<Int>) throws(RedisError) -> [RedisReply] {
        guard let wait = acknowledgement(for: commands, indices: indices) else { return try roundTrip(commands, indices: indices) }
        var list = indices.map { commands[$0] }
        list.append(wait)
        var replies = try roundTrip(list, indices: list.indices)
        try checkAcknowledged(replies.removeLast(), command: list[0].name)
        return replies
    }

    /// `WAIT replicas timeout` if any selected command may write and acknowledgements are configured.
    func acknowledgement(for commands: [RedisCommand], indices: some Collection<Int>) -> RedisCommand? {
        guard configuration.replicaAcknowledgements > 0, indices.contains(where: { commands[$0].mayWrite }) else { return nil }
        let (seconds, attoseconds) = configuration.replicaAcknowledgementTimeout.components
        return RedisCommand("WAIT", configuration.replicaAcknowledgements, Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000))
    }

    /// Throws `notReplicated` unless `reply` (to `WAIT`) counts enough replicas.
    func checkAcknowledged(_ reply: RedisReply, command: String) throws(RedisError) {
        let wanted = configuration.replicaAcknowledgements
        guard let count = reply.integer, count >= Int64(wanted) else {
            let got = reply.integer.map { "\($0)" } ?? reply.errorMessage ?? "no count"
            logger.warning("writes not acknowledged by enough replicas", metadata: [
                "redis.replicas.wanted": "\(wanted)", "redis.replicas.acknowledged": "\(got)", "redis.command": "\(command)",
            ])
            throw RedisError(.notReplicated, "writes applied on the master but acknowledged by \(got) of \(wanted) replicas within \(configuration.replicaAcknowledgementTimeout)",
                             endpoint: configuration.endpoint, command: command)
        }
    }

    /// Writes the selected commands as one buffer and reads one reply per command.
    /// On a transport failure the context is dropped and a typed error thrown.
    func roundTrip(_ commands: [RedisCommand], indices: some Collection<Int>) throws(RedisError) -> [RedisReply] {
        try write(commands, indices: indices)
        return try read(commands, indices: indices)
    }

    /// Encodes the selected commands into one buffer and writes all of it to the socket, without
    /// reading: a cluster connection writes to every node before it reads any reply, so the nodes
    /// work on their parts of a pipeline at the same time.
    func write(_ commands: [RedisCommand], indices: some Collection<Int>) throws(RedisError) {
        guard let context else {
            throw RedisError(.connectionLost, "not connected", endpoint: configuration.endpoint, command: commands.first?.name)
        }
        let buffer = RESP.encode(commands, indices: indices)
        let appended = buffer.withUnsafeBytes { raw in
            redisAppendFormattedCommand(context, raw.baseAddress!.assumingMemoryBound(to: CChar.self), raw.count)
        }
        if appended != REDIS_OK {
            throw failure(context, errno: errno, command: commands[indices.first!].name, done: 0, of: indices.count)
        }
        var done: Int32 = 0
        while done == 0 {
            if redisBufferWrite(context, &done) != REDIS_OK {
                throw failure(context, errno: errno, command: commands[indices.first!].name, done: 0, of: indices.count)
            }
        }
    }

    /// Reads one reply for each selected command (written before with ``write(_:indices:)``).
    func read(_ commands: [RedisCommand], indices: some Collection<Int>) throws(RedisError) -> [RedisReply] {
        guard let context else {
            throw RedisError(.connectionLost, "not connected", endpoint: configuration.endpoint, command: commands.first?.name)
        }
        var replies: [RedisReply] = []
        replies.reserveCapacity(indices.count)
        for index in indices {
            var raw: UnsafeMutableRawPointer?
            if redisGetReply(context, &raw) != REDIS_OK {
                throw failure(context, errno: errno, command: commands[index].name, done: replies.count, of: indices.count)
            }
            guard let raw else {
                disconnect()
                throw RedisError(.protocolError, "hiredis returned no reply", endpoint: configuration.endpoint,
                                 command: commands[index].name)
            }
            replies.append(RedisReply(raw.assumingMemoryBound(to: redisReply.self)))
            freeReplyObject(raw)
        }
        return replies
    }

    /// Classifies the context's error, drops the context and returns the error to throw.
    private func failure(_ context: UnsafeMutablePointer<redisContext>, errno code: Int32, command: String,
                         done: Int, of total: Int) -> RedisError {
        let hiredisError = context.pointee.err
        let text = Self.errorText(context)
        disconnect()
        let progress = total > 1 ? " after \(done) of \(total) replies" : ""
        let kind: RedisError.Kind
        switch hiredisError {
        case REDIS_ERR_IO where code == EAGAIN || code == EWOULDBLOCK: kind = .timeout
        case REDIS_ERR_PROTOCOL, REDIS_ERR_OOM: kind = .protocolError
        default: kind = .connectionLost
        }
        let message = kind == .timeout
            ? "no reply within \(configuration.commandTimeout.map { "\($0)" } ?? "the timeout")\(progress); connection dropped"
            : "\(text)\(progress); connection dropped, the pipeline may have been partly applied"
        let error = RedisError(kind, message, endpoint: configuration.endpoint, command: command)
        logger.warning("redis call failed", metadata: [
            "error.kind": "\(kind.rawValue)", "error.message": "\(text)", "redis.command": "\(command)",
            "redis.replies.read": "\(done)", "redis.replies.expected": "\(total)",
        ])
        return error
    }

    private static func errorText(_ context: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: context.pointee.errstr) { raw in
            let bytes = raw.prefix { $0 != 0 }
            return bytes.isEmpty ? "hiredis error \(context.pointee.err)" : String(decoding: bytes, as: UTF8.self)
        }
    }

    // MARK: Connecting

    /// Makes sure a healthy context exists, reconnecting with bounded attempts and backoff.
    func ensureConnected(for command: String) throws(RedisError) {
        if let context {
            if Self.peerHasClosed(context) {
                // Nothing is in flight, so nothing is lost: reconnect silently instead of failing the call.
                logger.info("connection closed by server while idle; reconnecting")
                disconnect()
            } else {
                return
            }
        }
        var delay = configuration.reconnectBackoff
        var lastError = RedisError(.connectFailed, "no attempt made", endpoint: configuration.endpoint)
        for attempt in 1...configuration.reconnectAttempts {
            do {
                try connectOnce()
                if hasConnected { logger.info("reconnected", metadata: ["redis.attempt": "\(attempt)"]) }
                hasConnected = true
                return
            } catch {
                lastError = error
                if error.kind == .authFailed || error.kind == .invalidArgument || error.kind == .tlsFailed { throw error }
                logger.debug("connect attempt failed", metadata: [
                    "redis.attempt": "\(attempt)", "error.kind": "\(error.kind.rawValue)", "error.message": "\(error.message)",
                ])
            }
            if attempt < configuration.reconnectAttempts {
                Thread.sleep(forTimeInterval: delay.seconds)
                delay = min(delay * 2, configuration.maxReconnectBackoff)
            }
        }
        let attempts = configuration.reconnectAttempts
        throw RedisError(lastError.kind == .timeout ? .timeout : .connectFailed,
                         "\(lastError.message) (\(attempts) attempt\(attempts == 1 ? "" : "s"))",
                         endpoint: configuration.endpoint, command: lastError.command ?? command)
    }

    /// An idle connection whose socket is readable has been closed by the peer (or is out of sync).
    private static func peerHasClosed(_ context: UnsafeMutablePointer<redisContext>) -> Bool {
        var descriptor = pollfd(fd: context.pointee.fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&descriptor, 1, 0)
        return ready != 0  // > 0: readable/hangup/error while idle; < 0: the descriptor is unusable
    }

    /// One attempt: TCP connect with timeout, TLS handshake when configured, socket timeouts,
    /// keep-alive, then AUTH and SELECT (and PING over TLS) in one round trip.
    private func connectOnce() throws(RedisError) {
        let endpoint = configuration.endpoint
        guard let context = redisConnectWithTimeout(configuration.host, Int32(configuration.port),
                                                    configuration.connectTimeout.timeval) else {
            throw RedisError(.connectFailed, "hiredis could not allocate a context", endpoint: endpoint)
        }
        if context.pointee.err != 0 {
            let text = Self.errorText(context)
            redisFree(context)
            throw RedisError(.connectFailed, text, endpoint: endpoint)
        }
        if let tls = configuration.tls {
            // The handshake's reads and writes are bounded by the connect timeout; command timeouts follow.
            _ = redisSetTimeout(context, configuration.connectTimeout.timeval)
            do {
                try startTLS(context, tls)
            } catch {
                redisFree(context)
                throw error
            }
        }
        let timeout = configuration.commandTimeout?.timeval ?? timeval(tv_sec: 0, tv_usec: 0)
        if redisSetTimeout(context, timeout) != REDIS_OK {
            let text = Self.errorText(context)
            redisFree(context)
            throw RedisError(.connectFailed, "cannot set socket timeouts: \(text)", endpoint: endpoint)
        }
        _ = redisEnableKeepAlive(context)
        self.context = context

        var setup: [RedisCommand] = []
        if let password = configuration.password {
            var auth = RedisCommand("AUTH")
            if let username = configuration.username { auth.append(username) }
            auth.append(password)
            setup.append(auth)
        }
        if configuration.database != 0 { setup.append(RedisCommand("SELECT", configuration.database)) }
        // A TLS 1.3 server sends its session tickets after the handshake. Unread, they would make the idle
        // socket readable, which ``peerHasClosed(_:)`` takes for a closed connection: one round trip now
        // consumes them.
        if configuration.tls != nil { setup.append(RedisCommand("PING")) }
        guard !setup.isEmpty else { return }

        let replies: [RedisReply]
        do {
            replies = try roundTrip(setup, indices: setup.indices)
        } catch where configuration.tls != nil && error.kind == .connectionLost {
            // OpenSSL's client finishes a TLS 1.3 handshake before the server has checked the client's
            // certificate: a refusal shows up as the first read failing. Say what that usually means.
            throw RedisError(.connectFailed, "\(error.message); the server closed the TLS connection right after the handshake: "
                             + "it probably requires a client certificate it did not get or does not trust (redis.tls cert_file, key_file)",
                             endpoint: endpoint, command: error.command)
        }
        for (command, reply) in zip(setup, replies) {
            guard case .error(let message) = reply else { continue }
            disconnect()
            if command.name == "AUTH" { throw RedisError(.authFailed, message, endpoint: endpoint, command: "AUTH") }
            throw RedisError(.connectFailed, "SELECT \(configuration.database) refused: \(message)",
                             endpoint: endpoint, command: "SELECT")
        }
    }
}

extension RedisDriver {
    /// Runs the TLS handshake on a freshly connected context, verifying the server's certificate chain
    /// against the configured CA and its name against ``RedisConfiguration/TLS/serverName`` (or the host).
    private func startTLS(_ context: UnsafeMutablePointer<redisContext>, _ tls: RedisConfiguration.TLS) throws(RedisError) {
        var message = [CChar](repeating: 0, count: 512)
        func text() -> String { String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        if tlsContext == nil {
            tlsContext = waymark_tls_context(tls.caFile, tls.certificateFile, tls.keyFile, &message, message.count)
            guard tlsContext != nil else {
                throw RedisError(.tlsFailed, text(), endpoint: configuration.endpoint)
            }
        }
        let serverName = tls.serverName ?? configuration.host
        switch waymark_redis_start_tls(context, tlsContext, serverName, &message, message.count) {
        case Int32(WAYMARK_TLS_OK):
            return
        case Int32(WAYMARK_TLS_NOT_TRUSTED):
            throw RedisError(.tlsFailed, "\(text()) (expected a certificate for '\(serverName)' signed by \(tls.caFile.map { "'\($0)'" } ?? "the system's CA store"))",
                             endpoint: configuration.endpoint)
        default:
            throw RedisError(.connectFailed, text(), endpoint: configuration.endpoint)
        }
    }
}

extension Duration {
    var timeval: timeval {
        let (seconds, attoseconds) = components
        return .init(tv_sec: .init(seconds), tv_usec: .init(attoseconds / 1_000_000_000_000))
    }

    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
