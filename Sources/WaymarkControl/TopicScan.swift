import Foundation
import WaymarkEngine
import WaymarkKafka

/// Progress of a long read, reported to the caller (the CLI prints it on stderr).
public struct ScanProgress: Sendable {
    /// Records read so far.
    public var records: Int
    /// Records the read will cover in total (end minus start offsets when it began).
    public var total: Int
    /// Seconds since the read began.
    public var elapsed: Double
    public var rate: Double { elapsed > 0 ? Double(records) / elapsed : 0 }

    public init(records: Int, total: Int, elapsed: Double) {
        self.records = records
        self.total = total
        self.elapsed = elapsed
    }
}

/// Reads a topic once from given start offsets up to the end offsets it had when the read began,
/// without a consumer group (nothing is committed, no group is joined).
public struct TopicScan: Sendable {
    public let client: KafkaClientConfiguration
    /// Gives up on a partition that yields nothing for this long although records were expected
    /// (offset gaps left by compaction or transaction markers).
    public var quietTimeout: Duration = .seconds(3)

    public init(client: KafkaClientConfiguration) { self.client = client }

    /// Reads `topic` from `start` (per partition; missing partitions start at their low watermark)
    /// up to the end offsets when the scan began (or up to `until`, where lower: an earlier snapshot),
    /// calling `body` for every batch of records and `progress` at most every `progressInterval`.
    /// - Returns: the end offsets the scan read up to (next offset per partition).
    @discardableResult
    public func scan(topic: String, from start: [Int32: Int64] = [:], until: [Int32: Int64] = [:], admin: KafkaAdmin,
                     progressInterval: Duration = .milliseconds(500),
                     progress: (@Sendable (ScanProgress) -> Void)? = nil,
                     _ body: ([KafkaConsumerRecord]) throws -> Void) async throws -> [Int32: Int64] {
        let marks = try await admin.endOffsets(topics: [topic])
        var ends: [Int32: Int64] = [:]
        var assignments: [KafkaTopicPartitionOffset] = []
        var total = 0
        for (partition, mark) in marks {
            let high = min(mark.high, until[partition.partition] ?? mark.high)
            ends[partition.partition] = high
            let from = max(start[partition.partition] ?? mark.low, mark.low)
            if from < high {
                assignments.append(KafkaTopicPartitionOffset(topic: topic, partition: partition.partition, offset: from))
                total += Int(high - from)
            }
        }
        if assignments.isEmpty { return ends }
        var properties = client.properties
        properties["fetch.wait.max.ms"] = properties["fetch.wait.max.ms"] ?? "50"
        properties["message.max.bytes"] = properties["message.max.bytes"] ?? "10485760"
        let consumer = try KafkaConsumer(configuration: .init(
            client: KafkaClientConfiguration(bootstrapServers: client.bootstrapServers, properties: properties), groupID: nil))
        try consumer.assign(assignments)
        var remaining = Set(assignments.map(\.partition))
        let began = ContinuousClock.now
        var lastProgress = began
        var lastRecord = began
        var read = 0
        do {
            while !remaining.isEmpty {
                let batch = try await consumer.poll(maxRecords: 5_000, timeout: .milliseconds(100))
                let now = ContinuousClock.now
                if batch.isEmpty {
                    if now - lastRecord > quietTimeout { break }
                } else {
                    lastRecord = now
                    let wanted = batch.filter { $0.offset < (ends[$0.partition] ?? 0) }
                    read += wanted.count
                    if !wanted.isEmpty { try body(wanted) }
                    for record in batch where record.offset >= (ends[record.partition] ?? 0) - 1 { remaining.remove(record.partition) }
                }
                if let progress, now - lastProgress >= progressInterval {
                    lastProgress = now
                    progress(ScanProgress(records: read, total: total, elapsed: (now - began).seconds))
                }
            }
        } catch {
            await consumer.close()
            throw error
        }
        await consumer.close()
        progress?(ScanProgress(records: read, total: total, elapsed: (ContinuousClock.now - began).seconds))
        return ends
    }
}

extension Duration {
    /// The duration in (fractional) seconds, for rates and progress output.
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// Times on the command line: RFC 3339 (`2026-11-20T08:00:00Z`), `now`, or a span ago (`90m`, `24h`, `7d`).
public enum TimeArgument {
    /// Milliseconds since the epoch, or `nil` if `text` is neither form.
    public static func parse(_ text: String, now: Int64 = Int64(Date().timeIntervalSince1970 * 1000)) -> Int64? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed == "now" { return now }
        if case .success(let t) = Timestamp.parseRFC3339(trimmed) { return t.milliseconds }
        if let span = TimeSpan.parse(trimmed.hasSuffix(" ago") ? String(trimmed.dropLast(4)) : trimmed) { return now - span.milliseconds }
        return nil
    }
}
