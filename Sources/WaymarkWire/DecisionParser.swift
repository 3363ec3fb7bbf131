import WaymarkEngine

extension RecordParser {
    /// Parses a record of `journey.decisions` (the form ``Decision/jsonBytes()`` writes): the one
    /// decoder for decisions, used by every reader (funnels, summaries) instead of ad-hoc JSON.
    public func decision(_ value: some Collection<UInt8>) -> Result<Decision, Rejection> {
        let o: [String: AttributeValue]
        switch Self.object(value, what: "decision") {
        case .success(let fields): o = fields
        case .failure(let rejection): return .failure(rejection)
        }
        func string(_ name: String) -> String? { if case .string(let s)? = o[name] { return s }; return nil }
        func int(_ name: String) -> Int? { if case .number(let n)? = o[name], n == n.rounded() { return Int(n) }; return nil }
        func time(_ name: String) -> Timestamp? {
            guard let text = string(name), case .success(let t) = Timestamp.parseRFC3339(text) else { return nil }
            return t
        }
        guard let reasonText = string("reason"), let reason = DecisionReason(rawValue: reasonText) else {
            return .failure(Rejection(.wrongType, "reason is missing or unknown"))
        }
        guard let rule = string("rule"), let customer = string("customer_id"), let decidedAt = time("decided_at") else {
            return .failure(Rejection(.missingField, "rule, customer_id and decided_at are required"))
        }
        var skipped: [ChannelRejection] = []
        if case .array(let items)? = o["skipped"] {
            for case .object(let s) in items {
                guard case .string(let c)? = s["channel"], let channel = Channel(rawValue: c),
                      case .string(let r)? = s["reason"], let why = DecisionReason(rawValue: r),
                      case .string(let rule)? = s["rule"] else { continue }
                skipped.append(ChannelRejection(channel: channel, reason: why, rule: rule))
            }
        }
        return .success(Decision(
            reason: reason, rule: rule, customerID: customer, journey: string("journey"), journeyVersion: int("journey_version"),
            instanceKey: string("instance_key"), stage: string("stage"), step: string("step"),
            channel: string("channel").flatMap(Channel.init(rawValue:)), messageID: string("message_id").flatMap(MessageID.init),
            priority: int("priority"), decidedAt: decidedAt, sendAfter: time("send_after"), expiresAt: time("expires_at"),
            causedBy: string("caused_by"), skipped: skipped, detail: string("detail"), arm: string("arm"),
            elapsedMilliseconds: int("elapsed_ms").map(Int64.init)))
    }
}

extension RecordParser {
    /// A whole JSON document that must be one object (trailing bytes other than space are an error);
    /// `what` names the document in the rejection (`decision is not valid JSON`).
    public static func object(_ value: some Collection<UInt8>, what: String) -> Result<[String: AttributeValue], Rejection> {
        let bytes = Array(value)
        let parsed: Result<AttributeValue, Rejection> = bytes.withUnsafeBytes { raw in
            var reader = JSONReader(raw)
            do throws(JSONReader.Failure) {
                let v = try reader.value()
                reader.skipSpace()
                guard reader.atEnd else { throw .syntax(reader.index) }
                return .success(v)
            } catch {
                return .failure(Rejection(.invalidJSON, "\(what) is not valid JSON"))
            }
        }
        switch parsed {
        case .success(.object(let o)): return .success(o)
        case .success: return .failure(Rejection(.notAnObject, "\(what) must be a JSON object"))
        case .failure(let r): return .failure(r)
        }
    }
}
