import Logging
import Synchronization
import WaymarkThreads

/// One connection to Redis over hiredis, with its own thread.
///
/// All hiredis calls run on an ``OwnedThread`` the connection owns, so blocking socket I/O never
/// runs on Swift's cooperative pool. Calls are processed one at a time, in submission order.
///
/// **Concurrency model: one connection per task.** Give each worker task its own connection (they
/// are cheap: one socket and one thread). The type is `Sendable` and sharing it is memory-safe,
/// since calls are serialised on its thread, but concurrent callers then wait for each other's
/// round trips, which defeats pipelining. There is deliberately no pool yet.
///
/// **Failures and reconnects.** If the connection breaks while a call is in flight, that call throws
/// ``RedisError/Kind/connectionLost`` (or ``RedisError/Kind/timeout``) and the connection is
/// dropped. Commands are never retried automatically, because they may already have been applied.
/// The *next* call reconnects transparently, with up to ``RedisConfiguration/reconnectAttempts``
/// attempts separated by exponential backoff, and re-sends `AUTH` and `SELECT`. A connection the
/// server closed while idle (restart, `timeout` setting) is detected before sending and replaced
/// without failing the call.
///
/// **Pipelines may be partly applied.** When a pipeline fails in flight, any prefix of its commands
/// may have been executed. Make pipelined writes idempotent (or wrap them in one Lua script) if that matters.
///
/// Pub/sub (`SUBSCRIBE`, `MONITOR`) is not supported: every command must produce exactly one reply.
public final class RedisConnection: Sendable {
    /// The configuration this connection was opened with.
    public let configuration: RedisConfiguration
    private let thread: OwnedThread
    private let driver: any CommandDriver
    private let closed = Atomic<Bool>(false)
    private let statistics = ClusterStatisticsRecorder()

    private init(configuration: RedisConfiguration, logger: Logger) {
        self.configuration = configuration
        self.thread = OwnedThread(name: "redis-\(configuration.port)")
        switch configuration.mode {
        case .standalone: self.driver = RedisDriver(configuration: configuration, logger: logger)
        case .cluster: self.driver = ClusterDriver(configuration: configuration, logger: logger, statistics: statistics)
        }
        _ = thread.submit { RedisDriver.blockSIGPIPEOnCurrentThread() }
    }

    deinit {
        // Free the context on its thread; OwnedThread's deinit then waits for that job to finish.
        let driver = self.driver
        thread.submit { driver.disconnect() }
    }

    /// Opens a connection: TCP connect, socket timeouts, then `AUTH` and `SELECT` if configured.
    /// - Parameters:
    ///   - configuration: where and how to connect; validated first.
    ///   - logger: receives connection events (metadata `redis.endpoint`, never command values).
    /// - Throws: ``RedisError`` — `invalidArgument`, `connectFailed`, `authFailed` or `timeout`.
    public static func connect(_ configuration: RedisConfiguration = RedisConfiguration(),
                               logger: Logger = Logger(label: "waymark.redis")) async throws -> RedisConnection {
        try configuration.validate()
        let connection = RedisConnection(configuration: configuration, logger: logger)
        let driver = connection.driver
        do {
            try await connection.onThread { () throws(RedisError) in try driver.ensureConnected(for: "CONNECT") }
        } catch {
            await connection.close()
            throw error
        }
        return connection
    }

    /// Sends one command and returns its reply. Server error replies are returned as ``RedisReply/error(_:)``.
    /// - Throws: ``RedisError`` for transport failures, timeouts, invalid commands or a closed connection.
    public func send(_ command: RedisCommand) async throws -> RedisReply {
        try await pipeline([command])[0]
    }

    /// Sends `name` with `arguments` (convenience for ``send(_:)``).
    public func send(_ name: String, _ arguments: any RedisArgument...) async throws -> RedisReply {
        try await send(RedisCommand(name, arguments: arguments))
    }

    /// Sends `commands` in one write and reads one reply per command, in order.
    ///
    /// The commands are encoded into one contiguous RESP buffer and handed to hiredis in a single
    /// append, then the replies are read back. Error replies (`-ERR ...`) are returned in place as
    /// ``RedisReply/error(_:)`` so the caller sees each command's outcome; only transport failures throw.
    ///
    /// **Scripts:** an ``RedisCommand/evalsha(_:keys:arguments:)`` command answered with `NOSCRIPT`
    /// (after `SCRIPT FLUSH` or a server restart) is handled transparently: the connection runs
    /// `SCRIPT LOAD` for each missing script and re-sends *just those commands*, in their original
    /// relative order, replacing their replies. Caveat: the re-sent commands then execute *after*
    /// every other command of the pipeline, so a later command that depended on a script's effect
    /// saw the state without it. Call ``load(_:)`` at start-up (and keep scripts self-contained) to
    /// make this rare. If `SCRIPT LOAD` itself fails (a Lua compile error), its error reply becomes
    /// the reply of the affected commands.
    ///
    /// If the task is cancelled before the call starts, it throws `CancellationError` and sends
    /// nothing; once started, a call runs to completion (bounded by the command timeout).
    /// - Returns: one reply per command, in order (an empty array for no commands).
    /// - Throws: ``RedisError``: `invalidArgument` (an empty command), `connectionLost` (the pipeline
    ///   may have been partly applied), `timeout`, `connectFailed`/`authFailed` (reconnect failed),
    ///   `protocolError`, `closed`.
    public func pipeline(_ commands: [RedisCommand]) async throws -> [RedisReply] {
        guard !commands.isEmpty else { return [] }
        try Task.checkCancellation()
        let driver = self.driver
        // The OwnedThread keeps finished jobs' closures for a while; hand the commands over in a box
        // the job empties, so large pipelines are not retained after they ran.
        let box = TakeOnce(commands)
        return try await onThread { () throws(RedisError) in try driver.execute(box.take()) }
    }

    /// Loads `scripts` with `SCRIPT LOAD` now, so later `EVALSHA` calls do not hit `NOSCRIPT`
    /// (until the server's script cache is flushed or it restarts).
    /// - Throws: ``RedisError``; a script that fails to compile gives `invalidArgument` naming it.
    public func load(_ scripts: [RedisScript]) async throws {
        let driver = self.driver
        let failures = try await onThread { () throws(RedisError) in try driver.loadScripts(scripts) }
        if let (sha, reply) = failures.first, let script = scripts.first(where: { $0.sha1 == sha }) {
            throw RedisError(.invalidArgument, "script '\(script.name)' did not load: \(reply.errorMessage ?? "")",
                             endpoint: configuration.endpoint, command: "SCRIPT")
        }
    }

    /// Sends `command` to every master (the one server in standalone mode), for commands whose answer
    /// is per node: `DBSIZE`, `INFO`, `SCAN`, `FLUSHDB`, `KEYS`. Returns each node's reply by `host:port`.
    public func sendToEveryMaster(_ command: RedisCommand) async throws -> [(endpoint: String, reply: RedisReply)] {
        try Task.checkCancellation()
        let driver = self.driver
        return try await onThread { () throws(RedisError) in try driver.executeOnEveryMaster(command) }
    }

    /// Sends `name` with `arguments` to every master (convenience for ``sendToEveryMaster(_:)``).
    public func sendToEveryMaster(_ name: String, _ arguments: any RedisArgument...) async throws -> [(endpoint: String, reply: RedisReply)] {
        try await sendToEveryMaster(RedisCommand(name, arguments: arguments))
    }

    /// What this connection did to follow a cluster's topology (all zero in standalone mode).
    public var clusterStatistics: ClusterStatistics { statistics.value.withLock { $0 } }

    /// `true` once ``close()`` has been called.
    public var isClosed: Bool { closed.load(ordering: .acquiring) }

    /// Closes the socket and stops the connection's thread, after any call already queued has
    /// finished. Later calls throw ``RedisError/Kind/closed``. Safe to call more than once.
    public func close() async {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let driver = self.driver
        _ = try? await thread.run { driver.disconnect() }
        thread.shutdown()
    }

    private func onThread<T: Sendable>(_ body: @escaping @Sendable () throws(RedisError) -> T) async throws(RedisError) -> T {
        guard !isClosed else {
            throw RedisError(.closed, "connection was closed", endpoint: configuration.endpoint)
        }
        do {
            return try await thread.run { try body() }
        } catch let error as RedisError {
            throw error
        } catch {
            throw RedisError(.closed, "connection thread stopped: \(error)", endpoint: configuration.endpoint)
        }
    }
}

/// What ``RedisConnection`` needs from the object owning its sockets: ``RedisDriver`` for one server,
/// ``ClusterDriver`` for a cluster. Every method runs on the connection's thread.
protocol CommandDriver: Sendable {
    func ensureConnected(for command: String) throws(RedisError)
    func execute(_ commands: [RedisCommand]) throws(RedisError) -> [RedisReply]
    func loadScripts(_ scripts: [RedisScript]) throws(RedisError) -> [String: RedisReply]
    func executeOnEveryMaster(_ command: RedisCommand) throws(RedisError) -> [(endpoint: String, reply: RedisReply)]
    func disconnect()
}

extension RedisDriver: CommandDriver {
    func executeOnEveryMaster(_ command: RedisCommand) throws(RedisError) -> [(endpoint: String, reply: RedisReply)] {
        [(configuration.endpoint, try execute([command])[0])]
    }
}

extension ClusterDriver: CommandDriver {}

/// A value handed to exactly one job and then released.
private final class TakeOnce<Value: Sendable>: @unchecked Sendable {
    private let lock = Mutex<Value?>(nil)
    init(_ value: Value) { lock.withLock { $0 = value } }
    func take() -> Value { lock.withLock { value in defer { value = nil }; return value! } }
}
