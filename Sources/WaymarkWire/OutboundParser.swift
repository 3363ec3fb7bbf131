import WaymarkEngine

extension RecordParser {
    /// Parses an outbound message as the journey worker published it (sender side).
    public func outbound(key: ArraySlice<UInt8>?, value: ArraySlice<UInt8>?) -> Result<OutboundMessage, Rejection> {
        guard let value else { return .failure(Rejection(.nullValue, "message has no value")) }
        return outbound(document: value, key: .mustEqual(key))
    }

    /// Parses an outbound message document on its own (no Kafka key to check: audits, archives).
    public func outbound(_ value: some Collection<UInt8>) -> Result<OutboundMessage, Rejection> {
        outbound(document: value, key: .none)
    }

    /// Which Kafka key a message must carry.
    enum KeyCheck {
        /// None to check (a document read outside Kafka).
        case none
        /// Must equal `customer_id`; `nil` (no key) never does.
        case mustEqual(ArraySlice<UInt8>?)
    }

    private func outbound(document value: some Collection<UInt8>, key: KeyCheck) -> Result<OutboundMessage, Rejection> {
        guard value.count <= limits.maxBytes else { return .failure(Rejection(.oversize, "\(value.count) bytes")) }
        return Self.object(value, what: "outbound message").flatMap { outbound(fields: $0, key: key) }
    }

    /// The message in an already parsed object.
    func outbound(fields o: [String: AttributeValue], key: KeyCheck) -> Result<OutboundMessage, Rejection> {
        func string(_ name: String) -> String? { if case .string(let s)? = o[name] { return s }; return nil }
        func int(_ name: String) -> Int? { if case .number(let n)? = o[name], n == n.rounded() { return Int(n) }; return nil }
        func time(_ name: String) -> Timestamp? {
            guard let text = string(name), case .success(let t) = Timestamp.parseRFC3339(text) else { return nil }
            return t
        }
        guard let idText = string("message_id"), let id = MessageID(idText) else { return .failure(Rejection(.missingField, "message_id")) }
        guard let customer = string("customer_id"), !customer.isEmpty else { return .failure(Rejection(.missingField, "customer_id")) }
        if case .mustEqual(let expected) = key, !(expected?.elementsEqual(customer.utf8) ?? false) {
            return .failure(Rejection(.keyMismatch, "Kafka key differs from customer_id"))
        }
        guard let channel = string("channel").flatMap(Channel.init(rawValue:)) else { return .failure(Rejection(.wrongType, "channel")) }
        guard let journey = string("journey"), let step = string("step"), let template = string("template"),
              let priority = int("priority"), let created = time("created_at"), let sendAfter = time("send_after"),
              let expires = time("expires_at"), let causedBy = string("caused_by") else {
            return .failure(Rejection(.missingField, "a required message field is missing or mistyped"))
        }
        var fallbacks: [Channel] = []
        if case .array(let items)? = o["fallback_channels"] {
            for case .string(let name) in items { if let c = Channel(rawValue: name) { fallbacks.append(c) } }
        }
        var variables: [String: AttributeValue] = [:]
        if case .object(let v)? = o["variables"] { variables = v }
        var transactional = false
        if case .bool(let flag)? = o["transactional"] { transactional = flag }
        return .success(OutboundMessage(
            messageID: id, customerID: customer, channel: channel, journey: journey, journeyVersion: int("journey_version") ?? 0,
            stage: string("stage") ?? "", step: step, template: template, priority: priority, transactional: transactional,
            createdAt: created, sendAfter: sendAfter, expiresAt: expires, causedBy: causedBy, locale: string("locale"),
            variables: variables, fallbackChannels: fallbacks, arm: string("arm") ?? ""))
    }
}
