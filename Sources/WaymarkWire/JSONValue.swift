import WaymarkEngine

/// Why a record cannot be processed. The raw value is the `x-waymark-reason` header on the
/// dead-letter topic; ``Rejection/detail`` adds context without ever quoting record contents.
public enum RejectionReason: String, Sendable, Hashable, CaseIterable {
    case nullValue = "null_value"
    case nullKey = "null_key"
    case oversize
    case invalidUTF8 = "invalid_utf8"
    case invalidJSON = "invalid_json"
    case notAnObject = "not_an_object"
    case missingField = "missing_field"
    case wrongType = "wrong_type"
    case emptyField = "empty_field"
    case invalidTimestamp = "invalid_timestamp"
    case absurdTimestamp = "absurd_timestamp"
    case keyMismatch = "key_mismatch"
    case unknownCustomer = "unknown_customer"
    /// An object names the same key twice (which one counts would be a guess).
    case duplicateKey = "duplicate_key"
    /// A number that is valid JSON but not representable (e.g. `1e400`).
    case numberOutOfRange = "number_out_of_range"
    /// An id (`event_id`, `customer_id`, `type`) that is blank, has control characters or
    /// surrounding white space, or is longer than 256 bytes.
    case invalidID = "invalid_id"
    /// A profile `timezone` that is not an IANA time-zone name known to this system.
    case invalidTimezone = "invalid_timezone"
    /// A profile contact that is not an address for its channel (E.164 phone number, e-mail address, push token).
    case invalidContact = "invalid_contact"
    /// A profile `locale` that is not a BCP 47 language tag.
    case invalidLocale = "invalid_locale"
    /// A channel name Waymark does not know in a profile's `contacts`, `consent` or `preferred_channels`.
    case unknownChannel = "unknown_channel"
    /// The customer's stored journey state cannot be decoded (corrupt, or written by a newer version);
    /// the state is left untouched and the events wait here for a re-drive.
    case unreadableState = "unreadable_state"
    /// A message every allowed channel's provider refused (sender side).
    case deliveryFailed = "delivery_failed"
}

/// A record rejected by validation.
public struct Rejection: Error, Sendable, Hashable, CustomStringConvertible {
    public var reason: RejectionReason
    /// Field names, sizes, positions — never values (they may be personal data).
    public var detail: String
    public init(_ reason: RejectionReason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }
    public var description: String { "\(reason.rawValue): \(detail)" }
}

/// A minimal JSON reader over bytes: recursive descent, depth-limited, every string UTF-8 validated,
/// errors returned as values (throwing and catching is slow on the hot path).
struct JSONReader {
    let base: UnsafeRawBufferPointer
    var index = 0
    var depth = 0
    static let maxDepth = 32

    init(_ bytes: UnsafeRawBufferPointer) { base = bytes }

    enum Failure: Error { case syntax(Int), utf8(Int), depth(Int), duplicateKey(Int), numberRange(Int) }

    var atEnd: Bool { index >= base.count }

    mutating func skipSpace() {
        while index < base.count {
            let c = base[index]
            if c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { index += 1 } else { return }
        }
    }

    mutating func expect(_ byte: UInt8) throws(Failure) {
        skipSpace()
        guard index < base.count, base[index] == byte else { throw .syntax(index) }
        index += 1
    }

    mutating func peek() -> UInt8? {
        skipSpace()
        return index < base.count ? base[index] : nil
    }

    /// Parses any value.
    mutating func value() throws(Failure) -> AttributeValue {
        guard let c = peek() else { throw .syntax(index) }
        switch c {
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "{"):
            var object: [String: AttributeValue] = [:]
            try members { (reader: inout JSONReader, key: String) throws(Failure) in object[key] = try reader.value() }
            return .object(object)
        case UInt8(ascii: "["):
            depth += 1
            guard depth <= Self.maxDepth else { throw .depth(index) }
            index += 1
            var items: [AttributeValue] = []
            if peek() == UInt8(ascii: "]") { index += 1; depth -= 1; return .array(items) }
            while true {
                items.append(try value())
                guard let next = peek() else { throw .syntax(index) }
                index += 1
                if next == UInt8(ascii: "]") { break }
                guard next == UInt8(ascii: ",") else { throw .syntax(index - 1) }
            }
            depth -= 1
            return .array(items)
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        default: return .number(try number())
        }
    }

    /// Iterates an object's members, calling `body` with the reader positioned at each value.
    mutating func members(_ body: (inout JSONReader, String) throws(Failure) -> Void) throws(Failure) {
        try expect(UInt8(ascii: "{"))
        depth += 1
        guard depth <= Self.maxDepth else { throw .depth(index) }
        if peek() == UInt8(ascii: "}") { index += 1; depth -= 1; return }
        // Duplicate keys are rejected: a linear scan for the usual handful, a set past that.
        var seen: [String] = []
        var seenSet: Set<String> = []
        while true {
            guard peek() == UInt8(ascii: "\"") else { throw .syntax(index) }
            let keyAt = index
            let key = try string()
            if seen.count < 16 {
                if seen.contains(key) { throw .duplicateKey(keyAt) }
                seen.append(key)
                if seen.count == 16 { seenSet = Set(seen) }
            } else if !seenSet.insert(key).inserted {
                throw .duplicateKey(keyAt)
            }
            try expect(UInt8(ascii: ":"))
            try body(&self, key)
            guard let next = peek() else { throw .syntax(index) }
            index += 1
            if next == UInt8(ascii: "}") { break }
            guard next == UInt8(ascii: ",") else { throw .syntax(index - 1) }
        }
        depth -= 1
    }

    mutating func literal(_ word: StaticString) throws(Failure) {
        let count = word.utf8CodeUnitCount
        guard index + count <= base.count else { throw .syntax(index) }
        for i in 0..<count where base[index + i] != word.utf8Start[i] { throw .syntax(index) }
        index += count
    }

    mutating func string() throws(Failure) -> String {
        try expect(UInt8(ascii: "\""))
        let start = index
        // Fast path: no escapes.
        while index < base.count {
            let c = base[index]
            if c == UInt8(ascii: "\"") {
                let slice = UnsafeRawBufferPointer(rebasing: base[start..<index])
                index += 1
                guard let text = String(validating: slice.bindMemory(to: UInt8.self), as: UTF8.self) else { throw .utf8(start) }
                return text
            }
            if c == UInt8(ascii: "\\") { break }
            if c < 0x20 { throw .syntax(index) }
            index += 1
        }
        // Slow path with escapes.
        var bytes = Array(UnsafeRawBufferPointer(rebasing: base[start..<index]))
        while index < base.count {
            let c = base[index]
            index += 1
            if c == UInt8(ascii: "\"") {
                guard let text = String(validating: bytes, as: UTF8.self) else { throw .utf8(start) }
                return text
            }
            if c < 0x20 { throw .syntax(index - 1) }
            guard c == UInt8(ascii: "\\") else { bytes.append(c); continue }
            guard index < base.count else { throw .syntax(index) }
            let e = base[index]
            index += 1
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): bytes.append(e)
            case UInt8(ascii: "b"): bytes.append(0x08)
            case UInt8(ascii: "f"): bytes.append(0x0C)
            case UInt8(ascii: "n"): bytes.append(0x0A)
            case UInt8(ascii: "r"): bytes.append(0x0D)
            case UInt8(ascii: "t"): bytes.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if (0xD800...0xDBFF).contains(scalar) {
                    guard index + 1 < base.count, base[index] == UInt8(ascii: "\\"), base[index + 1] == UInt8(ascii: "u") else { throw .utf8(index) }
                    index += 2
                    let low = try hex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw .utf8(index) }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(scalar) {
                    throw .utf8(index)
                }
                guard let unicode = Unicode.Scalar(scalar) else { throw .utf8(index) }
                bytes.append(contentsOf: Array(String(Character(unicode)).utf8))
            default: throw .syntax(index - 1)
            }
        }
        throw .syntax(index)
    }

    mutating func hex4() throws(Failure) -> UInt32 {
        guard index + 4 <= base.count else { throw .syntax(index) }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let c = base[index]
            index += 1
            let digit: UInt32
            switch c {
            case 48...57: digit = UInt32(c - 48)
            case 65...70: digit = UInt32(c - 55)
            case 97...102: digit = UInt32(c - 87)
            default: throw .syntax(index - 1)
            }
            value = value << 4 | digit
        }
        return value
    }

    mutating func number() throws(Failure) -> Double {
        skipSpace()
        let start = index
        if index < base.count, base[index] == UInt8(ascii: "-") { index += 1 }
        var integer: Int64 = 0
        var digits = 0
        var simple = true
        while index < base.count, (48...57).contains(base[index]) {
            if digits < 18 { integer = integer * 10 + Int64(base[index] - 48) } else { simple = false }
            digits += 1
            index += 1
        }
        guard digits > 0 else { throw .syntax(start) }
        if digits > 1 && base[base[start] == UInt8(ascii: "-") ? start + 1 : start] == 48 { throw .syntax(start) }  // leading zero
        if index < base.count, base[index] == UInt8(ascii: ".") {
            simple = false  // fractions go through the correctly rounded parser
            index += 1
            var fractionDigits = 0
            while index < base.count, (48...57).contains(base[index]) { fractionDigits += 1; index += 1 }
            guard fractionDigits > 0 else { throw .syntax(index) }
        }
        if index < base.count, base[index] == UInt8(ascii: "e") || base[index] == UInt8(ascii: "E") {
            simple = false
            index += 1
            if index < base.count, base[index] == UInt8(ascii: "+") || base[index] == UInt8(ascii: "-") { index += 1 }
            var expDigits = 0
            while index < base.count, (48...57).contains(base[index]) { index += 1; expDigits += 1 }
            guard expDigits > 0 else { throw .syntax(index) }
        }
        let negative = base[start] == UInt8(ascii: "-")
        if simple { return negative ? -Double(integer) : Double(integer) }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: base[start..<index]), as: UTF8.self)
        guard let value = Double(text) else { throw .syntax(start) }
        guard value.isFinite else { throw .numberRange(start) }
        return value
    }
}
