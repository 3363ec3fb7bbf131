import Logging
import Synchronization
import WaymarkConfig
import WaymarkEngine
import WaymarkWire
import WaymarkKafka
import WaymarkState

/// What one batch produced: records to publish before the input offsets may be committed.
public struct BatchOutput: Sendable {
    /// Outbox records per customer, with the outbox entries holding them (already durable in Redis;
    /// acknowledge the entries after Kafka has the records).
    public var outbox: [(customer: String, entries: [String], records: [OutboxRecord])] = []
    /// Dead-letter records (not in Redis: published before the input offsets are committed).
    public var deadLetters: [KafkaProducerRecord] = []
    /// Latest `occurred_at` (ms) read per input partition in this batch, for event-time watermarks.
    public var eventTimes: [KafkaTopicPartition: Int64] = [:]
    public var stats = BatchStats()
}

/// Counters of one batch, for metrics and summaries.
public struct BatchStats: Sendable {
    public var touchpoints = 0
    public var profiles = 0
    /// Customers erased by a tombstone on the customers topic.
    public var erasures = 0
    public var staleProfiles = 0
    public var customers = 0
    public var deadLettered: [RejectionReason: Int] = [:]
    public var duplicates = 0
    public var conflicts = 0
    public var decisions: [DecisionReason: Int] = [:]
    public var messages = 0
    /// Time spent parsing, storing profiles, loading state, running the engine and waiting for
    /// commits (ms), and bytes written.
    public var parseMilliseconds: Int64 = 0
    public var profileMilliseconds: Int64 = 0
    public var loadMilliseconds: Int64 = 0
    public var engineMilliseconds: Int64 = 0
    public var commitMilliseconds: Int64 = 0
    public var stateBytes = 0
    public var outboxBytes = 0

    mutating func add(_ other: BatchStats) {
        touchpoints += other.touchpoints
        profiles += other.profiles
        erasures += other.erasures
        staleProfiles += other.staleProfiles
        customers += other.customers
        duplicates += other.duplicates
        conflicts += other.conflicts
        messages += other.messages
        for (k, v) in other.deadLettered { deadLettered[k, default: 0] += v }
        for (k, v) in other.decisions { decisions[k, default: 0] += v }
    }
}

/// Turns a batch of Kafka records into committed state changes: validates and parses records,
/// stores profiles, then (``StateCommitter``) loads every customer's state in one pipeline, runs the
/// engine per customer (events in partition order), and commits all state changes with their outbox
/// entries in one pipeline of compare-and-set scripts, recomputing customers another writer got to first.
public struct JourneyBatchProcessor: Sendable {
    public let environment: WorkerEnvironment
    public let store: RedisStateStore
    private let profileCache: ProfileCache
    private let committer: StateCommitter

    public init(environment: WorkerEnvironment, store: RedisStateStore, profileCacheSize: Int = 50_000) {
        self.environment = environment
        self.store = store
        self.profileCache = ProfileCache(capacity: profileCacheSize, parser: environment.parser)
        self.committer = StateCommitter(store: store, logger: environment.logger)
    }

    var kafka: KafkaSettings { environment.settings.kafka }

    /// Processes `records` (any mix of touchpoints, deliveries and profiles) at `now`.
    ///
    /// - Parameter lagging: Input partitions this batch did not read to their end, with the latest
    ///   event time read from them before this batch (if any). A customer whose records come from a
    ///   lagging partition gets that partition's event-time watermark: timers due after it wait, as
    ///   events before their due time may still be unread. Other customers fire timers up to `now`.
    public func process(_ records: [KafkaConsumerRecord], now: Timestamp,
                        lagging: [KafkaTopicPartition: Int64?] = [:]) async throws -> BatchOutput {
        var output = BatchOutput()
        var profileChanges: [(customer: String, change: RedisStateStore.ProfileChange)] = []
        var customerPartitions: [String: [KafkaTopicPartition]] = [:]
        var events: [String: [Touchpoint]] = [:]
        var eventRecords: [String: [KafkaConsumerRecord]] = [:]  // for dead-lettering unknown customers
        var order: [String] = []
        var suppressionChanges: [SuppressionChange] = []
        // Parsing is independent per record: spread over the cores, then grouped in partition order.
        let parseStart = ContinuousClock.now
        let parser = environment.parser
        let customersTopic = kafka.customers.name
        let parsed = try await ParallelMap.map(records) { record -> ParsedRecord in
            if record.topic == customersTopic {
                switch parser.profileUpdate(key: record.key, value: record.value) {
                case .success(let update): return .profile(update)
                case .failure(let rejection): return .rejected(rejection)
                }
            }
            switch parser.touchpoint(key: record.key, value: record.value, now: now) {
            case .success(let touchpoint): return .touchpoint(touchpoint)
            case .failure(let rejection): return .rejected(rejection)
            }
        }
        for (record, item) in zip(records, parsed) {
            switch item {
            case .profile(.profile(let profile)):
                profileChanges.append((profile.customerID, .put(profile: Array(record.value!), partition: record.partition, offset: record.offset)))
            case .profile(.erase(let customer)):
                profileChanges.append((customer, .erase(partition: record.partition, offset: record.offset)))
            case .touchpoint(let touchpoint):
                if events[touchpoint.customerID] == nil { order.append(touchpoint.customerID) }
                events[touchpoint.customerID, default: []].append(touchpoint)
                let partition = record.topicPartition
                output.eventTimes[partition] = max(output.eventTimes[partition] ?? .min, touchpoint.occurredAt.milliseconds)
                if lagging.keys.contains(partition), customerPartitions[touchpoint.customerID]?.contains(partition) != true {
                    customerPartitions[touchpoint.customerID, default: []].append(partition)
                }
                if environment.settings.worker.unknownCustomer == .deadLetter {
                    eventRecords[touchpoint.customerID, default: []].append(record)
                }
                if let change = SuppressionChange(touchpoint) { suppressionChanges.append(change) }
                output.stats.touchpoints += 1
            case .rejected(let rejection):
                deadLetter(record, rejection, now: now, into: &output)
            }
        }
        let profileStart = ContinuousClock.now
        output.stats.parseMilliseconds = (profileStart - parseStart).milliseconds
        // Profiles and erasures first, in topic order, so events in the same batch see them (topics
        // are not ordered against each other: an event read after an erasure starts an unknown customer).
        if !profileChanges.isEmpty {
            let applied = try await store.applyProfileChanges(profileChanges, erasing: environment.erasureScope)
            for (item, done) in zip(profileChanges, applied) {
                switch item.change {
                case .put: if done { output.stats.profiles += 1 } else { output.stats.staleProfiles += 1 }
                case .erase: output.stats.erasures += 1
                }
            }
            if output.stats.erasures > 0 {
                environment.logger.notice("customers erased by tombstones", metadata: ["erasure.count": "\(output.stats.erasures)"])
            }
        }
        // Unsubscribes from any source (the receipts worker has usually recorded them already:
        // recording again changes nothing), before the batch's sends are decided.
        for change in suppressionChanges {
            try await store.suppress(change.customer, change.entry, at: change.at, withdraw: change.withdraw)
        }
        output.stats.customers = order.count
        output.stats.profileMilliseconds = (ContinuousClock.now - profileStart).milliseconds

        let (eventsOf, partitionsOf, eventTimes) = (events, customerPartitions, output.eventTimes)
        let (profileCache, environment) = (profileCache, environment)
        let (outcomes, run) = try await committer.run(order, wallNow: { WallClock.now().milliseconds }) {
            [self] (stored, state) -> (StateWrite, EngineResult)? in
            let customer = stored.customer
            let profile = profileCache.profile(customer, bytes: stored.profile, suppressions: stored.suppressions)
            if profile == nil, environment.settings.worker.unknownCustomer == .deadLetter { return nil }
            // The customer's watermark: the latest event time read from its lagging partitions.
            var watermark: Timestamp? = nil
            for partition in partitionsOf[customer] ?? [] {
                let read = max((lagging[partition] ?? nil) ?? .min, eventTimes[partition] ?? .min)
                watermark = min(watermark ?? Timestamp(milliseconds: read), Timestamp(milliseconds: read))
            }
            let result = environment.engine.process(state, customerID: customer, profile: profile,
                                                    touchpoints: eventsOf[customer] ?? [], now: now, timing: .live,
                                                    watermark: watermark)
            return (write(for: customer, version: stored.version, result: result), result)
        }
        output.stats.loadMilliseconds += run.loadMilliseconds
        output.stats.engineMilliseconds += run.computeMilliseconds
        output.stats.commitMilliseconds += run.commitMilliseconds
        output.stats.conflicts += run.conflicts
        for customer in order {
            switch outcomes[customer] {
            case .committed(let version, let write, let result)?:
                collect(customer, version: version, write: write, result: result, into: &output)
                output.stats.duplicates += result.duplicateEvents
                output.stats.stateBytes += write.state.count
                output.stats.outboxBytes += write.outbox.reduce(0) { $0 + $1.value.count } + write.decisions.reduce(0) { $0 + $1.count }
            case .skipped?:
                // No profile and `unknown_customer: dead_letter`.
                for record in eventRecords[customer] ?? [] {
                    deadLetter(record, Rejection(.unknownCustomer, "no profile for this customer"), now: now, into: &output)
                }
            case .unreadable(let error)?:
                // Never drop events silently: with the state unreadable they go to the DLQ (re-drive them
                // once the state is repaired, or the worker that can read it is deployed).
                for record in recordsOf(customer, in: records) {
                    deadLetter(record, Rejection(.unreadableState, "stored state unreadable: \(error.reason) at byte \(error.offset)"),
                               now: now, into: &output)
                }
            case .conflicting?, nil:
                throw StateStoreError(message: "customers kept conflicting after \(committer.maxAttempts) attempts; the batch is retried")
            }
        }
        return output
    }

    /// Fires due timers and deferred releases for `customers` (a scheduler tick). `watermark`: the
    /// event time every touchpoint partition has been read up to, when some are behind (see
    /// `RedisStateStore.eventTimeGate`); `nil` when all are caught up.
    ///
    /// A customer in the due index without state (erased meanwhile) is removed from it; one whose
    /// state is unreadable is looked at again a minute later (counted and logged each time); one still
    /// conflicting stays due and is taken up by the next tick.
    public func wake(_ customers: [String], now: Timestamp, watermark: Timestamp? = nil) async throws -> BatchOutput {
        var output = BatchOutput()
        var withoutState: [String] = []
        let (profileCache, environment) = (profileCache, environment)
        let (outcomes, run) = try await committer.run(customers, wallNow: { WallClock.now().milliseconds }) {
            [self] (stored, state) -> (StateWrite, EngineResult)? in
            guard stored.state != nil else { return nil }
            let profile = profileCache.profile(stored.customer, bytes: stored.profile, suppressions: stored.suppressions)
            let result = environment.engine.wake(state, customerID: stored.customer, profile: profile, now: now, timing: .live,
                                                 watermark: watermark)
            return (write(for: stored.customer, version: stored.version, result: result), result)
        }
        output.stats.conflicts += run.conflicts
        var unreadable: [String] = []
        for customer in customers {
            switch outcomes[customer] {
            case .committed(let version, let write, let result)?: collect(customer, version: version, write: write, result: result, into: &output)
            case .skipped?: withoutState.append(customer)
            case .unreadable?: unreadable.append(customer)
            case .conflicting?, nil: break
            }
        }
        try await store.rescheduleWakeUps(remove: withoutState, postpone: unreadable, to: WallClock.now().milliseconds + 60_000)
        output.stats.customers = customers.count
        return output
    }

    /// Adds a committed customer's outbox and decision counts to `output`.
    private func collect(_ customer: String, version: Int64, write: StateWrite, result: EngineResult, into output: inout BatchOutput) {
        if !write.outbox.isEmpty { output.outbox.append((customer, [RedisStateStore.outboxEntryID(version: version)], write.outbox)) }
        output.stats.messages += result.messages.count
        for decision in result.decisions { output.stats.decisions[decision.reason, default: 0] += 1 }
    }

    private func write(for customer: String, version: Int64, result: EngineResult) -> StateWrite {
        let key = Array(customer.utf8)
        var outbox: [OutboxRecord] = []
        outbox.reserveCapacity(result.messages.count + result.decisions.count)
        for message in result.messages {
            outbox.append(OutboxRecord(id: message.messageID.description, topic: kafka.outboundTopic(message.channel.rawValue),
                                       key: key, value: message.jsonBytes()))
        }
        var decisions: [[UInt8]] = []
        for (index, decision) in result.decisions.enumerated() {
            let json = decision.jsonBytes()
            // The inspection list keeps message outcomes; lifecycle records (stage reached, journey
            // entered) are visible in the state itself and on the decisions topic.
            if decision.reason.isMessageOutcome { decisions.append(json) }
            outbox.append(OutboxRecord(id: decisionID(customer, decision, index), topic: kafka.decisions.name, key: key, value: json))
        }
        return StateWrite(customer: customer, expectedVersion: version, state: result.state.encoded(),
                          nextWakeup: result.nextWakeUp?.milliseconds, outbox: outbox, decisions: decisions)
    }

    /// A stable id for a decision's outbox entry: recomputing the same batch yields the same id.
    private func decisionID(_ customer: String, _ decision: Decision, _ index: Int) -> String {
        var hash = StableHash()
        hash.combine(customer)
        hash.combine(decision.causedBy ?? "")
        hash.combine(decision.reason.rawValue)
        hash.combine(decision.messageID?.description ?? "")
        hash.combine(decision.decidedAt.milliseconds)
        hash.combine(Int64(index))
        return "d-" + String(hash.value, radix: 16)
    }

    private func recordsOf(_ customer: String, in records: [KafkaConsumerRecord]) -> [KafkaConsumerRecord] {
        records.filter { $0.topic != kafka.customers.name && $0.key.map { $0.elementsEqual(customer.utf8) } == true }
    }

    private func deadLetter(_ record: KafkaConsumerRecord, _ rejection: Rejection, now: Timestamp, into output: inout BatchOutput) {
        output.deadLetters.append(.deadLetter(record, rejection: rejection, topic: kafka.deadLetter.name, at: now.milliseconds))
        output.stats.deadLettered[rejection.reason, default: 0] += 1
    }
}

/// One input record, parsed.
private enum ParsedRecord: Sendable {
    case profile(ProfileUpdate)
    case touchpoint(Touchpoint)
    case rejected(Rejection)
}

/// Parsed profiles by customer, reused while the stored bytes are unchanged: a customer's profile
/// is loaded with its state on every batch, but rarely changes, and parsing costs ~7 µs.
final class ProfileCache: Sendable {
    private let entries = Mutex<[String: (bytes: [UInt8], profile: CustomerProfile)]>([:])
    private let capacity: Int
    private let parser: RecordParser

    init(capacity: Int, parser: RecordParser) {
        self.capacity = capacity
        self.parser = parser
    }

    /// The profile stored as `bytes` with the customer's own unsubscribes applied, parsed at most once
    /// while unchanged; `nil` without (valid) bytes.
    func profile(_ customer: String, bytes: [UInt8]?, suppressions: Suppressions) -> CustomerProfile? {
        parsed(customer, bytes: bytes)?.applying(suppressions)
    }

    private func parsed(_ customer: String, bytes: [UInt8]?) -> CustomerProfile? {
        guard let bytes else { return nil }
        if let hit = entries.withLock({ $0[customer] }), hit.bytes == bytes { return hit.profile }
        guard case .success(let profile) = parser.profile(key: ArraySlice(customer.utf8), value: ArraySlice(bytes)) else { return nil }
        entries.withLock { cache in
            if cache.count >= capacity { cache.removeAll(keepingCapacity: true) }  // simple, bounded
            cache[customer] = (bytes, profile)
        }
        return profile
    }
}
