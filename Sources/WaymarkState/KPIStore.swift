import WaymarkRedis

/// KPI counters in Redis: one hash per journey and hour (``KeySpace/kpis(journey:hour:)``), written
/// by `waymark worker kpis` and read by `waymark report` / `waymark funnel`.
///
/// Exactly once per input record, without a transaction across keys (Redis Cluster allows none):
/// every hash remembers, per input partition, the last offset it applied, and the apply script skips
/// increments from records at or below it. A batch re-read after a crash (its offsets were not
/// committed) therefore adds nothing twice, whichever of its hashes had already been written.
public struct KPIStore: Sendable {
    public let connection: RedisConnection
    public let keys: KeySpace
    /// Hour hashes expire this long after their last write.
    public let retentionSeconds: Int

    public init(connection: RedisConnection, keys: KeySpace, retentionSeconds: Int = 400 * 86_400) {
        self.connection = connection; self.keys = keys; self.retentionSeconds = retentionSeconds
    }

    /// KEYS[1] the hour hash; ARGV[1] the input partition, ARGV[2] the TTL in seconds, then triples
    /// (offset, field, delta) in any order. Returns the number of increments applied.
    public static let apply = RedisScript(name: "kpi_apply", source: """
        local mark = '@' .. ARGV[1]
        local last = tonumber(redis.call('HGET', KEYS[1], mark) or '-1')
        local top, topText, applied = last, nil, 0
        for i = 3, #ARGV, 3 do
          local offset = tonumber(ARGV[i])
          if offset > last then
            redis.call('HINCRBY', KEYS[1], ARGV[i + 1], ARGV[i + 2])
            applied = applied + 1
            if offset > top then top = offset; topText = ARGV[i] end
          end
        end
        if topText then redis.call('HSET', KEYS[1], mark, topText) end
        redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
        return applied
        """)

    /// One counter increment from one input record.
    public struct Increment: Sendable, Hashable {
        public var journey: String
        public var hour: Int64
        public var field: String
        public var offset: Int64
        public var delta: Int64
        public init(journey: String, hour: Int64, field: String, offset: Int64, delta: Int64 = 1) {
            self.journey = journey; self.hour = hour; self.field = field; self.offset = offset; self.delta = delta
        }
    }

    /// Applies the increments read from one input partition (`topic/partition`), one script call per
    /// hour hash, pipelined. Returns how many were applied (the rest had been applied before).
    @discardableResult
    public func apply(_ increments: [Increment], from partition: String) async throws -> Int {
        if increments.isEmpty { return 0 }
        struct Bucket: Hashable { var journey: String; var hour: Int64 }
        // Same record, same field: summed (their offset is the same, so they stand or fall together).
        var order: [Bucket] = []
        var perRecord: [Bucket: [(offset: Int64, field: String, delta: Int64)]] = [:]
        for inc in increments {
            let b = Bucket(journey: inc.journey, hour: inc.hour)
            if perRecord[b] == nil { order.append(b) }
            perRecord[b, default: []].append((inc.offset, inc.field, inc.delta))
        }
        var commands: [RedisCommand] = []
        commands.reserveCapacity(order.count)
        for b in order {
            var args: [any RedisArgument] = [partition, retentionSeconds]
            for x in perRecord[b]! { args.append(x.offset); args.append(x.field); args.append(x.delta) }
            commands.append(.evalsha(Self.apply, keys: [keys.kpis(journey: b.journey, hour: b.hour / 3_600_000)], arguments: args))
        }
        var applied = 0
        for (i, reply) in try await connection.pipeline(commands).enumerated() {
            if let message = reply.errorMessage {
                throw RedisError(.protocolError, "kpi_apply failed for \(order[i].journey): \(message)", endpoint: nil, command: "EVALSHA")
            }
            applied += Int(reply.integer ?? 0)
        }
        return applied
    }

    /// The counters of `journey` for every hour in [from, to) (ms since the epoch, hour-aligned):
    /// hour start (ms) → field → count. Hours without a hash are absent; `@…` offset marks are left out.
    public func read(journey: String, from: Int64, to: Int64) async throws -> [Int64: [String: Int64]] {
        var hours: [Int64] = []
        var h = from / 3_600_000
        while h * 3_600_000 < to { hours.append(h); h += 1 }
        var out: [Int64: [String: Int64]] = [:]
        // Chunks of a day's worth keep each pipeline (and reply) modest for long ranges.
        var start = 0
        while start < hours.count {
            let chunk = Array(hours[start..<min(start + 744, hours.count)])
            let replies = try await connection.pipeline(chunk.map { RedisCommand("HGETALL", keys.kpis(journey: journey, hour: $0)) })
            for (i, reply) in replies.enumerated() {
                guard let items = reply.array, !items.isEmpty else { continue }
                var fields: [String: Int64] = [:]
                var j = 0
                while j + 1 < items.count {
                    if let name = items[j].string, !name.hasPrefix("@"), let n = items[j + 1].integer { fields[name] = n }
                    j += 2
                }
                if !fields.isEmpty { out[chunk[i] * 3_600_000] = fields }
            }
            start += chunk.count
        }
        return out
    }
}
