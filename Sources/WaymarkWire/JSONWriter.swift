import WaymarkEngine

/// A minimal, allocation-light JSON writer into a byte buffer.
///
/// Output is deterministic: callers write fields in a fixed order and objects built from
/// dictionaries are written with sorted keys.
public struct JSONWriter: Sendable {
    /// The bytes written so far.
    public var bytes: [UInt8]
    @usableFromInline var needsComma = false

    public init(capacity: Int = 512) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    @inline(__always) @usableFromInline mutating func comma() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }

    public mutating func beginObject() { comma(); bytes.append(UInt8(ascii: "{")); needsComma = false }
    public mutating func endObject() { bytes.append(UInt8(ascii: "}")); needsComma = true }
    public mutating func beginArray() { comma(); bytes.append(UInt8(ascii: "[")); needsComma = false }
    public mutating func endArray() { bytes.append(UInt8(ascii: "]")); needsComma = true }

    /// Writes `"name":`; `name` must not need escaping.
    public mutating func key(_ name: StaticString) {
        comma()
        bytes.append(UInt8(ascii: "\""))
        name.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(UInt8(ascii: "\"")); bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    /// Writes an arbitrary (escaped) key.
    public mutating func key(_ name: String) {
        comma(); appendEscaped(name); bytes.append(UInt8(ascii: ":")); needsComma = false
    }

    public mutating func string(_ s: String) { comma(); appendEscaped(s); needsComma = true }
    /// A string whose bytes need no escaping (ids, hex), quoted.
    public mutating func unescapedString(_ b: [UInt8]) {
        comma(); bytes.append(UInt8(ascii: "\"")); bytes.append(contentsOf: b); bytes.append(UInt8(ascii: "\"")); needsComma = true
    }
    /// An already-encoded JSON value (an object, say), inserted as is.
    public mutating func rawJSON(_ b: [UInt8]) { comma(); bytes.append(contentsOf: b); needsComma = true }
    public mutating func int(_ v: Int64) { comma(); bytes.append(contentsOf: String(v).utf8); needsComma = true }
    public mutating func bool(_ v: Bool) { comma(); bytes.append(contentsOf: (v ? "true" : "false").utf8); needsComma = true }
    public mutating func null() { comma(); bytes.append(contentsOf: "null".utf8); needsComma = true }
    public mutating func number(_ d: Double) { comma(); bytes.append(contentsOf: AttributeValue.format(d).utf8); needsComma = true }
    public mutating func timestamp(_ t: Timestamp) {
        comma(); bytes.append(UInt8(ascii: "\"")); t.appendRFC3339(to: &bytes); bytes.append(UInt8(ascii: "\"")); needsComma = true
    }
    public mutating func optionalString(_ s: String?) { if let s { string(s) } else { null() } }
    public mutating func optionalTimestamp(_ t: Timestamp?) { if let t { timestamp(t) } else { null() } }

    /// Writes any attribute value; objects with sorted keys.
    public mutating func value(_ v: AttributeValue) {
        switch v {
        case .string(let s): string(s)
        case .number(let d): number(d)
        case .bool(let b): bool(b)
        case .null: null()
        case .array(let a):
            beginArray(); for e in a { value(e) }; endArray()
        case .object(let o):
            object(o)
        }
    }

    /// Writes a dictionary as an object with keys sorted by UTF-8 bytes.
    public mutating func object(_ o: [String: AttributeValue]) {
        beginObject()
        for k in o.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
            key(k); value(o[k]!)
        }
        endObject()
    }

    @usableFromInline mutating func appendEscaped(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        let hex: StaticString = "0123456789abcdef"
        for c in s.utf8 {
            switch c {
            case UInt8(ascii: "\""): bytes.append(92); bytes.append(c)
            case 92: bytes.append(92); bytes.append(92)
            case 10: bytes.append(92); bytes.append(UInt8(ascii: "n"))
            case 13: bytes.append(92); bytes.append(UInt8(ascii: "r"))
            case 9: bytes.append(92); bytes.append(UInt8(ascii: "t"))
            case 0..<32:
                bytes.append(contentsOf: [92, UInt8(ascii: "u"), 48, 48])
                hex.withUTF8Buffer { h in bytes.append(h[Int(c >> 4)]); bytes.append(h[Int(c & 15)]) }
            default: bytes.append(c)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}
