import Foundation
import WaymarkConfig
import WaymarkEngine
import WaymarkWire

/// Meta WhatsApp Cloud API (type `whatsapp_cloud`).
///
/// POSTs to `{base_url}/{api_version}/{phone_number_id}/messages` with `Authorization: Bearer
/// <access_token>`: `{"messaging_product":"whatsapp","recipient_type":"individual","to":<digits>,
/// "biz_opaque_callback_data":<message id>, …}` and either an approved template (when the rendered
/// message names a ``ProviderTemplate``; outside the 24-hour customer-service window only templates
/// are delivered) or a session text. The status webhooks echo `biz_opaque_callback_data`, which is
/// how receipts find our message id.
///
/// Answers: 200 `{"messages":[{"id":"wamid…"}]}` accepted (the wamid is the reference). Errors are
/// `{"error":{"code", "message", …}}`: 130429, 131048, 131056, 4, 80007 throttled; 131000, 131016, 1,
/// 2 and HTTP 5xx transient; 131050 (the user stopped marketing messages) unsubscribed; everything
/// else (131026 undeliverable, 131047 re-engagement window, 132000/132001 template problems, 100
/// invalid parameter, 190 bad token, …) permanent as `whatsapp <code>: <message>`.
public final class WhatsAppCloudProvider: MessageProvider {
    public let name = "whatsapp_cloud"
    private let http: ProviderHTTP
    private let url: String
    private let authorization: String

    public init(phoneNumberID: String, accessToken: String, apiVersion: String? = nil, baseURL: String? = nil,
                timeout: Duration, maxConnections: Int = 8) throws {
        guard !phoneNumberID.isEmpty, !accessToken.isEmpty else { throw ProviderError(message: "whatsapp_cloud needs phone_number_id and access_token") }
        let base = PlainText.baseURL(baseURL, default: "https://graph.facebook.com")
        url = "\(base)/\(apiVersion ?? "v21.0")/\(FormEncoding.escape(phoneNumberID))/messages"
        authorization = "Bearer \(accessToken)"
        http = ProviderHTTP(timeout: timeout, maxConnections: maxConnections)
    }

    /// From `sender.providers.<channel>` settings of type `whatsapp_cloud`.
    public convenience init(settings: ProviderSettings, timeout: Duration, maxConnections: Int) throws {
        try self.init(phoneNumberID: settings.option("phone_number_id"), accessToken: settings.secrets["access_token"] ?? "",
                      apiVersion: settings.options["api_version"], baseURL: settings.options["base_url"],
                      timeout: timeout, maxConnections: maxConnections)
    }

    /// 80 messages/s per business phone number: the Cloud API's default throughput (Meta raises it
    /// to 1,000/s on request).
    public var defaultRate: (perSecond: Double, burst: Int)? { (80, 80) }

    static let throttledCodes: Set<Int> = [130429, 131048, 131056, 4, 80007]
    static let transientCodes: Set<Int> = [131000, 131016, 1, 2]
    static let unsubscribedCodes: Set<Int> = [131050]

    public func deliver(_ request: ProviderRequest) async -> ProviderResult {
        var w = JSONWriter(capacity: 512)
        w.beginObject()
        w.key("messaging_product"); w.string("whatsapp")
        w.key("recipient_type"); w.string("individual")
        w.key("to"); w.string(PlainText.digits(request.address))
        w.key("biz_opaque_callback_data"); w.string(request.idempotencyKey)
        if let template = request.rendered?.providerTemplate {
            w.key("type"); w.string("template")
            w.key("template"); w.beginObject()
            w.key("name"); w.string(template.name)
            w.key("language"); w.beginObject(); w.key("code"); w.string(template.language); w.endObject()
            if !template.parameters.isEmpty {
                w.key("components"); w.beginArray()
                w.beginObject()
                w.key("type"); w.string("body")
                w.key("parameters"); w.beginArray()
                for parameter in template.parameters {
                    w.beginObject(); w.key("type"); w.string("text"); w.key("text"); w.string(parameter); w.endObject()
                }
                w.endArray()
                w.endObject()
                w.endArray()
            }
            w.endObject()
        } else {
            w.key("type"); w.string("text")
            w.key("text"); w.beginObject(); w.key("body"); w.string(PlainText.body(request)); w.endObject()
        }
        w.endObject()
        let headers = [("Authorization", authorization), ("Content-Type", "application/json")]
        switch await http.send(.POST, url, headers: headers, body: w.bytes) {
        case .failure(let failure): return failure.result
        case .success(let response): return Self.outcome(response)
        }
    }

    static func outcome(_ response: ProviderHTTP.Response) -> ProviderResult {
        let json = response.json
        if (200..<300).contains(response.status) {
            let messages = json["messages"] as? [[String: Any]]
            return .accepted(reference: messages?.first?["id"] as? String)
        }
        let error = json["error"] as? [String: Any] ?? [:]
        guard let code = PlainText.int(error["code"]) else {
            return ProviderHTTP.commonOutcome(response, provider: "whatsapp") ?? .permanentFailure(reason: "whatsapp HTTP \(response.status)")
        }
        let reason = "whatsapp \(code): \(PlainText.redacted(error["message"] as? String ?? ""))"
        if throttledCodes.contains(code) { return .throttled(reason: reason, retryAfterMilliseconds: response.retryAfterMilliseconds) }
        if transientCodes.contains(code) { return .transientFailure(reason: reason) }
        if unsubscribedCodes.contains(code) { return .recipientUnsubscribed(reason: reason) }
        if response.status == 429 { return .throttled(reason: reason, retryAfterMilliseconds: response.retryAfterMilliseconds) }
        if response.status >= 500 { return .transientFailure(reason: reason) }
        return .permanentFailure(reason: reason)
    }

    public func shutdown() async { await http.shutdown() }
}
