/// Redis Cluster key → slot mapping and the routing key of a command.
///
/// A key's slot is `CRC16(key) mod 16384` (CRC-16/XMODEM, as in the Redis Cluster specification),
/// where only the part between the first `{` and the next `}` is hashed if that part is non-empty
/// (the *hash tag*: Waymark's `wm:{s0042}:…` keys of one shard share a slot).
public enum ClusterSlot {
    /// Number of hash slots in a Redis Cluster.
    public static let count = 16_384

    /// The slot of `key`.
    public static func of(_ key: some Collection<UInt8>) -> Int {
        let bytes = Array(key)
        if let open = bytes.firstIndex(of: UInt8(ascii: "{")),
           let close = bytes[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1 {
            return Int(crc16(bytes[(open + 1)..<close]) & 0x3FFF)
        }
        return Int(crc16(bytes[...]) & 0x3FFF)
    }

    /// The slot of `key` (its UTF-8 bytes).
    public static func of(_ key: String) -> Int { of(Array(key.utf8)) }

    /// CRC-16/XMODEM (polynomial 0x1021, initial value 0, no reflection).
    static func crc16(_ bytes: ArraySlice<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 { crc = (crc & 0x8000) != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        }
        return crc
    }
}

extension RedisCommand {
    /// Commands that name no key: on a cluster they may go to any master.
    static let keyless: Set<String> = [
        "PING", "ECHO", "INFO", "TIME", "DBSIZE", "SCAN", "KEYS", "RANDOMKEY", "FLUSHDB", "FLUSHALL",
        "SCRIPT", "FUNCTION", "CLUSTER", "CONFIG", "CLIENT", "COMMAND", "AUTH", "SELECT", "HELLO",
        "ASKING", "READONLY", "READWRITE", "MULTI", "EXEC", "DISCARD", "WAIT", "DEBUG", "SLOWLOG",
        "LATENCY", "LASTSAVE", "BGSAVE", "BGREWRITEAOF", "SAVE", "ROLE", "MEMORY", "ACL", "QUIT",
    ]

    /// The argument whose slot decides where the command goes on a cluster: the first key (argument 1
    /// for ordinary commands, argument 3 for `EVALSHA`/`EVAL`/`FCALL` with keys), or `nil` for a command
    /// without keys. A command this guesses wrong for is still answered correctly: the node redirects it.
    var routingKey: ArraySlice<UInt8>? {
        let upper = name.uppercased()
        if Self.keyless.contains(upper) { return nil }
        switch upper {
        case "EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO", "FCALL", "FCALL_RO":
            guard let count = argument(2), let keys = Int(String(decoding: count, as: UTF8.self)), keys > 0 else { return nil }
            return argument(3)
        default:
            return argument(1)
        }
    }

    /// Commands that change nothing, so need no replica acknowledgement.
    static let readOnly: Set<String> = [
        "GET", "MGET", "STRLEN", "EXISTS", "TTL", "PTTL", "TYPE", "HGET", "HMGET", "HGETALL", "HKEYS", "HVALS", "HLEN",
        "HEXISTS", "HSTRLEN", "ZRANGE", "ZRANGEBYSCORE", "ZREVRANGE", "ZREVRANGEBYSCORE", "ZSCORE", "ZMSCORE", "ZCARD",
        "ZCOUNT", "ZRANK", "LRANGE", "LLEN", "LINDEX", "SMEMBERS", "SISMEMBER", "SCARD", "SCAN", "HSCAN", "ZSCAN",
        "KEYS", "DBSIZE", "INFO", "PING", "ECHO", "TIME", "CLUSTER", "SCRIPT", "CONFIG", "CLIENT", "COMMAND", "WAIT",
        "ROLE", "MEMORY", "ASKING", "AUTH", "SELECT", "READONLY", "READWRITE", "SLOWLOG", "LATENCY",
    ]

    /// `true` unless the command is known to change nothing (scripts count as writes).
    var mayWrite: Bool { !Self.readOnly.contains(name.uppercased()) }

    /// The slot of ``routingKey``, or `nil` for a command without keys.
    var slot: Int? { routingKey.map { ClusterSlot.of($0) } }

    /// Argument `position` (0 is the name) as stored in the RESP body, or `nil` if there are fewer.
    func argument(_ position: Int) -> ArraySlice<UInt8>? {
        guard position < argumentCount else { return nil }
        var offset = 0
        var current = 0
        while offset < body.count {
            // `$<len>\r\n<bytes>\r\n`
            var length = 0
            offset += 1
            while offset < body.count, body[offset] != 13 {
                length = length * 10 + Int(body[offset] &- 48)
                offset += 1
            }
            offset += 2
            if current == position { return body[offset..<min(offset + length, body.count)] }
            offset += length + 2
            current += 1
        }
        return nil
    }
}
