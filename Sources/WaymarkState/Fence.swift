import WaymarkRedis

/// A cluster-wide pause for state writers (journey workers, schedulers) while a replay rebuild
/// re-derives state. Writers check it before every batch or tick; a fenced writer holds what it
/// has, keeps its consumer-group membership, and continues once the fence is lifted.
public struct Fence: Sendable {
    public let connection: RedisConnection
    public let key: String

    public init(connection: RedisConnection, keys: KeySpace) {
        self.connection = connection
        self.key = keys.fence
    }

    /// The holder's description if a fence is up.
    public func current() async throws -> String? {
        try await connection.send(RedisCommand("GET", key)).string
    }

    /// Raises the fence for `holder`, expiring after `ttlSeconds` unless renewed (a crashed rebuild
    /// does not pause the system forever). Returns `false` if someone else holds it.
    public func raise(holder: String, ttlSeconds: Int) async throws -> Bool {
        let reply = try await connection.send(RedisCommand("SET", key, holder, "NX", "EX", ttlSeconds))
        if reply.isNull { return try await current() == holder }
        return true
    }

    /// Extends the fence held by `holder`.
    public func renew(holder: String, ttlSeconds: Int) async throws {
        if try await current() == holder { _ = try await connection.send(RedisCommand("EXPIRE", key, ttlSeconds)) }
    }

    /// Lifts the fence if `holder` holds it.
    public func lift(holder: String) async throws {
        if try await current() == holder { _ = try await connection.send(RedisCommand("DEL", key)) }
    }
}
