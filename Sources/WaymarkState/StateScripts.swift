import WaymarkRedis

/// The Lua scripts behind ``RedisStateStore``. Each touches keys of one shard only (Cluster-safe).
enum StateScripts {
    /// Compare-and-set of a customer's state, with its outbox entries, due-index entry and recent
    /// decisions, all or nothing.
    ///
    /// KEYS: state, outbox, due index, pending-outbox index, decisions list.
    /// ARGV: expected version, new version, state bytes, TTL seconds (0 = none), next wake-up ms
    /// ('' = none), now ms, customer id, decision lists to keep, n outbox entries, (id, packed records)×n,
    /// m decision lists, list×m. (The store sends at most one of each per commit.)
    /// Returns {1, version} on success, {0, current version} on a version conflict.
    static let commit = RedisScript(name: "waymark.commit", source: """
        local current = redis.call('HGET', KEYS[1], 'v') or '0'
        if current ~= ARGV[1] then return {0, current} end
        redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3])
        local ttl = tonumber(ARGV[4])
        if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
        local customer = ARGV[7]
        if ARGV[5] ~= '' then
            redis.call('ZADD', KEYS[3], ARGV[5], customer)
        else
            redis.call('ZREM', KEYS[3], customer)
        end
        local n = tonumber(ARGV[9])
        local i = 10
        if n > 0 then
            for _ = 1, n do
                redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
                i = i + 2
            end
            redis.call('ZADD', KEYS[4], 'NX', ARGV[6], customer)
        end
        local m = tonumber(ARGV[i])
        i = i + 1
        if m > 0 then
            for _ = 1, m do
                redis.call('LPUSH', KEYS[5], ARGV[i])
                i = i + 1
            end
            redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[8]) - 1)
            if ttl > 0 then redis.call('EXPIRE', KEYS[5], ttl) end
        end
        return {1, ARGV[2]}
        """)

    /// Removes acknowledged outbox entries; drops the customer from the pending index once empty.
    /// KEYS: outbox, pending-outbox index. ARGV: customer id, entry ids…
    static let ack = RedisScript(name: "waymark.ack", source: """
        for i = 2, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
        if redis.call('HLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[1]) end
        return 1
        """)

    /// Stores a profile unless a newer one from the same partition is already stored (a worker that
    /// lost its partition in a rebalance must not overwrite its successor's write).
    /// KEYS: profile. ARGV: profile bytes, partition, offset. Returns 1 if stored, 0 if stale.
    static let putProfile = RedisScript(name: "waymark.profile", source: """
        local origin = redis.call('HGET', KEYS[1], 'o')
        if origin then
            local sep = string.find(origin, ':', 1, true)
            local partition = string.sub(origin, 1, sep - 1)
            local offset = tonumber(string.sub(origin, sep + 1))
            if partition == ARGV[2] and offset >= tonumber(ARGV[3]) then return 0 end
        end
        redis.call('HSET', KEYS[1], 'p', ARGV[1], 'o', ARGV[2] .. ':' .. ARGV[3])
        return 1
        """)

    static let all = [commit, ack, putProfile]
}
