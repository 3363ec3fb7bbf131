import CHiredis

/// A reply from Redis (RESP2).
public enum RedisReply: Sendable, Equatable, Hashable {
    /// A simple string such as `OK` or `PONG`.
    case status(String)
    /// An error reply such as `ERR wrong number of arguments` or `NOSCRIPT ...`.
    /// In pipelines these are returned, not thrown, so each command's outcome is visible.
    case error(String)
    /// An integer reply.
    case integer(Int64)
    /// A bulk string (binary-safe). See ``string``.
    case bulk([UInt8])
    /// A null bulk string or null array (for example `GET` of a missing key).
    case null
    /// An array reply (for example `MGET`, `HGETALL`, `EXEC`, a Lua table).
    case array([RedisReply])

    /// The text of a bulk string or status reply (UTF-8, with invalid bytes repaired); otherwise `nil`.
    public var string: String? {
        switch self {
        case .bulk(let bytes): String(decoding: bytes, as: UTF8.self)
        case .status(let text): text
        default: nil
        }
    }

    /// The bytes of a bulk string; otherwise `nil`.
    public var bytes: [UInt8]? {
        if case .bulk(let bytes) = self { bytes } else { nil }
    }

    /// The value of an integer reply, or of a bulk string holding a decimal integer; otherwise `nil`.
    public var integer: Int64? {
        switch self {
        case .integer(let value): value
        case .bulk(let bytes): Int64(String(decoding: bytes, as: UTF8.self))
        default: nil
        }
    }

    /// The elements of an array reply; otherwise `nil`.
    public var array: [RedisReply]? {
        if case .array(let elements) = self { elements } else { nil }
    }

    /// The message of an error reply; otherwise `nil`.
    public var errorMessage: String? {
        if case .error(let message) = self { message } else { nil }
    }

    /// `true` for ``null``.
    public var isNull: Bool { self == .null }

    /// Converts a hiredis reply tree (does not free it).
    init(_ reply: UnsafePointer<redisReply>) {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            self = .bulk(r.len == 0 ? [] : [UInt8](UnsafeRawBufferPointer(start: r.str, count: r.len)))
        case REDIS_REPLY_INTEGER:
            self = .integer(Int64(r.integer))
        case REDIS_REPLY_NIL:
            self = .null
        case REDIS_REPLY_STATUS:
            self = .status(Self.text(r))
        case REDIS_REPLY_ERROR:
            self = .error(Self.text(r))
        case REDIS_REPLY_ARRAY:
            var elements: [RedisReply] = []
            elements.reserveCapacity(r.elements)
            for i in 0..<r.elements {
                if let element = r.element[i] { elements.append(RedisReply(element)) } else { elements.append(.null) }
            }
            self = .array(elements)
        default:
            self = .error("unsupported hiredis reply type \(r.type)")
        }
    }

    private static func text(_ r: redisReply) -> String {
        guard let str = r.str, r.len > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: str, count: r.len), as: UTF8.self)
    }
}
