import WaymarkRedis

/// What a status callback needs to become a receipt on `deliveries`: the message's customer (the
/// record key), channel, journey, step and template. No personal data (no address). The one
/// encoder and decoder of the `c` field of ``KeySpace/receipt(_:)``: fields joined by newlines.
public struct ReceiptContext: Sendable, Hashable {
    public var customer: String
    public var channel: String
    public var journey: String
    public var step: String
    public var template: String
    /// The adapter that sent it (`twilio`, `whatsapp_cloud`, …).
    public var provider: String
    /// Where the sender read the message (`topic/partition/offset`), kept when it has fallback
    /// channels: a failure the provider reports later re-reads it from there to fall back. Empty: none.
    public var origin: String
    /// The message's experiment arm (empty: none), so receipts count per arm.
    public var arm: String

    public init(customer: String, channel: String, journey: String, step: String, template: String, provider: String, origin: String = "",
                arm: String = "") {
        self.customer = customer; self.channel = channel; self.journey = journey; self.step = step
        self.template = template; self.provider = provider; self.origin = origin; self.arm = arm
    }

    public var encoded: String { [customer, channel, journey, step, template, provider, origin, arm].joined(separator: "\n") }

    public init?(decoding text: String) {
        let parts = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 6 && parts.count <= 8 else { return nil }
        self.init(customer: parts[0], channel: parts[1], journey: parts[2], step: parts[3], template: parts[4], provider: parts[5],
                  origin: parts.count >= 7 ? parts[6] : "", arm: parts.count == 8 ? parts[7] : "")
    }
}

/// Receipts-side state in Redis: the context of every message handed to a provider (written by the
/// sender before the call, so a callback can never outrun it), provider references, and per message
/// the receipts already published (providers retry and reorder callbacks: each status goes out once,
/// in order).
public struct ReceiptStore: Sendable {
    public let connection: RedisConnection
    public let keys: KeySpace
    /// How long contexts and references are kept: callbacks later than this are answered but dropped.
    public let retentionSeconds: Int

    public init(connection: RedisConnection, keys: KeySpace, retentionSeconds: Int = 30 * 86_400) {
        self.connection = connection; self.keys = keys; self.retentionSeconds = retentionSeconds
    }

    /// The ordered statuses: each implies the ones before it.
    public static let progression = ["sent", "delivered", "read"]

    /// Stores contexts before the provider calls (one round trip for the batch), and for channels
    /// with replies the customer of each address digest (see ``KeySpace/addressIndex(_:)``).
    public func remember(_ items: [(messageID: String, context: ReceiptContext, addressDigest: String?)]) async throws {
        if items.isEmpty { return }
        var commands: [RedisCommand] = []
        for item in items {
            commands.append(RedisCommand("HSET", keys.receipt(item.messageID), "c", item.context.encoded))
            commands.append(RedisCommand("EXPIRE", keys.receipt(item.messageID), retentionSeconds))
            if let digest = item.addressDigest {
                commands.append(RedisCommand("SET", keys.addressIndex(digest), item.context.customer, "EX", retentionSeconds))
                commands.append(RedisCommand("SADD", keys.addressDigests(item.context.customer), digest))
                commands.append(RedisCommand("EXPIRE", keys.addressDigests(item.context.customer), retentionSeconds))
            }
        }
        for reply in try await connection.pipeline(commands) where reply.errorMessage != nil {
            throw StateStoreError(message: "receipt context: \(reply.errorMessage!)")
        }
    }

    /// Maps a provider's reference to the message id (after the provider accepted it).
    public func link(provider: String, reference: String, messageID: String) async throws {
        let reply = try await connection.send(linkCommand(provider: provider, reference: reference, messageID: messageID))
        if let message = reply.errorMessage { throw StateStoreError(message: "provider reference: \(message)") }
    }

    /// The command of ``link(provider:reference:messageID:)``, to pipeline with others.
    public func linkCommand(provider: String, reference: String, messageID: String) -> RedisCommand {
        RedisCommand("SET", keys.providerReference(provider, reference), messageID, "EX", retentionSeconds)
    }

    /// The customer an address digest belongs to (the last one sent to at that address).
    public func customer(addressDigest: String) async throws -> String? {
        try await connection.send(RedisCommand("GET", keys.addressIndex(addressDigest))).string
    }

    /// The message id of a provider's reference.
    public func messageID(provider: String, reference: String) async throws -> String? {
        try await connection.send(RedisCommand("GET", keys.providerReference(provider, reference))).string
    }

    /// What is known of a message: its context (`nil` if never sent or expired), the furthest status
    /// published, and which once-only receipts went out.
    public func lookup(_ messageID: String) async throws -> (context: ReceiptContext, progress: Int, once: Set<String>)? {
        let reply = try await connection.send(RedisCommand("HGETALL", keys.receipt(messageID)))
        if let message = reply.errorMessage { throw StateStoreError(message: "receipt lookup: \(message)") }
        let fields = reply.array ?? []
        var context: ReceiptContext?, progress = 0, once = Set<String>()
        var i = 0
        while i + 1 < fields.count {
            let name = fields[i].string ?? "", value = fields[i + 1].string ?? ""
            switch name {
            case "c": context = ReceiptContext(decoding: value)
            case "s": progress = Int(value) ?? 0
            default: once.insert(name)
            }
            i += 2
        }
        return context.map { ($0, progress, once) }
    }

    /// Marks receipts published: the progression up to `progress` (never lowered), and `once` fields.
    public func markPublished(_ messageID: String, progress: Int, once: [String]) async throws {
        let reply = try await connection.send(RedisCommand.evalsha(
            ReceiptScripts.mark, keys: [keys.receipt(messageID)], arguments: [progress as any RedisArgument] + once.map { $0 as any RedisArgument }))
        if let message = reply.errorMessage { throw StateStoreError(message: "receipt mark: \(message)") }
    }
}

enum ReceiptScripts {
    /// KEYS: receipt hash. ARGV: progress, once-only names… Raises `s` to ARGV[1] (never lowers it).
    static let mark = RedisScript(name: "waymark.receipt.mark", source: """
        if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
        local current = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
        if tonumber(ARGV[1]) > current then redis.call('HSET', KEYS[1], 's', ARGV[1]) end
        for i = 2, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], '1') end
        return 1
        """)
}
