import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A real Redis Cluster on loopback: `masters` masters, each with `replicasPerMaster` replicas,
/// created with `redis-cli --cluster create` and ready (`cluster_state:ok` on every node) when
/// ``start(in:masters:replicasPerMaster:nodeTimeout:)`` returns.
///
/// Every node listens on a free port `p` whose cluster bus port `p + 10000` was free too. The node
/// timeout is short (1 s by default) so failover tests finish quickly; production clusters use 15 s.
public final class LocalRedisCluster: Sendable {
    /// How many masters, and how many replicas each.
    public struct Shape: Sendable, Equatable {
        public var masters: Int
        public var replicasPerMaster: Int
        public init(masters: Int = 3, replicasPerMaster: Int = 0) {
            self.masters = masters
            self.replicasPerMaster = replicasPerMaster
        }
    }

    /// One node.
    public struct Node: Sendable {
        /// The node's client port on 127.0.0.1.
        public let port: Int
        /// Its process.
        public let process: ManagedProcess
        /// `127.0.0.1:port`.
        public var endpoint: String { "127.0.0.1:\(port)" }
    }

    /// Every node, masters first (in the order `redis-cli` was given them).
    public let nodes: [Node]
    /// How many of ``nodes`` were created as masters.
    public let masterCount: Int
    /// The certificates when the nodes speak TLS only (clients, cluster bus and replication;
    /// client certificates required). Node ports are then TLS ports.
    public let certificates: LocalCertificates?

    /// Seeds for `redis.seeds`: every node's `127.0.0.1:port`.
    public var seeds: [String] { nodes.map(\.endpoint) }

    private init(nodes: [Node], masterCount: Int, certificates: LocalCertificates?) {
        self.nodes = nodes
        self.masterCount = masterCount
        self.certificates = certificates
    }

    /// `redis-cli` options to reach the nodes: TLS with the client certificate, or none.
    private static func cliTLSArguments(_ certificates: LocalCertificates?) -> [String] {
        guard let certificates else { return [] }
        return ["--tls", "--cacert", certificates.caFile, "--cert", certificates.clientCertificate, "--key", certificates.clientKey]
    }

    /// Starts the nodes, joins them into a cluster and waits until every slot is served. With
    /// `tls`, every node speaks TLS only, to clients and to each other.
    public static func start(in directory: URL, masters: Int = 3, replicasPerMaster: Int = 0,
                             nodeTimeout: Duration = .seconds(1), tls: LocalCertificates? = nil) async throws -> LocalRedisCluster {
        let executable = try LocalTools.redisServer()
        let total = masters * (1 + replicasPerMaster)
        var nodes: [Node] = []
        let timeoutMs = Int(nodeTimeout.components.seconds * 1000 + nodeTimeout.components.attoseconds / 1_000_000_000_000_000)
        do {
            for port in try freeClusterPorts(total) {
                let nodeDirectory = directory.appendingPathComponent("cluster-\(port)")
                try FileManager.default.createDirectory(at: nodeDirectory, withIntermediateDirectories: true)
                // Over TLS the cluster bus (tls-port + 10000) and replication use TLS too.
                let listen = tls.map {
                    ["--port", "0", "--tls-port", "\(port)", "--tls-cluster", "yes", "--tls-replication", "yes",
                     "--tls-cert-file", $0.serverCertificate, "--tls-key-file", $0.serverKey, "--tls-ca-cert-file", $0.caFile,
                     "--tls-auth-clients", "yes"]
                } ?? ["--port", "\(port)"]
                let process = ManagedProcess(executable: executable, arguments: listen + [
                    "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", nodeDirectory.path, "--daemonize", "no", "--protected-mode", "yes",
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", "\(timeoutMs)",
                ], logFile: directory.appendingPathComponent("cluster-\(port).log"))
                try process.start()
                nodes.append(Node(port: port, process: process))
            }
            let cluster = LocalRedisCluster(nodes: nodes, masterCount: masters, certificates: tls)
            for node in nodes {
                try await cluster.waitFor("redis-server (cluster node)", node, command: ["PING"]) { $0.hasPrefix("PONG") || $0.hasPrefix("+PONG") }
            }
            _ = try await cli(cliTLSArguments(tls) + ["--cluster", "create"] + nodes.map(\.endpoint)
                              + ["--cluster-replicas", "\(replicasPerMaster)", "--cluster-yes"],
                              log: directory.appendingPathComponent("cluster-create.log"))
            try await cluster.waitUntilHealthy()
            return cluster
        } catch {
            for node in nodes { node.process.stop() }
            throw error
        }
    }

    /// Waits until every running node reports `cluster_state:ok` and every replica's link to its
    /// master is up (its initial sync done: until then it cannot acknowledge writes).
    public func waitUntilHealthy(timeout: Duration = .seconds(30)) async throws {
        for node in nodes where node.process.isRunning {
            try await waitFor("redis cluster state", node, command: ["CLUSTER", "INFO"], timeout: timeout) { text in
                text.contains("cluster_state:ok")
            }
            try await waitFor("redis replication", node, command: ["INFO", "replication"], timeout: timeout) { text in
                text.contains("role:master") || text.contains("master_link_status:up")
            }
        }
    }

    /// The node's cluster id (`CLUSTER MYID`).
    public func nodeID(_ node: Node) async throws -> String {
        try await cli(["-h", "127.0.0.1", "-p", "\(node.port)", "CLUSTER", "MYID"])
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Moves `slots` hash slots, with their keys, from `source` to `target` with
    /// `redis-cli --cluster reshard`, as an operator would: each slot is set MIGRATING/IMPORTING,
    /// its keys are moved with `MIGRATE` in small batches (clients meanwhile get `ASK`), then the
    /// slot is assigned to `target` (clients then get `MOVED`). Returns `redis-cli`'s output.
    @discardableResult
    public func reshard(slots: Int, from source: Node, to target: Node) async throws -> String {
        let from = try await nodeID(source), to = try await nodeID(target)
        return try await cli(["--cluster", "reshard", source.endpoint, "--cluster-from", from, "--cluster-to", to,
                              "--cluster-slots", "\(slots)", "--cluster-yes", "--cluster-pipeline", "10"])
    }

    /// The master serving `slot`, from `CLUSTER NODES` of the first running node (one line per node:
    /// `id ip:port@bus flags master … slot-range…`).
    public func owner(of slot: Int) async throws -> Node {
        let asked = nodes.first { $0.process.isRunning } ?? nodes[0]
        let text = try await cli(["-h", "127.0.0.1", "-p", "\(asked.port)", "CLUSTER", "NODES"])
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 8, fields[2].contains("master"), !fields[2].contains("fail"),
                  let address = fields[1].split(separator: "@").first, let port = Int(address.split(separator: ":").last ?? "") else { continue }
            for range in fields[8...] where !range.hasPrefix("[") {
                let bounds = range.split(separator: "-").compactMap { Int($0) }
                if let low = bounds.first, low <= slot, slot <= (bounds.last ?? low), let node = nodes.first(where: { $0.port == port }) {
                    return node
                }
            }
        }
        throw LocalStackError.launchFailed(executable: "redis-cli CLUSTER NODES", reason: "no master serves slot \(slot)")
    }

    /// Moves one hash slot and its keys from its master to `target` the way `redis-cli --cluster
    /// reshard` does, step by step: `IMPORTING` on the target, `MIGRATING` on the source, `MIGRATE`
    /// of the keys 20 at a time (clients asking for a moved key meanwhile get `ASK`), then `SETSLOT
    /// NODE` on every master (clients then get `MOVED`). Returns the number of keys moved.
    @discardableResult
    public func moveSlot(_ slot: Int, to target: Node) async throws -> Int {
        let source = try await owner(of: slot)
        guard source.port != target.port else { return 0 }
        let from = try await nodeID(source), to = try await nodeID(target)
        func on(_ node: Node, _ arguments: [String]) async throws -> String {
            try await cli(["-h", "127.0.0.1", "-p", "\(node.port)"] + arguments)
        }
        _ = try await on(target, ["CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", from])
        _ = try await on(source, ["CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", to])
        var moved = 0
        while true {
            let keys = try await on(source, ["CLUSTER", "GETKEYSINSLOT", "\(slot)", "20"])
                .split(separator: "\n").map(String.init).filter { !$0.isEmpty }
            if keys.isEmpty { break }
            let reply = try await on(source, ["MIGRATE", "127.0.0.1", "\(target.port)", "", "0", "5000", "KEYS"] + keys)
            guard reply.hasPrefix("OK") || reply.hasPrefix("NOKEY") else {
                throw LocalStackError.launchFailed(executable: "redis-cli MIGRATE", reason: reply)
            }
            moved += keys.count
        }
        // Target first, then source, then the rest (as redis-cli does): the other order lets the two
        // disagree for a moment, each redirecting to the other.
        _ = try await on(target, ["CLUSTER", "SETSLOT", "\(slot)", "NODE", to])
        _ = try await on(source, ["CLUSTER", "SETSLOT", "\(slot)", "NODE", to])
        for node in nodes where node.process.isRunning && node.port != target.port && node.port != source.port {
            let role = try await on(node, ["ROLE"])
            if role.hasPrefix("master") { _ = try await on(node, ["CLUSTER", "SETSLOT", "\(slot)", "NODE", to]) }
        }
        return moved
    }

    /// Runs `redis-cli` against this cluster's nodes (over TLS when it speaks TLS).
    public func cli(_ arguments: [String]) async throws -> String {
        try await Self.cli(Self.cliTLSArguments(certificates) + arguments, log: nil)
    }

    /// Runs `redis-cli` with `arguments` off the cooperative pool; its output, or an error with it.
    static func cli(_ arguments: [String], log: URL?) async throws -> String {
        let executable = try LocalTools.find("redis-cli", env: "WAYMARK_REDIS_CLI", extra: [URL(fileURLWithPath: "/usr/bin/redis-cli")])
        return try await Task.detached {
            let (status, output) = try LocalTools.run(executable, arguments)
            if let log { try? output.write(to: log, atomically: true, encoding: .utf8) }
            guard status == 0 else {
                throw LocalStackError.launchFailed(executable: "redis-cli \(arguments.prefix(2).joined(separator: " "))",
                                                   reason: "exited \(status): \(output.suffix(1_500))")
            }
            return output
        }.value
    }

    /// Stops every node.
    public func stop() {
        for node in nodes { node.process.stop() }
    }

    /// Waits until `command`'s answer from `node` satisfies `ready` (a plain-TCP exchange, or `redis-cli` over TLS).
    private func waitFor(_ what: String, _ node: Node, command: [String], timeout: Duration = .seconds(15),
                         _ ready: @escaping @Sendable (String) -> Bool) async throws {
        let start = ContinuousClock.now
        let request = Array((command.joined(separator: " ") + "\r\n").utf8)
        while ContinuousClock.now - start < timeout {
            if !node.process.isRunning { break }
            let port = node.port
            let ok: Bool
            if certificates != nil {
                ok = (try? await cli(["-h", "127.0.0.1", "-p", "\(port)"] + command)).map(ready) ?? false
            } else {
                ok = await Task.detached {
                    LoopbackNetwork.exchange(port: port, request: request).map { ready(String(decoding: $0, as: UTF8.self)) } ?? false
                }.value
            }
            if ok { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw LocalStackError.notReady(server: what, port: node.port, waited: ContinuousClock.now - start,
                                       logTail: node.process.logTail())
    }

    /// `count` ports `p` in 20000..<30000 with `p` and its bus port `p + 10000` free a moment ago.
    private static func freeClusterPorts(_ count: Int) throws -> [Int] {
        var ports: [Int] = []
        var candidate = 20_000 + Int.random(in: 0..<9_000)
        var tries = 0
        while ports.count < count {
            tries += 1
            if tries > 2_000 { throw LocalStackError.noFreePort(errno: EADDRINUSE) }
            candidate = candidate >= 29_999 ? 20_000 : candidate + 1
            if LoopbackNetwork.isFree(port: candidate) && LoopbackNetwork.isFree(port: candidate + 10_000) { ports.append(candidate) }
        }
        return ports
    }
}
