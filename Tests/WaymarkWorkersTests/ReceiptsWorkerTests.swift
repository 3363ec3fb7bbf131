import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import Synchronization
import Testing
import WaymarkConfig
import WaymarkControl
import WaymarkEngine
import WaymarkRedis
import WaymarkState
import WaymarkTestSupport
import WaymarkWire
@testable import WaymarkWorkers

/// Known answers and parsers: no servers.
@Suite("Callback signatures and parsers")
struct CallbackSignatureTests {
    @Test("Twilio: the example from Twilio's signature documentation")
    func twilioKnownAnswer() {
        let parameters = ["CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234", "From": "+12349013030", "To": "+18005551212"]
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2"
        #expect(CallbackSignatures.twilio(authToken: "12345", url: url, parameters: parameters) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
        #expect(CallbackSignatures.verifyTwilio("0/KCTR6DLpKmkAf8muzZqo1nDgQ=", authToken: "12345", url: url, parameters: parameters))
        var tampered = parameters
        tampered["Digits"] = "1235"
        #expect(!CallbackSignatures.verifyTwilio("0/KCTR6DLpKmkAf8muzZqo1nDgQ=", authToken: "12345", url: url, parameters: tampered))
        #expect(!CallbackSignatures.verifyTwilio(nil, authToken: "12345", url: url, parameters: parameters))
    }

    @Test("HMAC signatures agree with openssl (an independent implementation)")
    func hmacAgainstOpenSSL() throws {
        let body = Array(#"{"entry":[{"changes":[]}]}"#.utf8)
        func openssl(_ digest: String, key: String, _ data: [UInt8], base64: Bool) throws -> String {
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("wm-hmac-\(UInt64.random(in: 0...UInt64.max))")
            try Data(data).write(to: file)
            defer { try? FileManager.default.removeItem(at: file) }
            let pipe = base64 ? "| base64 -w0" : "| xxd -p -c 256"
            let (status, output) = try runProgram("/bin/sh", ["-c", "openssl dgst -\(digest) -hmac '\(key)' -binary '\(file.path)' \(pipe)"])
            #expect(status == 0)
            return output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(CallbackSignatures.meta(appSecret: "app-secret", body: body) == "sha256=" + (try openssl("sha256", key: "app-secret", body, base64: false)))
        #expect(CallbackSignatures.viber(authToken: "viber-token", body: body) == (try openssl("sha256", key: "viber-token", body, base64: false)))
        #expect(CallbackSignatures.rbm(clientToken: "client-token", data: body) == (try openssl("sha512", key: "client-token", body, base64: true)))
    }

    @Test("SendGrid: ECDSA P-256 over timestamp and body; a changed body, key or timestamp fails")
    func sendGrid() {
        let key = P256.Signing.PrivateKey()
        let publicKey = key.publicKey.derRepresentation.base64EncodedString()
        let body = Array(#"[{"event":"delivered"}]"#.utf8)
        let signature = try! key.signature(for: Data("1700000000".utf8) + Data(body)).derRepresentation.base64EncodedString()
        #expect(CallbackSignatures.verifySendGrid(signature: signature, timestamp: "1700000000", body: body, publicKey: publicKey))
        #expect(!CallbackSignatures.verifySendGrid(signature: signature, timestamp: "1700000001", body: body, publicKey: publicKey))
        #expect(!CallbackSignatures.verifySendGrid(signature: signature, timestamp: "1700000000", body: body + [0x20], publicKey: publicKey))
        let other = P256.Signing.PrivateKey().publicKey.derRepresentation.base64EncodedString()
        #expect(!CallbackSignatures.verifySendGrid(signature: signature, timestamp: "1700000000", body: body, publicKey: other))
        #expect(!CallbackSignatures.verifySendGrid(signature: nil, timestamp: "1700000000", body: body, publicKey: publicKey))
    }

    @Test("Waymark signature: timestamp signed, stale or altered refused")
    func waymark() {
        let body = Array(#"{"message_id":"m-1","status":"clicked"}"#.utf8)
        let header = WebhookProvider.signature(secret: SymmetricKey(data: Data("s3cret".utf8)), timestamp: 1_700_000_000, body: body)
        #expect(CallbackSignatures.verifyWaymark(header, secret: "s3cret", body: body, now: 1_700_000_100, maxAge: 600))
        #expect(!CallbackSignatures.verifyWaymark(header, secret: "s3cret", body: body, now: 1_700_001_000, maxAge: 600))
        #expect(!CallbackSignatures.verifyWaymark(header, secret: "other", body: body, now: 1_700_000_100, maxAge: 600))
        #expect(!CallbackSignatures.verifyWaymark(header.replacingOccurrences(of: "t=1700000000", with: "t=1700000500"),
                                                  secret: "s3cret", body: body, now: 1_700_000_500, maxAge: 600))
    }

    @Test("fallback copies: the next channel with consent and an address that the customer did not leave; none under a global opt-out")
    func fallbackCopy() {
        var message = SenderWorkerTests.message(1, channel: .whatsapp)
        message.fallbackChannels = [.sms, .email, .push]
        var profile = CustomerProfile(customerID: "c-1", contacts: [.sms: "+4790000001", .email: "c1@example.com", .push: "tok"],
                                      consent: [.sms: true, .email: true, .push: true])
        #expect(message.fallbackCopy(profile: profile).map { [$0.channel] + $0.fallbackChannels } == [.sms, .email, .push])
        profile.withdrawn = [.sms]
        #expect(message.fallbackCopy(profile: profile).map { [$0.channel] + $0.fallbackChannels } == [.email, .push])
        profile.consent[.email] = false
        #expect(message.fallbackCopy(profile: profile)?.channel == .push)
        #expect(message.fallbackCopy(profile: nil) == nil)
        profile.optedOut = true
        #expect(message.fallbackCopy(profile: profile) == nil)
        message.transactional = true
        #expect(message.fallbackCopy(profile: profile)?.channel == .push)
    }

    @Test("provider bodies map to receipts (documented shapes)")
    func parsers() throws {
        #expect(ProviderCallbacks.twilioStatus(["MessageStatus": "undelivered", "ErrorCode": "30003"], query: ["wm": "m-1"])
                == [CallbackEvent(.message("m-1"), .status(.failed), detail: "twilio undelivered 30003")])
        #expect(ProviderCallbacks.twilioStatus(["MessageStatus": "queued"], query: ["wm": "m-1"]).isEmpty)
        #expect(ProviderCallbacks.twilioInbound(["From": "whatsapp:+4790000001", "Body": " stop "])
                == [CallbackEvent(.address(.whatsapp, "+4790000001"), .subscription(.whatsapp, unsubscribe: true))])
        #expect(ProviderCallbacks.twilioInbound(["From": "+4790000001", "Body": "Thanks!"]).isEmpty)
        let whatsapp: [String: Any] = ["object": "whatsapp_business_account", "entry": [["id": "1", "changes": [["field": "messages", "value": [
            "statuses": [["id": "wamid.X", "status": "failed", "timestamp": "1700000000", "biz_opaque_callback_data": "m-2",
                          "errors": [["code": 131026, "title": "Message undeliverable"]]]],
        ]]]]]]
        #expect(ProviderCallbacks.whatsApp(whatsapp) == [CallbackEvent(.message("m-2"), .status(.failed),
                                                                      at: Timestamp(milliseconds: 1_700_000_000_000), detail: "whatsapp 131026")])
        let raw = Array(#"{"event":"seen","timestamp":1700000000123,"message_token":5098034272017990001,"user_id":"u1"}"#.utf8)
        let viber = try #require(JSONSerialization.jsonObject(with: Data(raw)) as? [String: Any])
        #expect(ProviderCallbacks.viber(viber, raw: raw) == [CallbackEvent(.reference(provider: "viber", "5098034272017990001"), .status(.read),
                                                                          at: Timestamp(milliseconds: 1_700_000_000_123))])
        #expect(ProviderCallbacks.sendGrid([["event": "click", "waymark_message_id": "m-3", "timestamp": 1_700_000_000]])
                == [CallbackEvent(.message("m-3"), .status(.clicked), at: Timestamp(milliseconds: 1_700_000_000_000))])
        #expect(ProviderCallbacks.rbm(["eventType": "READ", "messageId": "m-4"]) == [CallbackEvent(.message("m-4"), .status(.read))])
    }
}

@Suite("Receipts endpoint on the real stack", .serialized)
struct ReceiptsWorkerTests {
    static let twilioToken = "twilio-token"
    static let appSecret = "meta-app-secret"
    static let viberToken = "viber-token"
    static let rbmToken = "rbm-client-token"
    static let sendGridKey = P256.Signing.PrivateKey()

    /// A signed POST as each provider makes it (the signing is written here, independently of Waymark's checks).
    struct Caller {
        let http: HTTPClient
        let base: String

        func post(_ path: String, body: [UInt8], headers: [(String, String)]) async throws -> (Int, String) {
            var request = HTTPClientRequest(url: base + path)
            request.method = .POST
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            request.body = .bytes(ByteBuffer(bytes: body))
            let response = try await http.execute(request, timeout: .seconds(10))
            return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 1 << 20)))
        }

        func get(_ pathAndQuery: String) async throws -> (Int, String) {
            let response = try await http.execute(HTTPClientRequest(url: base + pathAndQuery), timeout: .seconds(10))
            return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 1 << 20)))
        }

        func twilio(_ path: String, _ form: [(String, String)], token: String = ReceiptsWorkerTests.twilioToken) async throws -> (Int, String) {
            // Twilio: base64 HMAC-SHA1 over the public URL followed by the sorted parameters.
            let url = "https://receipts.example.test" + path
            let signed = url + form.sorted { $0.0 < $1.0 }.map { $0.0 + $0.1 }.joined()
            let signature = Data(HMAC<Insecure.SHA1>.authenticationCode(for: Data(signed.utf8), using: SymmetricKey(data: Data(token.utf8)))).base64EncodedString()
            let body = form.map { "\($0.0.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)=\($0.1.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)" }
                .joined(separator: "&")
            return try await post(path, body: Array(body.utf8), headers: [("Content-Type", "application/x-www-form-urlencoded"), ("X-Twilio-Signature", signature)])
        }

        func whatsApp(_ json: String, secret: String = ReceiptsWorkerTests.appSecret) async throws -> (Int, String) {
            let mac = HMAC<SHA256>.authenticationCode(for: Data(json.utf8), using: SymmetricKey(data: Data(secret.utf8)))
            return try await post("/receipts/whatsapp", body: Array(json.utf8),
                                  headers: [("X-Hub-Signature-256", "sha256=" + mac.map { String(format: "%02x", $0) }.joined())])
        }

        func sendGrid(_ json: String, timestamp: Int64 = Int64(Date().timeIntervalSince1970)) async throws -> (Int, String) {
            let signature = try ReceiptsWorkerTests.sendGridKey.signature(for: Data("\(timestamp)".utf8) + Data(json.utf8)).derRepresentation
            return try await post("/receipts/sendgrid", body: Array(json.utf8), headers: [
                ("X-Twilio-Email-Event-Webhook-Signature", signature.base64EncodedString()),
                ("X-Twilio-Email-Event-Webhook-Timestamp", "\(timestamp)"),
            ])
        }

        func viber(_ json: String) async throws -> (Int, String) {
            let mac = HMAC<SHA256>.authenticationCode(for: Data(json.utf8), using: SymmetricKey(data: Data(ReceiptsWorkerTests.viberToken.utf8)))
            return try await post("/receipts/viber", body: Array(json.utf8), headers: [("X-Viber-Content-Signature", mac.map { String(format: "%02x", $0) }.joined())])
        }

        func rbm(_ event: String) async throws -> (Int, String) {
            let mac = HMAC<SHA512>.authenticationCode(for: Data(event.utf8), using: SymmetricKey(data: Data(ReceiptsWorkerTests.rbmToken.utf8)))
            let body = #"{"message":{"data":"\#(Data(event.utf8).base64EncodedString())","messageId":"1","publishTime":"2026-12-07T10:00:00Z"},"subscription":"s"}"#
            return try await post("/receipts/rbm", body: Array(body.utf8), headers: [("X-Goog-Signature", Data(mac).base64EncodedString())])
        }
    }

    /// A receipts worker on a free port with every provider's secret; `body` gets a caller and the stores.
    func withReceipts(_ body: (TestStack, Caller, ReceiptStore, RedisStateStore) async throws -> Void) async throws {
        try await TestStack.with { h in
            var settings = h.settings
            settings.receipts.port = 0
            settings.receipts.publicURL = "https://receipts.example.test"
            settings.receipts.secrets = [
                "twilio": Self.twilioToken, "whatsapp_cloud": Self.appSecret, "whatsapp_verify": "verify-me",
                "sendgrid": Self.sendGridKey.publicKey.derRepresentation.base64EncodedString(),
                "viber": Self.viberToken, "rbm": Self.rbmToken, "webhook": "hook-secret",
            ]
            var logger = Logger(label: "test.receipts")
            logger.logLevel = .warning
            let env = WorkerEnvironment(settings: settings, engine: h.engine, logger: logger)
            let port = Mutex(0)
            let worker = ReceiptsWorker(environment: env, client: h.client, redis: h.redis) { p in port.withLock { $0 = p } }
            let task = Task { try await worker.run() }
            #expect(try await h.eventually { port.withLock { $0 } > 0 })
            let connection = try await RedisConnection.connect(h.redis)
            let http = HTTPClient(eventLoopGroupProvider: .singleton)
            do {
                try await body(h, Caller(http: http, base: "http://127.0.0.1:\(port.withLock { $0 })"),
                               ReceiptStore(connection: connection, keys: h.keys), RedisStateStore(connection: connection, keys: h.keys))
            } catch {
                task.cancel(); try? await http.shutdown(); await connection.close()
                throw error
            }
            task.cancel()
            _ = await task.result
            try await http.shutdown()
            await connection.close()
        }
    }

    static func context(_ customer: String = "c-1", channel: String, provider: String) -> ReceiptContext {
        ReceiptContext(customer: customer, channel: channel, journey: "abandoned_cart", step: "first_reminder", template: "cart_reminder_1", provider: provider)
    }

    func receipts(_ h: TestStack, expected: Int) async throws -> [(type: String, message: String, detail: String?)] {
        try await h.read("deliveries", expected: expected, settle: true).map { record in
            let o = jsonObject(record.value)
            let attributes = o["attributes"] as? [String: Any] ?? [:]
            return (o["type"] as? String ?? "", attributes["message_id"] as? String ?? "", attributes["detail"] as? String)
        }
    }

    @Test("signed callbacks become receipts once each and in order; unsigned, wrongly signed and stale ones are refused")
    func statusCallbacks() async throws {
        try await withReceipts { h, caller, store, _ in
            try await store.remember([
                ("m-tw", Self.context(channel: "sms", provider: "twilio"), nil),
                ("m-wa", Self.context(channel: "whatsapp", provider: "whatsapp_cloud"), nil),
                ("m-sg", Self.context(channel: "email", provider: "sendgrid"), nil),
                ("m-vb", Self.context(channel: "viber", provider: "viber"), nil),
                ("m-rb", Self.context(channel: "rcs", provider: "rbm"), nil),
            ])
            try await store.link(provider: "viber", reference: "5098034272017990001", messageID: "m-vb")

            // Twilio: delivered overtakes sent, then both are repeated (Twilio retries).
            #expect(try await caller.twilio("/receipts/twilio?wm=m-tw", [("MessageSid", "SM1"), ("MessageStatus", "delivered")]).0 == 200)
            #expect(try await caller.twilio("/receipts/twilio?wm=m-tw", [("MessageSid", "SM1"), ("MessageStatus", "sent")]).0 == 200)
            #expect(try await caller.twilio("/receipts/twilio?wm=m-tw", [("MessageSid", "SM1"), ("MessageStatus", "delivered")]).0 == 200)
            // Refused: wrong token, no signature, a signature for another URL (the query is signed too).
            #expect(try await caller.twilio("/receipts/twilio?wm=m-tw", [("MessageStatus", "failed")], token: "wrong").0 == 403)
            #expect(try await caller.post("/receipts/twilio?wm=m-tw", body: Array("MessageStatus=failed".utf8), headers: []).0 == 403)

            // WhatsApp: the handshake, then read before delivered (publishes sent, delivered, read), then delivered again.
            #expect(try await caller.get("/receipts/whatsapp?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444") == (200, "1158201444"))
            #expect(try await caller.get("/receipts/whatsapp?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1").0 == 403)
            func wa(_ status: String) -> String {
                #"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","statuses":[{"id":"wamid.1","status":"\#(status)","timestamp":"1796000000","recipient_id":"4790000001","biz_opaque_callback_data":"m-wa"}]}}]}]}"#
            }
            #expect(try await caller.whatsApp(wa("read")).0 == 200)
            #expect(try await caller.whatsApp(wa("delivered")).0 == 200)
            #expect(try await caller.whatsApp(wa("failed"), secret: "not-the-secret").0 == 403)

            // SendGrid: two clicks count once; a stale signed request is refused.
            let click = #"[{"email":"x@example.com","event":"click","timestamp":1796000000,"sg_event_id":"e1","waymark_message_id":"m-sg","url":"https://shop.example/cart"},{"event":"click","timestamp":1796000005,"sg_event_id":"e2","waymark_message_id":"m-sg"}]"#
            #expect(try await caller.sendGrid(click).0 == 200)
            #expect(try await caller.sendGrid(#"[{"event":"bounce","timestamp":1796000000,"waymark_message_id":"m-sg"}]"#,
                                              timestamp: Int64(Date().timeIntervalSince1970) - 3_600).0 == 403)

            // Viber by its 64-bit token; RBM by our message id.
            #expect(try await caller.viber(#"{"event":"delivered","timestamp":1796000000000,"message_token":5098034272017990001,"user_id":"u1"}"#).0 == 200)
            #expect(try await caller.rbm(#"{"eventType":"DELIVERED","eventId":"ev1","messageId":"m-rb","senderPhoneNumber":"+4790000001","agentId":"a"}"#).0 == 200)
            // A callback for a message Waymark never sent is answered (so the provider stops) but publishes nothing.
            #expect(try await caller.twilio("/receipts/twilio?wm=m-unknown", [("MessageStatus", "delivered")]).0 == 200)

            // (message_sent is the sender's: it published it when the provider accepted the message.)
            let seen = try await receipts(h, expected: 6)
            #expect(seen.filter { $0.message == "m-tw" }.map(\.type) == ["message_delivered"])
            #expect(seen.filter { $0.message == "m-wa" }.map(\.type) == ["message_delivered", "message_read"])
            #expect(seen.first { $0.message == "m-wa" }?.detail == "implied by message_read")
            #expect(seen.filter { $0.message == "m-sg" }.map(\.type) == ["message_clicked"])
            #expect(seen.filter { $0.message == "m-vb" }.map(\.type) == ["message_delivered"])
            #expect(seen.filter { $0.message == "m-rb" }.map(\.type) == ["message_delivered"])
            #expect(seen.count == 6)
            #expect(!seen.contains { $0.type == "message_failed" })
        }
    }

    @Test("STOP replies and unsubscribes withdraw consent at once; START restores it; the next message is suppressed")
    func stopWithdrawsConsent() async throws {
        try await withReceipts { h, caller, store, state in
            // The sender remembered whose number +47 900 00 001 is when it sent to it.
            try await store.remember([("m-1", Self.context(channel: "sms", provider: "twilio"), AddressDigest.of(.sms, "+4790000001"))])
            #expect(try await caller.twilio("/receipts/twilio/inbound", [("From", "+4790000001"), ("To", "+15550001111"), ("Body", "STOP")]).0 == 200)
            #expect(try await state.suppressions("c-1").channels == ["sms"])
            // An e-mail unsubscribe through SendGrid.
            try await store.remember([("m-2", Self.context(channel: "email", provider: "sendgrid"), nil)])
            #expect(try await caller.sendGrid(#"[{"event":"unsubscribe","timestamp":1796000000,"waymark_message_id":"m-2"}]"#).0 == 200)
            #expect(try await state.suppressions("c-1").channels == ["email", "sms"])
            let published = try await receipts(h, expected: 2)
            #expect(published.map(\.type).sorted() == ["message_unsubscribed", "message_unsubscribed"])
            // A reply from a number Waymark never sent to changes nothing.
            #expect(try await caller.twilio("/receipts/twilio/inbound", [("From", "+4790000009"), ("Body", "STOP")]).0 == 200)
            #expect(try await caller.twilio("/receipts/twilio/inbound", [("From", "+4790000001"), ("Body", "start")]).0 == 200)
            #expect(try await state.suppressions("c-1").channels == ["email"])

            // The engine sees the withdrawal: an SMS-or-email send for c-1 is suppressed with the reason.
            let profile = CustomerProfile(customerID: "c-1", contacts: [.sms: "+4790000001", .email: "c1@example.com"], consent: [.sms: true, .email: true])
                .applying(try await state.suppressions("c-1"))
            #expect(profile.withdrawn == [.email])
            // `waymark inspect customer` shows it.
            let report = try await CustomerInspector(redis: store.connection, keys: h.keys, rules: nil).inspect("c-1")
            #expect(report.unsubscribed.map(\.channel) == ["email"])
            #expect(report.render().contains("unsubscribed: email since"))

            // Erasure takes the receipts side's traces too: contexts of claimed messages, the address index.
            _ = try await SenderStore(connection: store.connection, keys: h.keys).claim([("c-1", "m-1", "sms"), ("c-1", "m-2", "email")], staleAfterMs: 30_000)
            let digest = try #require(AddressDigest.of(.sms, "+4790000001"))
            #expect(try await store.customer(addressDigest: digest) == "c-1")
            #expect(try await state.erase("c-1", scope: .init(state: true, senderClaims: true)) > 0)
            #expect(try await store.lookup("m-1") == nil)
            #expect(try await store.lookup("m-2") == nil)
            #expect(try await store.customer(addressDigest: digest) == nil)
            #expect(try await state.suppressions("c-1").isEmpty)
        }
    }
}

@Suite("Receipts feed journeys", .serialized)
struct ReceiptsIntoJourneysTests {
    @Test("a click reported by the provider ends the abandoned-cart reminders; without one the second reminder goes out")
    func clickExitsReminderJourney() async throws {
        try await TestStack.with { h in
            let t0 = JourneyWorkerTests.t0
            let clock = TestClock(t0)
            var settings = h.settings
            settings.receipts.port = 0
            settings.receipts.secrets = ["webhook": "hook-secret"]
            var logger = Logger(label: "test.receipts")
            logger.logLevel = .warning
            let env = WorkerEnvironment(settings: settings, engine: h.engine, clock: { clock.now }, logger: logger)
            let handoffs = FileManager.default.temporaryDirectory.appendingPathComponent("wm-click-\(UInt64.random(in: 0...UInt64.max)).jsonl").path
            let worker = JourneyWorker(environment: env, client: h.client, redis: h.redis)
            let scheduler = Scheduler(environment: env, client: h.client, redis: h.redis)
            let sender = SenderWorker(environment: env, channels: [.sms, .email, .push], provider: try FileProvider(path: handoffs),
                                      client: h.client, redis: h.redis)
            let port = Mutex(0)
            let receipts = ReceiptsWorker(environment: env, client: h.client, redis: h.redis) { p in port.withLock { $0 = p } }
            let services = Task { try await withThrowingTaskGroup(of: Void.self) { g in
                g.addTask { try await worker.run() }
                g.addTask { try await scheduler.run() }
                g.addTask { try await sender.run() }
                try await g.waitForAll()
            } }
            let receiptsTask = Task { try await receipts.run() }
            #expect(try await h.eventually { port.withLock { $0 } > 0 })

            for c in ["c-click", "c-quiet"] {
                try await h.produce("customers", key: c, json: #"{"customer_id":"\#(c)","timezone":"Europe/Oslo","contacts":{"sms":"+4790000001"},"consent":{"sms":true},"preferred_channels":["sms"]}"#)
            }
            #expect(try await h.eventually { worker.stats.profiles == 2 })
            for c in ["c-click", "c-quiet"] {
                try await h.produce("touchpoints", key: c, json: #"{"event_id":"e-\#(c)","customer_id":"\#(c)","type":"cart_abandoned","occurred_at":"\#(t0)","attributes":{"cart_id":"k-\#(c)","value":59.9,"currency":"EUR"}}"#)
            }
            #expect(try await h.eventually { worker.stats.touchpoints == 2 })
            clock.set(t0.adding(.hours(1)).adding(.seconds(1)))
            // Both first reminders reach the provider; the sender remembered them for the receipts endpoint.
            #expect(try await h.eventually { sender.stats.delivered == 2 })
            let lines = (FileManager.default.contents(atPath: handoffs) ?? Data()).split(separator: 0x0A)
            let first = try lines.map { try ProviderHandoff.decode($0).get() }
            let clicked = try #require(first.first { $0.message.customerID == "c-click" })

            // The provider (here: an app or link tracker on the webhook route) reports the click, signed.
            let body = Array(#"{"message_id":"\#(clicked.message.messageID)","status":"clicked"}"#.utf8)
            let signature = WebhookProvider.signature(secret: SymmetricKey(data: Data("hook-secret".utf8)),
                                                      timestamp: Int64(Date().timeIntervalSince1970), body: body)
            let http = HTTPClient(eventLoopGroupProvider: .singleton)
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port.withLock { $0 })/receipts/webhook")
            request.method = .POST
            request.headers.add(name: WebhookProvider.signatureHeader, value: signature)
            request.body = .bytes(ByteBuffer(bytes: body))
            #expect(try await http.execute(request, timeout: .seconds(10)).status.code == 200)
            try await http.shutdown()
            // message_sent ×2 from the sender, message_clicked from the endpoint, all read by the journey worker.
            #expect(try await h.eventually { worker.stats.touchpoints >= 5 })

            // A day later: the quiet customer's wait timed out (second reminder); the clicker's journey ended.
            clock.set(t0.adding(.hours(26)))
            #expect(try await h.eventually { sender.stats.delivered == 3 })
            try await Task.sleep(for: .milliseconds(500))
            let all = try (FileManager.default.contents(atPath: handoffs) ?? Data()).split(separator: 0x0A).map { try ProviderHandoff.decode($0).get() }
            // The shipped journey runs an A/B test of the first reminder's copy: each cart's arm decides its template.
            let experiment = try #require(h.engine.journeys.first { $0.name == "abandoned_cart" }?.experiment)
            func firstReminder(_ c: String) throws -> String {
                let arm = Assignment.arm(in: experiment, customerID: c, key: "k-\(c)")
                try #require(arm != Experiment.holdoutArm, "test customers are chosen outside the holdout")
                return arm == "B" ? "cart_reminder_1_offer" : "cart_reminder_1"
            }
            #expect(all.filter { $0.message.customerID == "c-click" }.map(\.message.template) == [try firstReminder("c-click")])
            #expect(all.filter { $0.message.customerID == "c-quiet" }.map(\.message.template) == [try firstReminder("c-quiet"), "cart_reminder_2"])

            worker.stop(); scheduler.stop(); sender.stop()
            try await services.value
            receiptsTask.cancel()
            _ = await receiptsTask.result
        }
    }

    @Test("WhatsApp reports a message it accepted as failed: it goes out on SMS, once, with a fallback_channel decision")
    func failedReceiptFallsBack() async throws {
        try await TestStack.with { h in
            let now = SenderWorkerTests.noon
            let clock = TestClock(now)
            var settings = h.settings
            settings.receipts.port = 0
            settings.receipts.secrets = ["whatsapp_cloud": "meta-secret"]
            var logger = Logger(label: "test.receipts")
            logger.logLevel = .warning
            let env = WorkerEnvironment(settings: settings, engine: h.engine, clock: { clock.now }, logger: logger)
            let handoffs = FileManager.default.temporaryDirectory.appendingPathComponent("wm-fb-\(UInt64.random(in: 0...UInt64.max)).jsonl").path
            let journey = JourneyWorker(environment: env, client: h.client, redis: h.redis)  // stores the profile
            let sender = SenderWorker(environment: env, channels: [.whatsapp, .sms], provider: try FileProvider(path: handoffs),
                                      client: h.client, redis: h.redis)
            let port = Mutex(0)
            let receipts = ReceiptsWorker(environment: env, client: h.client, redis: h.redis) { p in port.withLock { $0 = p } }
            let services = Task { try await withThrowingTaskGroup(of: Void.self) { g in
                g.addTask { try await journey.run() }
                g.addTask { try await sender.run() }
                g.addTask { try await receipts.run() }
                try await g.waitForAll()
            } }
            try await h.produce("customers", key: "c-1", json: #"{"customer_id":"c-1","timezone":"Europe/Oslo","contacts":{"sms":"+4790000001","whatsapp":"+4790000001"},"consent":{"sms":true,"whatsapp":true}}"#)
            #expect(try await h.eventually { journey.stats.profiles == 1 && port.withLock { $0 } > 0 })
            var message = SenderWorkerTests.message(1, channel: .whatsapp)
            message.fallbackChannels = [.sms]
            try await h.produce("outbound.whatsapp", key: "c-1", json: String(decoding: message.jsonBytes(), as: UTF8.self))
            #expect(try await h.eventually { sender.stats.delivered == 1 })

            // Meta's webhook: the message failed after all (131026, undeliverable), signed with the app secret.
            let body = #"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"statuses":[{"id":"wamid.1","status":"failed","timestamp":"1795690900","biz_opaque_callback_data":"\#(message.messageID)","errors":[{"code":131026,"title":"Message undeliverable"}]}]}}]}]}"#
            let mac = HMAC<SHA256>.authenticationCode(for: Data(body.utf8), using: SymmetricKey(data: Data("meta-secret".utf8)))
            let http = HTTPClient(eventLoopGroupProvider: .singleton)
            for _ in 0..<2 {  // Meta retries: the second copy changes nothing
                var request = HTTPClientRequest(url: "http://127.0.0.1:\(port.withLock { $0 })/receipts/whatsapp")
                request.method = .POST
                request.headers.add(name: "X-Hub-Signature-256", value: "sha256=" + mac.map { String(format: "%02x", $0) }.joined())
                request.body = .bytes(ByteBuffer(string: body))
                #expect(try await http.execute(request, timeout: .seconds(10)).status.code == 200)
            }
            try await http.shutdown()
            #expect(try await h.eventually { sender.stats.delivered == 2 })
            try await Task.sleep(for: .milliseconds(500))
            let all = try (FileManager.default.contents(atPath: handoffs) ?? Data()).split(separator: 0x0A).map { try ProviderHandoff.decode($0).get() }
            #expect(all.map(\.message.channel) == [.whatsapp, .sms])
            #expect(Set(all.map(\.idempotencyKey)) == [message.messageID.description])
            let decisions = try await h.read("journey.decisions", expected: 1).map { jsonObject($0.value) }
            let fallback = decisions.first { $0["reason"] as? String == "fallback_channel" }
            #expect(fallback?["channel"] as? String == "sms")
            #expect(fallback?["rule"] as? String == "provider_receipt:file")
            #expect((fallback?["detail"] as? String)?.contains("whatsapp 131026") == true)
            let types = try await h.read("deliveries", expected: 3, settle: true).compactMap { jsonObject($0.value)["type"] as? String }
            #expect(types.filter { $0 == "message_failed" }.count == 1)
            #expect(types.filter { $0 == "message_sent" }.count == 2)

            journey.stop(); sender.stop()
            services.cancel()
            _ = await services.result
        }
    }
}
