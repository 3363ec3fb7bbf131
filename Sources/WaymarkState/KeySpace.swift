/// Where Waymark keeps things in Redis.
///
/// Every key of a customer carries the hash tag of the customer's **shard** (`{s0042}`), and so do the
/// shard's indexes (customers with due timers, customers with unpublished outbox entries). One Lua
/// script can therefore update a customer's state, outbox and index entries atomically, also on Redis
/// Cluster, where a script may only touch keys of one slot. The shard of a customer is a stable
/// FNV-1a hash of its id modulo ``shards``; the shard count is part of the data layout and must not
/// change for an existing deployment. 256 shards spread evenly over a Cluster's 16,384 slots.
public struct KeySpace: Sendable, Hashable {
    /// Key prefix, for example `wm`.
    public let prefix: String
    /// Number of shards.
    public let shards: Int

    public init(prefix: String = "wm", shards: Int = 256) {
        precondition(shards > 0 && shards <= 65_536, "shards must be in 1...65536")
        precondition(!prefix.isEmpty && !prefix.contains("{"), "prefix must be non-empty and contain no '{'")
        self.prefix = prefix
        self.shards = shards
    }

    /// The customer's shard.
    public func shard(of customer: String) -> Int {
        var hash: UInt32 = 2_166_136_261
        for byte in customer.utf8 {
            hash ^= UInt32(byte)
            hash = hash &* 16_777_619
        }
        return Int(hash % UInt32(shards))
    }

    /// `{s0042}`: the hash tag shared by everything in one shard.
    public func tag(_ shard: Int) -> String {
        let digits = String(shard)
        return "{s" + String(repeating: "0", count: max(0, 4 - digits.count)) + digits + "}"
    }

    /// Hash with fields `v` (version) and `s` (encoded customer state).
    public func state(_ customer: String) -> String { "\(prefix):\(tag(shard(of: customer))):st:\(customer)" }
    /// Hash of outbox entry id → encoded record, decided but not yet acknowledged by Kafka.
    public func outbox(_ customer: String) -> String { "\(prefix):\(tag(shard(of: customer))):ob:\(customer)" }
    /// Hash with fields `p` (profile JSON) and `o` (`partition:offset` it came from).
    public func profile(_ customer: String) -> String { "\(prefix):\(tag(shard(of: customer))):pf:\(customer)" }
    /// List of the customer's most recent decisions (newest first), for inspection.
    public func decisions(_ customer: String) -> String { "\(prefix):\(tag(shard(of: customer))):dl:\(customer)" }
    /// Sorted set: customer → next wake-up (ms since epoch) of its timers and deferred messages.
    public func due(shard: Int) -> String { "\(prefix):\(tag(shard)):due" }
    /// Sorted set: customer → time (ms) its oldest unacknowledged outbox entry was written.
    public func pendingOutbox(shard: Int) -> String { "\(prefix):\(tag(shard)):obx" }
    /// Hash of input partition (`topic/partition`) → `<event-time ms>:<reported wall ms>`: how far
    /// journey workers have read partitions that are behind (absent when caught up). One key for the
    /// deployment; schedulers hold back timers due after the lowest fresh entry.
    public var watermarks: String { "\(prefix):wmk" }
    /// Sorted set of message ids parked by senders (send-time quiet hours, retry backoff), by due time (ms).
    public func delayed(shard: Int) -> String { "\(prefix):\(tag(shard)):dly" }
    /// Hash of parked message id → `attempt\ntopic\nmessage JSON`.
    public func delayedMessages(shard: Int) -> String { "\(prefix):\(tag(shard)):dlm" }
    /// Hash of sender dedup marks for messages of this shard's customers: message id → status.
    public func sent(_ customer: String) -> String { "\(prefix):\(tag(shard(of: customer))):sent:\(customer)" }
    /// Hash of what the receipts endpoint knows of a message handed to a provider: `c` (its
    /// ``ReceiptContext``), `s` (the furthest status published: 1 sent, 2 delivered, 3 read) and one
    /// field per once-only receipt (`failed`, `clicked`, `unsubscribed`). Keyed by message id, as
    /// providers' callbacks carry it (not the customer); its own hash tag.
    public func receipt(_ messageID: String) -> String { "\(prefix):rx:{\(messageID)}" }
    /// String: the message id of a provider's reference (`viber` message tokens), for providers whose
    /// callbacks carry only their own id.
    public func providerReference(_ provider: String, _ reference: String) -> String { "\(prefix):ref:{\(provider):\(reference)}" }
    /// String: the customer a recipient address belongs to, for inbound STOP replies (which carry only
    /// the sender's address). `digest` is a SHA-256 of channel and address: no address is stored.
    public func addressIndex(_ digest: String) -> String { "\(prefix):adr:{\(digest)}" }
    /// Set of the address digests (``addressIndex(_:)``) the sender recorded for this customer, so
    /// erasure can remove them.
    public func addressDigests(_ customer: String) -> String { "\(prefix):\(tag(shard(of: customer))):ad:\(customer)" }
    /// Hash of one journey's KPI counters for one hour (`hour` = ms since the epoch / 3,600,000):
    /// field `metric␟stage␟step␟channel␟arm` → count (see `KPICell`), plus `@<topic/partition>` →
    /// the last offset applied from that input partition. One hash tag per journey, so a range read
    /// goes to one node.
    public func kpis(journey: String, hour: Int64) -> String { "\(prefix):kpi:{\(journey)}:\(hour)" }
    /// String: the holder of the rebuild fence (see ``Fence``), with an expiry.
    public var fence: String { "\(prefix):fence" }
    /// Hash of the checkpoint of rebuild `id`: `offsets` (end-offset snapshot) and `done` (customers finished).
    public func rebuildCheckpoint(_ id: String) -> String { "\(prefix):rebuild:\(id)" }
    /// Hash of dead-letter record (`partition:offset`) → redrive mark (`pending:<ms>` or `done:<target>`),
    /// for the dead-letter topic `topic`.
    public func redriven(deadLetterTopic topic: String) -> String { "\(prefix):{dlq}:redriven:\(topic)" }
}
