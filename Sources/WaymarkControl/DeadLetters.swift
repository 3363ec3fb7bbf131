import Foundation
import WaymarkKafka
import WaymarkRedis
import WaymarkState
import WaymarkWire
import WaymarkWorkers

/// One record on the dead-letter topic, with the reason and origin from its headers.
public struct DeadLetter: Sendable, Codable {
    public var partition: Int32
    public var offset: Int64
    /// Kafka record timestamp (ms; RFC 3339 in JSON).
    @RFC3339Time public var timestamp: Int64
    public var reason: String
    public var detail: String
    public var sourceTopic: String?
    public var sourcePartition: Int32?
    public var sourceOffset: Int64?
    /// When the worker dead-lettered it (ms), falling back to the record timestamp.
    @RFC3339Time public var deadLetteredAt: Int64
    /// Set when the record itself came from an earlier redrive (`topic:partition:offset` of the earlier DLQ record).
    public var redrivenFrom: String?
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [Header]

    public struct Header: Sendable, Codable, Hashable {
        public var name: String
        public var value: [UInt8]?
    }

    public init(_ record: KafkaConsumerRecord) {
        let info = DeadLetterHeaders(headers: record.headers.map { ($0.name, $0.value) })
        partition = record.partition
        offset = record.offset
        timestamp = record.timestamp
        reason = info.reason
        detail = info.detail
        sourceTopic = info.sourceTopic
        sourcePartition = info.sourcePartition
        sourceOffset = info.sourceOffset
        deadLetteredAt = info.deadLetteredAt ?? record.timestamp
        redrivenFrom = info.redrivenFrom
        key = record.key.map(Array.init)
        value = record.value.map(Array.init)
        headers = record.headers.map { Header(name: $0.name, value: $0.value) }
    }
}

/// Counts dead letters by reason, incrementally: each ``refresh(admin:)`` reads only records that
/// arrived since the previous one (for `queues --watch`).
public struct DeadLetterTally: Sendable {
    public let topic: String
    public let scan: TopicScan
    public private(set) var byReason: [String: Int] = [:]
    private var next: [Int32: Int64] = [:]

    public init(topic: String, client: KafkaClientConfiguration) {
        self.topic = topic
        scan = TopicScan(client: client)
    }

    public mutating func refresh(admin: KafkaAdmin, progress: (@Sendable (ScanProgress) -> Void)? = nil) async throws {
        var counts = byReason
        next = try await scan.scan(topic: topic, from: next, admin: admin, progress: progress) { records in
            for record in records { counts[DeadLetter(record).reason, default: 0] += 1 }
        }
        byReason = counts
    }
}

/// Filter for ``DeadLetterQueue/redrive(filter:confirm:)``.
public struct RedriveFilter: Sendable {
    /// Only records with this reason (`nil`: all).
    public var reason: String?
    /// Only records dead-lettered at or after this time (ms).
    public var since: Int64?
    /// Also records that failed again after an earlier redrive.
    public var includeFailedAgain: Bool

    public init(reason: String? = nil, since: Int64? = nil, includeFailedAgain: Bool = false) {
        self.reason = reason
        self.since = since
        self.includeFailedAgain = includeFailedAgain
    }

    public func matches(_ letter: DeadLetter) -> Bool {
        (reason == nil || letter.reason == reason) && (since == nil || letter.deadLetteredAt >= since!)
    }
}

/// What a redrive did.
public struct RedriveResult: Sendable, Codable {
    /// Records that matched the filter.
    public var matched = 0
    /// Records copied back to their source topic by this run.
    public var redriven = 0
    /// Matching records an earlier run already redrove (skipped).
    public var alreadyRedriven = 0
    /// Matching records without a source topic header (cannot be redriven).
    public var noSource = 0
    /// Records a crashed earlier run claimed but may not have published: left alone, listed as `partition:offset`.
    public var inDoubt: [String] = []
    /// Matching records that are themselves a redriven record dead-lettered again: skipped unless the
    /// filter includes them (redriving them again would fail the same way on every run).
    public var failedAgain = 0
    /// Redriven counts per source topic.
    public var byTopic: [String: Int] = [:]
}

/// The dead-letter topic: list, show and redrive.
///
/// Redrive is exactly-once per dead-letter record: before publishing, a run claims the record's
/// `partition:offset` in a Redis hash (`HSETNX <prefix>:{dlq}:redriven:<topic>`, value `pending:<ms>`)
/// and marks it `done:<source offset>` once the broker acknowledged the copy. A second run (or a
/// concurrent one) skips claimed records. A claim left `pending` by a run that died between claim
/// and acknowledgement is reported as in doubt and not retried automatically (it may have been published).
public struct DeadLetterQueue: Sendable {
    public let topic: String
    public let client: KafkaClientConfiguration
    public let admin: KafkaAdmin
    /// Where redrive marks live (``KeySpace/redriven(deadLetterTopic:)``); `nil` for read-only use.
    public let redis: OperatorStore?

    public init(topic: String, client: KafkaClientConfiguration, admin: KafkaAdmin, redis: OperatorStore?) {
        self.topic = topic
        self.client = client
        self.admin = admin
        self.redis = redis
    }

    /// Every record on the topic, oldest first per partition.
    public func all(progress: (@Sendable (ScanProgress) -> Void)? = nil) async throws -> [DeadLetter] {
        var out: [DeadLetter] = []
        try await TopicScan(client: client).scan(topic: topic, admin: admin, progress: progress) { records in
            out += records.map(DeadLetter.init)
        }
        return out
    }

    /// Counts by reason, and the newest `limit` records (newest first by dead-letter time).
    public func list(limit: Int, progress: (@Sendable (ScanProgress) -> Void)? = nil) async throws -> (byReason: [String: Int], newest: [DeadLetter]) {
        let letters = try await all(progress: progress)
        var counts: [String: Int] = [:]
        for letter in letters { counts[letter.reason, default: 0] += 1 }
        let newest = letters.sorted { ($0.deadLetteredAt, $0.partition, $0.offset) > ($1.deadLetteredAt, $1.partition, $1.offset) }
        return (counts, Array(newest.prefix(limit)))
    }

    /// The record at `partition`/`offset`, or `nil` when there is none.
    public func record(partition: Int32, offset: Int64) async throws -> DeadLetter? {
        let marks = try await admin.endOffsets(topics: [topic])
        guard let mark = marks[KafkaTopicPartition(topic: topic, partition: partition)], offset >= mark.low, offset < mark.high else { return nil }
        return try await KafkaConsumer.record(client: client, topic: topic, partition: partition, offset: offset).map(DeadLetter.init)
    }

    /// Copies matching records back to their source topics (original key, value and headers, minus
    /// Waymark's dead-letter headers, plus ``DeadLetterHeaders/Name/redrivenFrom``), each at most once ever.
    /// `confirm` sees how many records would be redriven and returns whether to go ahead.
    public func redrive(filter: RedriveFilter, progress: (@Sendable (ScanProgress) -> Void)? = nil,
                        confirm: (_ candidates: [DeadLetter]) -> Bool = { _ in true }) async throws -> RedriveResult? {
        guard let redis else { throw RedriveError(message: "redrive needs Redis to remember what it redrove") }
        var result = RedriveResult()
        let matching = try await all(progress: progress).filter(filter.matches)
        result.matched = matching.count
        let ids = matching.map { "\($0.partition):\($0.offset)" }
        let marks = try await redis.redriveMarks(deadLetterTopic: topic, records: ids)
        var candidates: [DeadLetter] = []
        for (letter, mark) in zip(matching, marks) {
            if let mark {
                if mark.hasPrefix("pending") { result.inDoubt.append("\(letter.partition):\(letter.offset)") } else { result.alreadyRedriven += 1 }
            } else if letter.sourceTopic == nil || letter.sourceTopic!.isEmpty {
                result.noSource += 1
            } else if !filter.includeFailedAgain && letter.headers.contains(where: { $0.name == DeadLetterHeaders.Name.redrivenFrom }) {
                result.failedAgain += 1
            } else {
                candidates.append(letter)
            }
        }
        guard candidates.isEmpty || confirm(candidates) else { return nil }
        if candidates.isEmpty { return result }
        let producer = try KafkaProducer(configuration: .init(client: client))
        defer { Task { await producer.close() } }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        for chunk in stride(from: 0, to: candidates.count, by: 500) {
            let batch = Array(candidates[chunk..<min(chunk + 500, candidates.count)])
            // Claim first: only records this run claimed are published.
            let claims = try await redis.claimRedrive(deadLetterTopic: topic, records: batch.map { "\($0.partition):\($0.offset)" }, now: now)
            let mine = zip(batch, claims).filter { $0.1 }.map(\.0)
            result.alreadyRedriven += batch.count - mine.count
            if mine.isEmpty { continue }
            let reports = try await producer.send(mine.map { letter in
                KafkaProducerRecord(
                    topic: letter.sourceTopic!, key: letter.key, value: letter.value,
                    headers: letter.headers.filter { !DeadLetterHeaders.Name.added.contains($0.name) && $0.name != DeadLetterHeaders.Name.redrivenFrom }
                        .map { KafkaHeader(name: $0.name, value: $0.value) }
                        + [KafkaHeader(name: DeadLetterHeaders.Name.redrivenFrom, string: "\(topic):\(letter.partition):\(letter.offset)")])
            })
            var settled: [(record: String, target: String?)] = []
            var failures: [String] = []
            for (letter, report) in zip(mine, reports) {
                let field = "\(letter.partition):\(letter.offset)"
                if let error = report.error {
                    // Not published: release the claim so a later run retries it.
                    settled.append((field, nil))
                    failures.append("\(field) → \(letter.sourceTopic!): \(error)")
                    continue
                }
                settled.append((field, "\(report.topic):\(report.partition):\(report.offset)"))
                result.redriven += 1
                result.byTopic[letter.sourceTopic!, default: 0] += 1
            }
            try await redis.settleRedrive(deadLetterTopic: topic, settled)
            if !failures.isEmpty {
                throw RedriveError(message: "\(failures.count) records not published (claims released, run again): \(failures.prefix(3).joined(separator: "; "))")
            }
        }
        return result
    }
}

public struct RedriveError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { "redrive: \(message)" }
}
