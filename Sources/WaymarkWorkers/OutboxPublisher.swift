import Logging
import WaymarkKafka
import WaymarkState

/// Header with the stable id of a published message or decision (`m-…`, `d-…`): the same id on a
/// record published again after a crash, so consumers of `journey.decisions` can deduplicate.
public let recordIDHeader = "x-waymark-id"

/// Publishes outbox entries and dead letters to Kafka, waits for every acknowledgement, then removes
/// the acknowledged entries from the Redis outbox. Retries until Kafka accepts everything: offsets
/// are only committed after this returns, so nothing decided is ever lost.
public struct OutboxPublisher: Sendable {
    public let producer: KafkaProducer
    public let store: RedisStateStore
    public let logger: Logger
    /// Stop retrying (and throw) once this returns `true`: cancelled, or past the drain deadline of a stop.
    public let giveUp: @Sendable () -> Bool

    public init(producer: KafkaProducer, store: RedisStateStore, logger: Logger, giveUp: @escaping @Sendable () -> Bool = { false }) {
        self.producer = producer
        self.store = store
        self.logger = logger
        self.giveUp = giveUp
    }

    /// Bytes kept of a record the broker refuses as too large.
    static let truncatedSize = 256 * 1024

    /// Publishes `output`'s records; returns once all are acknowledged and the outbox is cleared.
    public func publish(_ output: BatchOutput) async throws {
        try await finish(await submit(output))
    }

    /// Hands `output`'s records to the producer now (in this order, behind every earlier
    /// submission) without waiting for the broker; ``finish(_:)`` waits for the acknowledgements.
    /// Lets the next batch be processed while this one's records are on their way.
    public func submit(_ output: BatchOutput) async -> PublishSubmission {
        var records: [KafkaProducerRecord] = output.deadLetters
        records.reserveCapacity(output.outbox.reduce(output.deadLetters.count) { $0 + $1.records.count })
        for item in output.outbox {
            for entry in item.records {
                // The stable id lets consumers drop the copy a crash recovery may publish again.
                records.append(KafkaProducerRecord(topic: entry.topic, key: entry.key, value: entry.value,
                                                   headers: [KafkaHeader(name: recordIDHeader, string: entry.id)]))
            }
        }
        // A closed producer throws here; finish() then retries like any other failure.
        let pending = try? await producer.enqueue(records)
        return PublishSubmission(records: records, pending: pending,
                                 acknowledgements: output.outbox.map { (customer: $0.customer, ids: $0.entries) })
    }

    /// Waits until every record of `submission` is acknowledged (re-sending failed ones with
    /// backoff), then removes its entries from the Redis outbox.
    public func finish(_ submission: PublishSubmission) async throws {
        try await publishAll(submission.records, first: submission.pending)
        try await retrying("outbox acknowledge") { try await store.acknowledge(submission.acknowledgements) }
    }

    /// Produces `records`, re-sending the failed ones with backoff until all are acknowledged.
    /// `first`, if given, is the enqueue of `records` already made: its reports are awaited first.
    func publishAll(_ records: [KafkaProducerRecord], first: KafkaPendingDelivery? = nil) async throws {
        var pending = records
        var enqueued = first
        var backoff = Duration.milliseconds(50)
        while !pending.isEmpty {
            let reports: [KafkaDeliveryReport]
            do {
                if let already = enqueued {
                    enqueued = nil
                    reports = try await already.reports()
                } else {
                    reports = try await producer.send(pending)
                }
            } catch {
                if giveUp() || Task.isCancelled { throw error }
                logger.warning("publish failed; retrying", metadata: ["error": "\(error)", "records": "\(pending.count)"])
                try await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
                continue
            }
            var failed = zip(pending, reports).filter { $0.1.error != nil }
            if failed.isEmpty { return }
            // Too large for the broker is permanent: keep the evidence, truncated, instead of retrying forever.
            failed = failed.map { record, report in
                guard report.error?.codeName == "MSG_SIZE_TOO_LARGE", let value = record.value, value.count > Self.truncatedSize else {
                    return (record, report)
                }
                logger.error("record too large for the broker; publishing a truncated copy", metadata: [
                    "kafka.topic": "\(record.topic)", "bytes": "\(value.count)",
                ])
                var smaller = record
                smaller.value = Array(value.prefix(Self.truncatedSize))
                smaller.headers.append(KafkaHeader(name: "x-waymark-truncated-from", string: String(value.count)))
                return (smaller, report)
            }
            if giveUp() { throw failed[0].1.error! }
            logger.warning("records not acknowledged; retrying", metadata: [
                "error": "\(failed[0].1.error!)", "records": "\(failed.count)",
            ])
            pending = failed.map(\.0)
            try await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(5))
        }
    }

    /// Runs `body`, retrying with backoff while it throws (Redis briefly unavailable).
    func retrying<T>(_ what: String, _ body: () async throws -> T) async throws -> T {
        try await retryingWithBackoff(what, logger: logger, giveUp: giveUp, body)
    }
}

/// Records handed to the producer by ``OutboxPublisher/submit(_:)``, and the outbox entries to
/// clear once the broker has them all.
public struct PublishSubmission: Sendable {
    let records: [KafkaProducerRecord]
    let pending: KafkaPendingDelivery?
    let acknowledgements: [(customer: String, ids: [String])]
    /// Records in this submission (dead letters included).
    public var count: Int { records.count }
}

/// The workers' one retry policy: runs `body` until it succeeds, with backoff from 50 ms doubling to
/// 5 s and a warning per failure; rethrows once `giveUp()` (a stop past its drain deadline) or on cancellation.
func retryingWithBackoff<T>(_ what: String, logger: Logger, giveUp: () -> Bool, _ body: () async throws -> T) async throws -> T {
    var backoff = Duration.milliseconds(50)
    while true {
        do { return try await body() } catch {
            if giveUp() || Task.isCancelled { throw error }
            logger.warning("\(what) failed; retrying", metadata: ["error": "\(error)"])
            try await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(5))
        }
    }
}
