/// A Kafka record waiting in a customer's outbox: written to Redis atomically with the state change
/// that decided it, published afterwards, and removed once Kafka acknowledged it.
public struct OutboxRecord: Sendable, Hashable {
    /// Stable id (a message id or decision id): re-publishing after a crash reuses it.
    public var id: String
    public var topic: String
    public var key: [UInt8]
    public var value: [UInt8]

    public init(id: String, topic: String, key: [UInt8], value: [UInt8]) {
        self.id = id
        self.topic = topic
        self.key = key
        self.value = value
    }

    /// `u16 topic length, topic, u32 key length, key, value`.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(6 + topic.utf8.count + key.count + value.count)
        let topicBytes = Array(topic.utf8)
        out.append(UInt8(truncatingIfNeeded: topicBytes.count >> 8))
        out.append(UInt8(truncatingIfNeeded: topicBytes.count))
        out += topicBytes
        for shift in stride(from: 24, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: key.count >> shift)) }
        out += key
        out += value
        return out
    }

    /// Decodes ``encoded()``; `nil` if the bytes are not an outbox record.
    public init?(id: String, encoded bytes: [UInt8]) {
        guard bytes.count >= 2 else { return nil }
        let topicLength = Int(bytes[0]) << 8 | Int(bytes[1])
        guard bytes.count >= 2 + topicLength + 4 else { return nil }
        let topic = String(decoding: bytes[2..<(2 + topicLength)], as: UTF8.self)
        var index = 2 + topicLength
        var keyLength = 0
        for _ in 0..<4 { keyLength = keyLength << 8 | Int(bytes[index]); index += 1 }
        guard bytes.count >= index + keyLength else { return nil }
        self.init(id: id, topic: topic, key: Array(bytes[index..<(index + keyLength)]), value: Array(bytes[(index + keyLength)...]))
    }
}
