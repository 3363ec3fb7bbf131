import Foundation
import WaymarkConfig
import WaymarkEngine
import WaymarkWire

/// Firebase Cloud Messaging HTTP v1 (type `fcm`, push).
///
/// POSTs `{"message":{"token":<device token>,"notification":{"title","body"},"data":
/// {"waymark_message_id":<id>}}}` to `{base_url}/v1/projects/{project_id}/messages:send` with an
/// OAuth 2 bearer token of the service account (scope `firebase.messaging`).
///
/// Answers: 200 `{"name":"projects/…/messages/…"}` accepted (the name is the reference). Errors
/// carry an `FcmError` `errorCode` in `error.details` (else `error.status` is used): UNREGISTERED,
/// INVALID_ARGUMENT, SENDER_ID_MISMATCH, THIRD_PARTY_AUTH_ERROR and other 4xx permanent as
/// `fcm <errorCode>: <message>`; QUOTA_EXCEEDED / 429 throttled (`Retry-After`); UNAVAILABLE,
/// INTERNAL and 5xx transient. A 401 without an FCM error code (an expired or revoked access token)
/// drops the cached token and retries once with a fresh one.
public final class FCMProvider: MessageProvider {
    public let name = "fcm"
    public static let scope = "https://www.googleapis.com/auth/firebase.messaging"
    private let http: ProviderHTTP
    private let url: String
    private let account: GoogleServiceAccount

    /// - Parameters:
    ///   - serviceAccountJSON: the service account's key file.
    ///   - tokenURL: overrides the key file's `token_uri`.
    public init(projectID: String, serviceAccountJSON: String, baseURL: String? = nil, tokenURL: String? = nil,
                timeout: Duration, maxConnections: Int = 8) throws {
        guard !projectID.isEmpty else { throw ProviderError(message: "fcm needs project_id") }
        url = PlainText.baseURL(baseURL, default: "https://fcm.googleapis.com") + "/v1/projects/\(FormEncoding.escape(projectID))/messages:send"
        let key = try GoogleServiceAccount.Key(json: serviceAccountJSON, provider: "fcm")
        http = ProviderHTTP(timeout: timeout, maxConnections: maxConnections)
        account = GoogleServiceAccount(key: key, scope: Self.scope, tokenURL: tokenURL, provider: "fcm", http: http)
    }

    /// From `sender.providers.<channel>` settings of type `fcm`.
    public convenience init(settings: ProviderSettings, timeout: Duration, maxConnections: Int) throws {
        try self.init(projectID: settings.option("project_id"), serviceAccountJSON: settings.secrets["service_account"] ?? "",
                      baseURL: settings.options["base_url"], tokenURL: settings.options["token_url"],
                      timeout: timeout, maxConnections: maxConnections)
    }

    /// 600 messages/s: FCM's documented default quota of 600,000 messages per minute per project
    /// (which it enforces as a per-minute bucket, so the burst is a full second's worth).
    public var defaultRate: (perSecond: Double, burst: Int)? { (600, 600) }

    public func deliver(_ request: ProviderRequest) async -> ProviderResult {
        var w = JSONWriter(capacity: 512)
        w.beginObject(); w.key("message"); w.beginObject()
        w.key("token"); w.string(request.address)
        w.key("notification"); w.beginObject()
        if let title = request.rendered?.subject { w.key("title"); w.string(title) }
        w.key("body"); w.string(PlainText.body(request))
        w.endObject()
        w.key("data"); w.beginObject(); w.key("waymark_message_id"); w.string(request.idempotencyKey); w.endObject()
        w.endObject(); w.endObject()
        return await GoogleAPICall.send(http: http, account: account, url: url, body: w.bytes, outcome: Self.outcome)
    }

    static func outcome(_ response: ProviderHTTP.Response) -> GoogleAPICall.Outcome {
        let json = response.json
        if (200..<300).contains(response.status) { return .done(.accepted(reference: json["name"] as? String)) }
        let error = GoogleAPICall.ErrorBody(json)
        let code = error.fcmErrorCode ?? error.status ?? "HTTP \(response.status)"
        let reason = "fcm \(code): \(PlainText.redacted(error.message))"
        if response.status == 401 && error.fcmErrorCode == nil { return .unauthorized(reason) }
        switch code {
        case "QUOTA_EXCEEDED": return .done(.throttled(reason: reason, retryAfterMilliseconds: response.retryAfterMilliseconds))
        case "UNAVAILABLE", "INTERNAL": return .done(.transientFailure(reason: reason))
        case "UNREGISTERED", "INVALID_ARGUMENT", "SENDER_ID_MISMATCH", "THIRD_PARTY_AUTH_ERROR": return .done(.permanentFailure(reason: reason))
        default: break
        }
        if response.status == 429 { return .done(.throttled(reason: reason, retryAfterMilliseconds: response.retryAfterMilliseconds)) }
        if [408, 425].contains(response.status) || response.status >= 500 { return .done(.transientFailure(reason: reason)) }
        return .done(.permanentFailure(reason: reason))
    }

    public func shutdown() async { await http.shutdown() }
}

/// A call to a Google API with a service account's bearer token (FCM, RBM).
enum GoogleAPICall {
    /// How the adapter read an answer.
    enum Outcome {
        case done(ProviderResult)
        /// The access token was refused (401): fetch a fresh one and try once more.
        case unauthorized(String)
    }

    /// The `{"error":{"code","message","status","details"}}` body Google APIs answer with.
    struct ErrorBody {
        var message: String
        var status: String?
        var fcmErrorCode: String?

        init(_ json: [String: Any]) {
            let error = json["error"] as? [String: Any] ?? [:]
            message = error["message"] as? String ?? ""
            status = error["status"] as? String
            let details = error["details"] as? [[String: Any]] ?? []
            fcmErrorCode = details.first { ($0["@type"] as? String)?.hasSuffix("google.firebase.fcm.v1.FcmError") == true }?["errorCode"] as? String
        }
    }

    static func send(http: ProviderHTTP, account: GoogleServiceAccount, url: String, body: [UInt8],
                     outcome: (ProviderHTTP.Response) -> Outcome) async -> ProviderResult {
        var lastReason = ""
        for _ in 0..<2 {
            let token: String
            switch await account.accessToken() {
            case .failure(let failure): return failure.result
            case .success(let value): token = value
            }
            let headers = [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")]
            switch await http.send(.POST, url, headers: headers, body: body) {
            case .failure(let failure): return failure.result
            case .success(let response):
                switch outcome(response) {
                case .done(let result): return result
                case .unauthorized(let reason):
                    account.invalidate(token)
                    lastReason = reason
                }
            }
        }
        // Refused twice in a row, the second time with a token minted a moment ago: the service
        // account lacks access. Retrying will not help.
        return .permanentFailure(reason: lastReason)
    }
}
