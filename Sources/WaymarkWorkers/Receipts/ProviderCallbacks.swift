import Foundation
import WaymarkEngine
import WaymarkWire

/// One thing a provider's callback said, before it is matched to a message.
public struct CallbackEvent: Sendable, Hashable {
    /// What the callback names.
    public enum Target: Sendable, Hashable {
        /// Waymark's message id (carried through the provider: Twilio's callback URL, WhatsApp's
        /// `biz_opaque_callback_data`, SendGrid's custom args, RBM's message id).
        case message(String)
        /// The provider's own reference (Viber's message token), mapped by the sender.
        case reference(provider: String, String)
        /// A recipient address on a channel (an inbound STOP reply): mapped to the customer through the
        /// address index the sender keeps (hashed, see ``ReceiptStore``).
        case address(Channel, String)
    }

    public enum Kind: Sendable, Hashable {
        /// A receipt about a message.
        case status(DeliveryReceipt.Outcome)
        /// The recipient unsubscribed from (`true`) or re-subscribed to (`false`) the channel.
        case subscription(Channel, unsubscribe: Bool)
    }

    public var target: Target
    public var kind: Kind
    /// When the provider says it happened (`nil`: now).
    public var at: Timestamp?
    /// The provider's error code or reason, for `message_failed`.
    public var detail: String?

    public init(_ target: Target, _ kind: Kind, at: Timestamp? = nil, detail: String? = nil) {
        self.target = target; self.kind = kind; self.at = at; self.detail = detail
    }
}

/// The parsers of each provider's callback bodies (the documented shapes; fields not used are ignored).
public enum ProviderCallbacks {
    /// Reply keywords that opt out of (or back into) SMS and WhatsApp, as carriers and Twilio's
    /// Advanced Opt-Out treat them.
    public static let stopKeywords: Set<String> = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT"]
    public static let startKeywords: Set<String> = ["START", "UNSTOP", "SUBSCRIBE"]

    static func keyword(_ text: String) -> Bool? {
        let word = text.trimmingCharacters(in: .whitespacesAndNewlines).uppercased()
        if stopKeywords.contains(word) { return true }
        if startKeywords.contains(word) { return false }
        return nil
    }

    /// Twilio status callback (form): `MessageSid`, `MessageStatus`, `ErrorCode`, and our `wm` query
    /// parameter. `sent`, `delivered`, `read` (WhatsApp) and `undelivered`/`failed` are receipts;
    /// `queued`, `sending`, `accepted`, `scheduled` are not.
    public static func twilioStatus(_ form: [String: String], query: [String: String]) -> [CallbackEvent] {
        guard let id = query["wm"], let status = form["MessageStatus"] else { return [] }
        let outcome: DeliveryReceipt.Outcome
        switch status {
        case "sent": outcome = .sent
        case "delivered": outcome = .delivered
        case "read": outcome = .read
        case "undelivered", "failed", "canceled": outcome = .failed
        default: return []
        }
        let detail = outcome == .failed ? "twilio \(status)" + (form["ErrorCode"].map { " \($0)" } ?? "") : nil
        return [CallbackEvent(.message(id), .status(outcome), detail: detail)]
    }

    /// Twilio incoming message (form): `From`, `Body`; a STOP or START keyword is a subscription change
    /// on SMS, or WhatsApp for `whatsapp:` senders.
    public static func twilioInbound(_ form: [String: String]) -> [CallbackEvent] {
        guard let from = form["From"], let body = form["Body"], let unsubscribe = keyword(body) else { return [] }
        let whatsapp = from.hasPrefix("whatsapp:")
        let channel: Channel = whatsapp ? .whatsapp : .sms
        let address = whatsapp ? String(from.dropFirst("whatsapp:".count)) : from
        return [CallbackEvent(.address(channel, address), .subscription(channel, unsubscribe: unsubscribe))]
    }

    /// WhatsApp Cloud API webhook: `entry[].changes[].value.statuses[]` (`id`, `status`,
    /// `timestamp`, `biz_opaque_callback_data`, `errors[].code`) and `value.messages[]` (a STOP reply).
    public static func whatsApp(_ body: [String: Any]) -> [CallbackEvent] {
        var events: [CallbackEvent] = []
        for entry in body["entry"] as? [[String: Any]] ?? [] {
            for change in entry["changes"] as? [[String: Any]] ?? [] {
                guard let value = change["value"] as? [String: Any] else { continue }
                for status in value["statuses"] as? [[String: Any]] ?? [] {
                    let target: CallbackEvent.Target
                    if let id = status["biz_opaque_callback_data"] as? String, !id.isEmpty { target = .message(id) }
                    else if let wamid = status["id"] as? String { target = .reference(provider: "whatsapp_cloud", wamid) }
                    else { continue }
                    let outcome: DeliveryReceipt.Outcome
                    switch status["status"] as? String {
                    case "sent": outcome = .sent
                    case "delivered": outcome = .delivered
                    case "read": outcome = .read
                    case "failed": outcome = .failed
                    default: continue
                    }
                    let code = ((status["errors"] as? [[String: Any]])?.first?["code"]).map { "\($0)" }
                    events.append(CallbackEvent(target, .status(outcome), at: unixSeconds(status["timestamp"]),
                                                detail: outcome == .failed ? "whatsapp \(code ?? "failed")" : nil))
                }
                for message in value["messages"] as? [[String: Any]] ?? [] {
                    guard let from = message["from"] as? String else { continue }
                    let text = (message["text"] as? [String: Any])?["body"] as? String
                        ?? (message["button"] as? [String: Any])?["text"] as? String ?? ""
                    if let unsubscribe = keyword(text) {
                        events.append(CallbackEvent(.address(.whatsapp, "+" + from.filter(\.isNumber)), .subscription(.whatsapp, unsubscribe: unsubscribe),
                                                    at: unixSeconds(message["timestamp"])))
                    }
                }
            }
        }
        return events
    }

    /// SendGrid event webhook: an array of events with `event`, `timestamp` and our custom argument
    /// `waymark_message_id`. `delivered`; `open` → read; `click`; `bounce`/`dropped` → failed;
    /// `unsubscribe`, `group_unsubscribe`, `spamreport` → unsubscribed (and e-mail consent withdrawn).
    public static func sendGrid(_ events: [[String: Any]]) -> [CallbackEvent] {
        events.compactMap { event in
            guard let id = event["waymark_message_id"] as? String, let type = event["event"] as? String else { return nil }
            let outcome: DeliveryReceipt.Outcome
            switch type {
            case "delivered": outcome = .delivered
            case "open": outcome = .read
            case "click": outcome = .clicked
            case "bounce", "dropped": outcome = .failed
            case "unsubscribe", "group_unsubscribe", "spamreport": outcome = .unsubscribed
            default: return nil
            }
            let detail = outcome == .failed ? "sendgrid \(type)" + ((event["status"] as? String).map { " \($0)" } ?? "") : nil
            return CallbackEvent(.message(id), .status(outcome), at: unixSeconds(event["timestamp"]), detail: detail)
        }
    }

    /// Viber callback: `event` (`delivered`, `seen`, `failed`, `unsubscribed`, `subscribed`), `timestamp`
    /// (ms), `message_token` (a 64-bit integer: read from the raw bytes), `user_id`.
    public static func viber(_ body: [String: Any], raw: [UInt8]) -> [CallbackEvent] {
        let at = (body["timestamp"] as? NSNumber).map { Timestamp(milliseconds: $0.int64Value) }
        switch body["event"] as? String {
        case "delivered", "seen", "failed":
            guard let token = integerField("message_token", in: raw) else { return [] }
            let outcome: DeliveryReceipt.Outcome = body["event"] as? String == "delivered" ? .delivered
                : body["event"] as? String == "seen" ? .read : .failed
            return [CallbackEvent(.reference(provider: "viber", token), .status(outcome), at: at,
                                  detail: outcome == .failed ? "viber failed" : nil)]
        case "unsubscribed", "subscribed":
            let user = body["user_id"] as? String ?? ((body["user"] as? [String: Any])?["id"] as? String)
            guard let user else { return [] }
            return [CallbackEvent(.address(.viber, user), .subscription(.viber, unsubscribe: body["event"] as? String == "unsubscribed"), at: at)]
        default: return []
        }
    }

    /// Google RBM event (the decoded `message.data`): `eventType` `DELIVERED`/`READ` with `messageId`
    /// (ours), or a user message whose `text` is a STOP keyword from `senderPhoneNumber`.
    public static func rbm(_ event: [String: Any]) -> [CallbackEvent] {
        let at = (event["sendTime"] as? String).flatMap { try? Timestamp.parseRFC3339($0).get() }
        if let type = event["eventType"] as? String, let id = event["messageId"] as? String {
            switch type {
            case "DELIVERED": return [CallbackEvent(.message(id), .status(.delivered), at: at)]
            case "READ": return [CallbackEvent(.message(id), .status(.read), at: at)]
            default: return []
            }
        }
        if let text = event["text"] as? String, let phone = event["senderPhoneNumber"] as? String, let unsubscribe = keyword(text) {
            return [CallbackEvent(.address(.rcs, phone), .subscription(.rcs, unsubscribe: unsubscribe), at: at)]
        }
        return []
    }

    /// Waymark's generic receipt (webhook providers, apps reporting opens and clicks of push
    /// messages): one object or an array of `{"message_id", "status", "at"?, "detail"?}` with `status`
    /// one of sent, delivered, read, failed, clicked, unsubscribed.
    public static func waymark(_ body: Any) -> [CallbackEvent] {
        let items = (body as? [[String: Any]]) ?? ((body as? [String: Any]).map { [$0] } ?? [])
        return items.compactMap { item in
            guard let id = item["message_id"] as? String, let status = item["status"] as? String,
                  let outcome = DeliveryReceipt.Outcome(rawValue: "message_" + status) else { return nil }
            let at = (item["at"] as? String).flatMap { try? Timestamp.parseRFC3339($0).get() }
            return CallbackEvent(.message(id), .status(outcome), at: at, detail: item["detail"] as? String)
        }
    }

    static func unixSeconds(_ value: Any?) -> Timestamp? {
        if let text = value as? String, let seconds = Int64(text) { return Timestamp(milliseconds: seconds * 1000) }
        if let number = value as? NSNumber { return Timestamp(milliseconds: number.int64Value * 1000) }
        return nil
    }

    /// The digits of an integer field in raw JSON (`"message_token":5098034272017990000`), without the
    /// precision a Double would lose.
    static func integerField(_ name: String, in raw: [UInt8]) -> String? {
        let text = String(decoding: raw, as: UTF8.self)
        guard let range = text.range(of: "\"\(name)\"") else { return nil }
        var rest = text[range.upperBound...].drop { $0 == " " || $0 == ":" || $0 == "\t" || $0 == "\n" }
        if rest.first == "\"" { rest = rest.dropFirst() }
        let digits = rest.prefix { $0.isNumber }
        return digits.isEmpty ? nil : String(digits)
    }
}
