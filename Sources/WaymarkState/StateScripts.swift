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
    /// lost its partition in a rebalance must not overwrite its successor's write), and moves the
    /// customer to the front of the due index if it has a wake-up pending: a send may be waiting
    /// for exactly this profile (`ZADD XX LT`: customers without one are not added).
    /// KEYS: profile, due index. ARGV: profile bytes, partition, offset, customer id.
    /// Returns 1 if stored, 0 if stale.
    static let putProfile = RedisScript(name: "waymark.profile", source: """
        local origin = redis.call('HGET', KEYS[1], 'o')
        if origin then
            local sep = string.find(origin, ':', 1, true)
            local partition = string.sub(origin, 1, sep - 1)
            local offset = tonumber(string.sub(origin, sep + 1))
            if partition == ARGV[2] and offset >= tonumber(ARGV[3]) then return 0 end
        end
        redis.call('HSET', KEYS[1], 'p', ARGV[1], 'o', ARGV[2] .. ':' .. ARGV[3])
        redis.call('ZADD', KEYS[2], 'XX', 'LT', 0, ARGV[4])
        return 1
        """)

    /// Erases what Waymark stores about a customer (right to erasure): the profile always; the
    /// journey state, unpublished outbox, recent decisions and scheduler entries if asked; the sender's
    /// claims and parked (delayed) messages if asked. A tombstone from Kafka leaves only the
    /// `partition:offset` it came from in the profile key (for a day), so a worker that lost the
    /// partition cannot write an older profile back.
    /// KEYS: profile, state, outbox, decisions, sender claims, due index, pending-outbox index,
    /// delayed index, delayed messages. ARGV: customer id, origin ('' for none), erase state ('1'/'0'),
    /// erase sender claims ('1'/'0'), origin TTL seconds. Returns the number of keys and entries removed.
    static let erase = RedisScript(name: "waymark.erase", source: """
        local removed = redis.call('DEL', KEYS[1])
        if ARGV[2] ~= '' then
            redis.call('HSET', KEYS[1], 'o', ARGV[2])
            redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
        end
        if ARGV[3] == '1' then
            removed = removed + redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
            removed = removed + redis.call('ZREM', KEYS[6], ARGV[1]) + redis.call('ZREM', KEYS[7], ARGV[1])
        end
        if ARGV[4] == '1' then
            removed = removed + redis.call('DEL', KEYS[5])
            local parked = redis.call('HGETALL', KEYS[9])
            for i = 1, #parked, 2 do
                local body = string.match(parked[i + 1], '^[^\\n]*\\n[^\\n]*\\n(.*)$') or ''
                local ok, message = pcall(cjson.decode, body)
                if ok and type(message) == 'table' and message.customer_id == ARGV[1] then
                    removed = removed + redis.call('HDEL', KEYS[9], parked[i]) + redis.call('ZREM', KEYS[8], parked[i])
                end
            end
        end
        return removed
        """)

    static let all = [commit, ack, putProfile, erase]
}
