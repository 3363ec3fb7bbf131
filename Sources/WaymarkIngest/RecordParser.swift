import WaymarkEngine

/// Validation limits for incoming records.
public struct IngestLimits: Sendable, Hashable {
    /// Larger values are rejected as `oversize` before parsing.
    public var maxBytes: Int
    /// An `occurred_at` further than this in the future (against the clock) is `absurd_timestamp`.
    public var maxFutureSkew: TimeSpan
    /// An `occurred_at` further than this in the past is `absurd_timestamp` (0 = no limit).
    public var maxAge: TimeSpan

    public init(maxBytes: Int = 64 * 1024, maxFutureSkew: TimeSpan = .days(1), maxAge: TimeSpan = .days(3_650)) {
        self.maxBytes = maxBytes
        self.maxFutureSkew = maxFutureSkew
        self.maxAge = maxAge
    }
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
                if field.isEmpty { return .failure(Rejection(.emptyField, "\(name) is empty")) }
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

    /// Parses a customer profile. The key must equal `customer_id`.
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
            guard !id.isEmpty else { return .failure(Rejection(.emptyField, "customer_id is empty")) }
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
            switch string("locale") { case .success(let v): profile.locale = v; case .failure(let e): return .failure(e) }
            for (name, value) in objectField(object, "contacts") ?? [:] {
                guard let channel = Channel(rawValue: name) else { continue }  // channels Waymark does not serve
                guard case .string(let address) = value else { return .failure(Rejection(.wrongType, "contacts.\(name) must be a string")) }
                profile.contacts[channel] = address
            }
            for (name, value) in objectField(object, "consent") ?? [:] {
                guard let channel = Channel(rawValue: name) else { continue }
                guard case .bool(let flag) = value else { return .failure(Rejection(.wrongType, "consent.\(name) must be true or false")) }
                profile.consent[channel] = flag
            }
            switch object["preferred_channels"] {
            case nil, .null?: break
            case .array(let items)?:
                for item in items {
                    guard case .string(let name) = item else { return .failure(Rejection(.wrongType, "preferred_channels must be strings")) }
                    if let channel = Channel(rawValue: name), !profile.preferredChannels.contains(channel) {
                        profile.preferredChannels.append(channel)
                    }
                }
            default: return .failure(Rejection(.wrongType, "preferred_channels must be a list"))
            }
            if let attributes = objectField(object, "attributes") { profile.attributes = attributes }
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
                return .failure(Rejection(.absurdTimestamp, "occurred_at is more than \(limits.maxAge) in the past"))
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
        }
    }
}
