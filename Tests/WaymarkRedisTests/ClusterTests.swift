import Foundation
import Testing
import WaymarkLocalStack
@testable import WaymarkRedis

/// Runs `body` against a fresh local Redis Cluster (3 masters, optionally one replica each).
private func withCluster(replicas: Int = 0, _ body: (LocalRedisCluster, RedisConfiguration) async throws -> Void) async throws {
    try await LocalStack.with(kafka: false, cluster: .init(masters: 3, replicasPerMaster: replicas)) { stack in
        let cluster = try #require(stack.cluster)
        // Seeded with one node only: the connection must discover the others itself.
        try await body(cluster, RedisConfiguration(mode: .cluster, host: "127.0.0.1", port: cluster.nodes[0].port))
    }
}

/// A plain connection to one node, as an operator's `redis-cli -p` would be.
private func direct(_ node: LocalRedisCluster.Node) async throws -> RedisConnection {
    try await RedisConnection.connect(RedisConfiguration(host: "127.0.0.1", port: node.port))
}

/// Which node serves `slot`, asked of the cluster itself (`CLUSTER SLOTS` via a plain connection).
private func owner(of slot: Int, in cluster: LocalRedisCluster) async throws -> LocalRedisCluster.Node {
    for node in cluster.nodes where node.process.isRunning {
        let connection = try await direct(node)
        let ranges = try await connection.send("CLUSTER", "SLOTS").array ?? []
        await connection.close()
        for range in ranges {
            guard let f = range.array, let start = f[0].integer, let end = f[1].integer, (start...end).contains(Int64(slot)),
                  let port = f[2].array?[1].integer else { continue }
            return try #require(cluster.nodes.first { $0.port == Int(port) })
        }
    }
    throw RedisError(.clusterUnavailable, "no node serves slot \(slot)")
}

@Suite("Redis Cluster against a real local cluster", .serialized)
struct RedisClusterTests {
    @Test("a pipeline over every master comes back in order; slots agree with CLUSTER KEYSLOT; per-master commands fan out")
    func routing() async throws {
        try await withCluster { cluster, config in
            let redis = try await RedisConnection.connect(config)
            let keys = (0..<2_000).map { "key:\($0):\(UUID().uuidString.prefix(6))" }
            let sets = keys.enumerated().map { RedisCommand("SET", $1, "v\($0)") }
            #expect(try await redis.pipeline(sets).allSatisfy { $0 == .status("OK") })
            let gets = try await redis.pipeline(keys.map { RedisCommand("GET", $0) })
            #expect(gets == keys.indices.map { .bulk(Array("v\($0)".utf8)) })

            // Independent model of the slot function: the server's own CLUSTER KEYSLOT.
            let sample = Array(keys.prefix(200)) + ["wm:{s0042}:st:c1", "{}", "a{b}c", "ünïcødé"]
            let serverSlots = try await redis.pipeline(sample.map { RedisCommand("CLUSTER", "KEYSLOT", $0) })
            #expect(serverSlots.map(\.integer) == sample.map { Int64(ClusterSlot.of($0)) })

            let sizes = try await redis.sendToEveryMaster("DBSIZE")
            #expect(sizes.count == 3)
            #expect(sizes.allSatisfy { ($0.reply.integer ?? 0) > 400 })
            #expect(sizes.reduce(0) { $0 + Int($1.reply.integer ?? 0) } == keys.count)
            #expect(try await redis.send("PING") == .status("PONG"))
            #expect(redis.clusterStatistics.moved == 0)
            await redis.close()
        }
    }

    @Test("scripts are loaded on each node on NOSCRIPT, also after SCRIPT FLUSH on every master")
    func scripts() async throws {
        try await withCluster { _, config in
            let redis = try await RedisConnection.connect(config)
            let script = RedisScript(name: "incr", source: "return redis.call('INCRBY', KEYS[1], ARGV[1])")
            let keys = (0..<300).map { "{t\($0)}:n" }
            let first = try await redis.pipeline(keys.map { .evalsha(script, keys: [$0], arguments: [2]) })
            #expect(first == Array(repeating: .integer(2), count: keys.count))
            _ = try await redis.sendToEveryMaster("SCRIPT", "FLUSH")
            let second = try await redis.pipeline(keys.map { .evalsha(script, keys: [$0], arguments: [3]) })
            #expect(second == Array(repeating: .integer(5), count: keys.count))
            await redis.close()
        }
    }

    @Test("a slot moved behind the client's back: MOVED is followed, the map updated, the value read from its new master")
    func moved() async throws {
        try await withCluster { cluster, config in
            let redis = try await RedisConnection.connect(config)
            let key = "{moving}:k"
            let slot = ClusterSlot.of(key)
            _ = try await redis.send("SET", key, "before")
            let source = try await owner(of: slot, in: cluster)
            let target = try #require(cluster.nodes.prefix(3).first { $0.port != source.port })
            try await migrate(slot: slot, from: source, to: target, cluster: cluster, keysToMove: nil)

            #expect(try await redis.send("GET", key) == .bulk(Array("before".utf8)))
            #expect(redis.clusterStatistics.moved == 1)
            _ = try await redis.send("SET", key, "after")
            #expect(redis.clusterStatistics.moved == 1)  // the map was updated: no second redirect
            let onTarget = try await direct(target)
            #expect(try await onTarget.send("GET", key) == .bulk(Array("after".utf8)))
            await onTarget.close()
            await redis.close()
        }
    }

    @Test("a slot half-way through migration: keys already moved are reached with ASK + ASKING, the rest where they were")
    func ask() async throws {
        try await withCluster { cluster, config in
            let redis = try await RedisConnection.connect(config)
            let keys = (0..<20).map { "{half}:k\($0)" }
            let slot = ClusterSlot.of(keys[0])
            _ = try await redis.pipeline(keys.map { RedisCommand("SET", $0, $0) })
            let source = try await owner(of: slot, in: cluster)
            let target = try #require(cluster.nodes.prefix(3).first { $0.port != source.port })
            try await migrate(slot: slot, from: source, to: target, cluster: cluster, keysToMove: 10)

            let values = try await redis.pipeline(keys.map { RedisCommand("GET", $0) })
            #expect(values == keys.map { .bulk(Array($0.utf8)) })
            #expect(redis.clusterStatistics.asked == 10)
            #expect(redis.clusterStatistics.moved == 0)
            await redis.close()
        }
    }

    @Test("kill -9 of a master with a replica: calls fail with typed errors until the replica takes over, then succeed with every acknowledged write")
    func failover() async throws {
        try await withCluster(replicas: 1) { cluster, config in
            // Every write confirmed by a replica before the call returns (`WAIT` appended per node).
            let redis = try await RedisConnection.connect(RedisConfiguration(
                mode: .cluster, seeds: cluster.seeds, host: "127.0.0.1", port: cluster.nodes[0].port, connectTimeout: .milliseconds(500),
                replicaAcknowledgements: 1, replicaAcknowledgementTimeout: .seconds(2)))
            let keys = (0..<600).map { "fo:\($0)" }
            _ = try await redis.pipeline(keys.map { RedisCommand("SET", $0, $0) })

            let victim = try await owner(of: ClusterSlot.of(keys[0]), in: cluster)
            victim.process.kill9()
            let started = ContinuousClock.now
            var failures = 0
            var values: [RedisReply] = []
            while ContinuousClock.now - started < .seconds(30) {
                do {
                    values = try await redis.pipeline(keys.map { RedisCommand("GET", $0) })
                    break
                } catch let error as RedisError {
                    failures += 1
                    #expect([.connectFailed, .connectionLost, .clusterUnavailable, .timeout].contains(error.kind))
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            let stall = ContinuousClock.now - started
            print("failover stall: \(stall) (\(failures) failed calls, node timeout 1 s)")
            #expect(values == keys.map { .bulk(Array($0.utf8)) })
            #expect(failures > 0)
            #expect(stall < .seconds(20))
            #expect(try await redis.sendToEveryMaster("PING").count == 3)
            await redis.close()
        }
    }
}

@Suite("Replica acknowledgements (WAIT)")
struct ReplicaAcknowledgementTests {
    @Test("a server without replicas cannot confirm writes: typed notReplicated after the timeout; reads need no confirmation")
    func noReplicas() async throws {
        try await LocalStack.with(kafka: false) { stack in
            let server = try #require(stack.redis)
            let redis = try await RedisConnection.connect(RedisConfiguration(
                host: server.host, port: server.port, replicaAcknowledgements: 1, replicaAcknowledgementTimeout: .milliseconds(100)))
            do {
                _ = try await redis.send("SET", "k", "v")
                Issue.record("SET returned without a replica's confirmation")
            } catch let error as RedisError {
                #expect(error.kind == .notReplicated)
            }
            // The write itself was applied (WAIT cannot undo it): callers' writes must be idempotent.
            #expect(try await redis.send("GET", "k") == .bulk(Array("v".utf8)))
            #expect(try await redis.pipeline([RedisCommand("GET", "k"), RedisCommand("HGETALL", "h")]).count == 2)
            await redis.close()
        }
    }
}

/// Moves `slot` from `source` to `target` by hand (SETSLOT IMPORTING/MIGRATING, MIGRATE), then,
/// unless `keysToMove` stops it half-way, assigns the slot to `target` on every master.
private func migrate(slot: Int, from source: LocalRedisCluster.Node, to target: LocalRedisCluster.Node,
                     cluster: LocalRedisCluster, keysToMove: Int?) async throws {
    let from = try await direct(source), to = try await direct(target)
    let sourceID = try await cluster.nodeID(source), targetID = try await cluster.nodeID(target)
    #expect(try await to.send("CLUSTER", "SETSLOT", slot, "IMPORTING", sourceID) == .status("OK"))
    #expect(try await from.send("CLUSTER", "SETSLOT", slot, "MIGRATING", targetID) == .status("OK"))
    let keys = try await from.send("CLUSTER", "GETKEYSINSLOT", slot, 1_000).array?.compactMap(\.string) ?? []
    let moving = keysToMove.map { Array(keys.prefix($0)) } ?? keys
    if !moving.isEmpty {
        var command = RedisCommand("MIGRATE", "127.0.0.1", target.port, "", 0, 5_000, "KEYS")
        for key in moving { command.append(key) }
        #expect(try await from.send(command) == .status("OK"))
    }
    if keysToMove == nil {
        for node in cluster.nodes.prefix(cluster.masterCount) {
            let connection = try await direct(node)
            #expect(try await connection.send("CLUSTER", "SETSLOT", slot, "NODE", targetID) == .status("OK"))
            await connection.close()
        }
    }
    await from.close()
    await to.close()
}
