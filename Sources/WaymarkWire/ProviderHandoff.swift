import WaymarkEngine

/// One line the file provider appends per provider call (JSON Lines): the one encoder and
/// decoder of that format, used by the provider, `make run`'s summary and the crash test's audit.
public struct ProviderHandoff: Sendable, Hashable {
    /// The message id: what a real provider receives as its idempotency key.
    public var idempotencyKey: String
    public var attempt: Int
    /// Wall-clock milliseconds of the call.
    public var handedAt: Int64
    /// The recipient address (personal data: never log it).
    public var to: String
    public var message: OutboundMessage
    /// The text its template rendered (body, subject or title, and the locale used), if any.
    public var rendered: (body: String, subject: String?, locale: String)?

    public init(idempotencyKey: String, attempt: Int, handedAt: Int64, to: String, message: OutboundMessage,
                rendered: (body: String, subject: String?, locale: String)? = nil) {
        self.idempotencyKey = idempotencyKey; self.attempt = attempt; self.handedAt = handedAt; self.to = to; self.message = message
        self.rendered = rendered
    }

    public static func == (a: ProviderHandoff, b: ProviderHandoff) -> Bool {
        a.idempotencyKey == b.idempotencyKey && a.attempt == b.attempt && a.handedAt == b.handedAt && a.to == b.to && a.message == b.message
            && a.rendered?.body == b.rendered?.body && a.rendered?.subject == b.rendered?.subject && a.rendered?.locale == b.rendered?.locale
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(idempotencyKey); hasher.combine(attempt); hasher.combine(handedAt); hasher.combine(to); hasher.combine(message)
        hasher.combine(rendered?.body)
    }

    /// The line, without its newline. `idempotency_key` comes first so the provider can find the
    /// keys it already handed over without parsing whole lines (see ``keyPrefix``).
    public func jsonBytes() -> [UInt8] {
        var w = JSONWriter(capacity: 512)
        w.beginObject()
        w.key("idempotency_key"); w.string(idempotencyKey)
        w.key("attempt"); w.int(Int64(attempt))
        w.key("handed_at"); w.int(handedAt)
        w.key("to"); w.string(to)
        w.key("message"); w.rawJSON(message.jsonBytes())
        if let rendered {
            w.key("rendered"); w.beginObject()
            w.key("body"); w.string(rendered.body)
            w.key("subject"); w.optionalString(rendered.subject)
            w.key("locale"); w.string(rendered.locale)
            w.endObject()
        }
        w.endObject()
        return w.bytes
    }

    /// Every line starts with these bytes, followed by the (unescaped) key and a quote.
    public static let keyPrefix = Array(#"{"idempotency_key":""#.utf8)

    /// The idempotency key of a line, read from its prefix only (fast: the provider scans its whole file on start).
    public static func idempotencyKey(ofLine line: some Collection<UInt8>) -> String? {
        guard line.starts(with: keyPrefix) else { return nil }
        let rest = line.dropFirst(keyPrefix.count)
        guard let end = rest.firstIndex(of: UInt8(ascii: "\"")) else { return nil }
        return String(decoding: rest[..<end], as: UTF8.self)
    }

    /// Parses one line.
    public static func decode(_ line: some Collection<UInt8>, parser: RecordParser = RecordParser()) -> Result<ProviderHandoff, Rejection> {
        switch RecordParser.object(line, what: "provider handoff") {
        case .failure(let rejection): return .failure(rejection)
        case .success(let o):
            guard case .string(let key)? = o["idempotency_key"], case .number(let attempt)? = o["attempt"],
                  case .number(let handedAt)? = o["handed_at"], case .string(let to)? = o["to"],
                  case .object(let fields)? = o["message"] else {
                return .failure(Rejection(.missingField, "a handoff needs idempotency_key, attempt, handed_at, to and message"))
            }
            var rendered: (body: String, subject: String?, locale: String)?
            if case .object(let r)? = o["rendered"], case .string(let body)? = r["body"], case .string(let locale)? = r["locale"] {
                var subject: String?
                if case .string(let s)? = r["subject"] { subject = s }
                rendered = (body, subject, locale)
            }
            return parser.outbound(fields: fields, key: .none).map {
                ProviderHandoff(idempotencyKey: key, attempt: Int(attempt), handedAt: Int64(handedAt), to: to, message: $0, rendered: rendered)
            }
        }
    }
}
