/// A JSON value carried in touchpoint and profile attributes and message variables.
public enum AttributeValue: Sendable, Hashable {
    case string(String)
    case number(Double)
    case bool(Bool)
    case null
    case array([AttributeValue])
    case object([String: AttributeValue])

    /// The value as a string for comparisons and instance keys: strings as-is, integral numbers
    /// without a fraction (`77`, not `77.0`), other numbers in Swift's shortest round-trip form,
    /// booleans as `true`/`false`; `nil` for null, arrays and objects.
    public var keyString: String? {
        switch self {
        case .string(let s): return s
        case .number(let d): return AttributeValue.format(d)
        case .bool(let b): return b ? "true" : "false"
        case .null, .array, .object: return nil
        }
    }

    /// The numeric value of a number, or of a string that parses as one.
    public var numberValue: Double? {
        switch self {
        case .number(let d): return d
        case .string(let s): return Double(s)
        default: return nil
        }
    }

    /// Whether the value is a string, number or boolean.
    public var isScalar: Bool {
        switch self {
        case .string, .number, .bool: return true
        default: return false
        }
    }

    /// Deterministic number formatting shared by keys and JSON output.
    public static func format(_ d: Double) -> String {
        if d.isFinite, d == d.rounded(.towardZero), abs(d) < 9_007_199_254_740_992 {
            return String(Int64(d))
        }
        return d.isFinite ? d.description : "null"
    }
}

/// A delivery channel. The raw value is the name used in JSON, YAML and topic names.
public enum Channel: String, Sendable, Hashable, CaseIterable, Comparable, CustomStringConvertible {
    case sms, rcs, whatsapp, viber, email, push

    /// Stable small integer used in the binary state encoding. Never reorder.
    public var code: UInt8 {
        switch self {
        case .sms: 0
        case .rcs: 1
        case .whatsapp: 2
        case .viber: 3
        case .email: 4
        case .push: 5
        }
    }

    /// The channel for a binary code, if known.
    public init?(code: UInt8) {
        switch code {
        case 0: self = .sms
        case 1: self = .rcs
        case 2: self = .whatsapp
        case 3: self = .viber
        case 4: self = .email
        case 5: self = .push
        default: return nil
        }
    }

    public static func < (a: Channel, b: Channel) -> Bool { a.code < b.code }
    public var description: String { rawValue }
}

/// One thing a customer did or that happened to them (contract §2, topic `touchpoints`).
public struct Touchpoint: Sendable, Hashable {
    /// Idempotency key: the same `eventID` processed twice has the effect of once.
    public var eventID: String
    /// The customer this event belongs to (also the Kafka key).
    public var customerID: String
    /// Event type such as `cart_abandoned`, `purchase`; unknown types are valid.
    public var type: String
    /// When it happened (parsed from RFC 3339).
    public var occurredAt: Timestamp
    /// Producer of the event (`web`, `app`, `pos`, `crm`, ...); optional.
    public var source: String?
    /// Free-form attributes (`cart_id`, `value`, ...).
    public var attributes: [String: AttributeValue]

    public init(eventID: String, customerID: String, type: String, occurredAt: Timestamp,
                source: String? = nil, attributes: [String: AttributeValue] = [:]) {
        self.eventID = eventID
        self.customerID = customerID
        self.type = type
        self.occurredAt = occurredAt
        self.source = source
        self.attributes = attributes
    }
}

/// What Waymark knows about a customer (contract §2, topic `customers`, latest wins).
public struct CustomerProfile: Sendable, Hashable {
    public var customerID: String
    /// IANA time zone such as `Europe/Oslo`; `nil` or unknown falls back to the rules' default.
    public var timezone: String?
    /// BCP 47 locale such as `nb-NO`, passed to templates.
    public var locale: String?
    /// Contact address per channel (phone number, e-mail address, push token...).
    public var contacts: [Channel: String]
    /// Explicit consent per channel; a missing entry means no consent.
    public var consent: [Channel: Bool]
    /// Channels the customer prefers, most preferred first.
    public var preferredChannels: [Channel]
    /// Segment, persona, tier and other attributes used by journey conditions.
    public var attributes: [String: AttributeValue]
    /// Channels the customer unsubscribed from (an unsubscribe link, a STOP reply): no message of
    /// any kind goes there, whatever `consent` says, until the customer subscribes again.
    public var withdrawn: Set<Channel> = []
    /// Global opt-out (the profile's `opt_out`, or an unsubscribe from everything): every
    /// non-transactional message is suppressed on every channel.
    public var optedOut: Bool = false

    public init(customerID: String, timezone: String? = nil, locale: String? = nil,
                contacts: [Channel: String] = [:], consent: [Channel: Bool] = [:],
                preferredChannels: [Channel] = [], attributes: [String: AttributeValue] = [:]) {
        self.customerID = customerID
        self.timezone = timezone
        self.locale = locale
        self.contacts = contacts
        self.consent = consent
        self.preferredChannels = preferredChannels
        self.attributes = attributes
    }
}
