import WaymarkEngine

/// Validation limits for incoming records.
public struct IngestLimits: Sendable, Hashable {
    /// Larger values are rejected as `oversize` before parsing.
    public var maxBytes: Int
    /// An `occurred_at` further than this in the future (against the clock) is `absurd_timestamp`.
    public var maxFutureSkew: TimeSpan
    /// An `occurred_at` further than this in the past is `absurd_timestamp` (0 = no limit).
    public var maxAge: TimeSpan
    /// Where an operator changes ``maxAge`` (named in the rejection, e.g. a setting or a flag).
    public var maxAgeSetting: String

    public init(maxBytes: Int = 64 * 1024, maxFutureSkew: TimeSpan = .days(1), maxAge: TimeSpan = .days(3_650),
                maxAgeSetting: String = "worker.max_event_age_days") {
        self.maxBytes = maxBytes
        self.maxFutureSkew = maxFutureSkew
        self.maxAge = maxAge
        self.maxAgeSetting = maxAgeSetting
    }
}

/// What a record on the `customers` topic asks for.
public enum ProfileUpdate: Sendable, Hashable {
    /// The customer's latest profile.
    case profile(CustomerProfile)
    /// A tombstone (null value): erase what Waymark stores about the customer.
    case erase(customerID: String)
}

/// Turns raw Kafka records into engine inputs, or into a ``Rejection`` for the dead-letter topic.
public struct RecordParser: Sendable {
    public var limits: IngestLimits

    public init(limits: IngestLimits = IngestLimits()) { self.limits = limits }

    /// Parses a touchpoint. `key` must be present and equal `customer_id`; `now` bounds the timestamp.
    public func touchpoint(key: ArraySlice<UInt8>?, value: ArraySlice<UInt8>?, now: Timestamp) -> Result<Touchpoint, Rejection> {
        guard let value else { return .failure(Rejection(.nullValue, "record has no value")) }
        guard value.count <= limits.maxBytes else {
            return .failure(Rejection(.oversize, "\(value.count) bytes, limit \(limits.maxBytes)"))
        }
        guard let key else { return .failure(Rejection(.nullKey, "record has no key (the key must be customer_id)")) }
        return value.withUnsafeBytes { bytes -> Result<Touchpoint, Rejection> in
            var reader = JSONReader(bytes)
            var eventID: String?, customerID: String?, type: String?, occurredAt: Result<Timestamp, Rejection>?
            var source: String?
            var attributes: [String: AttributeValue] = [:]
            var problem: Rejection?
            do throws(JSONReader.Failure) {
                try reader.members { (r: inout JSONReader, name: String) throws(JSONReader.Failure) in
                    switch name {
                    case "event_id", "customer_id", "type", "source":
                        guard r.peek() == UInt8(ascii: "\"") else {
                            if name == "source", r.peek() == UInt8(ascii: "n") { try r.literal("null"); return }
                            problem = problem ?? Rejection(.wrongType, "\(name) must be a string")
                            _ = try r.value()
                            return
                        }
                        let text = try r.string()
                        switch name {
                        case "event_id": eventID = text
                        case "customer_id": customerID = text
                        case "type": type = text
                        default: source = text
                        }
                    case "occurred_at":
                        guard r.peek() == UInt8(ascii: "\"") else {
                            problem = problem ?? Rejection(.wrongType, "occurred_at must be an RFC 3339 string")
                            _ = try r.value()
                            return
                        }
                        let text = try r.string()
                        occurredAt = timestamp(text, now: now)
                    case "attributes":
                        let v = try r.value()
                        switch v {
                        case .object(let object): attributes = object
                        case .null: break
                        default: problem = problem ?? Rejection(.wrongType, "attributes must be an object")
                        }
                    default:
                        _ = try r.value()  // unknown fields are allowed (forward compatibility)
                    }
                }
                reader.skipSpace()
                guard reader.atEnd else { throw .syntax(reader.index) }
            } catch {
                return .failure(rejection(for: error))
            }
            if let problem { return .failure(problem) }
            for (name, field) in [("event_id", eventID), ("customer_id", customerID), ("type", type)] {
                guard let field else { return .failure(Rejection(.missingField, "\(name) is required")) }
                if let problem = Self.idProblem(name, field) { return .failure(problem) }
            }
            guard let occurredAt else { return .failure(Rejection(.missingField, "occurred_at is required")) }
            guard case .success(let time) = occurredAt else {
                if case .failure(let rejection) = occurredAt { return .failure(rejection) }
                fatalError("unreachable")
            }
            guard keyMatches(key, customerID!) else {
                return .failure(Rejection(.keyMismatch, "Kafka key differs from customer_id"))
            }
            return .success(Touchpoint(eventID: eventID!, customerID: customerID!, type: type!, occurredAt: time,
                                       source: source, attributes: attributes))
        }
    }

    /// Parses a record of the `customers` topic: a profile, or a tombstone (null value) that erases one.
    public func profileUpdate(key: ArraySlice<UInt8>?, value: ArraySlice<UInt8>?) -> Result<ProfileUpdate, Rejection> {
        guard value == nil else { return profile(key: key, value: value).map { .profile($0) } }
        guard let key else { return .failure(Rejection(.nullKey, "tombstone has no key (the key must be customer_id)")) }
        guard let id = String(validating: key, as: UTF8.self) else {
            return .failure(Rejection(.invalidUTF8, "tombstone key is not UTF-8"))
        }
        if let problem = Self.idProblem("tombstone key", id) { return .failure(problem) }
        return .success(.erase(customerID: id))
    }

    /// Parses a customer profile. The key must equal `customer_id`. Every field is checked: an
    /// unknown time zone, a contact that is no address for its channel or an unknown channel name
    /// rejects the whole profile (the stored one stays as it was), because a profile taken in part
    /// could send at the wrong local time or to the wrong address.
    public func profile(key: ArraySlice<UInt8>?, value: ArraySlice<UInt8>?) -> Result<CustomerProfile, Rejection> {
        guard let value else { return .failure(Rejection(.nullValue, "profile has no value")) }
        guard value.count <= limits.maxBytes else {
            return .failure(Rejection(.oversize, "\(value.count) bytes, limit \(limits.maxBytes)"))
        }
        guard let key else { return .failure(Rejection(.nullKey, "profile has no key (the key must be customer_id)")) }
        return value.withUnsafeBytes { bytes -> Result<CustomerProfile, Rejection> in
            var reader = JSONReader(bytes)
            let parsed: AttributeValue
            do throws(JSONReader.Failure) {
                parsed = try reader.value()
                reader.skipSpace()
                guard reader.atEnd else { throw .syntax(reader.index) }
            } catch {
                return .failure(rejection(for: error))
            }
            guard case .object(let object) = parsed else { return .failure(Rejection(.notAnObject, "profile must be a JSON object")) }
            guard case .string(let id)? = object["customer_id"] else {
                return .failure(object["customer_id"] == nil ? Rejection(.missingField, "customer_id is required")
                                                             : Rejection(.wrongType, "customer_id must be a string"))
            }
            if let problem = Self.idProblem("customer_id", id) { return .failure(problem) }
            guard keyMatches(key, id) else { return .failure(Rejection(.keyMismatch, "Kafka key differs from customer_id")) }
            var profile = CustomerProfile(customerID: id)
            func string(_ name: String) -> Result<String?, Rejection> {
                switch object[name] {
                case nil, .null?: return .success(nil)
                case .string(let text)?: return .success(text)
                default: return .failure(Rejection(.wrongType, "\(name) must be a string"))
                }
            }
            switch string("timezone") { case .success(let v): profile.timezone = v; case .failure(let e): return .failure(e) }
            if let zone = profile.timezone, !ZoneCache.shared.isKnown(zone) {
                return .failure(Rejection(.invalidTimezone, "timezone is not a known IANA time-zone name (\(zone.utf8.count) bytes)"))
            }
            switch string("locale") { case .success(let v): profile.locale = v; case .failure(let e): return .failure(e) }
            if let locale = profile.locale, !Self.isLanguageTag(locale) {
                return .failure(Rejection(.invalidLocale, "locale is not a BCP 47 language tag such as nb-NO"))
            }
            // Sorted, so the same bad profile always gets the same reason.
            for (name, value) in (objectField(object, "contacts") ?? [:]).sorted(by: { $0.key < $1.key }) {
                guard let channel = Channel(rawValue: name) else { return .failure(Self.unknownChannel("contacts", name)) }
                guard case .string(let address) = value else { return .failure(Rejection(.wrongType, "contacts.\(name) must be a string")) }
                if let problem = Self.contactProblem(channel, address) { return .failure(problem) }
                profile.contacts[channel] = address
            }
            for (name, value) in (objectField(object, "consent") ?? [:]).sorted(by: { $0.key < $1.key }) {
                guard let channel = Channel(rawValue: name) else { return .failure(Self.unknownChannel("consent", name)) }
                guard case .bool(let flag) = value else { return .failure(Rejection(.wrongType, "consent.\(name) must be true or false")) }
                profile.consent[channel] = flag
            }
            switch object["preferred_channels"] {
            case nil, .null?: break
            case .array(let items)?:
                for item in items {
                    guard case .string(let name) = item else { return .failure(Rejection(.wrongType, "preferred_channels must be strings")) }
                    guard let channel = Channel(rawValue: name) else { return .failure(Self.unknownChannel("preferred_channels", name)) }
                    if !profile.preferredChannels.contains(channel) { profile.preferredChannels.append(channel) }
                }
            default: return .failure(Rejection(.wrongType, "preferred_channels must be a list"))
            }
            if let attributes = objectField(object, "attributes") { profile.attributes = attributes }
            switch object["opt_out"] {
            case nil, .null?: break
            case .bool(let flag)?: profile.optedOut = flag
            default: return .failure(Rejection(.wrongType, "opt_out must be true or false"))
            }
            for name in ["contacts", "consent", "attributes"] {
                if let field = object[name], field != .null, objectField(object, name) == nil {
                    return .failure(Rejection(.wrongType, "\(name) must be an object"))
                }
            }
            return .success(profile)
        }
    }

    private func objectField(_ object: [String: AttributeValue], _ name: String) -> [String: AttributeValue]? {
        if case .object(let inner)? = object[name] { return inner }
        return nil
    }

    private func timestamp(_ text: String, now: Timestamp) -> Result<Timestamp, Rejection> {
        switch Timestamp.parseRFC3339(text) {
        case .failure(let error):
            let absurd = error.reason.contains("year")
            return .failure(Rejection(absurd ? .absurdTimestamp : .invalidTimestamp, "occurred_at: \(error.reason)"))
        case .success(let time):
            if time > now.adding(limits.maxFutureSkew) {
                return .failure(Rejection(.absurdTimestamp, "occurred_at is more than \(limits.maxFutureSkew) in the future"))
            }
            if limits.maxAge.milliseconds > 0, time < now.adding(TimeSpan(milliseconds: -limits.maxAge.milliseconds)) {
                return .failure(Rejection(.absurdTimestamp, "occurred_at is more than \(limits.maxAge) in the past "
                                          + "(the bound is \(limits.maxAgeSetting); 0 turns it off, e.g. to replay an old archive)"))
            }
            return .success(time)
        }
    }

    private func keyMatches(_ key: ArraySlice<UInt8>, _ customer: String) -> Bool {
        key.elementsEqual(customer.utf8)
    }

    private func rejection(for failure: JSONReader.Failure) -> Rejection {
        switch failure {
        case .syntax(let at): Rejection(.invalidJSON, "syntax error at byte \(at)")
        case .utf8(let at): Rejection(.invalidUTF8, "invalid UTF-8 in a string at byte \(at)")
        case .depth(let at): Rejection(.invalidJSON, "nesting deeper than \(JSONReader.maxDepth) at byte \(at)")
        case .duplicateKey(let at): Rejection(.duplicateKey, "an object repeats the key at byte \(at)")
        case .numberRange(let at): Rejection(.numberOutOfRange, "the number at byte \(at) is too large for a 64-bit float")
        }
    }

    /// Longest id accepted (`event_id`, `customer_id`, `type`), in UTF-8 bytes.
    public static let maxIDBytes = 256

    /// Why `value` is no usable id (`nil` if it is one): the rule every record and command applies.
    public static func validateID(_ name: String, _ value: String) -> Rejection? { idProblem(name, value) }

    /// Why `value` is no usable id: ids key Redis state, Kafka records and operator commands, so they
    /// must be printable, unambiguous and bounded. The detail never quotes the value.
    static func idProblem(_ name: String, _ value: String) -> Rejection? {
        if value.isEmpty { return Rejection(.emptyField, "\(name) is empty") }
        if value.utf8.count > maxIDBytes { return Rejection(.invalidID, "\(name) is \(value.utf8.count) bytes, limit \(maxIDBytes)") }
        var blank = true
        for scalar in value.unicodeScalars {
            if scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) {
                return Rejection(.invalidID, "\(name) contains a control character (U+\(String(scalar.value, radix: 16, uppercase: true)))")
            }
            if blank, !isWhitespace(scalar) { blank = false }
        }
        if blank { return Rejection(.invalidID, "\(name) is only white space") }
        if isWhitespace(value.unicodeScalars.first!) || isWhitespace(value.unicodeScalars.last!) {
            return Rejection(.invalidID, "\(name) starts or ends with white space")
        }
        return nil
    }

    /// Unicode white space, answered without the property table for printable ASCII: ids are checked
    /// on every record, and the table lookup was 6 % of a journey worker's CPU (`perf`, `make bench`).
    @inline(__always)
    static func isWhitespace(_ scalar: Unicode.Scalar) -> Bool {
        if scalar.value > 0x20 && scalar.value < 0x7F { return false }
        return scalar.properties.isWhitespace
    }

    static func unknownChannel(_ field: String, _ name: String) -> Rejection {
        let known = Channel.allCases.map(\.rawValue).joined(separator: ", ")
        return Rejection(.unknownChannel, "\(field) names a channel Waymark does not know (\(name.utf8.count) bytes; known: \(known))")
    }

    /// Why `address` is no contact for `channel`; the detail names the expected form, never the value.
    static func contactProblem(_ channel: Channel, _ address: String) -> Rejection? {
        switch channel {
        case .viber:
            // The Viber REST API addresses a Viber user id (what the bot's subscribed/message callbacks
            // report), not a phone number: 1 to 64 printable bytes.
            let ok = (1...64).contains(address.utf8.count) && !address.unicodeScalars.contains { $0.value <= 0x20 || $0.value == 0x7F }
            return ok ? nil : Rejection(.invalidContact, "contacts.viber must be a Viber user id (1 to 64 bytes, no spaces)")
        case .sms, .whatsapp, .rcs:
            let u = Array(address.utf8)
            let digits = u.dropFirst()
            if u.first == UInt8(ascii: "+"), (7...15).contains(digits.count), digits.first != UInt8(ascii: "0"),
               digits.allSatisfy({ (48...57).contains($0) }) { return nil }
            return Rejection(.invalidContact, "contacts.\(channel) must be an E.164 phone number (+ and 7 to 15 digits)")
        case .email:
            let parts = address.split(separator: "@", omittingEmptySubsequences: false)
            let ok = parts.count == 2 && (1...64).contains(parts[0].utf8.count) && address.utf8.count <= 254
                && !address.unicodeScalars.contains { $0.value <= 0x20 || $0.value == 0x7F }
                && parts[1].split(separator: ".", omittingEmptySubsequences: false).count >= 2
                && parts[1].split(separator: ".", omittingEmptySubsequences: false).allSatisfy { !$0.isEmpty && $0.first != "-" && $0.last != "-" }
            return ok ? nil : Rejection(.invalidContact, "contacts.email must be an e-mail address (local@domain.tld)")
        case .push:
            let ok = (1...4096).contains(address.utf8.count) && !address.unicodeScalars.contains { $0.value <= 0x20 || $0.value == 0x7F }
            return ok ? nil : Rejection(.invalidContact, "contacts.push must be a device token (1 to 4096 bytes, no spaces)")
        }
    }

    /// A BCP 47 language tag such as `nb`, `nb-NO`, `zh-Hant-TW` (`_` accepted as separator).
    static func isLanguageTag(_ tag: String) -> Bool {
        let parts = tag.split(separator: "-", omittingEmptySubsequences: false).flatMap { $0.split(separator: "_", omittingEmptySubsequences: false) }
        guard tag.utf8.count <= 35, let first = parts.first, (2...8).contains(first.count),
              first.unicodeScalars.allSatisfy({ $0.isASCII && $0.properties.isAlphabetic }) else { return false }
        return parts.dropFirst().allSatisfy { (1...8).contains($0.count) && $0.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0)) } }
    }
}
