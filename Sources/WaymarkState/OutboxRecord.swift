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

extension OutboxRecord {
    /// Packs several records into one outbox entry: `u32 count`, then per record `u16 id length, id,
    /// u32 record length, record`. One commit writes one entry however many records it decided,
    /// which keeps the commit script to a single HSET.
    public static func pack(_ records: [OutboxRecord]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(records.reduce(4) { $0 + 8 + $1.id.utf8.count + $1.topic.utf8.count + $1.key.count + $1.value.count })
        appendUInt(&out, records.count, bytes: 4)
        for record in records {
            let id = Array(record.id.utf8)
            appendUInt(&out, id.count, bytes: 2)
            out += id
            let encoded = record.encoded()
            appendUInt(&out, encoded.count, bytes: 4)
            out += encoded
        }
        return out
    }

    /// Unpacks ``pack(_:)``; `nil` if the bytes are malformed.
    public static func unpack(_ bytes: [UInt8]) -> [OutboxRecord]? {
        var index = 0
        func read(_ n: Int) -> Int? {
            guard index + n <= bytes.count else { return nil }
            var value = 0
            for _ in 0..<n { value = value << 8 | Int(bytes[index]); index += 1 }
            return value
        }
        guard let count = read(4) else { return nil }
        var records: [OutboxRecord] = []
        records.reserveCapacity(min(count, 4096))
        for _ in 0..<count {
            guard let idLength = read(2), index + idLength <= bytes.count else { return nil }
            let id = String(decoding: bytes[index..<(index + idLength)], as: UTF8.self)
            index += idLength
            guard let length = read(4), index + length <= bytes.count,
                  let record = OutboxRecord(id: id, encoded: Array(bytes[index..<(index + length)])) else { return nil }
            index += length
            records.append(record)
        }
        return index == bytes.count ? records : nil
    }

    private static func appendUInt(_ out: inout [UInt8], _ value: Int, bytes: Int) {
        for shift in stride(from: (bytes - 1) * 8, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: value >> shift)) }
    }
}
