/// FNV-1a 64-bit: a stable, seedless hash for identifiers that must be identical across
/// processes, machines and releases (message ids, dedup fingerprints, spread offsets).
///
/// Swift's `Hasher`/`hashValue` is randomly seeded per process and must never be used for these.
public struct StableHash: Sendable, Hashable {
    /// Current hash value.
    public var value: UInt64 = 0xcbf2_9ce4_8422_2325

    public init() {}

    /// Mixes bytes in.
    @inlinable public mutating func combine(bytes: some Sequence<UInt8>) {
        var h = value
        for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        value = h
    }

    /// Mixes a string's UTF-8 bytes in, followed by a 0xFF separator so that
    /// `("ab","c")` and `("a","bc")` differ (0xFF never occurs in UTF-8).
    @inlinable public mutating func combine(_ s: String) {
        combine(bytes: s.utf8)
        combine(bytes: CollectionOfOne(0xFF))
    }

    /// Mixes an integer in (little-endian, 8 bytes).
    @inlinable public mutating func combine(_ v: Int64) {
        var x = UInt64(bitPattern: v)
        var h = value
        for _ in 0..<8 { h = (h ^ (x & 0xFF)) &* 0x0000_0100_0000_01b3; x >>= 8 }
        value = h
    }

    /// FNV-1a 64 of a single string (no separator).
    @inlinable public static func of(_ s: String) -> UInt64 {
        var h = StableHash()
        h.combine(bytes: s.utf8)
        return h.value
    }
}

/// A message id: `m-` followed by 16 lowercase hex digits of a stable 64-bit hash.
public struct MessageID: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The 64-bit hash (stored compactly in customer state).
    public var raw: UInt64
    public init(raw: UInt64) { self.raw = raw }

    /// The id of the message a journey step sends.
    ///
    /// Derived from journey name, the instance's journey version, customer, step id, the causing
    /// event id, the instance key and the instance's send sequence number (so a step revisited in a
    /// loop gets a fresh id). A replay or retry yields the same id.
    public init(journey: String, version: Int, customerID: String, step: String, causedBy: String,
                instanceKey: String, sequence: Int) {
        var h = StableHash()
        h.combine(journey); h.combine(Int64(version)); h.combine(customerID); h.combine(step)
        h.combine(causedBy); h.combine(instanceKey); h.combine(Int64(sequence))
        raw = h.value
    }

    public static func < (a: MessageID, b: MessageID) -> Bool { a.raw < b.raw }

    /// `m-<16 hex>`.
    public var description: String { String(decoding: bytes(), as: UTF8.self) }

    /// `m-<16 hex>` as UTF-8.
    public func bytes() -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "m"), UInt8(ascii: "-")]
        out.reserveCapacity(18)
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        var shift: UInt64 = 60
        for _ in 0..<16 { out.append(hex[Int((raw >> shift) & 0xF)]); shift &-= 4 }
        return out
    }

    /// Parses `m-<16 hex>`.
    public init?(_ text: String) {
        let u = Array(text.utf8)
        guard u.count == 18, u[0] == UInt8(ascii: "m"), u[1] == UInt8(ascii: "-") else { return nil }
        var v: UInt64 = 0
        for c in u[2...] {
            let d: UInt8
            switch c {
            case 48...57: d = c - 48
            case 97...102: d = c - 87
            default: return nil
            }
            v = v << 4 | UInt64(d)
        }
        raw = v
    }
}
