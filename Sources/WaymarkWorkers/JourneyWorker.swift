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
/// 3. hand outbox entries and dead letters to the producer at once, and go on with the next batch;
/// 4. meanwhile a stage per batch waits for Kafka's acknowledgements, clears the outbox entries
///    and commits the input offsets, in batch order (``InFlightWork``).
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

        // Pipeline: batch N's records are handed to the producer as soon as its state is committed,
        // and batch N+1 is polled and processed while they are on their way. A stage per batch
        // then waits for its acknowledgements, clears its outbox entries and, after the stage
        // before it, commits its offsets: processing stays sequential (N+1 reads the state N
        // committed), offsets are committed in order and never past a batch not yet published,
        // and a revocation waits for every stage (see InFlightWork). Stages in flight are bounded
        // in number and in records, so a slow broker slows intake instead of growing memory.
        let fence = Fence(connection: connection, keys: environment.keys)
        var eventTimeRead: [KafkaTopicPartition: Int64] = [:]
        let recordsInFlight = 2 * settings.worker.maxBatch
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
            let submission = await publisher.submit(output)
            let processed = ContinuousClock.now
            await inFlight.makeRoom(depth: Self.publishDepth, records: submission.count, limit: recordsInFlight)
            let waited = ContinuousClock.now
            lagGauge.record(Self.lag(consumer, batch))
            logger.debug("batch processed", metadata: [
                "batch.records": "\(batch.count)", "batch.customers": "\(output.stats.customers)",
                "batch.process_ms": "\((processed - started).milliseconds)", "batch.wait_room_ms": "\((waited - processed).milliseconds)",
                "batch.parse_ms": "\(output.stats.parseMilliseconds)", "batch.profiles_ms": "\(output.stats.profileMilliseconds)",
                "batch.load_ms": "\(output.stats.loadMilliseconds)", "batch.engine_ms": "\(output.stats.engineMilliseconds)",
                "batch.commit_ms": "\(output.stats.commitMilliseconds)", "batch.state_bytes": "\(output.stats.stateBytes)",
                "batch.outbox_bytes": "\(output.stats.outboxBytes)", "batch.stages_in_flight": "\(inFlight.count)",
            ])
            inFlight.start(records: submission.count) { [self] previous in
                try await publisher.finish(submission)
                let published = ContinuousClock.now
                // Offsets in order: never committed past an earlier batch that has not (or could not) finish.
                try await previous?.value
                await commit(consumer, batch, logger: logger)
                logger.debug("batch published", metadata: [
                    "batch.publish_ms": "\((published - processed).milliseconds)",
                    "batch.offsets_ms": "\((ContinuousClock.now - published).milliseconds)",
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
    /// Batches whose publishing may be in flight at once.
    static let publishDepth = 16

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

/// The publish-and-commit stages in flight, oldest first. A revocation waits for all of them, so
/// offsets of revoked partitions are committed (or the work finished) before another worker takes
/// them over. Rebalance callbacks run inside `poll`, and the worker polls only between batches, so
/// no batch is being processed while a revocation waits.
final class InFlightWork: KafkaRebalanceListener, Sendable {
    typealias Stage = Task<Void, any Error>
    private struct State {
        var stages: [(id: UInt64, task: Stage, records: Int)] = []
        var last: Stage?
        var nextID: UInt64 = 0
        var records: Int { stages.reduce(0) { $0 + $1.records } }
    }
    private let state = Mutex(State())

    /// Stages in flight now.
    var count: Int { state.withLock { $0.stages.count } }

    /// Starts a stage holding `records` records; `work` gets the stage started before it (to
    /// await before committing offsets). The stage leaves the set when it ends, failed or not.
    func start(records: Int, _ work: @escaping @Sendable (_ previous: Stage?) async throws -> Void) {
        state.withLock { state in
            let id = state.nextID
            state.nextID += 1
            let previous = state.last
            // Created under the lock, so the stage's own removal (which takes it) comes after the insertion.
            let task = Task { [self] in
                defer { self.state.withLock { $0.stages.removeAll { $0.id == id } } }
                try await work(previous)
            }
            state.stages.append((id, task, records))
            state.last = task
        }
    }

    /// Waits, oldest stage first, until fewer than `depth` stages are in flight and `records` more
    /// records fit under `limit` (always true once nothing is in flight).
    func makeRoom(depth: Int, records: Int, limit: Int) async {
        await awaitOldest { $0.stages.count < depth && $0.records + records <= limit }
    }

    /// Waits for every stage in flight.
    func finish() async {
        await awaitOldest { _ in false }
    }

    /// Awaits the oldest stage, failed or not, until none is left or `enough` holds.
    private func awaitOldest(until enough: (State) -> Bool) async {
        while let oldest = state.withLock({ $0.stages.isEmpty || enough($0) ? nil : $0.stages[0].task }) {
            _ = try? await oldest.value
        }
    }

    func partitionsAssigned(_ partitions: [KafkaTopicPartition]) async {}

    func partitionsRevoked(_ partitions: [KafkaTopicPartition]) async {
        await finish()
    }
}
