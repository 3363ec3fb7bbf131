import WaymarkRedis

/// What the operator tools (`inspect`, `queues`, `dlq redrive`, `replay --apply`) read and write in
/// Redis, so that they never build a key or send a raw command themselves: the key layout stays in
/// ``KeySpace`` and every command on it in this module.
public struct OperatorStore: Sendable {
    public let connection: RedisConnection
    public let keys: KeySpace

    public init(connection: RedisConnection, keys: KeySpace) {
        self.connection = connection
        self.keys = keys
    }

    // MARK: Customer inspection

    /// Index and sender entries of one customer, beside its state (``RedisStateStore/load(_:)``).
    public struct CustomerEntries: Sendable {
        /// `partition:offset` of the `customers` record the stored profile came from.
        public var profileSource: String?
        /// The customer's next wake-up in the scheduler's due index (ms).
        public var nextWakeUp: Int64?
        /// Sender dedup marks, message id → status (`done:<channel>`, `inflight:<channel>:<ms>`), sorted by id.
        public var senderClaims: [(messageID: String, status: String, parkedUntil: Int64?)]
    }

    /// The customer's profile source, due-index entry and sender claims (with the time each parked
    /// message is due back), in two round trips.
    public func customerEntries(_ customer: String) async throws -> CustomerEntries {
        let shard = keys.shard(of: customer)
        let replies = try await connection.pipeline([
            RedisCommand("HGET", keys.profile(customer), "o"),
            RedisCommand("ZSCORE", keys.due(shard: shard), customer),
            RedisCommand("HGETALL", keys.sent(customer)),
        ])
        if let message = replies.lazy.compactMap(\.errorMessage).first { throw StateStoreError(message: "\(#function): \(message)") }
        var claims: [(String, String)] = []
        let items = replies[2].array ?? []
        for index in stride(from: 0, to: items.count - 1, by: 2) {
            if let id = items[index].string, let status = items[index + 1].string { claims.append((id, status)) }
        }
        claims.sort { $0.0 < $1.0 }
        let parked = claims.isEmpty ? [] : try await connection.pipeline(claims.map { RedisCommand("ZSCORE", keys.delayed(shard: shard), $0.0) })
        return CustomerEntries(
            profileSource: replies[0].string, nextWakeUp: Self.milliseconds(replies[1]),
            senderClaims: claims.enumerated().map { index, claim in
                (claim.0, claim.1, index < parked.count ? Self.milliseconds(parked[index]) : nil)
            })
    }

    // MARK: Queue report

    /// Counts by due time: cumulative counts of `(-inf, edge]` for each edge, and the total.
    public struct DueCounts: Sendable, Hashable {
        public var cumulative: [Int]
        public var total: Int
    }

    /// Customers with a timer or held message (the scheduler's due indexes), by next wake-up.
    public func wakeUpCounts(upTo edges: [Int64]) async throws -> DueCounts {
        try await counts((0..<keys.shards).map { keys.due(shard: $0) }, upTo: edges)
    }

    /// Messages parked by senders (send-time deferrals, retry backoff), by due time.
    public func parkedCounts(upTo edges: [Int64]) async throws -> DueCounts {
        try await counts((0..<keys.shards).map { keys.delayed(shard: $0) }, upTo: edges)
    }

    /// Customers with outbox entries not yet acknowledged by Kafka, and when the oldest was written (ms).
    public func pendingOutboxSummary() async throws -> (customers: Int, oldestWrittenAt: Int64?) {
        var commands: [RedisCommand] = []
        for shard in 0..<keys.shards {
            commands.append(RedisCommand("ZCARD", keys.pendingOutbox(shard: shard)))
            commands.append(RedisCommand("ZRANGE", keys.pendingOutbox(shard: shard), 0, 0, "WITHSCORES"))
        }
        let replies = try await connection.pipeline(commands)
        if let message = replies.lazy.compactMap(\.errorMessage).first { throw StateStoreError(message: "\(#function): \(message)") }
        var customers = 0
        var oldest: Int64?
        for index in stride(from: 0, to: replies.count, by: 2) {
            customers += Int(replies[index].integer ?? 0)
            if let items = replies[index + 1].array, items.count == 2, let score = Self.milliseconds(items[1]) {
                oldest = min(oldest ?? score, score)
            }
        }
        return (customers, oldest)
    }

    /// ZCOUNTs up to each edge and a ZCARD per sorted set, summed, in one round trip.
    private func counts(_ sets: [String], upTo edges: [Int64]) async throws -> DueCounts {
        var commands: [RedisCommand] = []
        for key in sets {
            for edge in edges { commands.append(RedisCommand("ZCOUNT", key, "-inf", Int(edge))) }
            commands.append(RedisCommand("ZCARD", key))
        }
        let replies = try await connection.pipeline(commands)
        if let message = replies.lazy.compactMap(\.errorMessage).first { throw StateStoreError(message: "\(#function): \(message)") }
        let stride = edges.count + 1
        var cumulative = Array(repeating: 0, count: edges.count)
        var total = 0
        for (index, reply) in replies.enumerated() {
            let value = Int(reply.integer ?? 0)
            if index % stride == edges.count { total += value } else { cumulative[index % stride] += value }
        }
        return DueCounts(cumulative: cumulative, total: total)
    }

    // MARK: Dead-letter redrive marks

    /// Redrive marks of dead-letter records (`partition:offset`) of `topic`: `nil` if never redriven,
    /// `pending:<ms>` while a run has claimed it, `done:<target>` once republished.
    public func redriveMarks(deadLetterTopic topic: String, records: [String]) async throws -> [String?] {
        var marks: [String?] = []
        let key = keys.redriven(deadLetterTopic: topic)
        for chunk in stride(from: 0, to: records.count, by: 1_000) {
            let part = Array(records[chunk..<min(chunk + 1_000, records.count)])
            let reply = try await connection.send(RedisCommand("HMGET", arguments: [key] + part))
            if let message = reply.errorMessage { throw StateStoreError(message: "\(#function): \(message)") }
            marks += (reply.array ?? []).map(\.string)
        }
        return marks
    }

    /// Claims records for this run (`pending:<now>`); per record, whether this run got it.
    public func claimRedrive(deadLetterTopic topic: String, records: [String], now: Int64) async throws -> [Bool] {
        let key = keys.redriven(deadLetterTopic: topic)
        let replies = try await connection.pipeline(records.map { RedisCommand("HSETNX", key, $0, "pending:\(now)") })
        if let message = replies.lazy.compactMap(\.errorMessage).first { throw StateStoreError(message: "\(#function): \(message)") }
        return replies.map { $0.integer == 1 }
    }

    /// Settles claims: `target` set marks the record redriven to it for good; `nil` releases the
    /// claim (not published) so a later run retries.
    public func settleRedrive(deadLetterTopic topic: String, _ outcomes: [(record: String, target: String?)]) async throws {
        let key = keys.redriven(deadLetterTopic: topic)
        let replies = try await connection.pipeline(outcomes.map { outcome in
            outcome.target.map { RedisCommand("HSET", key, outcome.record, "done:\($0)") } ?? RedisCommand("HDEL", key, outcome.record)
        })
        if let message = replies.lazy.compactMap(\.errorMessage).first { throw StateStoreError(message: "\(#function): \(message)") }
    }

    // MARK: Rebuild checkpoints

    /// Where an interrupted rebuild resumes: the input end offsets it read up to, and how many
    /// customers (in sorted order) it finished.
    public struct RebuildCheckpoint: Sendable, Hashable {
        public var endOffsets: [EndOffset]
        public var done: Int

        public struct EndOffset: Sendable, Hashable {
            public var topic: String
            public var partition: Int32
            public var offset: Int64
            public init(topic: String, partition: Int32, offset: Int64) { self.topic = topic; self.partition = partition; self.offset = offset }
        }

        public init(endOffsets: [EndOffset], done: Int) { self.endOffsets = endOffsets; self.done = done }
    }

    /// The checkpoint of rebuild `id`, `nil` if none was saved (a fresh run).
    public func rebuildCheckpoint(_ id: String) async throws -> RebuildCheckpoint? {
        let reply = try await connection.send(RedisCommand("HGETALL", keys.rebuildCheckpoint(id)))
        if let message = reply.errorMessage { throw StateStoreError(message: "\(#function): \(message)") }
        let items = reply.array?.compactMap(\.string) ?? []
        guard items.count >= 2 else { return nil }
        var fields: [String: String] = [:]
        for index in stride(from: 0, to: items.count - 1, by: 2) { fields[items[index]] = items[index + 1] }
        let offsets: [RebuildCheckpoint.EndOffset] = (fields["offsets"] ?? "").split(separator: ",").compactMap { entry in
            let parts = entry.split(separator: "|")
            guard parts.count == 3, let partition = Int32(parts[1]), let offset = Int64(parts[2]) else { return nil }
            return .init(topic: String(parts[0]), partition: partition, offset: offset)
        }
        return RebuildCheckpoint(endOffsets: offsets, done: Int(fields["done"] ?? "0") ?? 0)
    }

    /// Saves the whole checkpoint (at the start of a run).
    public func saveRebuildCheckpoint(_ id: String, _ checkpoint: RebuildCheckpoint) async throws {
        let offsets = checkpoint.endOffsets.map { "\($0.topic)|\($0.partition)|\($0.offset)" }.joined(separator: ",")
        let reply = try await connection.send(RedisCommand("HSET", keys.rebuildCheckpoint(id), "offsets", offsets, "done", checkpoint.done))
        if let message = reply.errorMessage { throw StateStoreError(message: "\(#function): \(message)") }
    }

    /// Records progress of rebuild `id`.
    public func recordRebuildProgress(_ id: String, done: Int) async throws {
        let reply = try await connection.send(RedisCommand("HSET", keys.rebuildCheckpoint(id), "done", done))
        if let message = reply.errorMessage { throw StateStoreError(message: "\(#function): \(message)") }
    }

    /// Removes the checkpoint of a finished rebuild.
    public func clearRebuildCheckpoint(_ id: String) async throws {
        let reply = try await connection.send(RedisCommand("DEL", keys.rebuildCheckpoint(id)))
        if let message = reply.errorMessage { throw StateStoreError(message: "\(#function): \(message)") }
    }

    private static func milliseconds(_ reply: RedisReply) -> Int64? {
        reply.string.flatMap(Double.init).map { Int64($0) }
    }
}
