import _CryptoExtras
import Crypto
import Foundation
import Hummingbird
import Logging
import Synchronization

/// Fakes of the messaging providers' send APIs for adapter tests: one Hummingbird application on a
/// free loopback port that answers like Twilio, the WhatsApp Cloud (Graph) API, SendGrid, FCM HTTP
/// v1, RCS Business Messaging, Viber and Google's OAuth 2 token endpoint, routed by path:
///
/// | path | API |
/// |---|---|
/// | `POST /2010-04-01/Accounts/{sid}/Messages.json` | Twilio |
/// | `POST /{version}/{phone_number_id}/messages` | WhatsApp Cloud |
/// | `POST /v3/mail/send` | SendGrid |
/// | `POST /v1/projects/{project}/messages:send` | FCM |
/// | `POST /v1/phones/{E.164}/agentMessages?messageId=&agentId=` | RBM |
/// | `POST /pa/send_message` | Viber |
/// | `POST /token` | Google OAuth 2 (JWT bearer grant) |
///
/// Each route checks what the real API checks (credentials, required fields) and answers with that
/// API's documented error body when something is wrong. The token endpoint verifies the assertion's
/// RS256 signature against the public key of a service account made by ``makeServiceAccount(clientEmail:trusted:)``
/// and its `iss`/`aud`/`scope`/`exp`, and hands out access tokens that the FCM and RBM routes require
/// (with the right scope). Every request is recorded, with the reference the fake handed out.
///
/// ```swift
/// let fake = try await FakeProviderAPIs.start()
/// fake.failNext(.twilio, status: 429, body: FakeProviderAPIs.Errors.twilio(code: 20429, message: "Too Many Requests", status: 429),
///               headers: ["Retry-After": "7"])
/// // … point an adapter's base_url at fake.baseURL …
/// #expect(fake.requests(.twilio).count == 1)
/// await fake.shutdown()
/// ```
public final class FakeProviderAPIs: Sendable {
    /// The faked APIs.
    public enum API: String, Sendable, CaseIterable {
        case twilio, whatsapp, sendgrid, fcm, rbm, viber, token
    }

    /// The credentials the fake accepts (tests configure adapters with these, or with wrong ones).
    public struct Credentials: Sendable {
        public var twilioAccountSID = "AC0123456789abcdef0123456789abcdef"
        public var twilioAuthToken = "fake-twilio-auth-token"
        public var whatsappPhoneNumberID = "106540352242922"
        public var whatsappAccessToken = "EAAFakeGraphAccessToken"
        public var sendgridAPIKey = "SG.fake-api-key"
        public var viberAuthToken = "445da6az1s345z78-dazcczb2542zv51a-e0vc5fva17480im9"
        public init() {}
    }

    /// One request as the fake saw it.
    public struct RecordedRequest: Sendable {
        /// The API its path routed to (`nil`: no such route, answered 404).
        public var api: API?
        public var method: String
        /// The path as sent (percent-encoding kept), without the query.
        public var path: String
        /// Query parameters, decoded.
        public var query: [String: String]
        /// Header fields (names lowercased).
        public var headers: [String: String]
        public var body: [UInt8]
        /// The body's fields when it was form-encoded (Twilio, the token endpoint).
        public var form: [String: String]
        /// The status the fake answered.
        public var status: Int
        /// What the fake handed out on success: Twilio SID, wamid, `X-Message-Id`, FCM message name,
        /// RBM message id, Viber message token, or the access token.
        public var reference: String?

        public var bodyText: String { String(decoding: body, as: UTF8.self) }
        /// The body parsed as a JSON object (`[:]` when it is not one).
        public var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:] }
        /// The token of an `Authorization: Bearer` header.
        public var bearerToken: String? {
            guard let value = headers["authorization"], value.hasPrefix("Bearer ") else { return nil }
            return String(value.dropFirst(7))
        }
        /// `user:password` of an `Authorization: Basic` header.
        public var basicCredentials: String? {
            guard let value = headers["authorization"], value.hasPrefix("Basic "),
                  let data = Data(base64Encoded: String(value.dropFirst(6))) else { return nil }
            return String(decoding: data, as: UTF8.self)
        }
        public var accepted: Bool { (200..<300).contains(status) }
    }

    private let core: APICore
    private let task: Task<Void, any Error>

    /// The port the fake listens on.
    public let port: Int
    /// `http://127.0.0.1:<port>`: every adapter's `base_url`.
    public var baseURL: String { "http://127.0.0.1:\(port)" }
    /// The token endpoint (`<baseURL>/token`), the `token_uri` of service accounts the fake makes.
    public var tokenURL: String { baseURL + "/token" }
    /// The credentials the fake accepts.
    public var credentials: Credentials { core.credentials }

    private init(core: APICore, task: Task<Void, any Error>, port: Int) {
        self.core = core; self.task = task; self.port = port
    }

    /// Starts the fake on a free loopback port; returns once it accepts connections.
    public static func start(credentials: Credentials = .init(), logger: Logger? = nil) async throws -> FakeProviderAPIs {
        let router = Router()
        let box = Mutex<APICore?>(nil)
        router.on("/**", method: .post) { request, context in
            guard let core = box.withLock({ $0 }) else { return Response(status: .serviceUnavailable) }
            return try await core.handle(request)
        }
        let (task, port) = try await serveOnFreeLoopbackPort(router, logger: logger, label: "waymark.test.fake-provider-apis")
        let core = APICore(credentials: credentials, baseURL: "http://127.0.0.1:\(port)")
        box.withLock { $0 = core }
        return FakeProviderAPIs(core: core, task: task, port: port)
    }

    // MARK: Behaviour

    /// Answers the next `count` requests to `api` with `status`, `body` and `headers` instead of
    /// handling them (they are still recorded). Use ``Errors`` for the providers' documented bodies;
    /// Viber reports errors with HTTP 200 and a non-zero `status` in the body.
    public func failNext(_ api: API, count: Int = 1, status: Int, body: String, headers: [String: String] = [:]) {
        core.state.withLock { s in
            for _ in 0..<count { s.scripted[api, default: []].append(Scripted(status: status, body: body, headers: headers)) }
        }
    }

    /// Makes every access token handed out so far invalid: FCM and RBM answer 401 UNAUTHENTICATED.
    public func revokeAccessTokens() {
        core.state.withLock { s in s.tokens = s.tokens.mapValues { var t = $0; t.revoked = true; return t } }
    }

    /// Sets the `expires_in` of access tokens handed out from now on (default 3599 s); they are
    /// refused after it.
    public func setAccessTokenLifetime(seconds: Int) {
        core.state.withLock { $0.tokenLifetime = seconds }
    }

    /// A throw-away service-account key file (JSON text, the shape Google issues) with a fresh
    /// 2048-bit RSA key and `token_uri` pointing at this fake.
    /// - Parameter trusted: whether the fake's token endpoint knows the key (`false`: a key the
    ///   provider never issued, or one revoked, which it answers with `invalid_grant`).
    public func makeServiceAccount(clientEmail: String = "waymark-sender@waymark-test.iam.gserviceaccount.com",
                                   trusted: Bool = true) throws -> String {
        let key = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        if trusted { core.state.withLock { $0.serviceAccounts[clientEmail] = key.publicKey } }
        return try Self.serviceAccountJSON(privateKeyPEM: key.pemRepresentation, clientEmail: clientEmail, tokenURI: tokenURL)
    }

    /// A service-account key file around a given PEM key.
    public static func serviceAccountJSON(privateKeyPEM: String, clientEmail: String, tokenURI: String) throws -> String {
        let object: [String: String] = [
            "type": "service_account", "project_id": "waymark-test", "private_key_id": "0123456789abcdef",
            "private_key": privateKeyPEM, "client_email": clientEmail, "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": tokenURI,
        ]
        return String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }

    // MARK: Observations

    /// Every request received, in arrival order.
    public var requests: [RecordedRequest] { core.state.withLock { $0.requests } }

    /// The requests routed to `api`.
    public func requests(_ api: API) -> [RecordedRequest] { requests.filter { $0.api == api } }

    /// Forgets requests, scripted answers, RBM message ids and access tokens (service accounts stay trusted).
    public func reset() {
        core.state.withLock { s in
            s.requests = []; s.scripted = [:]; s.tokens = [:]; s.rbmMessageIDs = []; s.tokenLifetime = 3599
        }
    }

    /// Stops the server and releases the port.
    public func shutdown() async {
        task.cancel()
        _ = try? await task.value
    }

    // MARK: Documented error bodies

    /// The providers' error bodies, as their documentation shows them.
    public enum Errors {
        /// Twilio: `{"code", "message", "more_info", "status"}` (21211 invalid To, 21610 unsubscribed,
        /// 21614 not a mobile number, 20429 too many requests, 63016 outside the WhatsApp window).
        public static func twilio(code: Int, message: String, status: Int = 400) -> String {
            json(["code": code, "message": message, "more_info": "https://www.twilio.com/docs/errors/\(code)", "status": status])
        }

        /// Graph API: `{"error":{"message","type","code","error_subcode"?,"error_data"?,"fbtrace_id"}}`
        /// (131026 undeliverable, 130429 throughput, 131050 marketing opt-out, 132001 template missing).
        public static func whatsapp(code: Int, message: String, subcode: Int? = nil, details: String? = nil) -> String {
            var error: [String: Any] = ["message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbCdEfFakeTrace"]
            if let subcode { error["error_subcode"] = subcode }
            if let details { error["error_data"] = ["messaging_product": "whatsapp", "details": details] }
            return json(["error": error])
        }

        /// SendGrid: `{"errors":[{"message","field","help"}]}`.
        public static func sendgrid(message: String, field: String? = nil) -> String {
            json(["errors": [["message": message, "field": field.map { $0 as Any } ?? NSNull(), "help": NSNull()]]])
        }

        /// Google APIs: `{"error":{"code","message","status"}}`, with an FCM `errorCode` detail when given.
        public static func google(code: Int, status: String, message: String, fcmErrorCode: String? = nil) -> String {
            var error: [String: Any] = ["code": code, "message": message, "status": status]
            if let fcmErrorCode {
                error["details"] = [["@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcmErrorCode]]
            }
            return json(["error": error])
        }

        /// Viber: HTTP 200 with `{"status","status_message"}` (5 receiverNotRegistered, 6 receiverNotSubscribed,
        /// 12 tooManyRequests).
        public static func viber(status: Int, message: String) -> String {
            json(["status": status, "status_message": message, "chat_hostname": "SN-CHAT-01_"])
        }

        static func json(_ object: [String: Any]) -> String {
            String(decoding: (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8), as: UTF8.self)
        }
    }
}

/// A scripted answer.
private struct Scripted: Sendable {
    var status: Int
    var body: String
    var headers: [String: String]
}

/// An access token the fake handed out.
private struct IssuedToken: Sendable {
    var scopes: Set<String>
    var expiresAt: Date
    var revoked = false
}

/// What the handler decided: status, body, headers, and the reference handed out.
private struct Answer {
    var status: Int
    var body: String
    var headers: [String: String] = [:]
    var reference: String?
}

/// State shared by the fake and its handler (which runs on the server's threads).
private final class APICore: Sendable {
    struct State {
        var requests: [FakeProviderAPIs.RecordedRequest] = []
        var scripted: [FakeProviderAPIs.API: [Scripted]] = [:]
        var serviceAccounts: [String: _RSA.Signing.PublicKey] = [:]
        var tokens: [String: IssuedToken] = [:]
        var tokenLifetime = 3599
        var rbmMessageIDs: Set<String> = []
        var sequence = 0
    }

    static let fcmScope = "https://www.googleapis.com/auth/firebase.messaging"
    static let rbmScope = "https://www.googleapis.com/auth/rcsbusinessmessaging"
    static let googleScopes: Set<String> = [fcmScope, rbmScope, "https://www.googleapis.com/auth/cloud-platform"]

    let credentials: FakeProviderAPIs.Credentials
    let baseURL: String
    let state = Mutex(State())

    init(credentials: FakeProviderAPIs.Credentials, baseURL: String) {
        self.credentials = credentials; self.baseURL = baseURL
    }

    func handle(_ request: Request) async throws -> Response {
        let collected = try await request.body.collect(upTo: 8 << 20)
        let body = Array(buffer: collected)
        var headers: [String: String] = [:]
        for field in request.headers { headers[field.name.canonicalName] = field.value }
        let path = request.uri.path
        let query = Self.decodeForm(request.uri.query ?? "")
        let isForm = headers["content-type"]?.hasPrefix("application/x-www-form-urlencoded") == true
        let form = isForm ? Self.decodeForm(String(decoding: body, as: UTF8.self)) : [:]
        let api = Self.route(path)
        var recorded = FakeProviderAPIs.RecordedRequest(api: api, method: request.method.rawValue, path: path, query: query,
                                                        headers: headers, body: body, form: form, status: 0, reference: nil)
        let scripted = api.flatMap { api in
            state.withLock { s -> Scripted? in s.scripted[api]?.isEmpty == false ? s.scripted[api]!.removeFirst() : nil }
        }
        let answer: Answer
        if let scripted {
            answer = Answer(status: scripted.status, body: scripted.body, headers: scripted.headers)
        } else {
            switch api {
            case .twilio: answer = twilio(recorded)
            case .whatsapp: answer = whatsapp(recorded)
            case .sendgrid: answer = sendgrid(recorded)
            case .fcm: answer = fcm(recorded)
            case .rbm: answer = rbm(recorded)
            case .viber: answer = viber(recorded)
            case .token: answer = token(recorded)
            case nil: answer = Answer(status: 404, body: #"{"error":"no such route"}"#)
            }
        }
        recorded.status = answer.status
        recorded.reference = answer.reference
        state.withLock { $0.requests.append(recorded) }
        var responseHeaders: HTTPFields = [.contentType: "application/json"]
        for (name, value) in answer.headers {
            if let field = HTTPFields.Element.Name(name) { responseHeaders[field] = value }
        }
        return Response(status: .init(code: answer.status), headers: responseHeaders,
                        body: ResponseBody(byteBuffer: ByteBuffer(string: answer.body)))
    }

    static func route(_ path: String) -> FakeProviderAPIs.API? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        if path == "/token" { return .token }
        if path == "/v3/mail/send" { return .sendgrid }
        if path == "/pa/send_message" { return .viber }
        if parts.count == 4, parts[0] == "2010-04-01", parts[1] == "Accounts", parts[3] == "Messages.json" { return .twilio }
        if parts.count == 4, parts[0] == "v1", parts[1] == "projects", parts[3] == "messages:send" { return .fcm }
        if parts.count == 4, parts[0] == "v1", parts[1] == "phones", parts[3] == "agentMessages" { return .rbm }
        if parts.count == 3, parts[0].hasPrefix("v"), parts[2] == "messages" { return .whatsapp }
        return nil
    }

    private func next() -> Int { state.withLock { $0.sequence += 1; return $0.sequence } }

    // MARK: Twilio

    private func twilio(_ r: FakeProviderAPIs.RecordedRequest) -> Answer {
        func error(_ code: Int, _ message: String, _ status: Int = 400) -> Answer {
            Answer(status: status, body: FakeProviderAPIs.Errors.twilio(code: code, message: message, status: status))
        }
        guard r.basicCredentials == "\(credentials.twilioAccountSID):\(credentials.twilioAuthToken)" else {
            return error(20003, "Authenticate", 401)
        }
        let sid = r.path.split(separator: "/")[2]
        guard sid == credentials.twilioAccountSID else { return error(20404, "The requested resource \(r.path) was not found", 404) }
        let f = r.form
        guard let to = f["To"], !to.isEmpty else { return error(21604, "A 'To' phone number is required.") }
        let from = f["From"]
        guard from?.isEmpty == false || f["MessagingServiceSid"]?.isEmpty == false else { return error(21603, "A 'From' phone number is required.") }
        guard let body = f["Body"], !body.isEmpty else { return error(21602, "Message body is required.") }
        let number = to.hasPrefix("whatsapp:") ? String(to.dropFirst(9)) : to
        guard number.hasPrefix("+"), (8...16).contains(number.count), number.dropFirst().allSatisfy(\.isNumber) else {
            return error(21211, "Invalid 'To' Phone Number: \(number)")
        }
        if let from, to.hasPrefix("whatsapp:") != from.hasPrefix("whatsapp:") {
            return error(21910, "Invalid From and To pair. From and To should be of the same channel")
        }
        if let callback = f["StatusCallback"], URL(string: callback)?.host == nil { return error(21609, "Invalid StatusCallback url") }
        let messageSID = "SM" + String(format: "%032x", next())
        return Answer(status: 201, body: FakeProviderAPIs.Errors.json([
            "sid": messageSID, "account_sid": credentials.twilioAccountSID, "status": "queued", "num_segments": "1",
            "api_version": "2010-04-01", "uri": "/2010-04-01/Accounts/\(credentials.twilioAccountSID)/Messages/\(messageSID).json",
        ]), reference: messageSID)
    }

    // MARK: WhatsApp Cloud

    private func whatsapp(_ r: FakeProviderAPIs.RecordedRequest) -> Answer {
        func error(_ code: Int, _ message: String, status: Int = 400, subcode: Int? = nil) -> Answer {
            Answer(status: status, body: FakeProviderAPIs.Errors.whatsapp(code: code, message: message, subcode: subcode))
        }
        guard r.bearerToken == credentials.whatsappAccessToken else {
            return error(190, "Invalid OAuth access token - Cannot parse access token", status: 401)
        }
        let phoneNumberID = r.path.split(separator: "/")[1]
        guard phoneNumberID == credentials.whatsappPhoneNumberID else {
            return error(100, "Unsupported post request. Object with ID '\(phoneNumberID)' does not exist", subcode: 33)
        }
        let j = r.json
        guard j["messaging_product"] as? String == "whatsapp" else { return error(100, "(#100) The parameter messaging_product is required.") }
        guard let to = j["to"] as? String, !to.isEmpty else { return error(100, "(#100) The parameter to is required.") }
        switch j["type"] as? String ?? "text" {
        case "text":
            guard let text = (j["text"] as? [String: Any])?["body"] as? String, !text.isEmpty else {
                return error(100, "(#100) The parameter text['body'] is required.")
            }
        case "template":
            let template = j["template"] as? [String: Any] ?? [:]
            guard template["name"] as? String != nil else { return error(100, "(#100) The parameter template['name'] is required.") }
            guard (template["language"] as? [String: Any])?["code"] as? String != nil else {
                return error(100, "(#100) The parameter template['language']['code'] is required.")
            }
        default:
            return error(100, "(#100) Param type must be one of {AUDIO, CONTACTS, DOCUMENT, IMAGE, INTERACTIVE, LOCATION, REACTION, STICKER, TEMPLATE, TEXT, VIDEO}")
        }
        let wamid = "wamid.HBgLFAKE\(next())"
        return Answer(status: 200, body: FakeProviderAPIs.Errors.json([
            "messaging_product": "whatsapp", "contacts": [["input": to, "wa_id": to]], "messages": [["id": wamid]],
        ]), reference: wamid)
    }

    // MARK: SendGrid

    private func sendgrid(_ r: FakeProviderAPIs.RecordedRequest) -> Answer {
        func error(_ status: Int, _ message: String, field: String?) -> Answer {
            Answer(status: status, body: FakeProviderAPIs.Errors.sendgrid(message: message, field: field))
        }
        guard r.bearerToken == credentials.sendgridAPIKey else {
            return error(401, "The provided authorization grant is invalid, expired, or revoked", field: nil)
        }
        let j = r.json
        let personalizations = j["personalizations"] as? [[String: Any]] ?? []
        guard !personalizations.isEmpty else {
            return error(400, "The personalizations field is required and must have at least one personalization.", field: "personalizations")
        }
        for p in personalizations {
            let to = p["to"] as? [[String: Any]] ?? []
            guard !to.isEmpty, to.allSatisfy({ ($0["email"] as? String)?.contains("@") == true }) else {
                return error(400, "Does not contain a valid address.", field: "personalizations.0.to.0.email")
            }
        }
        guard (j["from"] as? [String: Any])?["email"] as? String != nil else {
            return error(400, "The from object must be provided for every email send. It is an object that requires the email parameter, but may also contain a name parameter.", field: "from.email")
        }
        let subject = j["subject"] as? String ?? personalizations.first?["subject"] as? String
        guard subject?.isEmpty == false else {
            return error(400, "The subject is required. You can get around this requirement if you use a template with a subject defined or if every personalization has a subject defined.", field: "subject")
        }
        let content = j["content"] as? [[String: Any]] ?? []
        guard !content.isEmpty, content.allSatisfy({ $0["type"] is String && ($0["value"] as? String)?.isEmpty == false }) else {
            return error(400, "Unless a valid template_id is provided, the content parameter is required. There must be at least one defined content block. We typically suggest both text/plain and text/html blocks are included, but only one block is required.", field: "content")
        }
        let types = content.compactMap { $0["type"] as? String }
        if types.contains("text/plain"), types.first != "text/plain" {
            return error(400, "The text/plain content type must be first, followed by any other content types.", field: "content")
        }
        let id = "FakeSG\(next())xRfBCMuw"
        return Answer(status: 202, body: "", headers: ["X-Message-Id": id], reference: id)
    }

    // MARK: Google

    /// The FCM and RBM check: a live access token with `scope`.
    private func googleAuthorized(_ r: FakeProviderAPIs.RecordedRequest, scope: String) -> Answer? {
        let unauthenticated = Answer(status: 401, body: FakeProviderAPIs.Errors.google(
            code: 401, status: "UNAUTHENTICATED",
            message: "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential."))
        guard let token = r.bearerToken, let issued = state.withLock({ $0.tokens[token] }) else { return unauthenticated }
        guard !issued.revoked, issued.expiresAt > Date() else { return unauthenticated }
        guard issued.scopes.contains(scope) || issued.scopes.contains("https://www.googleapis.com/auth/cloud-platform") else {
            return Answer(status: 403, body: FakeProviderAPIs.Errors.google(code: 403, status: "PERMISSION_DENIED",
                                                                             message: "Request had insufficient authentication scopes."))
        }
        return nil
    }

    private func fcm(_ r: FakeProviderAPIs.RecordedRequest) -> Answer {
        if let refused = googleAuthorized(r, scope: Self.fcmScope) { return refused }
        let message = r.json["message"] as? [String: Any] ?? [:]
        guard let token = message["token"] as? String, !token.isEmpty else {
            return Answer(status: 400, body: FakeProviderAPIs.Errors.google(
                code: 400, status: "INVALID_ARGUMENT", message: "The registration token is not a valid FCM registration token",
                fcmErrorCode: "INVALID_ARGUMENT"))
        }
        let project = r.path.split(separator: "/")[2]
        let name = "projects/\(project)/messages/0:17000000\(next())%31bd1c9631bd1c96"
        return Answer(status: 200, body: FakeProviderAPIs.Errors.json(["name": name]), reference: name)
    }

    private func rbm(_ r: FakeProviderAPIs.RecordedRequest) -> Answer {
        if let refused = googleAuthorized(r, scope: Self.rbmScope) { return refused }
        func invalid(_ message: String) -> Answer {
            Answer(status: 400, body: FakeProviderAPIs.Errors.google(code: 400, status: "INVALID_ARGUMENT", message: message))
        }
        guard let messageID = r.query["messageId"], !messageID.isEmpty else { return invalid("Invalid value at 'message_id'") }
        guard let agentID = r.query["agentId"], !agentID.isEmpty else { return invalid("Agent id is required") }
        let phone = String(r.path.split(separator: "/")[2]).removingPercentEncoding ?? ""
        guard phone.hasPrefix("+"), phone.count >= 8, phone.dropFirst().allSatisfy(\.isNumber) else {
            return invalid("Invalid phone number, must be in E.164 format")
        }
        guard let content = r.json["contentMessage"] as? [String: Any],
              (content["text"] as? String)?.isEmpty == false || content["richCard"] != nil || content["uploadedRbmFile"] != nil else {
            return invalid("Invalid value at 'agent_message.content_message'")
        }
        let fresh = state.withLock { $0.rbmMessageIDs.insert(messageID).inserted }
        guard fresh else {
            return Answer(status: 409, body: FakeProviderAPIs.Errors.google(code: 409, status: "ALREADY_EXISTS", message: "Requested entity already exists"))
        }
        return Answer(status: 200, body: FakeProviderAPIs.Errors.json([
            "name": "phones/\(phone)/agentMessages/\(messageID)", "sendTime": "2025-01-01T00:00:00Z", "contentMessage": content,
        ]), reference: messageID)
    }

    private func token(_ r: FakeProviderAPIs.RecordedRequest) -> Answer {
        func invalidGrant(_ description: String) -> Answer {
            Answer(status: 400, body: FakeProviderAPIs.Errors.json(["error": "invalid_grant", "error_description": description]))
        }
        guard r.form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer" else {
            return Answer(status: 400, body: FakeProviderAPIs.Errors.json(["error": "unsupported_grant_type", "error_description": "Invalid grant_type"]))
        }
        let parts = (r.form["assertion"] ?? "").split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3, let headerData = Self.base64URLDecode(parts[0]), let claimsData = Self.base64URLDecode(parts[1]),
              let signature = Self.base64URLDecode(parts[2]),
              let header = (try? JSONSerialization.jsonObject(with: headerData)) as? [String: Any],
              let claims = (try? JSONSerialization.jsonObject(with: claimsData)) as? [String: Any] else {
            return invalidGrant("Invalid JWT: could not parse the assertion")
        }
        guard header["alg"] as? String == "RS256" else { return invalidGrant("Invalid JWT: alg must be RS256") }
        guard let iss = claims["iss"] as? String, let key = state.withLock({ $0.serviceAccounts[iss] }) else {
            return invalidGrant("Invalid JWT Signature.")
        }
        let signed = Array((parts[0] + "." + parts[1]).utf8)
        guard key.isValidSignature(_RSA.Signing.RSASignature(rawRepresentation: signature), for: SHA256.hash(data: signed),
                                   padding: .insecurePKCS1v1_5) else {
            return invalidGrant("Invalid JWT Signature.")
        }
        guard claims["aud"] as? String == baseURL + "/token" else { return invalidGrant("Invalid JWT: aud must be the token URL") }
        let scopes = Set((claims["scope"] as? String ?? "").split(separator: " ").map(String.init))
        guard !scopes.isEmpty, scopes.isSubset(of: Self.googleScopes) else { return invalidGrant("Invalid OAuth scope or ID token audience provided.") }
        let now = Int(Date().timeIntervalSince1970)
        guard let iat = (claims["iat"] as? NSNumber)?.intValue, let exp = (claims["exp"] as? NSNumber)?.intValue,
              iat <= now + 60, exp > now, exp > iat, exp - iat <= 3600 else {
            return invalidGrant("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.")
        }
        let (value, lifetime) = state.withLock { s -> (String, Int) in
            s.sequence += 1
            let value = "ya29.fake-access-token-\(s.sequence)"
            s.tokens[value] = IssuedToken(scopes: scopes, expiresAt: Date().addingTimeInterval(TimeInterval(s.tokenLifetime)))
            return (value, s.tokenLifetime)
        }
        return Answer(status: 200, body: FakeProviderAPIs.Errors.json(["access_token": value, "expires_in": lifetime, "token_type": "Bearer"]),
                      reference: value)
    }

    // MARK: Viber

    private func viber(_ r: FakeProviderAPIs.RecordedRequest) -> Answer {
        func status(_ code: Int, _ message: String) -> Answer { Answer(status: 200, body: FakeProviderAPIs.Errors.viber(status: code, message: message)) }
        guard r.headers["x-viber-auth-token"] == credentials.viberAuthToken else { return status(2, "invalidAuthToken") }
        let j = r.json
        guard let receiver = j["receiver"] as? String, !receiver.isEmpty else { return status(3, "badData: receiver is missing") }
        guard let name = (j["sender"] as? [String: Any])?["name"] as? String, !name.isEmpty, name.count <= 28 else {
            return status(3, "badData: sender name is missing or longer than 28 characters")
        }
        guard let type = j["type"] as? String else { return status(3, "badData: type is missing") }
        if type == "text", (j["text"] as? String)?.isEmpty != false { return status(3, "badData: text is missing") }
        // Viber's tokens are 64-bit integers beyond a Double's 53 bits: this one cannot survive one.
        let token = UInt64(5_098_034_272_017_990_000) + UInt64(next())
        return Answer(status: 200, body: #"{"status":0,"status_message":"ok","message_token":\#(token),"chat_hostname":"SN-CHAT-01_","billing_status":1}"#,
                      reference: String(token))
    }

    // MARK: Helpers

    /// Written here rather than using the adapters' `FormEncoding`: the fake checks the wire format
    /// independently, so an encoder and decoder that are wrong the same way cannot agree.
    static func decodeForm(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for pair in text.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func unescape(_ s: Substring) -> String { String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(s) }
            out[unescape(parts[0])] = parts.count > 1 ? unescape(parts[1]) : ""
        }
        return out
    }

    static func base64URLDecode(_ text: String) -> Data? {
        var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s)
    }
}
