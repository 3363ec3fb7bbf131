import Foundation
import Logging
import WaymarkEngine
import WaymarkWire
import WaymarkKafka
import WaymarkRedis
import WaymarkState
import WaymarkWorkers

/// What a rebuild did.
public struct RebuildReport: Sendable, Codable {
    public var customers = 0
    public var rebuilt = 0
    /// Customers skipped because an interrupted run had already rebuilt them.
    public var resumedPast = 0
    public var events = 0
    /// Messages the new rules would have sent before now: not sent again.
    public var pastMessagesNotResent = 0
    /// Customers with a future timer or held message, re-indexed for the scheduler.
    public var rescheduled = 0
    public var conflicts = 0
    /// Customers whose stored state could not be decoded: left untouched (see `StateCommitter`).
    public var unreadable: [String] = []
}

/// What re-deriving one customer produced.
struct Rebuilt: Sendable {
    /// Messages the old and new rules would have sent before now (not sent again).
    var notResent: Int
    /// Whether a timer or held message is still in the future.
    var rescheduled: Bool
}

/// Thrown by a rebuild stopped on purpose (tests) or by a fence lost to another holder.
public struct RebuildInterrupted: Error, CustomStringConvertible {
    public var afterCustomers: Int
    public var description: String { "rebuild interrupted after \(afterCustomers) customers; run it again to resume" }
}

/// Re-derives live journey state from history under new rules.
///
/// 1. Raises the fence (journey workers and schedulers pause, keeping their group membership) and
///    waits `settle` so batches in flight finish.
/// 2. Snapshots the end offsets of the touchpoint topics (kept in a checkpoint, so a resumed run reads
///    exactly the same history).
/// 3. Per customer, in sorted order: history before `from` replayed with the current rules, from `from`
///    to `now` with the new rules, in event time. The resulting state replaces the live one
///    (compare-and-set); timers and held messages still in the future are re-indexed for the scheduler;
///    messages whose time has passed are **not** sent again.
/// 4. After each batch of customers the checkpoint records progress; an interrupted rebuild started
///    again with the same `id` continues where it stopped. At the end the checkpoint is removed and the
///    fence lifted.
public struct ReplayRebuild: Sendable {
    public var current: JourneyEngine
    public var proposed: JourneyEngine
    public var from: Timestamp
    public var now: Timestamp
    /// Identifies the rebuild (same id → resume).
    public var id: String
    public var settle: Duration = .seconds(5)
    public var batchSize = 500
    /// Stop (throwing ``RebuildInterrupted``) after this many customers: for tests of resumption.
    public var interruptAfter: Int?

    public init(current: JourneyEngine, proposed: JourneyEngine, from: Timestamp, now: Timestamp, id: String) {
        self.current = current
        self.proposed = proposed
        self.from = from
        self.now = now
        self.id = id
    }

    public func run(store: RedisStateStore, client: KafkaClientConfiguration, admin: KafkaAdmin,
                    touchpointTopics: [String], customersTopic: String,
                    progress: @escaping @Sendable (Int, Int) -> Void = { _, _ in }) async throws -> RebuildReport {
        let connection = store.connection
        let fence = Fence(connection: connection, keys: store.keys)
        let checkpoints = OperatorStore(connection: connection, keys: store.keys)
        guard try await fence.raise(holder: id, ttlSeconds: 300) else {
            throw RebuildInterrupted(afterCustomers: 0)
        }
        // Checkpoint: end-offset snapshot and customers done.
        var snapshot: [KafkaTopicPartition: Int64] = [:]
        var done = 0
        if let saved = try await checkpoints.rebuildCheckpoint(id) {
            done = saved.done
            for mark in saved.endOffsets { snapshot[KafkaTopicPartition(topic: mark.topic, partition: mark.partition)] = mark.offset }
        } else {
            try await Task.sleep(for: settle)  // let batches already in flight finish
            for (partition, marks) in try await admin.endOffsets(topics: touchpointTopics) { snapshot[partition] = marks.high }
            try await checkpoints.saveRebuildCheckpoint(id, .init(endOffsets: snapshot.sorted { $0.key < $1.key }.map {
                .init(topic: $0.key.topic, partition: $0.key.partition, offset: $0.value)
            }, done: 0))
        }

        let parser = RecordParser(limits: IngestLimits(maxFutureSkew: .days(36_500), maxAge: .zero))
        var byCustomer: [String: [Touchpoint]] = [:]
        var report = RebuildReport()
        for topic in touchpointTopics {
            for record in try await TopicReader.readAll(topic, client: client, admin: admin, until: snapshot) {
                if case .success(let t) = parser.touchpoint(key: record.key, value: record.value, now: now) {
                    byCustomer[t.customerID, default: []].append(t)
                    report.events += 1
                }
            }
        }
        var profiles: [String: CustomerProfile] = [:]
        for record in try await TopicReader.readAll(customersTopic, client: client, admin: admin) {
            if case .success(let p) = parser.profile(key: record.key, value: record.value) { profiles[p.customerID] = p }
        }
        let customers = byCustomer.keys.sorted()
        report.customers = customers.count
        report.resumedPast = min(done, customers.count)

        let committer = StateCommitter(store: store, logger: Logger(label: "waymark.replay"))
        let (histories, latestProfiles) = (byCustomer, profiles)
        var index = done
        while index < customers.count {
            if let limit = interruptAfter, index >= limit { throw RebuildInterrupted(afterCustomers: index) }
            let end = min(index + batchSize, customers.count, interruptAfter ?? .max)
            let batch = Array(customers[index..<end])
            let (outcomes, run) = try await committer.run(batch, wallNow: { Int64(Date().timeIntervalSince1970 * 1000) }) {
                (stored, _) -> (StateWrite, Rebuilt)? in
                let history = histories[stored.customer]!.enumerated()
                    .sorted { ($0.element.occurredAt, $0.offset) < ($1.element.occurredAt, $1.offset) }.map(\.element)
                let profile = latestProfiles[stored.customer]
                let start = current.process(CustomerState(), customerID: stored.customer, profile: profile,
                                            touchpoints: history.filter { $0.occurredAt < from },
                                            now: from.adding(TimeSpan(milliseconds: -1)), timing: .replay)
                let result = proposed.process(start.state, customerID: stored.customer, profile: profile,
                                              touchpoints: history.filter { $0.occurredAt >= from }, now: now, timing: .replay)
                let write = StateWrite(customer: stored.customer, expectedVersion: stored.version, state: result.state.encoded(),
                                       nextWakeup: result.nextWakeUp?.milliseconds)
                return (write, Rebuilt(notResent: start.messages.count + result.messages.count, rescheduled: result.nextWakeUp != nil))
            }
            report.conflicts += run.conflicts
            for customer in batch {
                switch outcomes[customer] {
                case .committed(_, _, let payload)?:
                    report.rebuilt += 1
                    report.pastMessagesNotResent += payload.notResent
                    if payload.rescheduled { report.rescheduled += 1 }
                case .unreadable?:
                    report.unreadable.append(customer)
                case .skipped?:
                    break
                case .conflicting?, nil:
                    throw RebuildInterrupted(afterCustomers: index)  // resumable: run the same rebuild again
                }
            }
            index = end
            try await checkpoints.recordRebuildProgress(id, done: index)
            try await fence.renew(holder: id, ttlSeconds: 300)
            progress(index, customers.count)
        }
        try await checkpoints.clearRebuildCheckpoint(id)
        try await fence.lift(holder: id)
        return report
    }
}
