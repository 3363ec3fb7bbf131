import Logging
import Metrics
import ServiceLifecycle
import Synchronization
import WaymarkConfig
import WaymarkEngine
import WaymarkWire
import WaymarkKafka
import WaymarkRedis
import WaymarkState

/// Header carrying the attempt number of a message re-published after a retry delay.
public let attemptHeader = "x-waymark-attempt"

/// Consumes `outbound.<channel>` and hands messages to a provider, exactly once per message id.
///
/// Per message, at the moment of sending: skip it if expired; park it (Redis delayed queue, the
/// scheduler re-publishes it) if it is not due yet or the recipient is in quiet hours now; suppress
/// it if consent or the address is gone. Otherwise claim the message id in Redis, take a token from
/// the channel's shared rate limiter, call the provider with the id as idempotency key, and mark it
/// done right away. Transient failures are retried with backoff through the delayed queue; a
/// permanent failure falls back to the next allowed channel or ends in the dead-letter topic.
/// Receipts (`message_sent` when a provider accepted, `message_failed`) go to `deliveries`, decisions
/// to `journey.decisions`; `message_delivered`, read and click receipts come from the providers'
/// callbacks (``ReceiptsWorker``). Each channel has its own provider and rate (``ChannelProviders``),
/// and each message is rendered from its template for the recipient's locale right before the call.
/// Offsets are committed only after all of that is durable.
///
/// Two batches overlap: the next batch is polled and started while the provider calls of the one
/// before are still running (so a slow provider does not leave the sender idle between batches), but
/// at most `sender.concurrency` provider calls run at once across both, and each batch's results are
/// published and its offsets committed in order, after the batch before it.
///
/// A swift-service-lifecycle `Service`: graceful shutdown, ``stop()`` or cancellation end it after
/// the batch in flight (see ``StopControl``).
public final class SenderWorker: Service, Sendable {
    public let environment: WorkerEnvironment
    public let channels: [Channel]
    /// The provider, rate and burst of each served channel.
    public let providers: ChannelProviders
    private let client: KafkaClientConfiguration
    private let redis: RedisConfiguration
    /// Stop requests, graceful shutdown and cancellation.
    public let control = StopControl()
    private let totals = Mutex(SenderStats())
    /// Provider calls in flight across the overlapping batches.
    private let permits: CallPermits

    /// What a sender did.
    public struct SenderStats: Sendable {
        public var delivered = 0
        public var duplicatesSkipped = 0
        public var parked = 0
        public var expired = 0
        public var noConsent = 0
        public var retried = 0
        public var fallbacks = 0
        public var failed = 0
        public var deadLettered = 0
    }

    public init(environment: WorkerEnvironment, channels: [Channel], providers: ChannelProviders,
                client: KafkaClientConfiguration, redis: RedisConfiguration) {
        self.environment = environment
        self.channels = channels
        self.providers = providers
        self.client = client
        self.redis = redis
        self.permits = CallPermits(environment.settings.sender.concurrency)
    }

    /// One provider for every channel at `sender.rate_per_second` (tests, benchmarks, the file provider).
    public convenience init(environment: WorkerEnvironment, channels: [Channel], provider: any MessageProvider,
                            client: KafkaClientConfiguration, redis: RedisConfiguration) {
        let sender = environment.settings.sender
        self.init(environment: environment, channels: channels,
                  providers: ChannelProviders(provider, channels: channels, ratePerSecond: sender.ratePerSecond, burst: sender.burst),
                  client: client, redis: redis)
    }

    private func provider(_ channel: Channel) -> any MessageProvider {
        guard let route = providers.routes[channel] else { preconditionFailure("no provider for channel \(channel.rawValue)") }
        return route.provider
    }

    public func stop() { control.request() }
    public var stats: SenderStats { totals.withLock { $0 } }

    /// Runs until ``stop()``, graceful shutdown or cancellation.
    public func run() async throws {
        try await control.run { try await self.work() }
    }

    private func work() async throws {
        let settings = environment.settings
        for channel in channels {  // series exist from the start, at 0
            Counter(label: "waymark_sender_delivered_total", dimensions: [("provider", provider(channel).name), ("channel", channel.rawValue)]).increment(by: 0)
        }
        Counter(label: "waymark_dead_letters_total", dimensions: [("reason", RejectionReason.deliveryFailed.rawValue)]).increment(by: 0)
        let logger = environment.logger
        let connection = try await RedisConnection.connect(redis, logger: logger)
        let store = SenderStore(connection: connection, keys: environment.keys)
        let receipts = ReceiptStore(connection: connection, keys: environment.keys)
        let producer = try KafkaProducer(configuration: .init(client: client), logger: logger)
        let consumer = try KafkaConsumer(configuration: .init(client: client, groupID: settings.kafka.senderGroup), logger: logger)
        try consumer.subscribe(channels.map { settings.kafka.outboundTopic($0.rawValue) })
        let publisher = OutboxPublisher(producer: producer, store: environment.stateStore(connection), logger: logger,
                                        giveUp: { [control] in control.shouldGiveUp })
        logger.info("sender running", metadata: [
            "channels": "\(channels.map(\.rawValue))", "providers": "\(channels.map { "\($0.rawValue)=\(provider($0).name)" })",
        ])
        typealias InFlight = (batch: [KafkaConsumerRecord], output: Task<[KafkaProducerRecord], any Error>)
        /// Publishes a batch's output and commits its offsets (batches finish in the order they started).
        func finish(_ done: InFlight) async throws {
            try await publisher.publishAll(try await done.output.value)
            for attempt in 1...5 {
                do { try await consumer.commit(JourneyWorker.nextOffsets(done.batch)); break } catch {
                    logger.warning("offset commit failed", metadata: ["error": "\(error)", "attempt": "\(attempt)"])
                    try? await Task.sleep(for: .milliseconds(100 * attempt))
                }
            }
        }
        var previous: InFlight?
        var current: InFlight?
        do {
            while !control.isStopping {
                // While `previous` runs, this poll is what overlaps it: at most two batches are in flight.
                let batch = try await consumer.poll(maxRecords: 500, timeout: .milliseconds(settings.worker.pollTimeoutMilliseconds))
                current = batch.isEmpty ? nil : (batch, Task {
                    try await publisher.retrying("send batch") { try await self.send(batch, store: store, receipts: receipts) }
                })
                if let done = previous { try await finish(done) }
                previous = current
                current = nil
            }
            if let done = previous { try await finish(done) }
        } catch {
            // Nothing of an unfinished batch is committed: its records come again (claims make that safe).
            current?.output.cancel()
            previous?.output.cancel()
            _ = await current?.output.result
            _ = await previous?.output.result
            throw error
        }
        await consumer.close()
        await producer.close()
        await connection.close()
        await providers.shutdown()
    }

    /// Handles one batch; returns the records to publish (receipts, decisions, fallbacks, dead letters).
    func send(_ batch: [KafkaConsumerRecord], store: SenderStore, receipts: ReceiptStore) async throws -> [KafkaProducerRecord] {
        let settings = environment.settings
        let now = environment.clock()
        var out: [KafkaProducerRecord] = []
        var stats = SenderStats()
        var messages: [(OutboundMessage, attempt: Int)] = []
        // Where each message was read (`topic/partition/offset`): a provider's later failure receipt
        // re-reads it from there to fall back (see ReceiptHandler.fallBack).
        var origins: [MessageID: String] = [:]
        for record in batch {
            switch environment.parser.outbound(key: record.key, value: record.value) {
            case .success(let message):
                let attempt = record.header(attemptHeader).flatMap { Int(String(decoding: $0, as: UTF8.self)) } ?? 1
                messages.append((message, attempt))
                origins[message.messageID] = "\(record.topic)/\(record.partition)/\(record.offset)"
            case .failure(let rejection):
                out.append(.deadLetter(record, rejection: rejection, topic: settings.kafka.deadLetter.name, at: now.milliseconds))
                stats.deadLettered += 1
            }
        }
        let customers = Array(Set(messages.map(\.0.customerID))).sorted()
        let stateStore = environment.stateStore(store.connection)
        var profiles = try await environment.profiles(customers, from: stateStore)

        // Send-time rules.
        var candidates: [(OutboundMessage, Int, String)] = []
        var parked: [(customer: String, messageID: String, topic: String, message: [UInt8], attempt: Int, due: Int64)] = []
        for (message, attempt) in messages {
            let profile = profiles[message.customerID]
            let topic = settings.kafka.outboundTopic(message.channel.rawValue)
            if now >= message.expiresAt {
                out += outcome(message, .suppressedExpired, rule: "send_time:expired", now: now, receipt: .failed, detail: "expired at send time")
                stats.expired += 1
                continue
            }
            if message.sendAfter > now {
                parked.append((message.customerID, message.messageID.description, topic, message.jsonBytes(), attempt, message.sendAfter.milliseconds))
                stats.parked += 1
                continue
            }
            if let (release, rule) = environment.engine.quietHours.releaseTime(
                messageID: message.messageID, channel: message.channel, transactional: message.transactional, profile: profile, at: now) {
                parked.append((message.customerID, message.messageID.description, topic, message.jsonBytes(), attempt, release.milliseconds))
                out += outcome(message, .deferredQuietHours, rule: "send_time:\(rule)", now: now, receipt: nil, sendAfter: release,
                               detail: "quiet hours at the moment of sending")
                stats.parked += 1
                continue
            }
            if let profile, profile.withdrawn.contains(message.channel) || (profile.optedOut && !message.transactional) {
                let rule = profile.withdrawn.contains(message.channel) ? "consent:\(message.channel.rawValue):unsubscribed" : "consent:opted_out"
                out += outcome(message, .suppressedNoConsent, rule: "send_time:\(rule)", now: now,
                               receipt: .failed, detail: "the customer unsubscribed before the moment of sending")
                stats.noConsent += 1
                continue
            }
            guard let address = profile?.contacts[message.channel], profile?.consent[message.channel] == true else {
                out += outcome(message, .suppressedNoConsent, rule: "send_time:consent:\(message.channel.rawValue)", now: now,
                               receipt: .failed, detail: "no consent or address at send time")
                stats.noConsent += 1
                continue
            }
            candidates.append((message, attempt, address))
        }
        try await store.park(parked, releaseClaims: false)

        // Claim (and leave what a status callback will need, before the call can trigger one), then
        // call the provider under the shared rate limit.
        try await receipts.remember(candidates.map { c in
            (c.0.messageID.description, ReceiptContext(customer: c.0.customerID, channel: c.0.channel.rawValue, journey: c.0.journey,
                                                       step: c.0.step, template: c.0.template, provider: provider(c.0.channel).name,
                                                       origin: c.0.fallbackChannels.isEmpty ? "" : origins[c.0.messageID] ?? "",
                                                       arm: c.0.arm),
             AddressDigest.of(c.0.channel, c.2))
        })
        let claims = try await store.claim(candidates.map { ($0.0.customerID, $0.0.messageID.description, $0.0.channel.rawValue) },
                                           staleAfterMs: settings.sender.claimStaleMilliseconds)
        var toSend: [(OutboundMessage, Int, String)] = []
        var busy: [(customer: String, messageID: String, topic: String, message: [UInt8], attempt: Int, due: Int64)] = []
        for (candidate, claim) in zip(candidates, claims) {
            switch claim {
            case .claimed, .reclaimed: toSend.append(candidate)
            case .done: stats.duplicatesSkipped += 1
            case .busy:
                // Another sender holds a fresh claim: look again once it would have gone stale.
                let m = candidate.0
                busy.append((m.customerID, m.messageID.description, settings.kafka.outboundTopic(m.channel.rawValue), m.jsonBytes(),
                             candidate.1, now.milliseconds + Int64(settings.sender.claimStaleMilliseconds)))
            }
        }
        // The claim belongs to another sender: keep it; the parked copy checks again later and then
        // sees `done` (skip) or a stale claim (take over).
        try await store.park(busy, releaseClaims: false)

        let results = try await deliver(toSend, store: store, receipts: receipts)
        var delivered: [Channel: Int] = [:]
        var retries: [(customer: String, messageID: String, topic: String, message: [UInt8], attempt: Int, due: Int64)] = []
        for ((message, attempt, _), result) in zip(toSend, results) {
            switch result {
            case .accepted:
                stats.delivered += 1
                delivered[message.channel, default: 0] += 1
                out.append(receipt(.sent, message, now: now, detail: nil))
            case .transientFailure(let reason) where attempt < settings.sender.maxAttempts,
                 .throttled(let reason, _) where attempt < settings.sender.maxAttempts:
                var backoff = min(Int64(settings.sender.retryBackoffMilliseconds) << Int64(min(attempt - 1, 20)), 300_000)
                if case .throttled(_, let retryAfter?) = result { backoff = max(backoff, Int64(min(retryAfter, 3_600_000))) }
                retries.append((message.customerID, message.messageID.description, settings.kafka.outboundTopic(message.channel.rawValue),
                                message.jsonBytes(), attempt + 1, now.milliseconds + backoff))
                stats.retried += 1
                environment.logger.info("provider failed transiently; retrying", metadata: ["reason": "\(reason)", "attempt": "\(attempt)"])
            case .transientFailure(let reason), .throttled(let reason, _), .permanentFailure(let reason), .recipientUnsubscribed(let reason):
                if case .recipientUnsubscribed = result {
                    // The provider knows the recipient opted out (a STOP it handled): withdraw the channel here too.
                    try await stateStore.suppress(message.customerID, message.channel.rawValue, at: now.milliseconds)
                    profiles[message.customerID]?.withdrawn.insert(message.channel)
                }
                environment.logger.warning("provider refused a message", metadata: [
                    "provider": "\(provider(message.channel).name)", "channel": "\(message.channel.rawValue)", "message.id": "\(message.messageID)",
                    "reason": "\(reason)", "attempt": "\(attempt)",
                ])
                try await store.release(customer: message.customerID, messageID: message.messageID.description)
                if let copy = message.fallbackCopy(profile: profiles[message.customerID]) {
                    out.append(KafkaProducerRecord(topic: settings.kafka.outboundTopic(copy.channel.rawValue),
                                                   key: Array(message.customerID.utf8), value: copy.jsonBytes()))
                    out += outcome(copy, .fallbackChannel, rule: "provider:\(provider(message.channel).name)", now: now, receipt: nil,
                                   detail: "\(message.channel.rawValue) failed: \(reason)")
                    stats.fallbacks += 1
                } else {
                    // No channel left: the receipt tells the journey, the dead letter keeps the message.
                    out.append(receipt(.failed, message, now: now, detail: reason))
                    out.append(.deadLetter(
                        key: Array(message.customerID.utf8), value: message.jsonBytes(), topic: settings.kafka.deadLetter.name,
                        DeadLetterHeaders(reason: RejectionReason.deliveryFailed.rawValue, detail: "\(message.channel.rawValue): \(reason)",
                                          sourceTopic: settings.kafka.outboundTopic(message.channel.rawValue), sourcePartition: nil,
                                          sourceOffset: nil, deadLetteredAt: now.milliseconds)))
                    stats.failed += 1
                    stats.deadLettered += 1
                    Counter(label: "waymark_dead_letters_total", dimensions: [("reason", RejectionReason.deliveryFailed.rawValue)]).increment()
                    environment.logger.error("message dead-lettered: no channel left", metadata: [
                        "channel": "\(message.channel.rawValue)", "message.id": "\(message.messageID)", "dlq.reason": "delivery_failed",
                    ])
                }
            }
        }
        try await store.park(retries)
        for (channel, count) in delivered {
            Counter(label: "waymark_sender_delivered_total", dimensions: [("provider", provider(channel).name), ("channel", channel.rawValue)]).increment(by: count)
        }
        totals.withLock { total in
            total.delivered += stats.delivered; total.duplicatesSkipped += stats.duplicatesSkipped; total.parked += stats.parked
            total.expired += stats.expired; total.noConsent += stats.noConsent; total.retried += stats.retried
            total.fallbacks += stats.fallbacks; total.failed += stats.failed; total.deadLettered += stats.deadLettered
        }
        return out
    }

    /// Calls the provider for each message, at most `sender.concurrency` at a time. Every call waits
    /// for its own token from the channel's shared rate limiter and starts the moment it has one (a
    /// batch of tokens is asked for at once, but never more than calls that can start right away), and
    /// an accepted message is marked done the moment the provider answers.
    private func deliver(_ items: [(OutboundMessage, Int, String)], store: SenderStore, receipts: ReceiptStore) async throws -> [ProviderResult] {
        let settings = environment.settings.sender
        var results = [ProviderResult](repeating: .transientFailure(reason: "not attempted"), count: items.count)
        // Same-channel calls next to each other, so one limiter request can cover several.
        let order = items.indices.sorted { (items[$0].0.channel, $0) < (items[$1].0.channel, $1) }
        try await withThrowingTaskGroup(of: (Int, ProviderResult).self) { group in
            var next = 0
            while next < order.count {
                // One call slot, waited for; then as many more as are free now, for same-channel calls.
                await permits.acquire()
                let channel = items[order[next]].0.channel
                guard let route = providers.routes[channel] else { preconditionFailure("no provider for \(channel.rawValue)") }
                let provider = route.provider
                var wanted = 1
                while next + wanted < order.count, items[order[next + wanted]].0.channel == channel, permits.tryAcquire() { wanted += 1 }
                let granted: Int, wait: Int
                do {
                    (granted, wait) = try await store.acquire(provider: "\(provider.name).\(channel.rawValue)", count: wanted,
                                                             rate: route.ratePerSecond, burst: route.burst)
                } catch {
                    permits.release(wanted)
                    throw error
                }
                permits.release(wanted - granted)
                if granted == 0 {
                    try await Task.sleep(for: .milliseconds(max(wait, 1)))
                    continue
                }
                for _ in 0..<granted {
                    let i = order[next]
                    let (message, attempt, address) = items[i]
                    group.addTask { [provider, permits, templates = environment.templates] in
                        defer { permits.release(1) }
                        let started = ContinuousClock.now
                        let rendered = templates.render(message.template, channel: message.channel, locale: message.locale,
                                                        customerID: message.customerID, variables: message.variables)
                        let result = await provider.deliver(ProviderRequest(message: message, address: address, attempt: attempt, rendered: rendered))
                        Metrics.Timer(label: "waymark_provider_seconds", dimensions: [("provider", provider.name)])
                            .recordNanoseconds((ContinuousClock.now - started).milliseconds * 1_000_000)
                        if case .accepted(let reference) = result {
                            // Every provider reference is kept against the message id (support can look up
                            // "which message is Twilio SM…?"; callbacks that carry only the reference need it).
                            let id = message.messageID.description
                            try await store.complete(customer: message.customerID, messageID: id, channel: message.channel.rawValue,
                                                     also: reference.map { receipts.linkCommand(provider: provider.name, reference: $0, messageID: id) })
                        } else {
                            Counter(label: "waymark_provider_errors_total", dimensions: [("provider", provider.name)]).increment()
                        }
                        return (i, result)
                    }
                    next += 1
                }
            }
            for try await (i, result) in group { results[i] = result }
        }
        return results
    }

    /// A decision (and optionally a receipt) about `message` taken at send time.
    private func outcome(_ message: OutboundMessage, _ reason: DecisionReason, rule: String, now: Timestamp, receipt outcome: DeliveryReceipt.Outcome?,
                         sendAfter: Timestamp? = nil, detail: String) -> [KafkaProducerRecord] {
        let decision = Decision(reason, rule: rule, about: message, at: now, sendAfter: sendAfter, detail: detail)
        var records = [KafkaProducerRecord(topic: environment.settings.kafka.decisions.name, key: Array(message.customerID.utf8),
                                           value: decision.jsonBytes())]
        if let outcome { records.append(self.receipt(outcome, message, now: now, detail: detail)) }
        return records
    }

    /// A delivery receipt for the `deliveries` topic (fed back to journeys).
    private func receipt(_ outcome: DeliveryReceipt.Outcome, _ message: OutboundMessage, now: Timestamp, detail: String?) -> KafkaProducerRecord {
        KafkaProducerRecord(topic: environment.settings.kafka.deliveries.name, key: Array(message.customerID.utf8),
                            value: DeliveryReceipt(outcome, for: message, at: now, detail: detail).jsonBytes())
    }
}

/// A count of provider-call slots shared by a sender's overlapping batches (`sender.concurrency`).
/// Waiting is FIFO; a slot given back goes straight to the oldest waiter.
final class CallPermits: Sendable {
    private let state: Mutex<(available: Int, waiters: [CheckedContinuation<Void, Never>])>

    init(_ count: Int) { state = Mutex((max(count, 1), [])) }

    /// Takes a slot, waiting for one if none is free.
    func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { s -> Bool in
                if s.available > 0 { s.available -= 1; return true }
                s.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    /// Takes a slot if one is free now.
    func tryAcquire() -> Bool {
        state.withLock { s in
            guard s.available > 0 else { return false }
            s.available -= 1
            return true
        }
    }

    /// Gives `count` slots back.
    func release(_ count: Int) {
        guard count > 0 else { return }
        let woken = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            let n = min(count, s.waiters.count)
            let woken = Array(s.waiters.prefix(n))
            s.waiters.removeFirst(n)
            s.available += count - n
            return woken
        }
        for continuation in woken { continuation.resume() }
    }
}
