import WaymarkRedis

/// What a sender may do with a message, from its claim.
public enum ClaimOutcome: Sendable, Equatable {
    /// First attempt: claimed, call the provider.
    case claimed
    /// A previous attempt was claimed and never completed (its sender died mid-call). Claimed again:
    /// call the provider with the same idempotency key, so a provider that got the first call drops this one.
    case reclaimed
    /// Already handed to a provider (on the given channel): skip.
    case done(channel: String)
    /// Another sender holds a fresh claim (rebalance overlap): leave it to that sender.
    case busy
}

/// Sender-side state in Redis: one claim per message id (keys share the customer's shard tag),
/// a delayed queue for send-time deferrals and retries, and a provider rate limiter shared by all
/// sender processes.
public struct SenderStore: Sendable {
    public let connection: RedisConnection
    public let keys: KeySpace
    /// Claims and completions are kept this long (dedup horizon for redeliveries and replays).
    public let retentionSeconds: Int

    public init(connection: RedisConnection, keys: KeySpace, retentionSeconds: Int = 30 * 86_400) {
        self.connection = connection
        self.keys = keys
        self.retentionSeconds = retentionSeconds
    }

    /// Claims messages before the provider call. A claim older than `staleAfter` ms counts as abandoned.
    public func claim(_ messages: [(customer: String, messageID: String, channel: String)], staleAfterMs: Int) async throws -> [ClaimOutcome] {
        if messages.isEmpty { return [] }
        let replies = try await connection.pipeline(messages.map { m in
            RedisCommand.evalsha(SenderScripts.claim, keys: [keys.sent(m.customer)],
                                 arguments: [m.messageID, m.channel, staleAfterMs, retentionSeconds])
        })
        return try replies.map { reply in
            guard let text = reply.string else { throw StateStoreError(message: "claim: \(reply.errorMessage ?? "unexpected reply")") }
            if text == "claimed" { return .claimed }
            if text == "reclaimed" { return .reclaimed }
            if text == "busy" { return .busy }
            return .done(channel: String(text.dropFirst("done:".count)))
        }
    }

    /// Records that the provider accepted the message (one round trip per call keeps the window
    /// between the provider's answer and this mark as short as possible).
    public func complete(customer: String, messageID: String, channel: String, also extra: RedisCommand? = nil) async throws {
        let command = RedisCommand.evalsha(SenderScripts.complete, keys: [keys.sent(customer)],
                                           arguments: [messageID, "done:" + channel, retentionSeconds])
        // `extra` (the provider reference) rides in the same round trip.
        let replies = try await connection.pipeline(extra.map { [command, $0] } ?? [command])
        for reply in replies { if let message = reply.errorMessage { throw StateStoreError(message: "complete: \(message)") } }
    }

    /// Releases a claim without completing it (permanent failure on this channel: a fallback may claim it).
    public func release(customer: String, messageID: String) async throws {
        _ = try await connection.send(RedisCommand("HDEL", keys.sent(customer), messageID))
    }

    /// Parks messages until `due` (ms); the scheduler re-publishes them to `topic`. With
    /// `releaseClaims`, an in-flight claim on the message is dropped (our own, before a retry);
    /// without, another sender's claim is left alone.
    public func park(_ items: [(customer: String, messageID: String, topic: String, message: [UInt8], attempt: Int, due: Int64)],
                     releaseClaims: Bool = true) async throws {
        if items.isEmpty { return }
        let replies = try await connection.pipeline(items.map { item in
            let shard = keys.shard(of: item.customer)
            var value = Array("\(item.attempt)\n\(item.topic)\n".utf8)
            value += item.message
            return RedisCommand.evalsha(SenderScripts.deferMessage, keys: [keys.delayed(shard: shard), keys.delayedMessages(shard: shard), keys.sent(item.customer)],
                                        arguments: [item.messageID, Int(item.due), value, releaseClaims ? "release" : "keep"])
        })
        for reply in replies where reply.errorMessage != nil { throw StateStoreError(message: "defer: \(reply.errorMessage!)") }
    }

    /// Parked messages that are due, per shard (for the scheduler to re-publish).
    public func dueDelayed(now: Int64, limitPerShard: Int = 500) async throws -> [(shard: Int, messageID: String, attempt: Int, topic: String, message: [UInt8])] {
        let ids = try await connection.pipeline((0..<keys.shards).map {
            RedisCommand("ZRANGEBYSCORE", keys.delayed(shard: $0), "-inf", Int(now), "LIMIT", 0, limitPerShard)
        })
        var wanted: [(Int, String)] = []
        for (shard, reply) in ids.enumerated() { for id in reply.array?.compactMap(\.string) ?? [] { wanted.append((shard, id)) } }
        if wanted.isEmpty { return [] }
        let values = try await connection.pipeline(wanted.map { RedisCommand("HGET", keys.delayedMessages(shard: $0.0), $0.1) })
        return zip(wanted, values).compactMap { entry, reply in
            guard let bytes = reply.bytes else { return nil }
            let parts = bytes.split(separator: 0x0A, maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3, let attempt = Int(String(decoding: parts[0], as: UTF8.self)) else { return nil }
            return (entry.0, entry.1, attempt, String(decoding: parts[1], as: UTF8.self), Array(parts[2]))
        }
    }

    /// Removes re-published parked messages.
    public func removeDelayed(_ entries: [(shard: Int, messageID: String)]) async throws {
        if entries.isEmpty { return }
        var commands: [RedisCommand] = []
        for entry in entries {
            commands.append(RedisCommand("ZREM", keys.delayed(shard: entry.shard), entry.messageID))
            commands.append(RedisCommand("HDEL", keys.delayedMessages(shard: entry.shard), entry.messageID))
        }
        _ = try await connection.pipeline(commands)
    }

    /// Number of parked messages (all shards).
    public func delayedCount() async throws -> Int {
        try await connection.pipeline((0..<keys.shards).map { RedisCommand("ZCARD", keys.delayed(shard: $0)) })
            .reduce(0) { $0 + Int($1.integer ?? 0) }
    }

    /// Takes up to `count` tokens from the provider's bucket (`rate` per second, bursts of `burst`),
    /// shared by every sender process through Redis. Returns the tokens granted and, if fewer than
    /// asked, how long (ms) until the next one.
    public func acquire(provider: String, count: Int, rate: Double, burst: Int) async throws -> (granted: Int, waitMs: Int) {
        let reply = try await connection.send(RedisCommand.evalsha(
            SenderScripts.rateLimit, keys: ["\(keys.prefix):rl:{\(provider)}"], arguments: [rate, burst, count]))
        guard let fields = reply.array, fields.count == 2, let granted = fields[0].integer, let wait = fields[1].integer else {
            throw StateStoreError(message: "rate limit: \(reply.errorMessage ?? "unexpected reply")")
        }
        return (Int(granted), Int(wait))
    }
}

enum SenderScripts {
    /// KEYS: sent hash. ARGV: message id, channel, stale after ms, retention s.
    /// Claim values are `inflight:<channel>:<ms>` or `done:<channel>`.
    static let claim = RedisScript(name: "waymark.claim", source: """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local current = redis.call('HGET', KEYS[1], ARGV[1])
        local result = 'claimed'
        if current then
            if string.sub(current, 1, 5) == 'done:' then return current end
            local since = tonumber(string.match(current, ':(%d+)$')) or 0
            if now - since < tonumber(ARGV[3]) then return 'busy' end
            result = 'reclaimed'
        end
        redis.call('HSET', KEYS[1], ARGV[1], 'inflight:' .. ARGV[2] .. ':' .. now)
        redis.call('EXPIRE', KEYS[1], ARGV[4])
        return result
        """)

    /// KEYS: sent hash. ARGV: message id, value, retention s.
    static let complete = RedisScript(name: "waymark.complete", source: """
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
        redis.call('EXPIRE', KEYS[1], ARGV[3])
        return 1
        """)

    /// KEYS: delayed zset, delayed hash, sent hash. ARGV: message id, due ms, value, release|keep.
    static let deferMessage = RedisScript(name: "waymark.defer", source: """
        redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
        redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
        local current = redis.call('HGET', KEYS[3], ARGV[1])
        if ARGV[4] == 'release' and current and string.sub(current, 1, 9) == 'inflight:' then redis.call('HDEL', KEYS[3], ARGV[1]) end
        return 1
        """)

    /// GCRA token bucket. KEYS: bucket. ARGV: rate per second, burst, tokens wanted. Uses the server clock.
    static let rateLimit = RedisScript(name: "waymark.ratelimit", source: """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
        local interval = 1000.0 / tonumber(ARGV[1])
        local tolerance = tonumber(ARGV[2]) * interval
        local tat = tonumber(redis.call('GET', KEYS[1]) or now)
        if tat < now then tat = now end
        local wanted = tonumber(ARGV[3])
        local granted = 0
        while granted < wanted and (tat + interval - now) <= tolerance do
            tat = tat + interval
            granted = granted + 1
        end
        if granted > 0 then redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(tat - now) + 1000) end
        local wait = 0
        if granted < wanted then wait = math.ceil(tat + interval - now - tolerance) end
        return {granted, wait}
        """)
}
