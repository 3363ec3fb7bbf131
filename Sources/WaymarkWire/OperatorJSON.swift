import Foundation
import WaymarkEngine

/// The JSON that `--json` commands print follows the topics' conventions, so one reader works for
/// both: snake_case field names (`message_id`), times as RFC 3339 strings in UTC with milliseconds
/// (`2026-11-21T11:00:00.000Z`), durations as integers with their unit in the name (`age_ms`).
public enum OperatorJSON {
    /// The encoder every `--json` output goes through: snake_case keys (dictionary keys such as
    /// topic names are left as they are), sorted, pretty-printed.
    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}

/// Milliseconds since the epoch in memory, an RFC 3339 UTC string in JSON output.
@propertyWrapper
public struct RFC3339Time: Sendable, Hashable, Codable {
    public var wrappedValue: Int64
    public init(wrappedValue: Int64) { self.wrappedValue = wrappedValue }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(Timestamp(milliseconds: wrappedValue).description)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard case .success(let time) = Timestamp.parseRFC3339(text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not an RFC 3339 time: \(text)")
        }
        wrappedValue = time.milliseconds
    }
}

/// ``RFC3339Time`` for an optional time (`null` in JSON when absent).
@propertyWrapper
public struct OptionalRFC3339Time: Sendable, Hashable, Codable {
    public var wrappedValue: Int64?
    public init(wrappedValue: Int64?) { self.wrappedValue = wrappedValue }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        if let wrappedValue { try container.encode(Timestamp(milliseconds: wrappedValue).description) } else { try container.encodeNil() }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { wrappedValue = nil; return }
        wrappedValue = try RFC3339Time(from: decoder).wrappedValue
    }
}
