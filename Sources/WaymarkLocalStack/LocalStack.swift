import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Errors raised while bringing up the local stack.
public enum LocalStackError: Error, CustomStringConvertible {
    case toolNotFound(name: String, hint: String)
    case launchFailed(executable: String, reason: String)
    case notReady(server: String, port: Int, waited: Duration, logTail: String)
    case noFreePort(errno: Int32)

    public var description: String {
        switch self {
        case .toolNotFound(let name, let hint): "\(name) not found: \(hint)"
        case .launchFailed(let executable, let reason): "could not launch \(executable): \(reason)"
        case .notReady(let server, let port, let waited, let tail):
            "\(server) on 127.0.0.1:\(port) not ready after \(waited); its log ends with:\n\(tail)"
        case .noFreePort(let errno): "no free loopback port (errno \(errno))"
        }
    }
}

/// Locates the binaries the stack runs. Environment variables win; then the project's `.venv`
/// (installed by `deploy/scripts/setup.sh`); then `PATH`.
public enum LocalTools {
    /// A TCP port on 127.0.0.1 that was free a moment ago (for a test's own servers).
    public static func freePort() throws -> Int { try LoopbackNetwork.freePort() }

    /// The repository root, found by walking up from the working directory or from this source file.
    public static var projectRoot: URL? {
        var candidates = [URL(fileURLWithPath: FileManager.default.currentDirectoryPath)]
        candidates.append(URL(fileURLWithPath: #filePath).deletingLastPathComponent())
        for start in candidates {
            var dir = start
            for _ in 0..<8 {
                if FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path),
                   FileManager.default.fileExists(atPath: dir.appendingPathComponent("deploy").path) {
                    return dir
                }
                dir = dir.deletingLastPathComponent()
            }
        }
        return nil
    }

    static func find(_ name: String, env: String, extra: [URL]) throws -> String {
        if let path = ProcessInfo.processInfo.environment[env], !path.isEmpty { return path }
        for url in extra where FileManager.default.isExecutableFile(atPath: url.path) { return url.path }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let path = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        throw LocalStackError.toolNotFound(name: name, hint: "run `make setup` (deploy/scripts/setup.sh) or set \(env)")
    }

    /// Runs `path` with `arguments` to completion (standard input empty); its exit status and combined
    /// standard output and error. Blocks the calling thread: call it off the cooperative pool.
    public static func run(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }

    /// Path of `redis-server`.
    public static func redisServer() throws -> String {
        try find("redis-server", env: "WAYMARK_REDIS_SERVER", extra: [URL(fileURLWithPath: "/usr/bin/redis-server")])
    }

    /// Path of the Tansu broker binary.
    public static func tansu() throws -> String {
        let venv = projectRoot.map { [$0.appendingPathComponent(".venv/bin/tansu")] } ?? []
        return try find("tansu", env: "WAYMARK_TANSU", extra: venv)
    }
}

/// A `redis-server` on a free loopback port, with persistence off unless asked for.
public final class LocalRedis: Sendable {
    /// Always 127.0.0.1.
    public let host = "127.0.0.1"
    /// The port it listens on; stable across ``restart()``.
    public let port: Int
    /// The server process.
    public let process: ManagedProcess
    /// The certificates when the server speaks TLS only (``port`` is then its TLS port).
    public let certificates: LocalCertificates?

    /// Starts a server and waits until it answers PING (or, over TLS, accepts connections).
    /// - Parameters:
    ///   - directory: working directory for logs (and the AOF when `appendOnly`).
    ///   - appendOnly: enable AOF with `appendfsync always` (durability tests).
    ///   - password: require AUTH with this password.
    ///   - tls: speak TLS only, with these certificates (`port 0`, `tls-port`).
    ///   - requireClientCertificate: over TLS, refuse clients without a certificate from the same authority.
    public static func start(in directory: URL, appendOnly: Bool = false, password: String? = nil,
                             tls: LocalCertificates? = nil, requireClientCertificate: Bool = true) async throws -> LocalRedis {
        let executable = try LocalTools.redisServer()
        return try await onFreePort { port in
            var args = ["--bind", "127.0.0.1", "--save", "", "--dir", directory.path, "--daemonize", "no", "--protected-mode", "yes"]
            if let tls {
                args += ["--port", "0", "--tls-port", "\(port)", "--tls-cert-file", tls.serverCertificate,
                         "--tls-key-file", tls.serverKey, "--tls-ca-cert-file", tls.caFile,
                         "--tls-auth-clients", requireClientCertificate ? "yes" : "no"]
            } else {
                args += ["--port", "\(port)"]
            }
            args += appendOnly ? ["--appendonly", "yes", "--appendfsync", "always"] : ["--appendonly", "no"]
            if let password { args += ["--requirepass", password] }
            let redis = LocalRedis(port: port, certificates: tls, process: ManagedProcess(
                executable: executable, arguments: args, logFile: directory.appendingPathComponent("redis-\(port).log")))
            return (redis, redis.process, redis.launch)
        }
    }

    private init(port: Int, certificates: LocalCertificates?, process: ManagedProcess) {
        self.port = port
        self.certificates = certificates
        self.process = process
    }

    private func launch() async throws {
        try process.start()
        let tls = certificates != nil
        try await waitUntil(server: "redis-server", port: port, process: process) {
            // A TLS port is serving once it accepts connections (a plain PING would only be dropped).
            if tls { return LoopbackNetwork.exchange(port: self.port, request: nil) != nil }
            // Any RESP reply (+PONG, or -NOAUTH when a password is set) means it is serving.
            guard let reply = LoopbackNetwork.exchange(port: self.port, request: Array("PING\r\n".utf8)) else { return false }
            return reply.first == UInt8(ascii: "+") || reply.first == UInt8(ascii: "-")
        }
    }

    /// Stops and starts the server on the same port (data survives only with AOF).
    public func restart() async throws {
        process.stop()
        try await launch()
    }

    /// Stops the server.
    public func stop() { process.stop() }
}

/// A Tansu broker (Kafka-compatible, in-memory storage) on a free loopback port.
public final class LocalKafka: Sendable {
    /// The port it listens on.
    public let port: Int
    /// The broker process.
    public let process: ManagedProcess
    /// `127.0.0.1:port`, for `bootstrap.servers`.
    public var bootstrapServers: String { "127.0.0.1:\(port)" }

    /// Starts a broker and waits until it accepts connections (~20 ms).
    public static func start(in directory: URL) async throws -> LocalKafka {
        let executable = try LocalTools.tansu()
        return try await onFreePort { port in
            let url = "tcp://127.0.0.1:\(port)"
            let kafka = LocalKafka(port: port, process: ManagedProcess(
                executable: executable,
                arguments: ["broker", "--listener-url", url, "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                logFile: directory.appendingPathComponent("tansu-\(port).log")))
            return (kafka, kafka.process, kafka.launch)
        }
    }

    private init(port: Int, process: ManagedProcess) {
        self.port = port
        self.process = process
    }

    private func launch() async throws {
        try process.start()
        try await waitUntil(server: "tansu", port: port, process: process) {
            LoopbackNetwork.exchange(port: self.port, request: nil) != nil
        }
    }

    /// Stops the broker. Its in-memory data is gone.
    public func stop() { process.stop() }
}

/// Starts a server on a free port, retrying with another port if the chosen one was taken between
/// the probe and the server's bind (three attempts).
private func onFreePort<Server>(
    _ make: (Int) -> (server: Server, process: ManagedProcess, launch: () async throws -> Void)
) async throws -> Server {
    var lastError: (any Error)?
    for _ in 0..<3 {
        let candidate = make(try LoopbackNetwork.freePort())
        do {
            try await candidate.launch()
            return candidate.server
        } catch {
            candidate.process.stop()
            lastError = error
        }
    }
    throw lastError!
}

private func waitUntil(server: String, port: Int, process: ManagedProcess,
                       timeout: Duration = .seconds(15), _ ready: @escaping @Sendable () -> Bool) async throws {
    let start = ContinuousClock.now
    while ContinuousClock.now - start < timeout {
        if !process.isRunning { break }
        // The probe is a short blocking connect on loopback; keep it off the cooperative pool.
        let ok = await Task.detached { ready() }.value
        if ok { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw LocalStackError.notReady(server: server, port: port, waited: ContinuousClock.now - start,
                                   logTail: process.logTail())
}

/// A real Redis and a real Kafka-compatible broker on free loopback ports, for `make run`,
/// tests and benchmarks. Stop it with ``stop()``; children of a crashed owner are reaped at the
/// next start.
public final class LocalStack: Sendable {
    /// The Redis server, if requested.
    public let redis: LocalRedis?
    /// The broker, if requested.
    public let kafka: LocalKafka?
    /// The Redis Cluster, if one was requested instead of a single server.
    public let cluster: LocalRedisCluster?
    /// Working directory holding the servers' logs.
    public let directory: URL
    /// The certificates Redis (the server or every cluster node) speaks TLS with; `nil` for plain TCP.
    public var redisCertificates: LocalCertificates? { redis?.certificates ?? cluster?.certificates }

    /// Starts the requested servers (both by default). With `cluster`, a Redis Cluster of that shape
    /// is started instead of the single Redis server. With `redisTLS`, the server (or every cluster
    /// node) speaks TLS only and requires a client certificate, all from a throw-away authority in
    /// the stack's directory.
    public static func start(redis: Bool = true, kafka: Bool = true, redisAppendOnly: Bool = false,
                             cluster: LocalRedisCluster.Shape? = nil, redisTLS: Bool = false,
                             logger: Logger = Logger(label: "waymark.localstack")) async throws -> LocalStack {
        let reaped = OrphanRegistry.reap()
        if !reaped.isEmpty { logger.notice("reaped orphaned local servers", metadata: ["pids": "\(reaped)"]) }
        let directory = URL(fileURLWithPath: NSTemporaryDirectory())
            .appendingPathComponent("waymark-stack-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let certificates = redisTLS ? try LocalCertificates.make(in: directory.appendingPathComponent("tls")) : nil
        let localRedis = redis && cluster == nil
            ? try await LocalRedis.start(in: directory, appendOnly: redisAppendOnly, tls: certificates) : nil
        let localCluster: LocalRedisCluster?
        let localKafka: LocalKafka?
        do {
            if let cluster {
                localCluster = try await LocalRedisCluster.start(in: directory, masters: cluster.masters,
                                                                 replicasPerMaster: cluster.replicasPerMaster, tls: certificates)
            } else {
                localCluster = nil
            }
        } catch {
            localRedis?.stop()
            throw error
        }
        do {
            localKafka = kafka ? try await LocalKafka.start(in: directory) : nil
        } catch {
            localRedis?.stop()
            localCluster?.stop()
            throw error
        }
        logger.info("local stack up", metadata: [
            "redis.port": "\(localRedis?.port ?? 0)", "redis.cluster": "\(localCluster?.seeds ?? [])",
            "kafka.port": "\(localKafka?.port ?? 0)", "logs": "\(directory.path)",
        ])
        return LocalStack(redis: localRedis, cluster: localCluster, kafka: localKafka, directory: directory)
    }

    private init(redis: LocalRedis?, cluster: LocalRedisCluster?, kafka: LocalKafka?, directory: URL) {
        self.redis = redis
        self.cluster = cluster
        self.kafka = kafka
        self.directory = directory
    }

    /// Stops every server by PID and removes the working directory.
    public func stop() {
        kafka?.stop()
        redis?.stop()
        cluster?.stop()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Kills local servers left behind by owners that died. Returns their PIDs.
    @discardableResult
    public static func reapOrphans() -> [Int32] { OrphanRegistry.reap() }

    /// Runs `body` with a fresh stack and always stops it afterwards.
    public static func with<T>(redis: Bool = true, kafka: Bool = true, redisAppendOnly: Bool = false,
                               cluster: LocalRedisCluster.Shape? = nil, redisTLS: Bool = false,
                               _ body: (LocalStack) async throws -> T) async throws -> T {
        let stack = try await start(redis: redis, kafka: kafka, redisAppendOnly: redisAppendOnly, cluster: cluster,
                                    redisTLS: redisTLS)
        do {
            let result = try await body(stack)
            stack.stop()
            return result
        } catch {
            stack.stop()
            throw error
        }
    }
}
