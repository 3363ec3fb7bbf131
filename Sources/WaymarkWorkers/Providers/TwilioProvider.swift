import Foundation
import WaymarkConfig
import WaymarkEngine

/// Twilio Programmable Messaging (type `twilio`): SMS, and WhatsApp through Twilio.
///
/// POSTs `To`, `From` (or `MessagingServiceSid`), `Body` and `StatusCallback` form-encoded to
/// `{base_url}/2010-04-01/Accounts/{account_sid}/Messages.json` with HTTP basic auth
/// `account_sid:auth_token`. On the `whatsapp` channel `To` and `From` carry the `whatsapp:` prefix
/// (`from` is configured as the plain number). `StatusCallback` is `status_callback_url` with
/// `wm=<message id>` added to its query: the receipts endpoint reads our message id from there.
///
/// Answers: 201 `{"sid": …}` accepted (the SID is the reference); 429 or code 20429 throttled
/// (`Retry-After`); 5xx transient; code 21610 (the recipient replied STOP) unsubscribed; other 4xx
/// permanent with `twilio <code>: <message>` (21211 invalid To, 21614 not a mobile number, 63016
/// WhatsApp outside the 24-hour window, 21408 region not enabled, 20003 bad credentials).
public final class TwilioProvider: MessageProvider {
    public let name = "twilio"
    private let http: ProviderHTTP
    private let url: String
    private let authorization: String
    private let from: String?
    private let messagingServiceSID: String?
    private let statusCallbackURL: String?

    /// - Parameters:
    ///   - from: the sending number or sender id (used when `messagingServiceSID` is `nil`).
    ///   - messagingServiceSID: a Messaging Service that picks the sender (takes precedence over `from`).
    ///   - statusCallbackURL: where Twilio posts delivery receipts (`nil`: no receipts).
    ///   - baseURL: `https://api.twilio.com` unless testing.
    public init(accountSID: String, authToken: String, from: String?, messagingServiceSID: String? = nil,
                statusCallbackURL: String? = nil, baseURL: String? = nil, timeout: Duration, maxConnections: Int = 8) throws {
        guard !accountSID.isEmpty, !authToken.isEmpty else { throw ProviderError(message: "twilio needs account_sid and auth_token") }
        guard from?.isEmpty == false || messagingServiceSID?.isEmpty == false else {
            throw ProviderError(message: "twilio needs from or messaging_service_sid")
        }
        let base = PlainText.baseURL(baseURL, default: "https://api.twilio.com")
        url = "\(base)/2010-04-01/Accounts/\(FormEncoding.escape(accountSID))/Messages.json"
        authorization = "Basic " + Data("\(accountSID):\(authToken)".utf8).base64EncodedString()
        self.from = from?.isEmpty == false ? from : nil
        self.messagingServiceSID = messagingServiceSID?.isEmpty == false ? messagingServiceSID : nil
        self.statusCallbackURL = statusCallbackURL
        http = ProviderHTTP(timeout: timeout, maxConnections: maxConnections)
    }

    /// From `sender.providers.<channel>` settings of type `twilio`.
    public convenience init(settings: ProviderSettings, timeout: Duration, maxConnections: Int) throws {
        try self.init(accountSID: settings.option("account_sid"), authToken: settings.secrets["auth_token"] ?? "",
                      from: settings.options["from"], messagingServiceSID: settings.options["messaging_service_sid"],
                      statusCallbackURL: settings.options["status_callback_url"], baseURL: settings.options["base_url"],
                      timeout: timeout, maxConnections: maxConnections)
    }

    /// Twilio queues per sender: a long-code number (10+ digits) sends 1 message/s (Twilio's
    /// documented default for US/CA long codes, and what carriers tolerate before filtering), while a
    /// short code (≤ 6 digits) and a Messaging Service (which spreads over its number pool and queues
    /// at Twilio) take 100/s. Other senders (alphanumeric ids) get the cautious 1/s.
    public var defaultRate: (perSecond: Double, burst: Int)? {
        if messagingServiceSID != nil { return (100, 100) }
        let digits = PlainText.digits(from ?? "")
        if let from, digits.count == from.filter({ $0 != "+" && $0 != " " }).count, digits.count <= 6, !digits.isEmpty { return (100, 100) }
        return (1, 1)
    }

    /// `status_callback_url` with `wm=<message id>` appended to its query.
    static func statusCallback(_ base: String, messageID: String) -> String {
        base + (base.contains("?") ? "&" : "?") + "wm=" + FormEncoding.escape(messageID)
    }

    public func deliver(_ request: ProviderRequest) async -> ProviderResult {
        let whatsapp = request.message.channel == .whatsapp
        func address(_ a: String) -> String { whatsapp && !a.hasPrefix("whatsapp:") ? "whatsapp:" + a : a }
        var form = [("To", address(request.address))]
        if let messagingServiceSID { form.append(("MessagingServiceSid", messagingServiceSID)) } else if let from { form.append(("From", address(from))) }
        form.append(("Body", PlainText.body(request)))
        if let statusCallbackURL { form.append(("StatusCallback", Self.statusCallback(statusCallbackURL, messageID: request.idempotencyKey))) }
        let headers = [("Authorization", authorization), ("Content-Type", "application/x-www-form-urlencoded"), ("Accept", "application/json")]
        switch await http.send(.POST, url, headers: headers, body: Array(FormEncoding.encode(form).utf8)) {
        case .failure(let failure): return failure.result
        case .success(let response): return Self.outcome(response)
        }
    }

    static func outcome(_ response: ProviderHTTP.Response) -> ProviderResult {
        let json = response.json
        if (200..<300).contains(response.status) { return .accepted(reference: json["sid"] as? String) }
        let code = PlainText.int(json["code"])
        let message = PlainText.redacted(json["message"] as? String ?? "")
        let detail = code.map { "twilio \($0): \(message)" } ?? "twilio HTTP \(response.status)"
        if code == 20429 || response.status == 429 {
            return .throttled(reason: detail, retryAfterMilliseconds: response.retryAfterMilliseconds)
        }
        if code == 21610 { return .recipientUnsubscribed(reason: detail) }
        if let common = ProviderHTTP.commonOutcome(response, provider: "twilio", detail: code.map { "code \($0)" } ?? "") { return common }
        return .permanentFailure(reason: detail)
    }

    public func shutdown() async { await http.shutdown() }
}
