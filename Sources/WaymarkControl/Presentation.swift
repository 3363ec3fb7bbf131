import Foundation
import WaymarkEngine
import WaymarkWire

/// Hides personal data in operator output: enough to recognise an address, never the whole of it.
public enum ContactMask {
    /// `+4790000001` → `+47******01`; `anna@example.com` → `a***@example.com`; other tokens keep
    /// at most two characters at each end.
    public static func mask(_ value: String) -> String {
        let chars = Array(value)
        if let at = chars.firstIndex(of: "@"), at > 0 {
            return String(chars[0]) + "***" + String(chars[at...])
        }
        let isPhone = !chars.isEmpty && chars.allSatisfy { $0.isNumber || "+ -()".contains($0) }
        if isPhone {
            guard chars.count > 5 else { return String(repeating: "*", count: chars.count) }
            return String(chars.prefix(3)) + String(repeating: "*", count: chars.count - 5) + String(chars.suffix(2))
        }
        guard chars.count > 8 else { return String(repeating: "*", count: chars.count) }
        return String(chars.prefix(2)) + "…" + String(chars.suffix(2))
    }
}

/// Formats instants for operators: RFC 3339 in UTC and in a customer's time zone.
public struct TimeFormat: Sendable {
    public let zone: TimeZone

    public init(zoneIdentifier: String?) {
        zone = zoneIdentifier.flatMap(TimeZone.init(identifier:)) ?? TimeZone(identifier: "UTC")!
    }

    /// `2026-11-21T11:00:00.000Z`.
    public static func utc(_ milliseconds: Int64) -> String { Timestamp(milliseconds: milliseconds).description }

    /// `2026-11-21T12:00:00+01:00` in ``zone``.
    public func local(_ milliseconds: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.timeZone = zone
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1000))
    }

    /// Both, as one readable cell: `2026-11-21T11:00:00.000Z (12:00 local)`.
    public func both(_ milliseconds: Int64) -> String {
        "\(Self.utc(milliseconds)) (local \(local(milliseconds)))"
    }
}

/// A time in a customer report: in JSON an RFC 3339 string in UTC (the convention of every
/// `--json` output, see ``OperatorJSON``); in text also in the customer's time zone (``local``).
public struct Instant: Sendable, Codable, Hashable {
    public var ms: Int64
    public var utc: String
    public var local: String

    public init(_ milliseconds: Int64, _ format: TimeFormat) {
        ms = milliseconds
        utc = TimeFormat.utc(milliseconds)
        local = format.local(milliseconds)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(utc)
    }

    public init(from decoder: any Decoder) throws {
        let milliseconds = try RFC3339Time(from: decoder).wrappedValue
        self.init(milliseconds, TimeFormat(zoneIdentifier: "UTC"))
    }
}

/// Bytes for display: UTF-8 text when valid, otherwise lower-case hex.
public enum ByteText {
    public static func render(_ bytes: [UInt8]) -> (text: String, isHex: Bool) {
        if let text = String(validating: bytes, as: UTF8.self) { return (text, false) }
        return (bytes.map { String(format: "%02x", $0) }.joined(), true)
    }
}
