import Foundation
import WaymarkConfig
import WaymarkEngine
import WaymarkWire

/// Viber REST API for bots and business accounts (type `viber`).
///
/// POSTs `{"receiver","min_api_version":1,"sender":{"name","avatar"?},"tracking_data":<message id>,
/// "type":"text","text"}` to `{base_url}/pa/send_message` with `X-Viber-Auth-Token`. Delivery callbacks
/// carry the `message_token`; `tracking_data` travels with the message.
///
/// Viber answers HTTP 200 with a `status`: 0 accepted (`message_token`, a 64-bit integer read from
/// the raw bytes so no digit is lost, is the reference); 6 receiverNotSubscribed unsubscribed;
/// 12 tooManyRequests throttled; 5 receiverNotRegistered and the others (1 invalidUrl, 2
/// invalidAuthToken, 3 badData, …) permanent as `viber <status>: <status_message>`. HTTP 5xx is
/// transient and 429 throttled.
public final class ViberProvider: MessageProvider {
    public let name = "viber"
    private let http: ProviderHTTP
    private let url: String
    private let authToken: String
    private let senderName: String
    private let senderAvatar: String?

    public init(authToken: String, senderName: String, senderAvatar: String? = nil, baseURL: String? = nil,
                timeout: Duration, maxConnections: Int = 8) throws {
        guard !authToken.isEmpty, !senderName.isEmpty else { throw ProviderError(message: "viber needs auth_token and sender_name") }
        url = PlainText.baseURL(baseURL, default: "https://chatapi.viber.com") + "/pa/send_message"
        self.authToken = authToken
        self.senderName = senderName
        self.senderAvatar = senderAvatar?.isEmpty == false ? senderAvatar : nil
        http = ProviderHTTP(timeout: timeout, maxConnections: maxConnections)
    }

    /// From `sender.providers.<channel>` settings of type `viber`.
    public convenience init(settings: ProviderSettings, timeout: Duration, maxConnections: Int) throws {
        try self.init(authToken: settings.secrets["auth_token"] ?? "", senderName: settings.option("sender_name"),
                      senderAvatar: settings.options["sender_avatar"], baseURL: settings.options["base_url"],
                      timeout: timeout, maxConnections: maxConnections)
    }

    /// An assumption: 100 messages/s, burst 100. Viber publishes no per-second figure for
    /// send_message (it answers status 12 when a sender goes too fast).
    public var defaultRate: (perSecond: Double, burst: Int)? { (100, 100) }

    public func deliver(_ request: ProviderRequest) async -> ProviderResult {
        var w = JSONWriter(capacity: 512)
        w.beginObject()
        w.key("receiver"); w.string(request.address)
        w.key("min_api_version"); w.int(1)
        w.key("sender"); w.beginObject()
        w.key("name"); w.string(senderName)
        if let senderAvatar { w.key("avatar"); w.string(senderAvatar) }
        w.endObject()
        w.key("tracking_data"); w.string(request.idempotencyKey)
        w.key("type"); w.string("text")
        w.key("text"); w.string(PlainText.body(request))
        w.endObject()
        let headers = [("X-Viber-Auth-Token", authToken), ("Content-Type", "application/json")]
        switch await http.send(.POST, url, headers: headers, body: w.bytes) {
        case .failure(let failure): return failure.result
        case .success(let response): return Self.outcome(response)
        }
    }

    static func outcome(_ response: ProviderHTTP.Response) -> ProviderResult {
        if let common = ProviderHTTP.commonOutcome(response, provider: "viber") { return common }
        guard (200..<300).contains(response.status) else { return .permanentFailure(reason: "viber HTTP \(response.status)") }
        let json = response.json
        guard let status = PlainText.int(json["status"]) else { return .transientFailure(reason: "viber: unreadable answer") }
        let reason = "viber \(status): \(PlainText.redacted(json["status_message"] as? String ?? ""))"
        switch status {
        case 0: return .accepted(reference: integerToken(in: response.body, key: "message_token"))
        case 6: return .recipientUnsubscribed(reason: reason)
        case 12: return .throttled(reason: reason, retryAfterMilliseconds: response.retryAfterMilliseconds)
        default: return .permanentFailure(reason: reason)
        }
    }

    /// The integer value of top-level-looking `"<key>": 123…` in raw JSON bytes, as written (a
    /// JSON parser hands numbers over as Double, which keeps 15–17 digits of a 19-digit token).
    static func integerToken(in body: [UInt8], key: String) -> String? {
        let needle = Array("\"\(key)\"".utf8)
        guard needle.count <= body.count else { return nil }
        var i = 0
        while i + needle.count <= body.count {
            if body[i] == needle[0], Array(body[i..<(i + needle.count)]) == needle {
                var j = i + needle.count
                while j < body.count, [0x20, 0x09, 0x0A, 0x0D].contains(body[j]) { j += 1 }
                guard j < body.count, body[j] == UInt8(ascii: ":") else { i += 1; continue }
                j += 1
                while j < body.count, [0x20, 0x09, 0x0A, 0x0D].contains(body[j]) { j += 1 }
                var k = j
                if k < body.count, body[k] == UInt8(ascii: "-") { k += 1 }
                // A token sent as a string also works.
                let quoted = k < body.count && body[k] == UInt8(ascii: "\"")
                if quoted { j += 1; k += 1 }
                let start = k
                while k < body.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(body[k]) { k += 1 }
                guard k > start else { return nil }
                return String(decoding: body[j..<k], as: UTF8.self)
            }
            i += 1
        }
        return nil
    }

    public func shutdown() async { await http.shutdown() }
}
