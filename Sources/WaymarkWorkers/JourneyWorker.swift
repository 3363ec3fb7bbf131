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

/// Consumes touchpoints, delivery receipts and profiles in the journey consumer group, runs the
/// engine, and publishes the resulting messages and decisions. Per batch:
///
/// 1. poll up to `worker.max_batch` records;
/// 2. process them (``JourneyBatchProcessor``): state and outbox committed atomically in Redis;
/// 3. publish outbox entries and dead letters, wait for Kafka's acknowledgements, clear the outbox;
/// 4. commit the input offsets.
///
/// A crash anywhere replays the batch from the last committed offsets: event-id deduplication
/// in the state makes the replay a no-op, and outbox entries written before the crash are
/// published by outbox recovery (``Scheduler``).
///
/// A swift-service-lifecycle `Service`: graceful shutdown (SIGTERM/SIGINT in a `ServiceGroup`) or
/// ``stop()`` finishes the batch in flight, publishes, commits and leaves the group; cancellation
/// ends it at once (see ``StopControl``). Every retry honours both.
public final class JourneyWorker: Service, Sendable {
    public let environment: WorkerEnvironment
    private let client: KafkaClientConfiguration
    private let redis: RedisConfiguration
    /// Stop requests, graceful shutdown and cancellation.
    public let control = StopControl()
    private let totals = Mutex(BatchStats())
    private let readiness = Mutex(false)

    private let eventsCounter = Counter(label: "waymark_journey_records_total")
    private let batchTimer = Metrics.Timer(label: "waymark_journey_batch_seconds")
    private let lagGauge = Gauge(label: "waymark_journey_consumer_lag")
    private let batchSizeGauge = Gauge(label: "waymark_journey_batch_records")

    public init(environment: WorkerEnvironment, client: KafkaClientConfiguration, redis: RedisConfiguration) {
        self.environment = environment
        self.client = client
        self.redis = redis
    }

    /// Asks the worker to finish its current batch, commit and leave the group.
    public func stop() { control.request() }

    /// `true` once connected and subscribed, until stopping.
    public var isReady: Bool { readiness.withLock { $0 } }

    /// Everything processed so far.
    public var stats: BatchStats { totals.withLock { $0 } }

    /// Runs until ``stop()``, graceful shutdown or cancellation.
    public func run() async throws {
        try await control.run { try await self.work() }
    }

    private func work() async throws {
        let settings = environment.settings
        // Every labelled counter exists from the start (at 0), so dashboards and alerts see a series
        // before the first dead letter or decision of a kind, not only after.
        for reason in RejectionReason.allCases { Counter(label: "waymark_dead_letters_total", dimensions: [("reason", reason.rawValue)]).increment(by: 0) }
        for reason in DecisionReason.allCases { Counter(label: "waymark_decisions_total", dimensions: [("reason", reason.rawValue)]).increment(by: 0) }
        Counter(label: "waymark_state_conflicts_total").increment(by: 0)
        Counter(label: "waymark_state_unreadable_total").increment(by: 0)
        let logger = environment.logger
        let connection = try await RedisConnection.connect(redis, logger: logger)
        let store = environment.stateStore(connection)
        try await store.prepare()
        // Dead letters carry the original bytes, which may be large (the DLQ topic allows 10 MB).
        var producerClient = client
        producerClient.properties["message.max.bytes"] = producerClient.properties["message.max.bytes"] ?? "10485760"
        let producer = try KafkaProducer(configuration: .init(client: producerClient), logger: logger)
        // Publishing (and its outbox acknowledgements) uses its own connection, concurrently with processing.
        let publishConnection = try await RedisConnection.connect(redis, logger: logger)
        let inFlight = InFlightWork()
        let consumer = try KafkaConsumer(configuration: .init(client: client, groupID: settings.kafka.journeyGroup),
                                         rebalanceListener: inFlight, logger: logger)
        try consumer.subscribe([settings.kafka.touchpoints.name, settings.kafka.customers.name, settings.kafka.deliveries.name])
        let processor = JourneyBatchProcessor(environment: environment, store: store)
        let publisher = OutboxPublisher(producer: producer, store: environment.stateStore(publishConnection), logger: logger,
                                        giveUp: { [control] in control.shouldGiveUp })
        readiness.withLock { $0 = true }
        logger.info("journey worker running", metadata: ["kafka.group": "\(settings.kafka.journeyGroup)"])
        defer { readiness.withLock { $0 = false } }

        // Two-stage pipeline: while batch N is published and its offsets committed, batch N+1 is
        // polled and processed. Processing stays sequential (N+1 reads the state N committed), offset
        // commits stay in order, and a revocation waits for the in-flight stage (see InFlightWork).
        let fence = Fence(connection: connection, keys: environment.keys)
        var eventTimeRead: [KafkaTopicPartition: Int64] = [:]
        while !control.isStopping {
            var polled = try await consumer.poll(maxRecords: settings.worker.maxBatch,
                                                 timeout: .milliseconds(settings.worker.pollTimeoutMilliseconds))
            if polled.isEmpty { continue }
            // A replay rebuild is re-deriving state: hold this batch, stay in the group, wait. The
            // fence fails closed: while it cannot be read (Redis away), nothing is written either.
            if let holder = try await publisher.retrying("read the rebuild fence", { try await fence.current() }) {
                await inFlight.finish()
                let paused = Array(consumer.assignment)
                try? consumer.pause(paused)
                logger.notice("fenced: state writes paused", metadata: ["fence.holder": "\(holder)"])
                while !control.isStopping, try await publisher.retrying("read the rebuild fence", { try await fence.current() }) != nil {
                    polled += try await consumer.poll(maxRecords: settings.worker.maxBatch, timeout: .milliseconds(200))
                }
                try? consumer.resume(paused)
                if control.isStopping { break }  // the held batch is not processed: its offsets stay uncommitted
                logger.notice("fence lifted: resuming")
            }
            let batch = polled
            let started = ContinuousClock.now
            let now = environment.clock()
            let lagging = Self.laggingPartitions(consumer, batch, eventTimeRead: eventTimeRead, customersTopic: settings.kafka.customers.name)
            let output = try await publisher.retrying("process batch") {
                try await processor.process(batch, now: now, lagging: lagging)
            }
            for (partition, time) in output.eventTimes { eventTimeRead[partition] = max(eventTimeRead[partition] ?? .min, time) }
            // Schedulers hold back timers due after what the lagging partitions have been read up to.
            let report = Self.nextOffsets(batch).filter { $0.topic != settings.kafka.customers.name }.map { next in
                (partition: "\(next.topic)/\(next.partition)",
                 eventTime: lagging.keys.contains(next.topicPartition) ? eventTimeRead[next.topicPartition] : nil)
            }
            try await publisher.retrying("report watermarks") { try await store.reportWatermarks(report, wallNow: WallClock.now().milliseconds) }
            let processed = ContinuousClock.now
            await inFlight.finish()
            let waited = ContinuousClock.now
            lagGauge.record(Self.lag(consumer, batch))
            logger.debug("batch processed", metadata: [
                "batch.records": "\(batch.count)", "batch.customers": "\(output.stats.customers)",
                "batch.process_ms": "\((processed - started).milliseconds)", "batch.wait_previous_ms": "\((waited - processed).milliseconds)",
                "batch.parse_ms": "\(output.stats.parseMilliseconds)", "batch.profiles_ms": "\(output.stats.profileMilliseconds)",
                "batch.load_ms": "\(output.stats.loadMilliseconds)", "batch.engine_ms": "\(output.stats.engineMilliseconds)",
                "batch.commit_ms": "\(output.stats.commitMilliseconds)", "batch.state_bytes": "\(output.stats.stateBytes)",
                "batch.outbox_bytes": "\(output.stats.outboxBytes)",
            ])
            inFlight.start { [self] in
                let publishStart = ContinuousClock.now
                try await publisher.publish(output)
                let published = ContinuousClock.now
                await commit(consumer, batch, logger: logger)
                logger.debug("batch published", metadata: [
                    "batch.publish_ms": "\((published - publishStart).milliseconds)",
                    "batch.commit_ms": "\((ContinuousClock.now - published).milliseconds)",
                ])
                totals.withLock { $0.add(output.stats) }
                record(output.stats, records: batch.count, elapsed: ContinuousClock.now - started)
            }
        }
        await inFlight.finish()
        logger.info("journey worker stopping: leaving the group")
        await consumer.close()
        await producer.close()
        await publishConnection.close()
        await connection.close()
    }

    /// Commits the next offsets of `batch`. A failure after a rebalance is harmless (the new owner
    /// reprocesses from the last commit, and replays are no-ops), so it is logged, not retried forever.
    private func commit(_ consumer: KafkaConsumer, _ batch: [KafkaConsumerRecord], logger: Logger) async {
        let offsets = Self.nextOffsets(batch)
        for attempt in 1...5 {
            do {
                try await consumer.commit(offsets)
                return
            } catch {
                logger.warning("offset commit failed", metadata: ["error": "\(error)", "attempt": "\(attempt)"])
                try? await Task.sleep(for: .milliseconds(100 * attempt))
            }
        }
    }

    /// Input partitions (not profiles) that `batch` did not read to their end, judged by the high
    /// watermarks of fetch responses, with the latest event time read from each before this batch.
    static func laggingPartitions(_ consumer: KafkaConsumer, _ batch: [KafkaConsumerRecord],
                                  eventTimeRead: [KafkaTopicPartition: Int64], customersTopic: String) -> [KafkaTopicPartition: Int64?] {
        var lagging: [KafkaTopicPartition: Int64?] = [:]
        for next in nextOffsets(batch) where next.topic != customersTopic {
            if let marks = consumer.cachedWatermarks(next.topicPartition), marks.high > next.offset {
                lagging[next.topicPartition] = eventTimeRead[next.topicPartition]
            }
        }
        return lagging
    }

    /// Records behind the end of the partitions `batch` came from (high watermarks from fetch responses).
    static func lag(_ consumer: KafkaConsumer, _ batch: [KafkaConsumerRecord]) -> Int {
        var total: Int64 = 0
        for next in nextOffsets(batch) {
            if let marks = consumer.cachedWatermarks(next.topicPartition) { total += max(marks.high - next.offset, 0) }
        }
        return Int(total)
    }

    /// The next offset to read per partition after `batch`.
    public static func nextOffsets(_ batch: [KafkaConsumerRecord]) -> [KafkaTopicPartitionOffset] {
        var next: [KafkaTopicPartition: Int64] = [:]
        for record in batch { next[record.topicPartition] = max(next[record.topicPartition] ?? 0, record.offset + 1) }
        return next.map { KafkaTopicPartitionOffset(topic: $0.key.topic, partition: $0.key.partition, offset: $0.value) }
    }

    private func record(_ stats: BatchStats, records: Int, elapsed: Duration) {
        eventsCounter.increment(by: records)
        batchTimer.recordNanoseconds(elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
        batchSizeGauge.record(records)
        for (reason, count) in stats.decisions {
            Counter(label: "waymark_decisions_total", dimensions: [("reason", reason.rawValue)]).increment(by: count)
        }
        for (reason, count) in stats.deadLettered.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            Counter(label: "waymark_dead_letters_total", dimensions: [("reason", reason.rawValue)]).increment(by: count)
            environment.logger.warning("records dead-lettered", metadata: [
                "dlq.reason": "\(reason.rawValue)", "dlq.count": "\(count)", "kafka.topic": "\(environment.settings.kafka.deadLetter.name)",
            ])
        }
        if stats.conflicts > 0 { Counter(label: "waymark_state_conflicts_total").increment(by: stats.conflicts) }
    }
}

/// The publish-and-commit stage in flight. A revocation waits for it, so offsets of revoked
/// partitions are committed (or the work finished) before another worker takes them over.
final class InFlightWork: KafkaRebalanceListener, Sendable {
    private let current = Mutex<Task<Void, any Error>?>(nil)

    func start(_ work: @escaping @Sendable () async throws -> Void) {
        current.withLock { $0 = Task { try await work() } }
    }

    /// Waits for the stage in flight, if any.
    func finish() async {
        let task = current.withLock { task in
            defer { task = nil }
            return task
        }
        _ = try? await task?.value
    }

    func partitionsAssigned(_ partitions: [KafkaTopicPartition]) async {}

    func partitionsRevoked(_ partitions: [KafkaTopicPartition]) async {
        await finish()
    }
}

