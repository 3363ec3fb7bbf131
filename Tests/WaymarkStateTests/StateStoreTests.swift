import Foundation
import Testing
import WaymarkLocalStack
import WaymarkRedis
import WaymarkState

/// A state "engine" for the tests: the state is a decimal counter.
private func counter(_ stored: StoredCustomer) -> Int { stored.state.map { Int(String(decoding: $0, as: UTF8.self))! } ?? 0 }

private func withStore(_ body: (RedisStateStore, LocalRedis) async throws -> Void) async throws {
    try await LocalStack.with(kafka: false) { stack in
        let redis = stack.redis!
        let connection = try await RedisConnection.connect(RedisConfiguration(host: redis.host, port: redis.port))
        try await body(RedisStateStore(connection: connection, keys: KeySpace(shards: 16)), redis)
        await connection.close()
    }
}

@Suite("Redis state store against a real redis-server")
struct StateStoreTests {
    @Test("keys of one customer share the shard hash tag")
    func keyLayout() {
        let keys = KeySpace(shards: 256)
        let customer = "c-42"
        let tag = keys.tag(keys.shard(of: customer))
        for key in [keys.state(customer), keys.outbox(customer), keys.profile(customer), keys.decisions(customer),
                    keys.due(shard: keys.shard(of: customer)), keys.pendingOutbox(shard: keys.shard(of: customer))] {
            #expect(key.contains(tag))
            #expect(key.firstIndex(of: "{") == key.range(of: tag)!.lowerBound)
        }
        // Shards spread: 10k ids over 256 shards, none empty, none more than 3× the mean.
        var counts = [Int](repeating: 0, count: 256)
        for i in 0..<10_000 { counts[keys.shard(of: "c-\(i)")] += 1 }
        #expect(counts.min()! > 0 && counts.max()! < 3 * 10_000 / 256)
    }

    @Test("two clients updating the same customers concurrently never lose an update")
    func concurrentCompareAndSet() async throws {
        try await LocalStack.with(kafka: false) { stack in
            let config = RedisConfiguration(host: stack.redis!.host, port: stack.redis!.port)
            let customers = (0..<20).map { "c-\($0)" }
            let increments = 150
            try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<2 {
                    group.addTask {
                        let store = RedisStateStore(connection: try await RedisConnection.connect(config), keys: KeySpace(shards: 8))
                        var conflicts = 0
                        for _ in 0..<increments {
                            var pending = customers
                            while !pending.isEmpty {
                                let loaded = try await store.load(pending)
                                let writes = loaded.map {
                                    StateWrite(customer: $0.customer, expectedVersion: $0.version,
                                               state: Array(String(counter($0) + 1).utf8), nextWakeup: nil)
                                }
                                let outcomes = try await store.commit(writes, now: 0)
                                pending = zip(pending, outcomes).compactMap { customer, outcome in
                                    if case .conflict = outcome { conflicts += 1; return customer }
                                    return nil
                                }
                            }
                        }
                        await store.connection.close()
                        return conflicts
                    }
                }
                let conflicts = try await group.reduce(0, +)
                // The test only means something if the writers really collided.
                #expect(conflicts > 0)
            }
            let store = RedisStateStore(connection: try await RedisConnection.connect(config), keys: KeySpace(shards: 8))
            for stored in try await store.load(customers) {
                #expect(counter(stored) == 2 * increments)
                #expect(stored.version == Int64(2 * increments))
            }
        }
    }

    @Test("state, outbox, indexes and decisions change together or not at all")
    func atomicOutbox() async throws {
        try await withStore { store, _ in
            let keys = store.keys
            let record = OutboxRecord(id: "m-1", topic: "outbound.sms", key: Array("c-1".utf8), value: Array("{\"a\":1}".utf8))
            let write = StateWrite(customer: "c-1", expectedVersion: 0, state: Array("1".utf8), nextWakeup: 5_000,
                                   outbox: [record], decisions: [Array("{\"reason\":\"sent\"}".utf8)])
            #expect(try await store.commit([write], now: 1_000) == [.committed(version: 1)])

            // A stale writer (expected version 0 again) changes nothing at all.
            var stale = write
            stale.state = Array("999".utf8)
            stale.outbox = [OutboxRecord(id: "m-2", topic: "outbound.sms", key: [], value: [])]
            stale.nextWakeup = 1
            stale.decisions = [Array("x".utf8)]
            #expect(try await store.commit([stale], now: 1_000) == [.conflict(current: 1)])

            let loaded = try await store.load(["c-1"])
            #expect(loaded[0].state == Array("1".utf8))
            let outbox = try await store.connection.send(RedisCommand("HKEYS", keys.outbox("c-1")))
            #expect(outbox.array?.compactMap(\.string) == ["v1"])
            #expect(try await store.dueCustomers(now: 10_000).map(\.customer) == ["c-1"])
            #expect(try await store.dueCustomers(now: 4_999).isEmpty)
            #expect(try await store.recentDecisions("c-1").count == 1)

            // Nothing is pending before the grace period, the record after it.
            #expect(try await store.pendingOutbox(before: 999).isEmpty)
            let pending = try await store.pendingOutbox(before: 1_000)
            #expect(pending.count == 1 && pending[0].records == [record] && pending[0].entries == ["v1"])

            try await store.acknowledge([("c-1", ["v1"])])
            #expect(try await store.pendingOutbox(before: .max).isEmpty)

            // A write without a wake-up removes the customer from the due index.
            let next = StateWrite(customer: "c-1", expectedVersion: 1, state: Array("2".utf8), nextWakeup: nil)
            #expect(try await store.commit([next], now: 2_000) == [.committed(version: 2)])
            #expect(try await store.dueCustomers(now: .max).isEmpty)
        }
    }

    @Test("a stale profile from the same partition never overwrites a newer one")
    func profileOrdering() async throws {
        try await withStore { store, _ in
            func put(_ items: [(String, String, Int32, Int64)]) async throws -> [Bool] {
                try await store.applyProfileChanges(items.map { ($0.0, .put(profile: Array($0.1.utf8), partition: $0.2, offset: $0.3)) },
                                                    erasing: .init())
            }
            let stored = try await put([("c-7", "new", 2, 10), ("c-7", "old", 2, 9), ("c-7", "same", 2, 10)])
            #expect(stored == [true, false, false])
            #expect(try await store.load(["c-7"])[0].profile == Array("new".utf8))
            // From another partition (topic repartitioned): accepted.
            #expect(try await put([("c-7", "moved", 0, 1)]) == [true])
        }
    }

    @Test("scripts survive SCRIPT FLUSH and a Redis restart")
    func scriptsReload() async throws {
        try await withStore { store, redis in
            let write = StateWrite(customer: "c-9", expectedVersion: 0, state: [1], nextWakeup: nil)
            _ = try await store.commit([write], now: 0)
            _ = try await store.connection.send(RedisCommand("SCRIPT", "FLUSH"))
            var again = write
            again.expectedVersion = 1
            #expect(try await store.commit([again], now: 0) == [.committed(version: 2)])
            try await redis.restart()  // no persistence: state is gone, scripts too
            var afresh = write
            afresh.expectedVersion = 0
            var outcome = try? await store.commit([afresh], now: 0)
            if outcome == nil { outcome = try await store.commit([afresh], now: 0) }  // first call may see the dropped connection
            #expect(outcome == [.committed(version: 1)])
        }
    }

    @Test("outbox records round-trip their encoding, alone and packed")
    func outboxEncoding() {
        let record = OutboxRecord(id: "d-1", topic: "journey.decisions", key: Array("c-ü".utf8), value: Array(repeating: 7, count: 70_000))
        #expect(OutboxRecord(id: "d-1", encoded: record.encoded()) == record)
        #expect(OutboxRecord(id: "x", encoded: [0, 9]) == nil)
        let other = OutboxRecord(id: "m-2", topic: "outbound.sms", key: [], value: [])
        #expect(OutboxRecord.unpack(OutboxRecord.pack([record, other])) == [record, other])
        #expect(OutboxRecord.unpack(OutboxRecord.pack([])) == [])
        #expect(OutboxRecord.unpack(Array(OutboxRecord.pack([record]).dropLast())) == nil)
    }

    @Test("recent decisions come back newest commit first, in decision order within a commit")
    func recentDecisionsOrder() async throws {
        try await withStore { store, _ in
            let first = StateWrite(customer: "c-3", expectedVersion: 0, state: [1], nextWakeup: nil,
                                   decisions: [Array("{\"n\":1}".utf8), Array("{\"n\":2}".utf8)])
            let second = StateWrite(customer: "c-3", expectedVersion: 1, state: [2], nextWakeup: nil, decisions: [Array("{\"n\":3}".utf8)])
            _ = try await store.commit([first], now: 0)
            _ = try await store.commit([second], now: 0)
            let decisions = try await store.recentDecisions("c-3").map { String(decoding: $0, as: UTF8.self) }
            #expect(decisions == ["{\"n\":3}", "{\"n\":1}", "{\"n\":2}"])
        }
    }
}

@Suite("Redis state store against a real Redis Cluster")
struct ClusterStateStoreTests {
    @Test("a commit on a slot that is migrating applies every customer fully: no script touches a key it emptied")
    func commitDuringMigration() async throws {
        try await LocalStack.with(kafka: false, cluster: .init(masters: 3)) { stack in
            let cluster = try #require(stack.cluster)
            let connection = try await RedisConnection.connect(RedisConfiguration(mode: .cluster, seeds: cluster.seeds,
                                                                                  host: "127.0.0.1", port: cluster.nodes[0].port))
            let store = RedisStateStore(connection: connection, keys: KeySpace(shards: 16))
            let keys = store.keys
            // Two customers of one shard.
            let a = "a-1"
            let b = try #require((1...500).map { "b-\($0)" }.first { keys.shard(of: $0) == keys.shard(of: a) })
            func record(_ id: String) -> OutboxRecord { OutboxRecord(id: id, topic: "outbound.sms", key: [], value: Array("{}".utf8)) }
            let first = try await store.commit([
                StateWrite(customer: a, expectedVersion: 0, state: Array("1".utf8), nextWakeup: 5_000, outbox: [record("m-a1")], decisions: [[1]]),
                StateWrite(customer: b, expectedVersion: 0, state: Array("1".utf8), nextWakeup: nil, outbox: [record("m-b1")], decisions: [[1]]),
            ], now: 1_000)
            #expect(first == [.committed(version: 1), .committed(version: 1)])

            // Open a migration of the shard's slot (no key moved yet): every key still exists on the
            // source, so Redis lets the script start.
            let slot = ClusterSlot.of(keys.tag(keys.shard(of: a)))
            let source = try await cluster.owner(of: slot)
            let target = try #require(cluster.nodes.prefix(3).first { $0.port != source.port })
            let onSource = try await RedisConnection.connect(RedisConfiguration(host: "127.0.0.1", port: source.port))
            let onTarget = try await RedisConnection.connect(RedisConfiguration(host: "127.0.0.1", port: target.port))
            #expect(try await onTarget.send("CLUSTER", "SETSLOT", slot, "IMPORTING", try await cluster.nodeID(source)) == .status("OK"))
            #expect(try await onSource.send("CLUSTER", "SETSLOT", slot, "MIGRATING", try await cluster.nodeID(target)) == .status("OK"))

            // a leaves the due index (emptying it), then b enters it, in one script call.
            let second = try await store.commit([
                StateWrite(customer: a, expectedVersion: 1, state: Array("2".utf8), nextWakeup: nil),
                StateWrite(customer: b, expectedVersion: 1, state: Array("2".utf8), nextWakeup: 7_000, outbox: [record("m-b2")], decisions: [[2]]),
            ], now: 2_000)
            #expect(second == [.committed(version: 2), .committed(version: 2)])
            #expect(try await connection.send("ZRANGE", keys.due(shard: keys.shard(of: a)), 0, -1).array?.compactMap(\.string) == [b])
            #expect(try await connection.send("HKEYS", keys.outbox(b)).array?.compactMap(\.string).sorted() == ["v1", "v2"])
            #expect(try await store.recentDecisions(b).count == 2)
            await onSource.close()
            await onTarget.close()
            await connection.close()
        }
    }
}
