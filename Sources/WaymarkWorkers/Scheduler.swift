import Logging
import Metrics
import ServiceLifecycle
import Synchronization
import WaymarkEngine
import WaymarkKafka
import WaymarkRedis
import WaymarkState
import WaymarkWire

/// Releases due timers and deferred messages, and re-publishes outbox entries left behind by
/// crashed workers.
///
/// Every `worker.scheduler_interval_ms` it asks each shard's due index for customers whose next
/// wake-up has passed, runs the engine's wake-up for them and commits with compare-and-set, so
/// several schedulers can run at once: a release committed by one is seen as already done by the
/// others. A burst at the end of quiet hours arrives pre-spread (the engine offsets each release by
/// its message id hash within the configured spread).
///
/// A swift-service-lifecycle `Service`: graceful shutdown, ``stop()`` or cancellation end it after
/// the tick in flight (see ``StopControl``).
public final class Scheduler: Service, Sendable {
    public let environment: WorkerEnvironment
    private let client: KafkaClientConfiguration
    private let redis: RedisConfiguration
    /// Stop requests, graceful shutdown and cancellation.
    public let control = StopControl()
    private let totals = Mutex(SchedulerStats())

    /// Counters of what the scheduler did.
    public struct SchedulerStats: Sendable {
        public var wakeUps = 0
        public var released = 0
        public var recoveredRecords = 0
        public var ticks = 0
    }

    public init(environment: WorkerEnvironment, client: KafkaClientConfiguration, redis: RedisConfiguration) {
        self.environment = environment
        self.client = client
        self.redis = redis
    }

    public func stop() { control.request() }
    public var stats: SchedulerStats { totals.withLock { $0 } }

    /// Runs until ``stop()``, graceful shutdown or cancellation.
    public func run() async throws {
        try await control.run { try await self.work() }
    }

    private func work() async throws {
        let logger = environment.logger
        let connection = try await RedisConnection.connect(redis, logger: logger)
        let store = environment.stateStore(connection)
        try await store.prepare()
        let producer = try KafkaProducer(configuration: .init(client: client), logger: logger)
        let processor = JourneyBatchProcessor(environment: environment, store: store)
        let publisher = OutboxPublisher(producer: producer, store: store, logger: logger,
                                        giveUp: { [control] in control.shouldGiveUp })
        let interval = Duration.milliseconds(environment.settings.worker.schedulerIntervalMilliseconds)
        logger.info("scheduler running", metadata: ["interval.ms": "\(environment.settings.worker.schedulerIntervalMilliseconds)"])
        var tick = 0
        let fence = Fence(connection: connection, keys: environment.keys)
        while !control.isStopping {
            let started = ContinuousClock.now
            do {
                // A replay rebuild owns the state for now. Fails closed: an unreadable fence skips the tick.
                if try await fence.current() == nil {
                    try await self.tick(store: store, processor: processor, publisher: publisher, recover: tick % 4 == 0)
                    tick += 1
                }
            } catch {
                if control.isStopping { break }
                logger.warning("scheduler tick failed; retrying next tick", metadata: ["error": "\(error)"])
            }
            let elapsed = ContinuousClock.now - started
            if elapsed < interval, await !control.sleep(for: interval - elapsed) { break }
        }
        await producer.close()
        await connection.close()
    }

    /// A lagging partition's watermark older than this (wall clock) belongs to a worker that stopped
    /// reporting; it no longer holds timers back (the partition's next owner reports afresh).
    static let watermarkStaleMs: Int64 = 30_000

    /// The Kafka key of a parked message: its `customer_id`, read by the wire decoder. A document
    /// that does not parse keeps no key; the sender then dead-letters it with the reason.
    static func customerKey(_ message: [UInt8]) -> [UInt8]? {
        guard case .success(let parsed) = parkedParser.outbound(message) else { return nil }
        return Array(parsed.customerID.utf8)
    }

    /// No size limit: the sender checked the message when it first read it.
    private static let parkedParser = RecordParser(limits: IngestLimits(maxBytes: .max))

    /// One pass: release everything due now; every few ticks, recover orphaned outbox entries.
    public func tick(store: RedisStateStore, processor: JourneyBatchProcessor, publisher: OutboxPublisher, recover: Bool) async throws {
        let now = environment.clock()
        // While journey workers are behind, timers due after what they have read wait: the event
        // that makes a timer irrelevant (a purchase) may still be in the backlog.
        let gate = Timestamp(milliseconds: try await store.eventTimeGate(
            now: now.milliseconds, wallNow: WallClock.now().milliseconds, staleAfterMs: Self.watermarkStaleMs))
        let due = try await store.dueCustomers(now: gate.milliseconds, limitPerShard: 500)
        var released = 0
        for chunk in stride(from: 0, to: due.count, by: 2_000) {
            let customers = due[chunk..<min(chunk + 2_000, due.count)].map(\.customer)
            let output = try await processor.wake(customers, now: now, watermark: gate < now ? gate : nil)
            try await publisher.publish(output)
            released += output.stats.messages
        }
        // Messages parked by senders (send-time quiet hours, retry backoff) go back to their topic.
        let senderStore = SenderStore(connection: store.connection, keys: store.keys)
        let parked = try await senderStore.dueDelayed(now: now.milliseconds)
        if !parked.isEmpty {
            try await publisher.publishAll(parked.map { item in
                KafkaProducerRecord(topic: item.topic, key: Self.customerKey(item.message), value: item.message,
                                    headers: [KafkaHeader(name: attemptHeader, string: String(item.attempt))])
            })
            try await senderStore.removeDelayed(parked.map { ($0.shard, $0.messageID) })
            released += parked.count
        }
        var recovered = 0
        if recover {
            let grace = Int64(environment.settings.worker.outboxGraceMilliseconds)
            // Wall-clock age: this is about crashed processes, whatever the business clock says.
            let pending = try await store.pendingOutbox(before: WallClock.now().milliseconds - grace)
            if !pending.isEmpty {
                var output = BatchOutput()
                output.outbox = pending
                recovered = pending.reduce(0) { $0 + $1.records.count }
                environment.logger.notice("re-publishing outbox entries left by a stopped worker", metadata: ["records": "\(recovered)"])
                try await publisher.publish(output)
            }
        }
        if released > 0 { Counter(label: "waymark_scheduler_released_total").increment(by: released) }
        if recovered > 0 { Counter(label: "waymark_outbox_recovered_total").increment(by: recovered) }
        totals.withLock {
            $0.ticks += 1
            $0.wakeUps += due.count
            $0.released += released
            $0.recoveredRecords += recovered
        }
    }
}
