import Foundation
import WaymarkConfig
import WaymarkEngine
import WaymarkWire

/// SendGrid v3 mail send (type `sendgrid`, e-mail).
///
/// POSTs `{"personalizations":[{"to":[{"email"}],"custom_args":{"waymark_message_id":<id>}}],
/// "from":{"email","name"?},"subject","content":[text/plain, text/html?]}` to
/// `{base_url}/v3/mail/send` with `Authorization: Bearer <api_key>`. The subject is the rendered
/// subject, else the template name. `custom_args` come back on every event webhook, which is how
/// receipts find our message id.
///
/// Answers: 202 accepted (the `X-Message-Id` header is the reference); 429 throttled
/// (`Retry-After`); 5xx transient; other 4xx (400 bad request, 401/403 key, 413 too large)
/// permanent as `sendgrid <status>: <first errors[].message>`.
public final class SendGridProvider: MessageProvider {
    public let name = "sendgrid"
    private let http: ProviderHTTP
    private let url: String
    private let authorization: String
    private let from: String
    private let fromName: String?

    public init(apiKey: String, from: String, fromName: String? = nil, baseURL: String? = nil, timeout: Duration, maxConnections: Int = 8) throws {
        guard !apiKey.isEmpty, !from.isEmpty else { throw ProviderError(message: "sendgrid needs api_key and from") }
        url = PlainText.baseURL(baseURL, default: "https://api.sendgrid.com") + "/v3/mail/send"
        authorization = "Bearer \(apiKey)"
        self.from = from
        self.fromName = fromName?.isEmpty == false ? fromName : nil
        http = ProviderHTTP(timeout: timeout, maxConnections: maxConnections)
    }

    /// From `sender.providers.<channel>` settings of type `sendgrid`.
    public convenience init(settings: ProviderSettings, timeout: Duration, maxConnections: Int) throws {
        try self.init(apiKey: settings.secrets["api_key"] ?? "", from: settings.option("from"), fromName: settings.options["from_name"],
                      baseURL: settings.options["base_url"], timeout: timeout, maxConnections: maxConnections)
    }

    /// SendGrid documents no per-second limit for mail send (its per-endpoint API rate limits leave
    /// mail send out; volume is bounded by the account's plan), so this is a generous default of
    /// 600/s, burst 100, that only keeps a sender from flooding one account; set `rate_per_second`
    /// to match the plan.
    public var defaultRate: (perSecond: Double, burst: Int)? { (600, 100) }

    public func deliver(_ request: ProviderRequest) async -> ProviderResult {
        var w = JSONWriter(capacity: 1024)
        w.beginObject()
        w.key("personalizations"); w.beginArray(); w.beginObject()
        w.key("to"); w.beginArray(); w.beginObject(); w.key("email"); w.string(request.address); w.endObject(); w.endArray()
        w.key("custom_args"); w.beginObject(); w.key("waymark_message_id"); w.string(request.idempotencyKey); w.endObject()
        w.endObject(); w.endArray()
        w.key("from"); w.beginObject()
        w.key("email"); w.string(from)
        if let fromName { w.key("name"); w.string(fromName) }
        w.endObject()
        w.key("subject"); w.string(request.rendered?.subject ?? request.message.template)
        w.key("content"); w.beginArray()
        // text/plain must come first when both parts are sent.
        w.beginObject(); w.key("type"); w.string("text/plain"); w.key("value"); w.string(PlainText.body(request)); w.endObject()
        if let html = request.rendered?.html {
            w.beginObject(); w.key("type"); w.string("text/html"); w.key("value"); w.string(html); w.endObject()
        }
        w.endArray()
        w.endObject()
        let headers = [("Authorization", authorization), ("Content-Type", "application/json")]
        switch await http.send(.POST, url, headers: headers, body: w.bytes) {
        case .failure(let failure): return failure.result
        case .success(let response): return Self.outcome(response)
        }
    }

    static func outcome(_ response: ProviderHTTP.Response) -> ProviderResult {
        if (200..<300).contains(response.status) { return .accepted(reference: response.headers.first(name: "X-Message-Id")) }
        let errors = response.json["errors"] as? [[String: Any]]
        let message = PlainText.redacted(errors?.first?["message"] as? String ?? "")
        if let common = ProviderHTTP.commonOutcome(response, provider: "sendgrid", detail: message) { return common }
        return .permanentFailure(reason: "sendgrid \(response.status): \(message)")
    }

    public func shutdown() async { await http.shutdown() }
}
