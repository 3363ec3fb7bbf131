import Foundation
import WaymarkWire
import WaymarkConfig
import WaymarkKafka
import WaymarkRedis
import WaymarkState

/// One look at Waymark's queues: Kafka offsets and lag, deferred work in Redis, dead letters.
public struct QueueSnapshot: Sendable, Codable {
    /// A topic partition's offsets, and how fast it grew since the previous snapshot.
    public struct Partition: Sendable, Codable, Hashable {
        public var topic: String
        public var partition: Int32
        public var low: Int64
        public var end: Int64
        /// Records produced per second since the previous snapshot (`nil` on the first).
        public var producedPerSecond: Double?
    }

    /// A consumer group's position on one partition.
    public struct GroupPartition: Sendable, Codable, Hashable {
        public var group: String
        public var topic: String
        public var partition: Int32
        /// Next offset the group will read; `nil` if it never committed on this partition.
        public var committed: Int64?
        public var end: Int64
        /// End minus committed (minus the low watermark when nothing was committed).
        public var lag: Int64
        /// Records consumed (committed) per second since the previous snapshot.
        public var consumedPerSecond: Double?
    }

    /// Counts by due time relative to the snapshot time.
    public struct DueBuckets: Sendable, Codable, Hashable {
        public var dueNow = 0
        public var nextHour = 0
        public var next24Hours = 0
        public var later = 0
        public var total: Int { dueNow + nextHour + next24Hours + later }

        public init() {}

        /// From cumulative counts of `(-inf, now]`, `(-inf, now+1h]`, `(-inf, now+24h]` and the total.
        public init(cumulative: [Int], total: Int) {
            dueNow = cumulative[0]
            nextHour = cumulative[1] - cumulative[0]
            next24Hours = cumulative[2] - cumulative[1]
            later = total - cumulative[2]
        }
    }

    /// Milliseconds since the epoch when taken (RFC 3339 in JSON).
    @RFC3339Time public var takenAt: Int64
    public var partitions: [Partition]
    public var groups: [GroupPartition]
    /// Customers with a pending timer or deferred (quiet-hours) message, by next wake-up.
    public var timers: DueBuckets
    /// Messages parked by senders (send-time deferrals, retries), by due time.
    public var senderDelayed: DueBuckets
    /// Customers with outbox entries not yet acknowledged by Kafka.
    public var outboxPendingCustomers: Int
    /// Age (ms) of the oldest unacknowledged outbox entry, if any.
    public var oldestOutboxAgeMs: Int64?
    /// Dead letters by reason (whole topic).
    public var deadLettersByReason: [String: Int]

    /// Lag summed per group.
    public var lagByGroup: [String: Int64] {
        groups.reduce(into: [:]) { $0[$1.group, default: 0] += $1.lag }
    }

    /// Fills in rates from the difference to `previous`.
    public mutating func computeRates(since previous: QueueSnapshot) {
        let seconds = Double(takenAt - previous.takenAt) / 1000
        guard seconds > 0 else { return }
        var ends: [String: Int64] = [:]
        for p in previous.partitions { ends["\(p.topic)/\(p.partition)"] = p.end }
        for i in partitions.indices {
            if let before = ends["\(partitions[i].topic)/\(partitions[i].partition)"] {
                partitions[i].producedPerSecond = Double(partitions[i].end - before) / seconds
            }
        }
        var committed: [String: Int64] = [:]
        for g in previous.groups { if let c = g.committed { committed["\(g.group)/\(g.topic)/\(g.partition)"] = c } }
        for i in groups.indices {
            if let now = groups[i].committed, let before = committed["\(groups[i].group)/\(groups[i].topic)/\(groups[i].partition)"] {
                groups[i].consumedPerSecond = Double(now - before) / seconds
            }
        }
    }
}

/// Takes ``QueueSnapshot``s. Keeps a running dead-letter tally so repeated snapshots (`--watch`)
/// read only new dead letters.
public struct QueueInspector: Sendable {
    public let settings: WaymarkSettings
    public let admin: KafkaAdmin
    public let redis: RedisConnection?
    public let keys: KeySpace
    private var deadLetters: DeadLetterTally

    public init(settings: WaymarkSettings, client: KafkaClientConfiguration, admin: KafkaAdmin, redis: RedisConnection?) {
        self.settings = settings
        self.admin = admin
        self.redis = redis
        keys = KeySpace(prefix: settings.redis.keyPrefix, shards: settings.redis.shards)
        deadLetters = DeadLetterTally(topic: settings.kafka.deadLetter.name, client: client)
    }

    /// Which topics each of Waymark's own groups consumes (lag is shown on all of them, committed or not).
    public var ownGroups: [String: [String]] {
        let k = settings.kafka
        return [
            k.journeyGroup: [k.touchpoints.name, k.customers.name, k.deliveries.name],
            k.senderGroup: k.channels.map(k.outboundTopic),
            k.kpiGroup: [k.decisions.name, k.deliveries.name],
        ]
    }

    public mutating func snapshot(now: Int64 = Int64(Date().timeIntervalSince1970 * 1000),
                                  progress: (@Sendable (ScanProgress) -> Void)? = nil) async throws -> QueueSnapshot {
        let topics = settings.kafka.allTopics.map(\.name)
        let existing = Set(try await admin.describeTopics(topics).map(\.name))
        let present = topics.filter(existing.contains)
        let marks = try await admin.endOffsets(topics: present)
        let partitions = marks.keys.sorted().map { tp in
            QueueSnapshot.Partition(topic: tp.topic, partition: tp.partition, low: marks[tp]!.low, end: marks[tp]!.high)
        }

        // Waymark's groups plus any other group the cluster knows about.
        let own = ownGroups
        let listed = (try? await admin.listGroups()) ?? []
        var groups: [QueueSnapshot.GroupPartition] = []
        for group in Set(own.keys).union(listed).sorted() {
            let committed = (try? await admin.committedOffsets(group: group, partitions: Array(marks.keys))) ?? []
            var by: [KafkaTopicPartition: Int64] = [:]
            for c in committed { by[c.topicPartition] = c.offset }
            let consumes = Set(own[group] ?? []).union(by.keys.map(\.topic))
            for tp in marks.keys.sorted() where consumes.contains(tp.topic) {
                let mark = marks[tp]!
                let done = by[tp]
                groups.append(.init(group: group, topic: tp.topic, partition: tp.partition, committed: done, end: mark.high,
                                    lag: max(mark.high - (done ?? mark.low), 0)))
            }
        }

        var timers = QueueSnapshot.DueBuckets()
        var delayed = QueueSnapshot.DueBuckets()
        var outboxCustomers = 0
        var oldestOutbox: Int64?
        if let redis {
            let edges = [now, now + 3_600_000, now + 86_400_000]
            let store = OperatorStore(connection: redis, keys: keys)
            let wakeUps = try await store.wakeUpCounts(upTo: edges)
            timers = QueueSnapshot.DueBuckets(cumulative: wakeUps.cumulative, total: wakeUps.total)
            let parked = try await store.parkedCounts(upTo: edges)
            delayed = QueueSnapshot.DueBuckets(cumulative: parked.cumulative, total: parked.total)
            (outboxCustomers, oldestOutbox) = try await store.pendingOutboxSummary()
        }

        if existing.contains(settings.kafka.deadLetter.name) {
            try await deadLetters.refresh(admin: admin, progress: progress)
        }
        return QueueSnapshot(takenAt: now, partitions: partitions, groups: groups, timers: timers, senderDelayed: delayed,
                             outboxPendingCustomers: outboxCustomers, oldestOutboxAgeMs: oldestOutbox.map { max(now - $0, 0) },
                             deadLettersByReason: deadLetters.byReason)
    }

}
