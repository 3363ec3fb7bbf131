import Logging
import Metrics
import ServiceLifecycle
import Synchronization
import WaymarkAnalytics
import WaymarkEngine
import WaymarkKafka
import WaymarkRedis
import WaymarkState
import WaymarkWire

/// Rolls `journey.decisions` and `deliveries` up into per-journey, per-hour KPI counters in Redis
/// (``KPIStore``), for `waymark report` and `waymark funnel`.
///
/// Why a rollup worker and not counters in the journey worker's commit: the journey worker's hot
/// path stays as it is (one script per customer; issue 9 is about its throughput); receipts, which
/// the journey worker never sees for its own messages in time, count in the same place; counters
/// can be rebuilt from the topics' retention by re-reading with a fresh group; and it scales on its
/// own. The price is a few seconds of lag behind the decisions. Exactly once per record: see ``KPIStore``.
///
/// A record published twice (outbox recovery after a journey-worker crash re-publishes a decision
/// with the same `x-waymark-id`; a receipt has a deterministic event id) is counted once when both
/// copies fall within the last ``RecentRecords/capacity`` records of their partition read by this
/// process, which covers recovery's re-publication in practice; a copy arriving after this worker
/// restarted in between is counted again (see the README's known limitations).
public final class KPIWorker: Service, Sendable {
    public let environment: WorkerEnvironment
    private let client: KafkaClientConfiguration
    private let redis: RedisConfiguration
    public let control = StopControl()
    private let readiness = Mutex(false)
    private let counted = Mutex((records: 0, increments: 0))

    public init(environment: WorkerEnvironment, client: KafkaClientConfiguration, redis: RedisConfiguration) {
        self.environment = environment; self.client = client; self.redis = redis
    }

    public func stop() { control.request() }
    public var isReady: Bool { readiness.withLock { $0 } }
    /// Records read and increments applied so far.
    public var totals: (records: Int, increments: Int) { counted.withLock { $0 } }

    public func run() async throws { try await control.run { try await self.work() } }

    private func work() async throws {
        let settings = environment.settings
        let logger = environment.logger
        let connection = try await RedisConnection.connect(redis, logger: logger)
        try await connection.load([KPIStore.apply])
        let store = KPIStore(connection: connection, keys: environment.keys)
        let producer = try KafkaProducer(configuration: .init(client: client), logger: logger)
        let consumer = try KafkaConsumer(configuration: .init(client: client, groupID: settings.kafka.kpiGroup), logger: logger)
        let decisionsTopic = settings.kafka.decisions.name, deliveriesTopic = settings.kafka.deliveries.name
        try consumer.subscribe([decisionsTopic, deliveriesTopic])
        readiness.withLock { $0 = true }
        defer { readiness.withLock { $0 = false } }
        logger.info("kpi worker running", metadata: ["kafka.group": "\(settings.kafka.kpiGroup)"])
        let recordsCounter = Counter(label: "waymark_kpi_records_total")
        let deadLetters = Counter(label: "waymark_dead_letters_total", dimensions: [("reason", RejectionReason.invalidJSON.rawValue)])
        var recent: [String: RecentRecords] = [:]
        let duplicates = Counter(label: "waymark_kpi_duplicates_skipped_total")
        while !control.isStopping {
            let batch = try await consumer.poll(maxRecords: settings.worker.maxBatch, timeout: .milliseconds(settings.worker.pollTimeoutMilliseconds))
            if batch.isEmpty { continue }
            var byPartition: [String: [KPIStore.Increment]] = [:]
            var rejected: [KafkaProducerRecord] = []
            let now = environment.clock()
            for record in batch {
                let mapped: Result<[KPIRollup.Increment], Rejection>
                if record.topic == decisionsTopic {
                    mapped = environment.parser.decision(record.value ?? []).map(KPIRollup.increments(for:))
                } else {
                    mapped = environment.parser.touchpoint(key: record.key, value: record.value, now: now).map { t in
                        DeliveryReceipt(t).map(KPIRollup.increments(for:)) ?? []  // an unsubscribe reply has no message: nothing to count
                    }
                }
                switch mapped {
                case .success(let increments):
                    let partition = "\(record.topic)/\(record.partition)"
                    if !increments.isEmpty, let id = Self.recordID(record, decisionsTopic: decisionsTopic),
                       !recent[partition, default: RecentRecords()].firstSighting(id, offset: record.offset) {
                        duplicates.increment()
                        continue
                    }
                    for i in increments {
                        byPartition[partition, default: []].append(KPIStore.Increment(journey: i.journey, hour: i.hour, field: i.cell.field,
                                                                                      offset: record.offset))
                    }
                case .failure(let rejection):
                    logger.warning("record not counted: dead-lettered", metadata: [
                        "kafka.topic": "\(record.topic)", "kafka.partition": "\(record.partition)", "kafka.offset": "\(record.offset)",
                        "dlq.reason": "\(rejection.reason.rawValue)", "dlq.detail": "\(rejection.detail)",
                    ])
                    rejected.append(.deadLetter(record, rejection: rejection, topic: settings.kafka.deadLetter.name, at: now.milliseconds))
                }
            }
            var applied = 0
            for (partition, increments) in byPartition.sorted(by: { $0.key < $1.key }) {
                applied += try await retrying("apply KPI counters", logger) { try await store.apply(increments, from: partition) }
            }
            if !rejected.isEmpty {
                try await retrying("publish dead letters", logger) { try await producer.sendAll(rejected) }
                deadLetters.increment(by: rejected.count)
            }
            try await retrying("commit offsets", logger) { try await consumer.commit(JourneyWorker.nextOffsets(batch)) }
            recordsCounter.increment(by: batch.count)
            counted.withLock { $0.records += batch.count; $0.increments += applied }
        }
        logger.info("kpi worker stopping: leaving the group")
        await consumer.close()
        await producer.close()
        await connection.close()
    }

    /// The stable id of a record: the outbox's header on decisions, the event id of a receipt.
    static func recordID(_ record: KafkaConsumerRecord, decisionsTopic: String) -> String? {
        if let header = record.header(recordIDHeader) { return String(decoding: header, as: UTF8.self) }
        guard record.topic != decisionsTopic, let value = record.value else { return nil }
        // Receipts: `"event_id":"r-…"`, deterministic per message, outcome and channel.
        let bytes = Array(value)
        let needle = Array(#""event_id":""#.utf8)
        guard let start = bytes.firstRange(of: needle)?.upperBound, let end = bytes[start...].firstIndex(of: UInt8(ascii: "\"")) else { return nil }
        return String(decoding: bytes[start..<end], as: UTF8.self)
    }

    private func retrying<T>(_ what: String, _ logger: Logger, _ body: () async throws -> T) async throws -> T {
        try await retryingWithBackoff(what, logger: logger, giveUp: { control.shouldGiveUp }, body)
    }
}

/// The ids of the last records read from one partition, with their offsets: a second copy of a
/// record (another offset, same id) is a duplicate; the same record read again after a restart of
/// the batch (same offset) is not (``KPIStore`` makes re-reading it harmless).
struct RecentRecords {
    static let capacity = 200_000
    private var offsets: [String: Int64] = [:]
    private var ring: [String] = []
    private var next = 0

    /// `true` the first time `id` is seen (or for the same offset again), `false` for another copy.
    mutating func firstSighting(_ id: String, offset: Int64) -> Bool {
        if let seen = offsets[id] { return seen == offset }
        if ring.count < Self.capacity {
            ring.append(id)
        } else {
            offsets[ring[next]] = nil
            ring[next] = id
            next = (next + 1) % Self.capacity
        }
        offsets[id] = offset
        return true
    }
}
