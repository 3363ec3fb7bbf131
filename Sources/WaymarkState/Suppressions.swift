import WaymarkRedis

/// What a customer unsubscribed from: channels (an unsubscribe link, a STOP reply) and `*` for
/// everything non-transactional. Kept in the customer's profile hash (field `x`), apart from the
/// profile JSON, so a later profile update from the business does not undo the customer's own
/// unsubscribe; erasure removes it with the profile. The one encoder and decoder of field `x`:
/// one line per entry, `<channel or *> <ms since epoch>`.
public struct Suppressions: Sendable, Hashable {
    /// The global opt-out entry.
    public static let everything = "*"

    /// Entry → when it was recorded (ms).
    public var entries: [String: Int64]

    public init(entries: [String: Int64] = [:]) { self.entries = entries }

    public init(decoding bytes: [UInt8]?) {
        entries = [:]
        guard let bytes else { return }
        for line in bytes.split(separator: 0x0A) {
            let parts = line.split(separator: 0x20, maxSplits: 1)
            guard parts.count == 2, let at = Int64(String(decoding: parts[1], as: UTF8.self)) else { continue }
            entries[String(decoding: parts[0], as: UTF8.self)] = at
        }
    }

    public var isEmpty: Bool { entries.isEmpty }
    public var optedOut: Bool { entries[Self.everything] != nil }
    /// Withdrawn channel names (without `*`), sorted.
    public var channels: [String] { entries.keys.filter { $0 != Self.everything }.sorted() }
}

extension RedisStateStore {
    /// Records that `customer` unsubscribed from `entry` (a channel name, or ``Suppressions/everything``)
    /// at `at` (ms); `withdraw: false` removes it (the customer subscribed again). Returns `true` when
    /// it changed something (a repeated STOP changes nothing). Pipelined with nothing else: rare.
    @discardableResult
    public func suppress(_ customer: String, _ entry: String, at: Int64, withdraw: Bool = true) async throws -> Bool {
        let reply = try await connection.send(RedisCommand.evalsha(
            StateScripts.suppress, keys: [keys.profile(customer)], arguments: [entry, Int(at), withdraw ? "add" : "remove"]))
        if let message = reply.errorMessage { throw StateStoreError(message: "suppress: \(message)") }
        return reply.integer == 1
    }

    /// The suppressions of `customer`.
    public func suppressions(_ customer: String) async throws -> Suppressions {
        let reply = try await connection.send(RedisCommand("HGET", keys.profile(customer), "x"))
        return Suppressions(decoding: reply.bytes)
    }
}
