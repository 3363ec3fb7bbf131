import Foundation
import Hummingbird
import Logging
import Metrics
import ServiceLifecycle
import WaymarkConfig
import WaymarkEngine
import WaymarkKafka
import WaymarkRedis
import WaymarkState
import WaymarkWire

/// `waymark worker receipts`: serves providers' status callbacks and inbound replies over HTTP,
/// checks each provider's signature, and publishes receipts to `deliveries` (keyed by customer).
///
/// Routes (each only when its secret is configured, see ``ReceiptsSettings``):
/// `POST /receipts/twilio` (status callbacks), `POST /receipts/twilio/inbound` (STOP/START replies),
/// `GET|POST /receipts/whatsapp`, `POST /receipts/sendgrid`, `POST /receipts/viber`,
/// `POST /receipts/rbm`, `POST /receipts/webhook` (Waymark's own signature).
///
/// Providers retry and reorder callbacks. Each message's receipts go out once and in order:
/// `delivered` before `read` (a `read` that overtakes its `delivered` publishes both; `message_sent`
/// is the sender's, published when the provider accepted the message), and
/// `failed`, `clicked`, `unsubscribed` once each. A receipt is published (and acknowledged by Kafka)
/// before it is marked done and before the provider gets its 200, so a crash in between means a
/// repeat, never a loss; repeats carry the same event id and journeys drop them. An unsubscribe
/// withdraws the channel's consent in Redis at once, before the 200.
public final class ReceiptsWorker: Service, Sendable {
    public let environment: WorkerEnvironment
    private let client: KafkaClientConfiguration
    private let redis: RedisConfiguration
    /// Called with the bound port once the server listens (tests bind port 0).
    private let onListening: @Sendable (Int) -> Void

    public init(environment: WorkerEnvironment, client: KafkaClientConfiguration, redis: RedisConfiguration,
                onListening: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.environment = environment; self.client = client; self.redis = redis; self.onListening = onListening
    }

    public func run() async throws {
        let settings = environment.settings.receipts
        let logger = environment.logger
        let connection = try await RedisConnection.connect(redis, logger: logger)
        let producer = try KafkaProducer(configuration: .init(client: client), logger: logger)
        let handler = ReceiptHandler(environment: environment, receipts: ReceiptStore(connection: connection, keys: environment.keys),
                                     state: environment.stateStore(connection), producer: producer, client: client,
                                     senders: SenderStore(connection: connection, keys: environment.keys))
        let router = Router()
        handler.register(on: router)
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .notice)
        let onListening = onListening
        let app = Application(router: router, configuration: .init(address: .hostname(settings.host, port: settings.port), serverName: "waymark-receipts"),
                              onServerRunning: { channel in
                                  let port = channel.localAddress?.port ?? settings.port
                                  logger.info("receipts endpoint up", metadata: [
                                      "http.address": "\(settings.host):\(port)", "providers": "\(settings.secrets.keys.sorted())",
                                  ])
                                  onListening(port)
                              }, logger: quiet)
        do {
            try await app.run()
        } catch {
            await producer.close(); await connection.close()
            throw error
        }
        await producer.close()
        await connection.close()
    }
}

/// Checks, parses and publishes callbacks (the part of ``ReceiptsWorker`` behind the routes).
final class ReceiptHandler: Sendable {
    let environment: WorkerEnvironment
    let receipts: ReceiptStore
    let state: RedisStateStore
    let producer: KafkaProducer
    let client: KafkaClientConfiguration
    let senders: SenderStore
    /// One connection serves every request: requests take turns on it (hiredis contexts are not shared).
    private let turns = AsyncTurns()

    init(environment: WorkerEnvironment, receipts: ReceiptStore, state: RedisStateStore, producer: KafkaProducer,
         client: KafkaClientConfiguration, senders: SenderStore) {
        self.environment = environment; self.receipts = receipts; self.state = state; self.producer = producer
        self.client = client; self.senders = senders
    }

    var settings: ReceiptsSettings { environment.settings.receipts }

    func register(on router: Router<BasicRequestContext>) {
        let secrets = settings.secrets
        if let token = secrets["twilio"] {
            router.post("/receipts/twilio") { request, _ in
                try await self.twilio(request, token: token) { form, query in ProviderCallbacks.twilioStatus(form, query: query) }
            }
            router.post("/receipts/twilio/inbound") { request, _ in
                try await self.twilio(request, token: token) { form, _ in ProviderCallbacks.twilioInbound(form) }
            }
        }
        if let appSecret = secrets["whatsapp_cloud"] {
            let verifyToken = secrets["whatsapp_verify"]
            router.get("/receipts/whatsapp") { request, _ -> Response in
                // Meta's subscription handshake: echo hub.challenge when hub.verify_token matches.
                let query = request.uri.queryParameters
                guard let verifyToken, query["hub.mode"].map(String.init) == "subscribe",
                      let given = query["hub.verify_token"].map(String.init), CallbackSignatures.constantTimeEqual(given, verifyToken),
                      let challenge = query["hub.challenge"].map(String.init) else { return Self.text(.forbidden, "verification failed") }
                return Self.text(.ok, challenge)
            }
            router.post("/receipts/whatsapp") { request, _ in
                let body = try await Self.body(request)
                guard CallbackSignatures.verifyMeta(Self.header(request, "X-Hub-Signature-256"), appSecret: appSecret, body: body) else {
                    return self.refuse("whatsapp_cloud", "bad or missing X-Hub-Signature-256")
                }
                let json = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
                return try await self.publish(ProviderCallbacks.whatsApp(json), provider: "whatsapp_cloud")
            }
        }
        if let key = secrets["sendgrid"] {
            router.post("/receipts/sendgrid") { request, _ in
                let body = try await Self.body(request)
                let timestamp = Self.header(request, "X-Twilio-Email-Event-Webhook-Timestamp")
                guard CallbackSignatures.verifySendGrid(signature: Self.header(request, "X-Twilio-Email-Event-Webhook-Signature"),
                                                        timestamp: timestamp, body: body, publicKey: key) else {
                    return self.refuse("sendgrid", "bad or missing event webhook signature")
                }
                guard let t = timestamp.flatMap({ Int64($0) }), abs(WallClock.now().milliseconds / 1000 - t) <= Int64(self.settings.maxAgeSeconds) else {
                    return self.refuse("sendgrid", "stale timestamp (a replayed request?)")
                }
                let events = (try? JSONSerialization.jsonObject(with: Data(body))) as? [[String: Any]] ?? []
                return try await self.publish(ProviderCallbacks.sendGrid(events), provider: "sendgrid")
            }
        }
        if let token = secrets["viber"] {
            router.post("/receipts/viber") { request, _ in
                let body = try await Self.body(request)
                guard CallbackSignatures.verifyViber(Self.header(request, "X-Viber-Content-Signature"),
                                                     authToken: token, body: body) else {
                    return self.refuse("viber", "bad or missing X-Viber-Content-Signature")
                }
                let json = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
                return try await self.publish(ProviderCallbacks.viber(json, raw: body), provider: "viber")
            }
        }
        if let clientToken = secrets["rbm"] {
            router.post("/receipts/rbm") { request, _ in
                let body = try await Self.body(request)
                let json = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
                // The console's webhook check: echo `secret` when `clientToken` matches.
                if let given = json["clientToken"] as? String, let secret = json["secret"] as? String {
                    return CallbackSignatures.constantTimeEqual(given, clientToken) ? Self.text(.ok, secret) : self.refuse("rbm", "wrong clientToken")
                }
                guard let message = json["message"] as? [String: Any], let encoded = message["data"] as? String,
                      let data = Data(base64Encoded: encoded),
                      CallbackSignatures.verifyRBM(Self.header(request, "X-Goog-Signature"), clientToken: clientToken, data: Array(data)) else {
                    return self.refuse("rbm", "bad or missing X-Goog-Signature")
                }
                let event = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
                return try await self.publish(ProviderCallbacks.rbm(event), provider: "rbm")
            }
        }
        if let secret = secrets["webhook"] {
            router.post("/receipts/webhook") { request, _ in
                let body = try await Self.body(request)
                guard CallbackSignatures.verifyWaymark(Self.header(request, WebhookProvider.signatureHeader), secret: secret,
                                                       body: body, now: WallClock.now().milliseconds / 1000,
                                                       maxAge: Int64(self.settings.maxAgeSeconds)) else {
                    return self.refuse("webhook", "bad, missing or stale X-Waymark-Signature")
                }
                let json = (try? JSONSerialization.jsonObject(with: Data(body))) ?? [:]
                return try await self.publish(ProviderCallbacks.waymark(json), provider: "webhook")
            }
        }
    }

    /// Twilio posts forms and signs the URL it called: rebuilt from `receipts.public_url`, path and query.
    private func twilio(_ request: Request, token: String,
                        parse: ([String: String], [String: String]) -> [CallbackEvent]) async throws -> Response {
        let body = try await Self.body(request)
        let form = FormEncoding.decode(String(decoding: body, as: UTF8.self))
        let url = settings.publicURL + request.uri.path + (request.uri.query.map { "?" + $0 } ?? "")
        guard CallbackSignatures.verifyTwilio(Self.header(request, "X-Twilio-Signature"),
                                              authToken: token, url: url, parameters: form) else {
            return refuse("twilio", "bad or missing X-Twilio-Signature")
        }
        let query = FormEncoding.decode(request.uri.query ?? "")
        let response = try await publish(parse(form, query), provider: "twilio")
        // Twilio reads a reply to an inbound message as TwiML: answer with an empty one.
        return response.status == .ok ? Response(status: .ok, headers: [.contentType: "text/xml"],
                                                 body: ResponseBody(byteBuffer: ByteBuffer(string: "<Response/>"))) : response
    }

    /// Resolves, de-duplicates, publishes and marks; 200 when all of it is durable, 503 (the provider
    /// retries) when Redis or Kafka failed.
    func publish(_ events: [CallbackEvent], provider: String) async throws -> Response {
        Counter(label: "waymark_receipt_callbacks_total", dimensions: [("provider", provider)]).increment()
        do {
            try await turns.run { try await self.handle(events, provider: provider) }
            return Self.text(.ok, "ok")
        } catch {
            environment.logger.error("receipt not published; the provider will retry", metadata: [
                "provider": "\(provider)", "error": "\(error)",
            ])
            return Self.text(.serviceUnavailable, "try again")
        }
    }

    private func handle(_ events: [CallbackEvent], provider: String) async throws {
        let now = environment.clock()
        let topic = environment.settings.kafka.deliveries.name
        for event in events {
            switch event.kind {
            case .subscription(let channel, let unsubscribe):
                guard case .address(_, let address) = event.target, let digest = AddressDigest.of(channel, address),
                      let customer = try await receipts.customer(addressDigest: digest) else {
                    unknown(provider, "reply from an address Waymark never sent to")
                    continue
                }
                try await subscription(customer: customer, channel: channel, unsubscribe: unsubscribe, at: event.at ?? now, topic: topic)
            case .status(let outcome):
                let messageID: String
                switch event.target {
                case .message(let id): messageID = id
                case .reference(let provider, let reference):
                    guard let id = try await receipts.messageID(provider: provider, reference: reference) else {
                        unknown(provider, "provider reference unknown (expired, or not sent by Waymark)")
                        continue
                    }
                    messageID = id
                case .address: continue
                }
                guard let known = try await receipts.lookup(messageID), let channel = Channel(rawValue: known.context.channel) else {
                    unknown(provider, "message id unknown (expired, or not sent by Waymark)")
                    continue
                }
                var outcomes: [DeliveryReceipt.Outcome] = []
                // The sender published `message_sent` when the provider accepted the message: the
                // progression here starts after it (a provider's own "sent" adds nothing).
                var progress = max(known.progress, 1)
                var once: [String] = []
                if let rank = ReceiptStore.progression.firstIndex(of: String(outcome.rawValue.dropFirst("message_".count))) {
                    if rank + 1 > progress {
                        for step in progress..<(rank + 1) {
                            outcomes.append(DeliveryReceipt.Outcome(rawValue: "message_" + ReceiptStore.progression[step])!)
                        }
                        progress = rank + 1
                    }
                } else {
                    let name = String(outcome.rawValue.dropFirst("message_".count))
                    if !known.once.contains(name) { outcomes.append(outcome); once.append(name) }
                }
                if outcomes.isEmpty {
                    Counter(label: "waymark_receipt_repeats_total", dimensions: [("provider", provider)]).increment()
                    continue
                }
                let c = known.context
                let records = outcomes.map { o in
                    KafkaProducerRecord(topic: topic, key: Array(c.customer.utf8), value: DeliveryReceipt(
                        outcome: o, messageID: messageID, customerID: c.customer, channel: channel, journey: c.journey, step: c.step,
                        template: c.template, at: event.at ?? now, detail: o == outcome ? event.detail : "implied by \(outcome.rawValue)",
                        source: DeliveryReceipt.receiptsSource, arm: c.arm).jsonBytes())
                }
                if outcome == .unsubscribed {
                    try await state.suppress(c.customer, channel.rawValue, at: (event.at ?? now).milliseconds)
                }
                var all = records
                if outcome == .failed, !c.origin.isEmpty {
                    all += try await fallBack(messageID: messageID, context: c, failed: channel, detail: event.detail ?? "failed", now: now)
                }
                try await producer.sendAll(all)
                try await receipts.markPublished(messageID, progress: progress, once: once)
                for o in outcomes {
                    Counter(label: "waymark_receipts_published_total", dimensions: [("provider", provider), ("type", o.rawValue)]).increment()
                }
            }
        }
    }

    /// A provider said a message it had accepted failed (WhatsApp 131026, an undelivered SMS): send it
    /// on the next channel of its fallback list that has consent and an address, as the sender does
    /// when a provider refuses a call. The message is read back from where the sender read it; the
    /// sender's claim on the id is released so the copy (same id) can be claimed on the new channel, and
    /// the copy goes through every send-time rule (expiry, quiet hours, consent) there. Returns the
    /// records to publish (the copy and a `fallback_channel` decision), or none.
    private func fallBack(messageID: String, context c: ReceiptContext, failed: Channel, detail: String, now: Timestamp) async throws -> [KafkaProducerRecord] {
        let parts = c.origin.split(separator: "/")
        guard parts.count >= 3, let partition = Int32(parts[parts.count - 2]), let offset = Int64(parts[parts.count - 1]) else { return [] }
        let topic = parts.dropLast(2).joined(separator: "/")
        let found = try await KafkaConsumer.record(client: client, topic: topic, partition: partition, offset: offset)
        guard let record = found, case .success(let message) = environment.parser.outbound(key: record.key, value: record.value),
              message.messageID.description == messageID else {
            unknown(c.provider, "the failed message is no longer on \(topic) (retention): no fallback")
            return []
        }
        guard let copy = message.fallbackCopy(profile: try await environment.profiles([c.customer], from: state)[c.customer]) else { return [] }
        try await senders.release(customer: c.customer, messageID: messageID)
        let settings = environment.settings.kafka
        let decision = Decision(.fallbackChannel, rule: "provider_receipt:\(c.provider)", about: copy, at: now,
                                detail: "\(failed.rawValue) failed after the provider accepted it: \(detail)")
        Counter(label: "waymark_receipt_fallbacks_total", dimensions: [("provider", c.provider)]).increment()
        return [KafkaProducerRecord(topic: settings.outboundTopic(copy.channel.rawValue), key: Array(copy.customerID.utf8), value: copy.jsonBytes()),
                KafkaProducerRecord(topic: settings.decisions.name, key: Array(copy.customerID.utf8), value: decision.jsonBytes())]
    }

    /// Records an unsubscribe or re-subscribe and tells the journeys (`message_unsubscribed` /
    /// `message_resubscribed` with `channel`).
    private func subscription(customer: String, channel: Channel, unsubscribe: Bool, at: Timestamp, topic: String) async throws {
        try await state.suppress(customer, channel.rawValue, at: at.milliseconds, withdraw: unsubscribe)
        let type = unsubscribe ? SuppressionChange.unsubscribed : SuppressionChange.resubscribed
        let touchpoint = Touchpoint(eventID: "s-\(customer)-\(channel.rawValue)-\(type)-\(at.milliseconds)", customerID: customer, type: type,
                                    occurredAt: at, source: DeliveryReceipt.receiptsSource,
                                    attributes: ["channel": .string(channel.rawValue), "reason": .string("reply keyword")])
        try await producer.sendAll([KafkaProducerRecord(topic: topic, key: Array(customer.utf8), value: touchpoint.jsonBytes())])
        environment.logger.notice(unsubscribe ? "customer unsubscribed by reply" : "customer re-subscribed by reply",
                                  metadata: ["customer.id": "\(customer)", "channel": "\(channel.rawValue)"])
    }

    private func unknown(_ provider: String, _ why: String) {
        Counter(label: "waymark_receipts_unmatched_total", dimensions: [("provider", provider)]).increment()
        environment.logger.info("callback matched no message", metadata: ["provider": "\(provider)", "why": "\(why)"])
    }

    private func refuse(_ provider: String, _ why: String) -> Response {
        Counter(label: "waymark_receipt_rejected_total", dimensions: [("provider", provider)]).increment()
        environment.logger.warning("callback refused", metadata: ["provider": "\(provider)", "why": "\(why)"])
        return Self.text(.forbidden, "signature check failed")
    }

    /// A request header's first value (names compare case-insensitively).
    static func header(_ request: Request, _ name: String) -> String? {
        let lowered = name.lowercased()
        return request.headers.first { $0.name.canonicalName == lowered }?.value
    }

    static func body(_ request: Request) async throws -> [UInt8] {
        Array(buffer: try await request.body.collect(upTo: 1 << 20))
    }

    static func text(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
}

/// Runs async operations one at a time, in arrival order (a shared Redis connection).
final class AsyncTurns: Sendable {
    private let permits = CallPermits(1)

    func run<T: Sendable>(_ operation: @Sendable () async throws -> T) async throws -> T {
        await permits.acquire()
        defer { permits.release(1) }
        return try await operation()
    }
}
