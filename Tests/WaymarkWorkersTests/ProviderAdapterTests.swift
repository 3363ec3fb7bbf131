import Foundation
import Synchronization
import Testing
import WaymarkConfig
import WaymarkEngine
import WaymarkHTTPTesting
@testable import WaymarkWorkers

/// The provider adapters against ``FakeProviderAPIs``: the request each provider documents, and the
/// mapping of its answers. Assertions read what the fake recorded, not what the adapter reports.
@Suite("Provider adapters")
struct ProviderAdapterTests {
    // MARK: Fixtures

    static let timeout = Duration.seconds(5)

    static func message(_ channel: Channel, n: Int = 1, template: String = "cart_reminder_1",
                        variables: [String: AttributeValue] = ["cart_id": .string("k-77"), "value": .number(59.9)]) -> OutboundMessage {
        let t = Timestamp(milliseconds: 1_700_000_000_000)
        return OutboundMessage(messageID: MessageID(journey: "cart", version: 1, customerID: "c-1", step: "remind", causedBy: "e-\(n)",
                                                    instanceKey: "", sequence: 0),
                               customerID: "c-1", channel: channel, journey: "cart", journeyVersion: 1, stage: "main", step: "remind",
                               template: template, priority: 1, transactional: false, createdAt: t, sendAfter: t,
                               expiresAt: Timestamp(milliseconds: t.milliseconds + 3_600_000), causedBy: "e-\(n)", locale: "en",
                               variables: variables, fallbackChannels: [])
    }

    static func request(_ channel: Channel, to address: String, n: Int = 1, rendered: RenderedMessage? = nil) -> ProviderRequest {
        ProviderRequest(message: message(channel, n: n), address: address, attempt: 1, rendered: rendered)
    }

    /// Runs `body` with a fresh fake; the adapters it passes to `own` are shut down afterwards, also
    /// when a requirement fails (an AsyncHTTPClient left running traps in its deinit).
    static func withFake(_ body: (FakeProviderAPIs, Owned) async throws -> Void) async throws {
        let fake = try await FakeProviderAPIs.start()
        let owned = Owned()
        do { try await body(fake, owned) } catch {
            await owned.shutdown()
            await fake.shutdown()
            throw error
        }
        await owned.shutdown()
        await fake.shutdown()
    }

    /// Adapters a test made.
    final class Owned: Sendable {
        private let providers = Mutex<[any MessageProvider]>([])
        func callAsFunction<P: MessageProvider>(_ provider: P) -> P {
            providers.withLock { $0.append(provider) }
            return provider
        }
        func shutdown() async {
            for provider in providers.withLock({ $0 }) { await provider.shutdown() }
        }
    }

    static func twilio(_ fake: FakeProviderAPIs, from: String? = "+15005550006", messagingServiceSID: String? = nil,
                       callback: String? = "https://hooks.example.com/receipts/twilio", token: String? = nil) throws -> TwilioProvider {
        try TwilioProvider(accountSID: fake.credentials.twilioAccountSID, authToken: token ?? fake.credentials.twilioAuthToken, from: from,
                           messagingServiceSID: messagingServiceSID, statusCallbackURL: callback, baseURL: fake.baseURL, timeout: timeout)
    }

    static func whatsapp(_ fake: FakeProviderAPIs, token: String? = nil, apiVersion: String? = nil) throws -> WhatsAppCloudProvider {
        try WhatsAppCloudProvider(phoneNumberID: fake.credentials.whatsappPhoneNumberID, accessToken: token ?? fake.credentials.whatsappAccessToken,
                                  apiVersion: apiVersion, baseURL: fake.baseURL, timeout: timeout)
    }

    static func sendgrid(_ fake: FakeProviderAPIs, key: String? = nil) throws -> SendGridProvider {
        try SendGridProvider(apiKey: key ?? fake.credentials.sendgridAPIKey, from: "news@waymark.example", fromName: "Waymark",
                             baseURL: fake.baseURL, timeout: timeout)
    }

    static func fcm(_ fake: FakeProviderAPIs, trusted: Bool = true) throws -> FCMProvider {
        try FCMProvider(projectID: "waymark-test", serviceAccountJSON: fake.makeServiceAccount(trusted: trusted), baseURL: fake.baseURL,
                        timeout: timeout)
    }

    static func rbm(_ fake: FakeProviderAPIs) throws -> RBMProvider {
        try RBMProvider(agentID: "waymark_agent", serviceAccountJSON: fake.makeServiceAccount(), baseURL: fake.baseURL, timeout: timeout)
    }

    static func viber(_ fake: FakeProviderAPIs, token: String? = nil) throws -> ViberProvider {
        try ViberProvider(authToken: token ?? fake.credentials.viberAuthToken, senderName: "Waymark", senderAvatar: "https://cdn.example.com/a.png",
                          baseURL: fake.baseURL, timeout: timeout)
    }

    static func isPermanent(_ result: ProviderResult, containing text: String) -> Bool {
        if case .permanentFailure(let reason) = result { return reason.contains(text) }
        return false
    }

    static func isUnsubscribed(_ result: ProviderResult, containing text: String) -> Bool {
        if case .recipientUnsubscribed(let reason) = result { return reason.contains(text) }
        return false
    }

    static func isTransient(_ result: ProviderResult) -> Bool {
        if case .transientFailure = result { return true }
        return false
    }

    static func retryAfter(_ result: ProviderResult) -> Int?? {
        if case .throttled(_, let ms) = result { return .some(ms) }
        return nil
    }

    // MARK: Shared

    @Test func fallbackTextIsTemplateAndSortedVariables() {
        #expect(PlainText.fallback(Self.request(.sms, to: "+4790000001")) == "cart_reminder_1 cart_id=k-77 value=59.9")
    }

    @Test func redactionMasksNumbersAndAddresses() {
        let text = PlainText.redacted("The 'To' number +4790000001 is not valid; mail ola@example.com, code 21211")
        #expect(!text.contains("4790000001"))
        #expect(!text.contains("ola@example.com"))
        // Any run of five or more digits is masked, codes included: adapters put the code in the prefix.
        #expect(!text.contains("21211"))
    }

    @Test func catalogBuildsEveryType() async throws {
        try await Self.withFake { fake, own in
            let account = try fake.makeServiceAccount()
            let settings: [ProviderSettings] = [
                ProviderSettings(type: "twilio", options: ["account_sid": "AC1", "from": "+15005550006", "base_url": fake.baseURL],
                                 secrets: ["auth_token": "t"]),
                ProviderSettings(type: "whatsapp_cloud", options: ["phone_number_id": "1"], secrets: ["access_token": "t"]),
                ProviderSettings(type: "sendgrid", options: ["from": "a@waymark.example"], secrets: ["api_key": "k"]),
                ProviderSettings(type: "fcm", options: ["project_id": "p"], secrets: ["service_account": account]),
                ProviderSettings(type: "rbm", options: ["agent_id": "a"], secrets: ["service_account": account]),
                ProviderSettings(type: "viber", options: ["sender_name": "W"], secrets: ["auth_token": "t"]),
            ]
            var built: [any MessageProvider] = []
            for s in settings { built.append(own(try ProviderCatalog.make(s, timeout: Self.timeout, maxConnections: 4))) }
            #expect(built.map(\.name) == ["twilio", "whatsapp_cloud", "sendgrid", "fcm", "rbm", "viber"])
            #expect(built[0] is TwilioProvider && built[1] is WhatsAppCloudProvider && built[2] is SendGridProvider)
            #expect(built[3] is FCMProvider && built[4] is RBMProvider && built[5] is ViberProvider)
            #expect(built.allSatisfy { $0.defaultRate != nil })
            #expect(throws: ProviderError.self) {
                try ProviderCatalog.make(ProviderSettings(type: "fcm", options: ["project_id": "p"], secrets: ["service_account": "{}"]),
                                         timeout: Self.timeout, maxConnections: 4)
            }
            #expect(throws: ProviderError.self) {
                try ProviderCatalog.make(ProviderSettings(type: "pigeon"), timeout: Self.timeout, maxConnections: 4)
            }
        }
    }

    // MARK: Twilio

    @Test func twilioSMSRequest() async throws {
        try await Self.withFake { fake, own in
            let twilio = own(try Self.twilio(fake))
            let request = Self.request(.sms, to: "+4790000001", rendered: RenderedMessage(body: "Your cart is waiting", locale: "en"))
            let result = await twilio.deliver(request)
            let recorded = try #require(fake.requests(.twilio).first)
            #expect(recorded.path == "/2010-04-01/Accounts/\(fake.credentials.twilioAccountSID)/Messages.json")
            #expect(recorded.basicCredentials == "\(fake.credentials.twilioAccountSID):\(fake.credentials.twilioAuthToken)")
            #expect(recorded.headers["content-type"]?.hasPrefix("application/x-www-form-urlencoded") == true)
            #expect(recorded.form["To"] == "+4790000001")
            #expect(recorded.form["From"] == "+15005550006")
            #expect(recorded.form["MessagingServiceSid"] == nil)
            #expect(recorded.form["Body"] == "Your cart is waiting")
            #expect(recorded.form["StatusCallback"] == "https://hooks.example.com/receipts/twilio?wm=\(request.idempotencyKey)")
            #expect(recorded.status == 201)
            #expect(recorded.reference?.hasPrefix("SM") == true)
            #expect(result == .accepted(reference: recorded.reference))
        }
    }

    @Test func twilioWhatsAppPrefixesAndCallbackWithQuery() async throws {
        try await Self.withFake { fake, own in
            let twilio = own(try Self.twilio(fake, callback: "https://hooks.example.com/receipts?tenant=eu"))
            let request = Self.request(.whatsapp, to: "+4790000001")
            let result = await twilio.deliver(request)
            let recorded = try #require(fake.requests(.twilio).first)
            #expect(recorded.form["To"] == "whatsapp:+4790000001")
            #expect(recorded.form["From"] == "whatsapp:+15005550006")
            #expect(recorded.form["Body"] == "cart_reminder_1 cart_id=k-77 value=59.9")
            #expect(recorded.form["StatusCallback"] == "https://hooks.example.com/receipts?tenant=eu&wm=\(request.idempotencyKey)")
            #expect(result == .accepted(reference: recorded.reference))
        }
    }

    @Test func twilioMessagingServiceWithoutCallback() async throws {
        try await Self.withFake { fake, own in
            let twilio = own(try Self.twilio(fake, from: nil, messagingServiceSID: "MG0123456789abcdef0123456789abcdef", callback: nil))
            let result = await twilio.deliver(Self.request(.sms, to: "+4790000001"))
            let recorded = try #require(fake.requests(.twilio).first)
            #expect(recorded.form["MessagingServiceSid"] == "MG0123456789abcdef0123456789abcdef")
            #expect(recorded.form["From"] == nil)
            #expect(recorded.form["StatusCallback"] == nil)
            #expect(result.reference != nil && result.reference == recorded.reference)
        }
    }

    @Test func twilioDefaultRates() async throws {
        try await Self.withFake { fake, own in
            let long = own(try Self.twilio(fake, from: "+15005550006"))
            let short = own(try Self.twilio(fake, from: "12345"))
            let service = own(try Self.twilio(fake, from: nil, messagingServiceSID: "MG1"))
            #expect(long.defaultRate?.perSecond == 1 && long.defaultRate?.burst == 1)
            #expect(short.defaultRate?.perSecond == 100 && short.defaultRate?.burst == 100)
            #expect(service.defaultRate?.perSecond == 100 && service.defaultRate?.burst == 100)
        }
    }

    @Test func twilioAnswers() async throws {
        try await Self.withFake { fake, own in
            let twilio = own(try Self.twilio(fake))
            let ok = Self.request(.sms, to: "+4790000001")
            typealias E = FakeProviderAPIs.Errors

            fake.failNext(.twilio, status: 429, body: E.twilio(code: 20429, message: "Too Many Requests", status: 429), headers: ["Retry-After": "7"])
            #expect(Self.retryAfter(await twilio.deliver(ok)) == .some(7000))

            fake.failNext(.twilio, status: 503, body: E.twilio(code: 20500, message: "Service Unavailable", status: 503))
            #expect(Self.isTransient(await twilio.deliver(ok)))

            // The fake's own validation: an address that is no phone number.
            let invalid = await twilio.deliver(Self.request(.sms, to: "4790000001"))
            #expect(fake.requests(.twilio).last?.status == 400)
            #expect(Self.isPermanent(invalid, containing: "twilio 21211"))
            if case .permanentFailure(let reason) = invalid { #expect(!reason.contains("4790000001"), "no phone numbers in reasons") }

            fake.failNext(.twilio, status: 400, body: E.twilio(code: 21610, message: "Attempt to send to unsubscribed recipient"))
            #expect(Self.isUnsubscribed(await twilio.deliver(ok), containing: "21610"))

            for code in [21614, 63016, 21408] {
                fake.failNext(.twilio, status: 400, body: E.twilio(code: code, message: "documented error"))
                #expect(Self.isPermanent(await twilio.deliver(ok), containing: "twilio \(code): documented error"))
            }

            let wrong = own(try Self.twilio(fake, token: "not-the-token"))
            #expect(Self.isPermanent(await wrong.deliver(ok), containing: "twilio 20003"))
            #expect(fake.requests(.twilio).last?.status == 401)
            #expect(fake.requests(.twilio).count == 8)
        }
    }

    // MARK: WhatsApp Cloud

    @Test func whatsappTextRequest() async throws {
        try await Self.withFake { fake, own in
            let wa = own(try Self.whatsapp(fake))
            let request = Self.request(.whatsapp, to: "+47 900 00 001", rendered: RenderedMessage(body: "Hei!", locale: "nb"))
            let result = await wa.deliver(request)
            let recorded = try #require(fake.requests(.whatsapp).first)
            #expect(recorded.path == "/v21.0/\(fake.credentials.whatsappPhoneNumberID)/messages")
            #expect(recorded.bearerToken == fake.credentials.whatsappAccessToken)
            let j = recorded.json
            #expect(j["messaging_product"] as? String == "whatsapp")
            #expect(j["recipient_type"] as? String == "individual")
            #expect(j["to"] as? String == "4790000001")
            #expect(j["biz_opaque_callback_data"] as? String == request.idempotencyKey)
            #expect(j["type"] as? String == "text")
            #expect((j["text"] as? [String: Any])?["body"] as? String == "Hei!")
            #expect(recorded.reference?.hasPrefix("wamid.") == true)
            #expect(result == .accepted(reference: recorded.reference))
        }
    }

    @Test func whatsappTemplateRequest() async throws {
        try await Self.withFake { fake, own in
            let wa = own(try Self.whatsapp(fake, apiVersion: "v20.0"))
            let template = ProviderTemplate(name: "cart_reminder", language: "en_US", parameters: ["k-77", "59.9"])
            let result = await wa.deliver(Self.request(.whatsapp, to: "+4790000001",
                                                       rendered: RenderedMessage(body: "x", locale: "en", providerTemplate: template)))
            let recorded = try #require(fake.requests(.whatsapp).first)
            #expect(recorded.path == "/v20.0/\(fake.credentials.whatsappPhoneNumberID)/messages")
            let j = recorded.json
            #expect(j["type"] as? String == "template")
            let t = try #require(j["template"] as? [String: Any])
            #expect(t["name"] as? String == "cart_reminder")
            #expect((t["language"] as? [String: Any])?["code"] as? String == "en_US")
            let components = try #require(t["components"] as? [[String: Any]])
            #expect(components.first?["type"] as? String == "body")
            let parameters = components.first?["parameters"] as? [[String: Any]] ?? []
            #expect(parameters.map { $0["type"] as? String } == ["text", "text"])
            #expect(parameters.map { $0["text"] as? String } == ["k-77", "59.9"])
            #expect(result == .accepted(reference: recorded.reference))
        }
    }

    @Test func whatsappAnswers() async throws {
        try await Self.withFake { fake, own in
            let wa = own(try Self.whatsapp(fake))
            let ok = Self.request(.whatsapp, to: "+4790000001")
            typealias E = FakeProviderAPIs.Errors

            fake.failNext(.whatsapp, status: 429, body: E.whatsapp(code: 130429, message: "Rate limit hit"), headers: ["Retry-After": "3"])
            #expect(Self.retryAfter(await wa.deliver(ok)) == .some(3000))
            for code in [131048, 131056, 4, 80007] {
                fake.failNext(.whatsapp, status: 400, body: E.whatsapp(code: code, message: "slow down"))
                #expect(Self.retryAfter(await wa.deliver(ok)) != nil, "code \(code) throttles")
            }
            for (code, status) in [(131000, 500), (131016, 503), (1, 500), (2, 503)] {
                fake.failNext(.whatsapp, status: status, body: E.whatsapp(code: code, message: "try later"))
                #expect(Self.isTransient(await wa.deliver(ok)), "code \(code) is transient")
            }
            fake.failNext(.whatsapp, status: 502, body: "<html>Bad Gateway</html>")
            #expect(Self.isTransient(await wa.deliver(ok)))
            for code in [131026, 131047, 131051, 132000, 132001, 132007, 132015, 133010, 100, 368] {
                fake.failNext(.whatsapp, status: 400, body: E.whatsapp(code: code, message: "documented error"))
                #expect(Self.isPermanent(await wa.deliver(ok), containing: "whatsapp \(code): documented error"))
            }
            fake.failNext(.whatsapp, status: 400, body: E.whatsapp(code: 131050, message: "User has stopped marketing messages"))
            #expect(Self.isUnsubscribed(await wa.deliver(ok), containing: "131050"))

            let wrong = own(try Self.whatsapp(fake, token: "EAAWrong"))
            #expect(Self.isPermanent(await wrong.deliver(ok), containing: "whatsapp 190"))
            #expect(fake.requests(.whatsapp).last?.status == 401)
        }
    }

    // MARK: SendGrid

    @Test func sendgridRequest() async throws {
        try await Self.withFake { fake, own in
            let sg = own(try Self.sendgrid(fake))
            let request = Self.request(.email, to: "ola@example.com",
                                       rendered: RenderedMessage(body: "plain", subject: "Your cart", html: "<p>html</p>", locale: "en"))
            let result = await sg.deliver(request)
            let recorded = try #require(fake.requests(.sendgrid).first)
            #expect(recorded.path == "/v3/mail/send")
            #expect(recorded.bearerToken == fake.credentials.sendgridAPIKey)
            let j = recorded.json
            let p = try #require((j["personalizations"] as? [[String: Any]])?.first)
            #expect((p["to"] as? [[String: Any]])?.first?["email"] as? String == "ola@example.com")
            #expect((p["custom_args"] as? [String: Any])?["waymark_message_id"] as? String == request.idempotencyKey)
            #expect((j["from"] as? [String: Any])?["email"] as? String == "news@waymark.example")
            #expect((j["from"] as? [String: Any])?["name"] as? String == "Waymark")
            #expect(j["subject"] as? String == "Your cart")
            let content = j["content"] as? [[String: Any]] ?? []
            #expect(content.map { $0["type"] as? String } == ["text/plain", "text/html"])
            #expect(content.map { $0["value"] as? String } == ["plain", "<p>html</p>"])
            #expect(recorded.status == 202)
            #expect(result == .accepted(reference: recorded.reference))
            #expect(result.reference != nil)

            _ = await sg.deliver(Self.request(.email, to: "ola@example.com", n: 2))
            let plain = try #require(fake.requests(.sendgrid).last).json
            #expect(plain["subject"] as? String == "cart_reminder_1")
            #expect((plain["content"] as? [[String: Any]])?.map { $0["type"] as? String } == ["text/plain"])
        }
    }

    @Test func sendgridAnswers() async throws {
        try await Self.withFake { fake, own in
            let sg = own(try Self.sendgrid(fake))
            let ok = Self.request(.email, to: "ola@example.com")
            typealias E = FakeProviderAPIs.Errors
            fake.failNext(.sendgrid, status: 429, body: E.sendgrid(message: "too many requests"), headers: ["Retry-After": "2"])
            #expect(Self.retryAfter(await sg.deliver(ok)) == .some(2000))
            fake.failNext(.sendgrid, status: 503, body: "")
            #expect(Self.isTransient(await sg.deliver(ok)))
            fake.failNext(.sendgrid, status: 400, body: E.sendgrid(message: "The from address does not match a verified Sender Identity.", field: "from"))
            #expect(Self.isPermanent(await sg.deliver(ok), containing: "sendgrid 400: The from address does not match a verified Sender Identity."))
            fake.failNext(.sendgrid, status: 413, body: E.sendgrid(message: "too big"))
            #expect(Self.isPermanent(await sg.deliver(ok), containing: "sendgrid 413"))
            fake.failNext(.sendgrid, status: 403, body: E.sendgrid(message: "access forbidden"))
            #expect(Self.isPermanent(await sg.deliver(ok), containing: "sendgrid 403"))
            // The fake's own validation: an address that is not one.
            #expect(Self.isPermanent(await sg.deliver(Self.request(.email, to: "nobody")), containing: "sendgrid 400: Does not contain a valid address."))
            let wrong = own(try Self.sendgrid(fake, key: "SG.wrong"))
            #expect(Self.isPermanent(await wrong.deliver(ok), containing: "sendgrid 401"))
            #expect(fake.requests(.sendgrid).last?.status == 401)
        }
    }

    // MARK: FCM

    @Test func fcmRequestAndToken() async throws {
        try await Self.withFake { fake, own in
            let fcm = own(try Self.fcm(fake))
            let request = Self.request(.push, to: "device-token-1", rendered: RenderedMessage(body: "Come back", subject: "Cart", locale: "en"))
            let result = await fcm.deliver(request)
            let token = try #require(fake.requests(.token).first)
            #expect(token.status == 200, "the fake verified the JWT: \(token.bodyText)")
            #expect(token.form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer")
            let recorded = try #require(fake.requests(.fcm).first)
            #expect(recorded.path == "/v1/projects/waymark-test/messages:send")
            #expect(recorded.bearerToken == token.reference)
            let m = try #require(recorded.json["message"] as? [String: Any])
            #expect(m["token"] as? String == "device-token-1")
            #expect((m["notification"] as? [String: Any])?["title"] as? String == "Cart")
            #expect((m["notification"] as? [String: Any])?["body"] as? String == "Come back")
            #expect((m["data"] as? [String: Any])?["waymark_message_id"] as? String == request.idempotencyKey)
            #expect(recorded.reference?.hasPrefix("projects/waymark-test/messages/") == true)
            #expect(result == .accepted(reference: recorded.reference))
        }
    }

    @Test func fcmTokenFetchedOnceAndRefreshedAfter401() async throws {
        try await Self.withFake { fake, own in
            let fcm = own(try Self.fcm(fake))
            async let a = fcm.deliver(Self.request(.push, to: "d1", n: 1))
            async let b = fcm.deliver(Self.request(.push, to: "d2", n: 2))
            let first = await [a, b]
            _ = await fcm.deliver(Self.request(.push, to: "d3", n: 3))
            #expect(first.allSatisfy { $0.reference != nil })
            #expect(fake.requests(.token).count == 1, "one token for concurrent and later calls")
            #expect(Set(fake.requests(.fcm).compactMap(\.bearerToken)).count == 1)

            fake.revokeAccessTokens()
            let after = await fcm.deliver(Self.request(.push, to: "d4", n: 4))
            let calls = fake.requests(.fcm)
            #expect(calls.count == 5)
            #expect(calls[3].status == 401)
            #expect(calls[4].status == 200)
            #expect(calls[4].bearerToken != calls[3].bearerToken)
            #expect(fake.requests(.token).count == 2)
            #expect(after == .accepted(reference: calls[4].reference))
        }
    }

    @Test func fcmTokenRefreshedBeforeExpiry() async throws {
        try await Self.withFake { fake, own in
            fake.setAccessTokenLifetime(seconds: 2)
            let fcm = own(try Self.fcm(fake))
            _ = await fcm.deliver(Self.request(.push, to: "d1", n: 1))
            try await Task.sleep(for: .milliseconds(1200))
            let result = await fcm.deliver(Self.request(.push, to: "d2", n: 2))
            #expect(result.reference != nil)
            #expect(fake.requests(.token).count == 2)
            #expect(fake.requests(.fcm).allSatisfy { $0.status == 200 }, "refreshed before the fake refused it")
        }
    }

    @Test func fcmAnswers() async throws {
        try await Self.withFake { fake, own in
            let fcm = own(try Self.fcm(fake))
            let ok = Self.request(.push, to: "device")
            typealias E = FakeProviderAPIs.Errors
            for (code, status, errorCode) in [(404, "NOT_FOUND", "UNREGISTERED"), (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
                                              (403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"), (401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR")] {
                fake.failNext(.fcm, status: code, body: E.google(code: code, status: status, message: "documented error", fcmErrorCode: errorCode))
                #expect(Self.isPermanent(await fcm.deliver(ok), containing: "fcm \(errorCode): documented error"))
            }
            #expect(fake.requests(.token).count == 1, "THIRD_PARTY_AUTH_ERROR is about APNs/web push credentials, not our token")
            fake.failNext(.fcm, status: 429, body: E.google(code: 429, status: "RESOURCE_EXHAUSTED", message: "quota", fcmErrorCode: "QUOTA_EXCEEDED"),
                          headers: ["Retry-After": "10"])
            #expect(Self.retryAfter(await fcm.deliver(ok)) == .some(10000))
            fake.failNext(.fcm, status: 503, body: E.google(code: 503, status: "UNAVAILABLE", message: "x", fcmErrorCode: "UNAVAILABLE"))
            #expect(Self.isTransient(await fcm.deliver(ok)))
            fake.failNext(.fcm, status: 500, body: E.google(code: 500, status: "INTERNAL", message: "x", fcmErrorCode: "INTERNAL"))
            #expect(Self.isTransient(await fcm.deliver(ok)))
            // The fake's own validation: an empty registration token.
            #expect(Self.isPermanent(await fcm.deliver(Self.request(.push, to: "")), containing: "fcm INVALID_ARGUMENT"))
        }
    }

    @Test func fcmWrongCredentialsAndTokenEndpointDown() async throws {
        try await Self.withFake { fake, own in
            let untrusted = own(try Self.fcm(fake, trusted: false))
            let result = await untrusted.deliver(Self.request(.push, to: "device"))
            #expect(Self.isPermanent(result, containing: "invalid_grant"))
            #expect(fake.requests(.token).last?.status == 400)
            #expect(fake.requests(.fcm).isEmpty)

            let fcm = own(try Self.fcm(fake))
            fake.failNext(.token, status: 503, body: #"{"error":"backend_error"}"#)
            #expect(Self.isTransient(await fcm.deliver(Self.request(.push, to: "device"))))
            #expect(fake.requests(.fcm).isEmpty)
            #expect(await fcm.deliver(Self.request(.push, to: "device")).reference != nil, "the next call fetches a token")

            // A token the API keeps refusing: one refresh, then permanent (not retried forever).
            fake.failNext(.fcm, count: 2, status: 401, body: FakeProviderAPIs.Errors.google(code: 401, status: "UNAUTHENTICATED", message: "no"))
            #expect(Self.isPermanent(await fcm.deliver(Self.request(.push, to: "device", n: 2)), containing: "fcm UNAUTHENTICATED"))
            #expect(fake.requests(.fcm).count == 3)
        }
    }

    // MARK: RBM

    @Test func rbmRequestAndIdempotentResend() async throws {
        try await Self.withFake { fake, own in
            let rbm = own(try Self.rbm(fake))
            let request = Self.request(.rcs, to: "+4790000001", rendered: RenderedMessage(body: "RCS hello", locale: "en"))
            let result = await rbm.deliver(request)
            let token = try #require(fake.requests(.token).first)
            let recorded = try #require(fake.requests(.rbm).first)
            #expect(recorded.path == "/v1/phones/%2B4790000001/agentMessages")
            #expect(recorded.query["messageId"] == request.idempotencyKey)
            #expect(recorded.query["agentId"] == "waymark_agent")
            #expect(recorded.bearerToken == token.reference)
            #expect((recorded.json["contentMessage"] as? [String: Any])?["text"] as? String == "RCS hello")
            #expect(recorded.status == 200)
            #expect(result == .accepted(reference: request.idempotencyKey))

            let again = await rbm.deliver(request)
            #expect(fake.requests(.rbm).last?.status == 409)
            #expect(again == .accepted(reference: request.idempotencyKey))
            #expect(fake.requests(.token).count == 1)
        }
    }

    @Test func rbmAnswers() async throws {
        try await Self.withFake { fake, own in
            let rbm = own(try Self.rbm(fake))
            typealias E = FakeProviderAPIs.Errors
            var n = 0
            func next() -> ProviderRequest { n += 1; return Self.request(.rcs, to: "+4790000001", n: n) }
            fake.failNext(.rbm, status: 404, body: E.google(code: 404, status: "NOT_FOUND", message: "Requested entity was not found."))
            #expect(await rbm.deliver(next()) == .permanentFailure(reason: "rbm NOT_FOUND: not RCS-capable"))
            fake.failNext(.rbm, status: 429, body: E.google(code: 429, status: "RESOURCE_EXHAUSTED", message: "Quota exceeded"), headers: ["Retry-After": "4"])
            #expect(Self.retryAfter(await rbm.deliver(next())) == .some(4000))
            fake.failNext(.rbm, status: 503, body: E.google(code: 503, status: "UNAVAILABLE", message: "x"))
            #expect(Self.isTransient(await rbm.deliver(next())))
            fake.failNext(.rbm, status: 403, body: E.google(code: 403, status: "PERMISSION_DENIED", message: "agent not launched"))
            #expect(Self.isPermanent(await rbm.deliver(next()), containing: "rbm PERMISSION_DENIED"))
            // The fake's own validation: an address that is no E.164 number.
            #expect(Self.isPermanent(await rbm.deliver(Self.request(.rcs, to: "12", n: 99)), containing: "rbm INVALID_ARGUMENT"))
            fake.revokeAccessTokens()
            #expect(await rbm.deliver(next()).reference != nil)
            #expect(fake.requests(.token).count == 2)
        }
    }

    // MARK: Viber

    @Test func viberRequestAndExactToken() async throws {
        try await Self.withFake { fake, own in
            let viber = own(try Self.viber(fake))
            let request = Self.request(.viber, to: "01234567890A=", rendered: RenderedMessage(body: "Viber hello", locale: "en"))
            let result = await viber.deliver(request)
            let recorded = try #require(fake.requests(.viber).first)
            #expect(recorded.path == "/pa/send_message")
            #expect(recorded.headers["x-viber-auth-token"] == fake.credentials.viberAuthToken)
            let j = recorded.json
            #expect(j["receiver"] as? String == "01234567890A=")
            #expect((j["min_api_version"] as? NSNumber)?.intValue == 1)
            #expect((j["sender"] as? [String: Any])?["name"] as? String == "Waymark")
            #expect((j["sender"] as? [String: Any])?["avatar"] as? String == "https://cdn.example.com/a.png")
            #expect(j["tracking_data"] as? String == request.idempotencyKey)
            #expect(j["type"] as? String == "text")
            #expect(j["text"] as? String == "Viber hello")
            let token = try #require(recorded.reference)
            #expect(token.count == 19)
            #expect(String(format: "%.0f", Double(token)!) != token, "the fake's token does not survive a Double")
            #expect(result == .accepted(reference: token))
        }
    }

    @Test func viberAnswers() async throws {
        try await Self.withFake { fake, own in
            let viber = own(try Self.viber(fake))
            let ok = Self.request(.viber, to: "01234567890A=")
            typealias E = FakeProviderAPIs.Errors
            fake.failNext(.viber, status: 200, body: E.viber(status: 6, message: "receiverNotSubscribed"))
            #expect(Self.isUnsubscribed(await viber.deliver(ok), containing: "viber 6"))
            fake.failNext(.viber, status: 200, body: E.viber(status: 5, message: "receiverNotRegistered"))
            #expect(Self.isPermanent(await viber.deliver(ok), containing: "viber 5: receiverNotRegistered"))
            fake.failNext(.viber, status: 200, body: E.viber(status: 12, message: "tooManyRequests"))
            #expect(Self.retryAfter(await viber.deliver(ok)) == .some(nil))
            for status in [1, 3, 4, 7, 8, 9, 10, 11] {
                fake.failNext(.viber, status: 200, body: E.viber(status: status, message: "documented"))
                #expect(Self.isPermanent(await viber.deliver(ok), containing: "viber \(status): documented"))
            }
            fake.failNext(.viber, status: 503, body: "")
            #expect(Self.isTransient(await viber.deliver(ok)))
            let wrong = own(try Self.viber(fake, token: "wrong"))
            #expect(Self.isPermanent(await wrong.deliver(ok), containing: "viber 2: invalidAuthToken"))
        }
    }
}
