import WaymarkRedis

/// A customer's stored state as loaded in one round trip.
public struct StoredCustomer: Sendable {
    public var customer: String
    /// 0 when the customer has no state yet.
    public var version: Int64
    /// The engine's encoded state, `nil` for a new customer.
    public var state: [UInt8]?
    /// The profile JSON, `nil` when no profile has arrived yet.
    public var profile: [UInt8]?
    /// What the customer unsubscribed from (see ``Suppressions``).
    public var suppressions: Suppressions = Suppressions()
}

/// A state change to commit for one customer.
public struct StateWrite: Sendable {
    public var customer: String
    /// The version that was loaded; the write fails with a conflict if it changed meanwhile.
    public var expectedVersion: Int64
    public var state: [UInt8]
    /// Earliest pending timer or deferred message (ms since epoch), indexed for the scheduler.
    public var nextWakeup: Int64?
    /// Records to publish (outbound messages, decisions), stored atomically with the state.
    public var outbox: [OutboxRecord]
    /// Decision JSON documents, kept (newest first, capped) for `waymark inspect customer`.
    public var decisions: [[UInt8]]

    public init(customer: String, expectedVersion: Int64, state: [UInt8], nextWakeup: Int64?,
                outbox: [OutboxRecord] = [], decisions: [[UInt8]] = []) {
        self.customer = customer
        self.expectedVersion = expectedVersion
        self.state = state
        self.nextWakeup = nextWakeup
        self.outbox = outbox
        self.decisions = decisions
    }
}

/// The result of one ``StateWrite``.
public enum CommitOutcome: Sendable, Equatable {
    case committed(version: Int64)
    /// Someone else (a worker that briefly owned the same partition, a scheduler) committed first.
    /// Reload and recompute: event-id deduplication makes the retry safe.
    case conflict(current: Int64)
}

/// Errors from the state store.
public struct StateStoreError: Error, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { "state store: \(message)" }
}

/// Per-customer journey state in Redis: versioned compare-and-set writes that carry the outbox and
/// index updates in the same atomic script, loads and commits batched into single pipelines.
///
/// A store wraps one connection and is meant for one task at a time (see ``RedisConnection``).
public final class RedisStateStore: Sendable {
    public let connection: RedisConnection
    public let keys: KeySpace
    /// Seconds after the last write when an idle customer's state expires (0 = never).
    public let stateTTLSeconds: Int
    /// Recent decisions kept per customer for inspection.
    public let decisionsKept: Int

    public init(connection: RedisConnection, keys: KeySpace = KeySpace(), stateTTLSeconds: Int = 0, decisionsKept: Int = 50) {
        self.connection = connection
        self.keys = keys
        self.stateTTLSeconds = stateTTLSeconds
        self.decisionsKept = decisionsKept
    }

    /// Loads state and profile of `customers` in one round trip (two commands per customer).
    public func load(_ customers: [String]) async throws -> [StoredCustomer] {
        if customers.isEmpty { return [] }
        var commands: [RedisCommand] = []
        commands.reserveCapacity(customers.count * 2)
        for customer in customers {
            commands.append(RedisCommand("HMGET", keys.state(customer), "v", "s"))
            commands.append(RedisCommand("HMGET", keys.profile(customer), "p", "x"))
        }
        let replies = try await connection.pipeline(commands)
        return try customers.enumerated().map { index, customer in
            let stateReply = replies[index * 2], profileReply = replies[index * 2 + 1]
            if let message = stateReply.errorMessage ?? profileReply.errorMessage {
                throw StateStoreError(message: "load \(customer): \(message)")
            }
            let fields = stateReply.array ?? []
            let version = fields.first?.string.flatMap { Int64($0) } ?? 0
            let profileFields = profileReply.array ?? []
            return StoredCustomer(customer: customer, version: version,
                                  state: fields.count > 1 ? fields[1].bytes : nil, profile: profileFields.first?.bytes,
                                  suppressions: Suppressions(decoding: profileFields.count > 1 ? profileFields[1].bytes : nil))
        }
    }

    /// Profiles of `customers` (those that have one) and their suppressions, in one round trip.
    public func loadProfiles(_ customers: [String]) async throws -> [(customer: String, profile: [UInt8], suppressions: Suppressions)] {
        if customers.isEmpty { return [] }
        let replies = try await connection.pipeline(customers.map { RedisCommand("HMGET", keys.profile($0), "p", "x") })
        return zip(customers, replies).compactMap { customer, reply in
            let fields = reply.array ?? []
            guard let profile = fields.first?.bytes else { return nil }
            return (customer, profile, Suppressions(decoding: fields.count > 1 ? fields[1].bytes : nil))
        }
    }

    /// Customers of one shard per commit or acknowledge script call (bounds how long one call holds Redis).
    public static let customersPerScript = 64

    /// Commits `writes` in one round trip; each is atomic on its own and reports its outcome.
    /// `now` (wall-clock ms) timestamps new outbox entries for crash recovery.
    ///
    /// Writes are grouped by shard, one script call per shard (and per ``customersPerScript``), in
    /// their original order within a shard: two writes of one customer behave as two calls would.
    public func commit(_ writes: [StateWrite], now: Int64) async throws -> [CommitOutcome] {
        if writes.isEmpty { return [] }
        let groups = shardGroups(writes.indices, shardOf: { writes[$0].customer })
        let commands = groups.map { group -> RedisCommand in
            var keyList = [keys.due(shard: group.shard), keys.pendingOutbox(shard: group.shard)]
            keyList.reserveCapacity(2 + group.members.count * 3)
            for index in group.members {
                let customer = writes[index].customer
                keyList += [keys.state(customer), keys.outbox(customer), keys.decisions(customer)]
            }
            var command = RedisCommand.evalsha(StateScripts.commit, keys: keyList)
            command.append(stateTTLSeconds)
            command.append(Int(now))
            command.append(decisionsKept)
            for index in group.members {
                let write = writes[index]
                command.append(write.customer)
                command.append(Int(write.expectedVersion))
                command.append(Int(write.expectedVersion + 1))
                command.append(bytes: write.state)
                if let wakeup = write.nextWakeup { command.append(Int(wakeup)) } else { command.append("") }
                // One outbox entry per commit (named after the new version) and one list element for its
                // decisions, however many there are: a handful of calls per customer.
                if write.outbox.isEmpty { command.append("") } else { command.append(bytes: OutboxRecord.pack(write.outbox)) }
                if write.decisions.isEmpty { command.append("") } else { command.append(bytes: Self.packDecisions(write.decisions)) }
            }
            return command
        }
        let replies = try await connection.pipeline(commands)
        var outcomes = [CommitOutcome](repeating: .conflict(current: 0), count: writes.count)
        for (group, reply) in zip(groups, replies) {
            guard let fields = reply.array, fields.count == group.members.count * 2 else {
                throw StateStoreError(message: "commit (shard \(group.shard), \(group.members.count) customers): unexpected reply \(reply.errorMessage ?? "\(reply)")")
            }
            for (position, index) in group.members.enumerated() {
                guard let flag = fields[position * 2].integer, let version = fields[position * 2 + 1].string.flatMap({ Int64($0) }) else {
                    throw StateStoreError(message: "commit \(writes[index].customer): unexpected reply \(reply)")
                }
                outcomes[index] = flag == 1 ? .committed(version: version) : .conflict(current: version)
            }
        }
        return outcomes
    }

    /// Indices grouped by the shard of their customer, in order within a shard, at most
    /// ``customersPerScript`` per group.
    private func shardGroups(_ indices: Range<Int>, shardOf customer: (Int) -> String) -> [(shard: Int, members: [Int])] {
        var open: [Int: Int] = [:]  // shard → index of its group still taking members
        var groups: [(shard: Int, members: [Int])] = []
        for index in indices {
            let shard = keys.shard(of: customer(index))
            if let g = open[shard], groups[g].members.count < Self.customersPerScript {
                groups[g].members.append(index)
            } else {
                open[shard] = groups.count
                groups.append((shard, [index]))
            }
        }
        return groups
    }

    /// The outbox entry a commit creates: `v<new version>`.
    public static func outboxEntryID(version: Int64) -> String { "v\(version)" }

    /// Decisions of one commit as one list element: newline-separated JSON documents.
    static func packDecisions(_ decisions: [[UInt8]]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(decisions.reduce(0) { $0 + $1.count + 1 })
        for (i, d) in decisions.enumerated() {
            if i > 0 { out.append(0x0A) }
            out += d
        }
        return out
    }

    /// Removes outbox entries Kafka has acknowledged, in one round trip (one script call per shard).
    public func acknowledge(_ entries: [(customer: String, ids: [String])]) async throws {
        let entries = entries.filter { !$0.ids.isEmpty }
        if entries.isEmpty { return }
        let commands = shardGroups(entries.indices, shardOf: { entries[$0].customer }).map { group -> RedisCommand in
            var command = RedisCommand.evalsha(StateScripts.ack, keys: [keys.pendingOutbox(shard: group.shard)]
                                                 + group.members.map { keys.outbox(entries[$0].customer) })
            for index in group.members {
                command.append(entries[index].customer)
                command.append(entries[index].ids.count)
                for id in entries[index].ids { command.append(id) }
            }
            return command
        }
        for reply in try await connection.pipeline(commands) {
            if let message = reply.errorMessage { throw StateStoreError(message: "acknowledge: \(message)") }
        }
    }

    /// What an erasure removes besides the profile (contacts, consent, attributes), which always goes.
    public struct ErasureScope: Sendable, Hashable {
        /// Journey state, unpublished outbox, recent decisions and scheduler index entries.
        public var state: Bool
        /// Sender claims (message ids sent) and messages parked by senders for later.
        public var senderClaims: Bool
        public init(state: Bool = true, senderClaims: Bool = true) { self.state = state; self.senderClaims = senderClaims }
    }

    /// A change read from the `customers` topic.
    public enum ProfileChange: Sendable {
        /// Store this profile (JSON) unless a later record of the same partition is already stored.
        case put(profile: [UInt8], partition: Int32, offset: Int64)
        /// A tombstone at this position: erase.
        case erase(partition: Int32, offset: Int64)
    }

    /// Applies profile changes in order, in one round trip. Returns, per change, whether a profile
    /// was stored (`false` for a stale one) or an erasure ran (`true`).
    public func applyProfileChanges(_ changes: [(customer: String, change: ProfileChange)], erasing scope: ErasureScope) async throws -> [Bool] {
        if changes.isEmpty { return [] }
        let erased = changes.compactMap { item -> String? in if case .erase = item.change { item.customer } else { nil } }
        if !erased.isEmpty { try await eraseReceiptTraces(erased) }
        let commands = changes.map { item -> RedisCommand in
            switch item.change {
            case .put(let profile, let partition, let offset):
                return RedisCommand.evalsha(StateScripts.putProfile,
                                            keys: [keys.profile(item.customer), keys.due(shard: keys.shard(of: item.customer))],
                                            arguments: [profile, Int(partition), Int(offset), item.customer])
            case .erase(let partition, let offset):
                return eraseCommand(item.customer, origin: "\(partition):\(offset)", scope: scope)
            }
        }
        return try zip(changes, await connection.pipeline(commands)).map { item, reply in
            if let message = reply.errorMessage { throw StateStoreError(message: "profile change: \(message)") }
            if case .erase = item.change { return true }
            return reply.integer == 1
        }
    }

    /// Erases a customer now (`waymark forget customer`). Returns the number of keys and entries removed.
    @discardableResult
    public func erase(_ customer: String, scope: ErasureScope) async throws -> Int {
        let traces = try await eraseReceiptTraces([customer])
        let reply = try await connection.send(eraseCommand(customer, origin: "", scope: scope))
        if let message = reply.errorMessage { throw StateStoreError(message: "erase: \(message)") }
        return Int(reply.integer ?? 0) + traces
    }

    /// Removes what the receipts side keeps that names the customers: the receipt context of every
    /// message in their sender claims (``KeySpace/receipt(_:)``, keyed by message id, so outside the
    /// erase script's slot) and their address-index entries. Runs before the erase script, which may
    /// drop the claims it reads. Returns the number of keys removed.
    @discardableResult
    public func eraseReceiptTraces(_ customers: [String]) async throws -> Int {
        var reads: [RedisCommand] = []
        for customer in customers {
            reads.append(RedisCommand("HKEYS", keys.sent(customer)))
            reads.append(RedisCommand("SMEMBERS", keys.addressDigests(customer)))
        }
        let replies = try await connection.pipeline(reads)
        var deletes: [RedisCommand] = []
        for (i, customer) in customers.enumerated() {
            for id in replies[2 * i].array ?? [] { if let id = id.string { deletes.append(RedisCommand("DEL", keys.receipt(id))) } }
            for digest in replies[2 * i + 1].array ?? [] { if let d = digest.string { deletes.append(RedisCommand("DEL", keys.addressIndex(d))) } }
            deletes.append(RedisCommand("DEL", keys.addressDigests(customer)))
        }
        var removed = 0
        for reply in try await connection.pipeline(deletes) {
            if let message = reply.errorMessage { throw StateStoreError(message: "erase receipt traces: \(message)") }
            removed += Int(reply.integer ?? 0)
        }
        return removed
    }

    private func eraseCommand(_ customer: String, origin: String, scope: ErasureScope) -> RedisCommand {
        let shard = keys.shard(of: customer)
        return RedisCommand.evalsha(StateScripts.erase, keys: [
            keys.profile(customer), keys.state(customer), keys.outbox(customer), keys.decisions(customer), keys.sent(customer),
            keys.due(shard: shard), keys.pendingOutbox(shard: shard), keys.delayed(shard: shard), keys.delayedMessages(shard: shard),
        ], arguments: [customer, origin, scope.state ? "1" : "0", scope.senderClaims ? "1" : "0", 86_400])
    }

    /// Records how far input partitions have been read: `eventTime` for one that is behind, `nil` for
    /// one read to its end. `wallNow` (ms) dates the entries, so a worker that died does not hold
    /// timers back for ever (see ``eventTimeGate(now:wallNow:staleAfterMs:)``).
    public func reportWatermarks(_ partitions: [(partition: String, eventTime: Int64?)], wallNow: Int64) async throws {
        var set = RedisCommand("HSET", keys.watermarks)
        var removed = RedisCommand("HDEL", keys.watermarks)
        var sets = 0, removes = 0
        for p in partitions {
            if let t = p.eventTime { set.append(p.partition); set.append("\(t):\(wallNow)"); sets += 1 }
            else { removed.append(p.partition); removes += 1 }
        }
        var commands: [RedisCommand] = []
        if sets > 0 { commands.append(set) }
        if removes > 0 { commands.append(removed) }
        if commands.isEmpty { return }
        for reply in try await connection.pipeline(commands) {
            if let message = reply.errorMessage { throw StateStoreError(message: "report watermarks: \(message)") }
        }
    }

    /// The event time up to which timers may fire: `now`, or the lowest watermark of a partition that
    /// is behind, reported within the last `staleAfterMs` of wall-clock time (older reports belong to
    /// workers that stopped; the partition's next owner reports again).
    /// Times are ms since the epoch.
    public func eventTimeGate(now: Int64, wallNow: Int64, staleAfterMs: Int64) async throws -> Int64 {
        let reply = try await connection.send(RedisCommand("HGETALL", keys.watermarks))
        if let message = reply.errorMessage { throw StateStoreError(message: "watermarks: \(message)") }
        var gate = now
        let items = reply.array ?? []
        var index = 1
        while index < items.count {
            defer { index += 2 }
            guard let value = items[index].string, let sep = value.firstIndex(of: ":"),
                  let eventTime = Int64(value[..<sep]), let reported = Int64(value[value.index(after: sep)...]) else { continue }
            if wallNow - reported <= staleAfterMs { gate = min(gate, eventTime) }
        }
        return gate
    }

    /// Removes due-index entries of customers without state, and moves those of `postpone` to `to`
    /// (ms) at the earliest, in one round trip.
    public func rescheduleWakeUps(remove: [String], postpone: [String], to: Int64) async throws {
        var commands = remove.map { RedisCommand("ZREM", keys.due(shard: keys.shard(of: $0)), $0) }
        commands += postpone.map { RedisCommand("ZADD", keys.due(shard: keys.shard(of: $0)), "XX", "GT", Int(to), $0) }
        if commands.isEmpty { return }
        for reply in try await connection.pipeline(commands) {
            if let message = reply.errorMessage { throw StateStoreError(message: "reschedule wake-ups: \(message)") }
        }
    }

    /// Customers whose next wake-up is at or before `now`, up to `limit` per shard, in one round trip.
    public func dueCustomers(now: Int64, shards: Range<Int>? = nil, limitPerShard: Int = 1_000) async throws -> [(customer: String, dueAt: Int64)] {
        let range = shards ?? 0..<keys.shards
        let commands = range.map { shard in
            RedisCommand("ZRANGEBYSCORE", keys.due(shard: shard), "-inf", Int(now), "WITHSCORES", "LIMIT", 0, limitPerShard)
        }
        var out: [(String, Int64)] = []
        for reply in try await connection.pipeline(commands) {
            let items = reply.array ?? []
            var index = 0
            while index + 1 < items.count {
                if let customer = items[index].string, let score = items[index + 1].string.flatMap(Double.init) {
                    out.append((customer, Int64(score)))
                }
                index += 2
            }
        }
        return out
    }

    /// Outbox entries of customers whose oldest entry is older than `before` (ms): left behind by a
    /// worker that crashed between its Redis write and its Kafka publish.
    public func pendingOutbox(before: Int64, limitPerShard: Int = 100) async throws -> [(customer: String, entries: [String], records: [OutboxRecord])] {
        let commands = (0..<keys.shards).map { shard in
            RedisCommand("ZRANGEBYSCORE", keys.pendingOutbox(shard: shard), "-inf", Int(before), "LIMIT", 0, limitPerShard)
        }
        let customers = try await connection.pipeline(commands).flatMap { $0.array?.compactMap(\.string) ?? [] }
        if customers.isEmpty { return [] }
        let contents = try await connection.pipeline(customers.map { RedisCommand("HGETALL", keys.outbox($0)) })
        return zip(customers, contents).map { customer, reply -> (String, [String], [OutboxRecord]) in
            let items = reply.array ?? []
            var entries: [(version: Int, records: [OutboxRecord])] = []
            var index = 0
            while index + 1 < items.count {
                if let id = items[index].string, let bytes = items[index + 1].bytes, let records = OutboxRecord.unpack(bytes) {
                    entries.append((Int(id.dropFirst()) ?? 0, records))
                }
                index += 2
            }
            // Oldest commit first, records in decision order.
            let sorted = entries.sorted { $0.version < $1.version }
            return (customer, sorted.map { Self.outboxEntryID(version: Int64($0.version)) }, sorted.flatMap(\.records))
        }
    }

    /// The customer's most recent decisions, newest commit first (decisions of one commit in the order taken).
    public func recentDecisions(_ customer: String, count: Int = 50) async throws -> [[UInt8]] {
        let reply = try await connection.send(RedisCommand("LRANGE", keys.decisions(customer), 0, count - 1))
        var out: [[UInt8]] = []
        for element in reply.array?.compactMap(\.bytes) ?? [] {
            out += element.split(separator: 0x0A).map(Array.init)
            if out.count >= count { break }
        }
        return Array(out.prefix(count))
    }

    /// Loads the scripts (optional: EVALSHA loads them on first NOSCRIPT anyway).
    public func prepare() async throws {
        try await connection.load(StateScripts.all)
    }
}
