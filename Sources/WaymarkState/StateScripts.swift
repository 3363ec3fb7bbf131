import WaymarkRedis

/// The Lua scripts behind ``RedisStateStore``. Each touches keys of one shard only (Cluster-safe).
///
/// **Slot migrations.** While a Redis Cluster migrates a slot, a command inside a script that reaches
/// a key missing on the node fails ("non local key") *after* the script's earlier writes were
/// applied. Redis lets a script start only if every declared key exists on the node (otherwise the
/// caller gets `TRYAGAIN`/`ASK` and nothing ran), so a key can only go missing mid-script if the
/// script deleted it itself. Hence the rule these scripts follow: **no script touches a key after a
/// command that may have deleted it** (emptied a hash or sorted set): deletions come last.
enum StateScripts {
    /// Compare-and-set of the states of several customers of one shard, each with its outbox entry,
    /// due-index entry and recent decisions: all or nothing per customer, customer by customer.
    ///
    /// One call per shard per batch instead of one per customer: the per-call cost of EVALSHA (script
    /// lookup, argument table, reply) is paid once for up to ``RedisStateStore/customersPerScript``
    /// customers. Redis's own `INFO commandstats` during `make bench` showed about 38 µs per call
    /// for up to 64 customers. End to end the gain was within run-to-run noise (the commit already
    /// overlaps the next slice's compute, and Redis used about 7 µs of a core per record before and
    /// after); it is kept because it cuts script calls and replies up to 64-fold.
    ///
    /// KEYS: due index, pending-outbox index, then per customer: state, outbox, decisions list.
    /// ARGV: TTL seconds (0 = none), now ms, decision lists to keep, then 7 per customer: customer id,
    /// expected version, new version, state bytes, next wake-up ms ('' = none), packed outbox records
    /// ('' = none; stored as entry `v<new version>`), packed decisions ('' = none).
    /// Returns per customer two elements: 1 and the new version on success, 0 and the current
    /// version on a version conflict.
    static let commit = RedisScript(name: "waymark.commit", source: """
        local ttl = tonumber(ARGV[1])
        local now = ARGV[2]
        local last = tonumber(ARGV[3]) - 1
        local out = {}
        local a = 4
        -- ZREMs from the due index wait until the end: one could empty (delete) it (see the type's note).
        local undue = {}
        for k = 3, #KEYS, 3 do
            local customer = ARGV[a]
            local current = redis.call('HGET', KEYS[k], 'v') or '0'
            if current ~= ARGV[a + 1] then
                out[#out + 1] = 0
                out[#out + 1] = current
            else
                local version = ARGV[a + 2]
                redis.call('HSET', KEYS[k], 'v', version, 's', ARGV[a + 3])
                if ttl > 0 then redis.call('EXPIRE', KEYS[k], ttl) end
                if ARGV[a + 4] ~= '' then
                    redis.call('ZADD', KEYS[1], ARGV[a + 4], customer)
                    undue[customer] = nil
                else
                    undue[customer] = true
                end
                if ARGV[a + 5] ~= '' then
                    redis.call('HSET', KEYS[k + 1], 'v' .. version, ARGV[a + 5])
                    redis.call('ZADD', KEYS[2], 'NX', now, customer)
                end
                if ARGV[a + 6] ~= '' then
                    redis.call('LPUSH', KEYS[k + 2], ARGV[a + 6])
                    redis.call('LTRIM', KEYS[k + 2], 0, last)
                    if ttl > 0 then redis.call('EXPIRE', KEYS[k + 2], ttl) end
                end
                out[#out + 1] = 1
                out[#out + 1] = version
            end
            a = a + 7
        end
        local gone = {}
        for customer in pairs(undue) do gone[#gone + 1] = customer end
        if #gone > 0 then redis.call('ZREM', KEYS[1], unpack(gone)) end
        return out
        """)

    /// Removes acknowledged outbox entries of several customers of one shard; drops each customer
    /// from the pending index once its outbox is empty.
    /// KEYS: pending-outbox index, then per customer: outbox. ARGV: per customer: customer id, n, n entry ids.
    /// Each outbox is read (`HLEN`) before its one `HDEL`, which may delete it, and not touched after.
    static let ack = RedisScript(name: "waymark.ack", source: """
        local a = 1
        local left = {}
        local done = {}
        for k = 2, #KEYS do
            local n = tonumber(ARGV[a + 1])
            if left[KEYS[k]] == nil then left[KEYS[k]] = redis.call('HLEN', KEYS[k]) end
            if n > 0 and left[KEYS[k]] > 0 then
                local ids = {}
                for i = 1, n do ids[i] = ARGV[a + 1 + i] end
                left[KEYS[k]] = left[KEYS[k]] - redis.call('HDEL', KEYS[k], unpack(ids))
            end
            if left[KEYS[k]] == 0 then done[#done + 1] = ARGV[a] end
            a = a + 2 + n
        end
        if #done > 0 then redis.call('ZREM', KEYS[1], unpack(done)) end
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
        local removed
        if ARGV[2] ~= '' then
            -- Keep the key (a DEL then HSET would touch a deleted key): set the origin, drop the rest.
            removed = redis.call('EXISTS', KEYS[1])
            redis.call('HSET', KEYS[1], 'o', ARGV[2])
            redis.call('HDEL', KEYS[1], 'p', 'x')
            redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
        else
            removed = redis.call('DEL', KEYS[1])
        end
        if ARGV[3] == '1' then
            removed = removed + redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
            removed = removed + redis.call('ZREM', KEYS[6], ARGV[1]) + redis.call('ZREM', KEYS[7], ARGV[1])
        end
        if ARGV[4] == '1' then
            removed = removed + redis.call('DEL', KEYS[5])
            local parked = redis.call('HGETALL', KEYS[9])
            local ids = {}
            for i = 1, #parked, 2 do
                local body = string.match(parked[i + 1], '^[^\\n]*\\n[^\\n]*\\n(.*)$') or ''
                local ok, message = pcall(cjson.decode, body)
                if ok and type(message) == 'table' and message.customer_id == ARGV[1] then ids[#ids + 1] = parked[i] end
            end
            if #ids > 0 then
                removed = removed + redis.call('HDEL', KEYS[9], unpack(ids)) + redis.call('ZREM', KEYS[8], unpack(ids))
            end
        end
        return removed
        """)

    /// Adds or removes one suppression entry (see ``Suppressions``) in the profile hash's field `x`.
    /// KEYS: profile. ARGV: entry, ms, 'add' or 'remove'. Returns 1 when changed.
    static let suppress = RedisScript(name: "waymark.suppress", source: """
        local current = redis.call('HGET', KEYS[1], 'x') or ''
        local kept, found = {}, false
        for line in string.gmatch(current, '[^\\n]+') do
            local entry = string.match(line, '^(%S+)')
            if entry == ARGV[1] then found = true else kept[#kept + 1] = line end
        end
        if ARGV[3] == 'add' then
            if found then return 0 end
            redis.call('HSET', KEYS[1], 'x', current .. ARGV[1] .. ' ' .. ARGV[2] .. '\\n')
            return 1
        end
        if not found then return 0 end
        if #kept == 0 then redis.call('HDEL', KEYS[1], 'x') else redis.call('HSET', KEYS[1], 'x', table.concat(kept, '\\n') .. '\\n') end
        return 1
        """)

    static let all = [commit, ack, putProfile, erase, suppress]
}
