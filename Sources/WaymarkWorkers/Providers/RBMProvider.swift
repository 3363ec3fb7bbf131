import Foundation
import WaymarkConfig
import WaymarkEngine
import WaymarkWire

/// Google RCS Business Messaging (type `rbm`, RCS).
///
/// POSTs `{"contentMessage":{"text":…}}` to `{base_url}/v1/phones/{E.164, percent-encoded}/agentMessages
/// ?messageId=<message id>&agentId=<agent_id>` with an OAuth 2 bearer token of the service account
/// (scope `rcsbusinessmessaging`). RBM keys messages by `messageId`, so a resend after a lost answer is
/// refused with 409 ALREADY_EXISTS: that means the first call got through, and counts as accepted.
///
/// Answers: 200 accepted (the reference is our message id, which RBM's receipts echo); 409 accepted;
/// 404 NOT_FOUND permanent (`rbm NOT_FOUND: not RCS-capable`, so the sender falls back, usually to
/// SMS); 429 RESOURCE_EXHAUSTED throttled; 5xx transient; other 4xx permanent as `rbm <status>:
/// <message>`. A 401 drops the cached access token and retries once with a fresh one.
public final class RBMProvider: MessageProvider {
    public let name = "rbm"
    public static let scope = "https://www.googleapis.com/auth/rcsbusinessmessaging"
    private let http: ProviderHTTP
    private let base: String
    private let agentID: String
    private let account: GoogleServiceAccount

    public init(agentID: String, serviceAccountJSON: String, baseURL: String? = nil, tokenURL: String? = nil,
                timeout: Duration, maxConnections: Int = 8) throws {
        guard !agentID.isEmpty else { throw ProviderError(message: "rbm needs agent_id") }
        base = PlainText.baseURL(baseURL, default: "https://rcsbusinessmessaging.googleapis.com")
        self.agentID = agentID
        let key = try GoogleServiceAccount.Key(json: serviceAccountJSON, provider: "rbm")
        http = ProviderHTTP(timeout: timeout, maxConnections: maxConnections)
        account = GoogleServiceAccount(key: key, scope: Self.scope, tokenURL: tokenURL, provider: "rbm", http: http)
    }

    /// From `sender.providers.<channel>` settings of type `rbm`.
    public convenience init(settings: ProviderSettings, timeout: Duration, maxConnections: Int) throws {
        try self.init(agentID: settings.option("agent_id"), serviceAccountJSON: settings.secrets["service_account"] ?? "",
                      baseURL: settings.options["base_url"], tokenURL: settings.options["token_url"],
                      timeout: timeout, maxConnections: maxConnections)
    }

    /// An assumption: 300 messages/s, burst 300. RBM quotas are set per agent (and per carrier
    /// launch) in the Business Communications console and vary; set `rate_per_second` to the agent's.
    public var defaultRate: (perSecond: Double, burst: Int)? { (300, 300) }

    public func deliver(_ request: ProviderRequest) async -> ProviderResult {
        let phone = "+" + PlainText.digits(request.address)
        let url = "\(base)/v1/phones/\(FormEncoding.escape(phone))/agentMessages?messageId=\(FormEncoding.escape(request.idempotencyKey))"
            + "&agentId=\(FormEncoding.escape(agentID))"
        var w = JSONWriter(capacity: 256)
        w.beginObject(); w.key("contentMessage"); w.beginObject()
        w.key("text"); w.string(PlainText.body(request))
        w.endObject(); w.endObject()
        let reference = request.idempotencyKey
        return await GoogleAPICall.send(http: http, account: account, url: url, body: w.bytes) { Self.outcome($0, reference: reference) }
    }

    static func outcome(_ response: ProviderHTTP.Response, reference: String) -> GoogleAPICall.Outcome {
        if (200..<300).contains(response.status) || response.status == 409 { return .done(.accepted(reference: reference)) }
        let error = GoogleAPICall.ErrorBody(response.json)
        let status = error.status ?? "HTTP \(response.status)"
        let reason = "rbm \(status): \(PlainText.redacted(error.message))"
        switch response.status {
        case 401: return .unauthorized(reason)
        case 404: return .done(.permanentFailure(reason: "rbm NOT_FOUND: not RCS-capable"))
        case 429: return .done(.throttled(reason: reason, retryAfterMilliseconds: response.retryAfterMilliseconds))
        case 408, 425, 500...599: return .done(.transientFailure(reason: reason))
        default: return .done(.permanentFailure(reason: reason))
        }
    }

    public func shutdown() async { await http.shutdown() }
}
