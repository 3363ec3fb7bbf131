import CRdKafka
import Dispatch
import Logging
import Synchronization
import WaymarkThreads

/// A consumed record. `key` and `value` are slices of one buffer shared by the whole poll batch,
/// so a batch costs a handful of allocations, not two per record.
public struct KafkaConsumerRecord: Sendable {
    public let topic: String
    public let partition: Int32
    public let offset: Int64
    /// Milliseconds since the epoch, or -1 when the broker gave none.
    public let timestamp: Int64
    /// `nil` for a null key.
    public let key: ArraySlice<UInt8>?
    /// `nil` for a null value (tombstone).
    public let value: ArraySlice<UInt8>?
    public let headers: [KafkaHeader]

    /// The value of the first header named `name`.
    public func header(_ name: String) -> [UInt8]? {
        headers.first { $0.name == name }?.value
    }

    public var topicPartition: KafkaTopicPartition { KafkaTopicPartition(topic: topic, partition: partition) }
}

/// Told about partition assignment changes. Called from the consumer's poll thread, which waits
/// for the async method to return before librdkafka proceeds: use ``partitionsRevoked(_:)`` to
/// finish (and commit) or abandon in-flight work of the revoked partitions.
public protocol KafkaRebalanceListener: Sendable {
    func partitionsAssigned(_ partitions: [KafkaTopicPartition]) async
    func partitionsRevoked(_ partitions: [KafkaTopicPartition]) async
}

/// Consumer settings. Defaults: manual commits, no auto offset store, `earliest` reset.
public struct KafkaConsumerConfiguration: Sendable {
    public var client: KafkaClientConfiguration
    /// The consumer group; `nil` for a consumer that only uses manual ``KafkaConsumer/assign(_:)``.
    public var groupID: String?

    public init(client: KafkaClientConfiguration, groupID: String?) {
        self.client = client
        self.groupID = groupID
    }

    /// Waymark's consumer defaults; `client.properties` override them.
    public static let defaults: [String: String] = [
        "enable.auto.commit": "false",
        "enable.auto.offset.store": "false",
        "auto.offset.reset": "earliest",
        "enable.partition.eof": "false",
        "queued.max.messages.kbytes": "16384",  // prefetch per consumer; bounds RSS (librdkafka default 64 MB)
    ]
}

final class ConsumerContext: HandleContext, @unchecked Sendable {
    let listener: (any KafkaRebalanceListener)?
    let assignment = Mutex<Set<KafkaTopicPartition>>([])
    let rebalances = Atomic<Int>(0)

    init(logger: Logger, listener: (any KafkaRebalanceListener)?) {
        self.listener = listener
        super.init(logger: logger)
    }

    /// Runs an async listener method to completion from a blocking librdkafka callback.
    /// Only ever called on threads the consumer owns, never on the cooperative pool.
    func await(_ body: @escaping @Sendable () async -> Void) {
        let done = DispatchSemaphore(value: 0)
        Task { await body(); done.signal() }
        done.wait()
    }
}

/// The rebalance callback: applies the new assignment itself (required once a callback is
/// installed) after letting the listener react. Runs on the thread that polls or closes.
private let rebalanceCallback: @convention(c) (OpaquePointer?, rd_kafka_resp_err_t, UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?, UnsafeMutableRawPointer?) -> Void = {
    rk, err, list, opaque in
    guard let rk, let opaque else { return }
    let context = Unmanaged<ConsumerContext>.fromOpaque(opaque).takeUnretainedValue()
    let partitions = PartitionList.read(list).map(\.topicPartition)
    let cooperative = String(cString: rd_kafka_rebalance_protocol(rk)) == "COOPERATIVE"
    context.rebalances.add(1, ordering: .relaxed)
    switch err {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        if cooperative {
            if let error = rd_kafka_incremental_assign(rk, list) { rd_kafka_error_destroy(error) }
        } else {
            rd_kafka_assign(rk, list)
        }
        context.assignment.withLock { current in
            if !cooperative { current.removeAll() }
            current.formUnion(partitions)
        }
        context.logger.info("partitions assigned", metadata: ["kafka.partitions": "\(partitions.sorted())"])
        if let listener = context.listener { context.await { await listener.partitionsAssigned(partitions) } }
    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
        context.logger.info("partitions revoked", metadata: ["kafka.partitions": "\(partitions.sorted())"])
        if let listener = context.listener { context.await { await listener.partitionsRevoked(partitions) } }
        if cooperative {
            if let error = rd_kafka_incremental_unassign(rk, list) { rd_kafka_error_destroy(error) }
        } else {
            rd_kafka_assign(rk, nil)
        }
        context.assignment.withLock { $0.subtract(partitions) }
    default:
        context.logger.error("rebalance error", metadata: ["kafka.error": "\(String(cString: rd_kafka_err2name(err)))"])
        rd_kafka_assign(rk, nil)
        context.assignment.withLock { $0.removeAll() }
    }
}

/// A Kafka consumer with manual offset commits and batched polling on a thread it owns.
///
/// Typical loop: ``subscribe(_:)``, then repeatedly ``poll(maxRecords:timeout:)``, process the batch,
/// and ``commit(_:)`` the next offsets once the results are durable. ``close()`` leaves the group
/// (revoking partitions through the listener first). Processing must call `poll` at least every
/// `max.poll.interval.ms` (default 300 s) or librdkafka leaves the group.
public final class KafkaConsumer: @unchecked Sendable {
    private let handle: OpaquePointer
    private let queue: OpaquePointer
    private let context: ConsumerContext
    private let pollThread: OwnedThread
    private let controlThread: OwnedThread
    private let closed = Mutex(false)
    private let logger: Logger
    public let groupID: String?

    /// Creates a consumer; fails with a typed error on bad configuration or an old librdkafka.
    public init(configuration: KafkaConsumerConfiguration, rebalanceListener: (any KafkaRebalanceListener)? = nil,
                logger: Logger = Logger(label: "waymark.kafka.consumer")) throws {
        guard !configuration.client.bootstrapServers.isEmpty else {
            throw KafkaError(kind: .invalidArgument, message: "bootstrap servers are empty")
        }
        if let group = configuration.groupID, group.isEmpty {
            throw KafkaError(kind: .invalidArgument, message: "group id is empty")
        }
        self.logger = logger
        groupID = configuration.groupID
        context = ConsumerContext(logger: logger, listener: rebalanceListener)
        var layers = [KafkaConsumerConfiguration.defaults, configuration.client.properties,
                      ["bootstrap.servers": configuration.client.bootstrapServers]]
        // librdkafka needs a group for assign() and the consumer queue; a reader without one gets a
        // private group that never subscribes or commits (so it never appears in ListGroups).
        layers.append(["group.id": configuration.groupID ?? "waymark-reader-\(UInt64.random(in: 0...UInt64.max))"])
        let conf = try makeConf(layers, role: .consumer)
        rd_kafka_conf_set_rebalance_cb(conf, rebalanceCallback)
        handle = try makeHandle(type: RD_KAFKA_CONSUMER, conf: conf, context: context)
        rd_kafka_poll_set_consumer(handle)
        queue = rd_kafka_queue_get_consumer(handle)
        pollThread = OwnedThread(name: "waymark-kafka-consumer-poll")
        controlThread = OwnedThread(name: "waymark-kafka-consumer-control")
    }

    deinit {
        pollThread.shutdown()
        controlThread.shutdown()
        rd_kafka_queue_destroy(queue)
        // Destroying an open consumer closes it (blocking); callers should `close()` first.
        rd_kafka_destroy(handle)
    }

    private var shared: SendableHandle { SendableHandle(pointer: handle) }

    private func ensureOpen() throws {
        if closed.withLock({ $0 }) { throw KafkaError(kind: .closed, message: "consumer is closed") }
    }

    /// Subscribes to `topics` in the consumer group; partitions arrive through rebalances.
    public func subscribe(_ topics: [String]) throws {
        try ensureOpen()
        guard groupID != nil else { throw KafkaError(kind: .invalidArgument, message: "subscribe needs a group id") }
        guard !topics.isEmpty, !topics.contains(where: \.isEmpty) else {
            throw KafkaError(kind: .invalidArgument, message: "subscribe needs non-empty topic names")
        }
        let list = PartitionList(topics.map { KafkaTopicPartition(topic: $0, partition: -1) })
        let err = rd_kafka_subscribe(handle, list.pointer)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError.rdkafka(err, "subscribe \(topics)") }
    }

    /// Assigns partitions directly (no group rebalancing), each starting at its `offset`
    /// (``KafkaOffset/beginning``, ``KafkaOffset/end``, ``KafkaOffset/stored`` or an absolute offset).
    public func assign(_ partitions: [KafkaTopicPartitionOffset]) throws {
        try ensureOpen()
        let list = PartitionList(partitions)
        let err = rd_kafka_assign(handle, list.pointer)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError.rdkafka(err, "assign") }
        context.assignment.withLock { $0 = Set(partitions.map(\.topicPartition)) }
    }

    /// The partitions currently assigned to this consumer.
    public var assignment: Set<KafkaTopicPartition> { context.assignment.withLock { $0 } }

    /// How many rebalance callbacks have run (assign and revoke), for diagnostics and tests.
    public var rebalanceCount: Int { context.rebalances.load(ordering: .relaxed) }

    /// Returns up to `maxRecords` records, waiting at most `timeout` for the first one; records
    /// already fetched are returned at once (no waiting to fill the batch). Rebalance callbacks run
    /// during this call. Returns an empty array on timeout.
    public func poll(maxRecords: Int = 10_000, timeout: Duration = .milliseconds(100)) async throws -> [KafkaConsumerRecord] {
        try ensureOpen()
        guard maxRecords > 0 else { throw KafkaError(kind: .invalidArgument, message: "maxRecords must be positive") }
        let handle = shared, queue = SendableHandle(pointer: self.queue), logger = logger
        return try await pollThread.run {
            try Self.pollBatch(handle: handle.pointer, queue: queue.pointer, max: maxRecords, timeout: timeout, logger: logger)
        }
    }

    private static func pollBatch(handle: OpaquePointer, queue: OpaquePointer, max: Int, timeout: Duration,
                                  logger: Logger) throws -> [KafkaConsumerRecord] {
        let buffer = UnsafeMutablePointer<UnsafeMutablePointer<rd_kafka_message_t>?>.allocate(capacity: max)
        defer { buffer.deallocate() }
        guard let first = rd_kafka_consumer_poll(handle, timeout.milliseconds) else { return [] }
        buffer[0] = first
        var count = 1
        if max > 1 {
            let more = rd_kafka_consume_batch_queue(queue, 0, buffer + 1, max - 1)
            if more > 0 { count += more }
        }
        defer { for i in 0..<count { rd_kafka_message_destroy(buffer[i]) } }

        // One contiguous buffer for all keys and values of the batch.
        var total = 0
        for i in 0..<count {
            let m = buffer[i]!.pointee
            if m.err == RD_KAFKA_RESP_ERR_NO_ERROR { total += m.len + m.key_len }
        }
        var storage = [UInt8]()
        storage.reserveCapacity(total)
        var spans: [(key: Range<Int>?, value: Range<Int>?)] = []
        spans.reserveCapacity(count)
        for i in 0..<count {
            let m = buffer[i]!.pointee
            guard m.err == RD_KAFKA_RESP_ERR_NO_ERROR else { spans.append((nil, nil)); continue }
            var keyRange: Range<Int>?
            if let key = m.key {
                let start = storage.count
                storage.append(contentsOf: UnsafeRawBufferPointer(start: key, count: m.key_len))
                keyRange = start..<storage.count
            }
            var valueRange: Range<Int>?
            if let payload = m.payload {
                let start = storage.count
                storage.append(contentsOf: UnsafeRawBufferPointer(start: payload, count: m.len))
                valueRange = start..<storage.count
            }
            spans.append((keyRange, valueRange))
        }

        var records: [KafkaConsumerRecord] = []
        records.reserveCapacity(count)
        var topicNames: [OpaquePointer: String] = [:]
        for i in 0..<count {
            let message = buffer[i]!
            let m = message.pointee
            if m.err != RD_KAFKA_RESP_ERR_NO_ERROR {
                if m.err == RD_KAFKA_RESP_ERR__FATAL {
                    var errstr = [CChar](repeating: 0, count: 512)
                    let code = rd_kafka_fatal_error(handle, &errstr, errstr.count)
                    throw KafkaError(kind: .fatal, code: code.rawValue, message: cString(errstr))
                }
                logger.warning("consumer error", metadata: [
                    "kafka.error": "\(String(cString: rd_kafka_err2name(m.err)))",
                    "kafka.message": "\(String(cString: rd_kafka_message_errstr(message)))",
                ])
                continue
            }
            let topic: String
            if let rkt = m.rkt, let cached = topicNames[rkt] { topic = cached } else {
                topic = m.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? ""
                if let rkt = m.rkt { topicNames[rkt] = topic }
            }
            var headers: [KafkaHeader] = []
            var hdrs: OpaquePointer?
            if rd_kafka_message_headers(message, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR, let hdrs {
                var index = 0
                var name: UnsafePointer<CChar>?
                var value: UnsafeRawPointer?
                var size = 0
                while rd_kafka_header_get_all(hdrs, index, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
                    let bytes = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) }
                    headers.append(KafkaHeader(name: name.map { String(cString: $0) } ?? "", value: bytes))
                    index += 1
                }
            }
            var timestampType = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
            let timestamp = rd_kafka_message_timestamp(message, &timestampType)
            let span = spans[i]
            records.append(KafkaConsumerRecord(
                topic: topic, partition: m.partition, offset: m.offset, timestamp: timestamp,
                key: span.key.map { storage[$0] }, value: span.value.map { storage[$0] }, headers: headers))
        }
        return records
    }

    /// Commits `offsets` (each the next offset to read) synchronously for the group.
    public func commit(_ offsets: [KafkaTopicPartitionOffset]) async throws {
        try ensureOpen()
        if offsets.isEmpty { return }
        let handle = shared
        try await controlThread.run {
            let list = PartitionList(offsets)
            let err = rd_kafka_commit(handle.pointer, list.pointer, 0)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError.rdkafka(err, "commit") }
            if let error = PartitionList.firstError(list.pointer, context: "commit") { throw error }
        }
    }

    /// The group's committed offsets for `partitions` (``KafkaOffset/invalid`` when none).
    public func committed(_ partitions: [KafkaTopicPartition], timeout: Duration = .seconds(10)) async throws -> [KafkaTopicPartitionOffset] {
        try ensureOpen()
        let handle = shared
        return try await controlThread.run {
            let list = PartitionList(partitions)
            let err = rd_kafka_committed(handle.pointer, list.pointer, timeout.milliseconds)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError.rdkafka(err, "committed") }
            return PartitionList.read(list.pointer)
        }
    }

    /// Moves the fetch position of assigned partitions.
    public func seek(_ offsets: [KafkaTopicPartitionOffset], timeout: Duration = .seconds(10)) async throws {
        try ensureOpen()
        let handle = shared
        try await controlThread.run {
            let list = PartitionList(offsets)
            if let error = rd_kafka_seek_partitions(handle.pointer, list.pointer, timeout.milliseconds) {
                let code = rd_kafka_error_code(error)
                rd_kafka_error_destroy(error)
                throw KafkaError.rdkafka(code, "seek")
            }
            if let error = PartitionList.firstError(list.pointer, context: "seek") { throw error }
        }
    }

    /// Stops fetching from `partitions` until ``resume(_:)``; they stay assigned.
    public func pause(_ partitions: [KafkaTopicPartition]) throws {
        let list = PartitionList(partitions)
        let err = rd_kafka_pause_partitions(handle, list.pointer)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError.rdkafka(err, "pause") }
    }

    /// Resumes fetching from paused `partitions`.
    public func resume(_ partitions: [KafkaTopicPartition]) throws {
        let list = PartitionList(partitions)
        let err = rd_kafka_resume_partitions(handle, list.pointer)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError.rdkafka(err, "resume") }
    }

    /// Low and high watermarks as last seen in fetch responses (no network call), or `nil` if
    /// this consumer has not fetched from the partition yet. On the local Tansu broker these
    /// are the reliable end offsets: its ListOffsets answer is wrong (see ENVIRONMENT.md).
    public func cachedWatermarks(_ partition: KafkaTopicPartition) -> (low: Int64, high: Int64)? {
        var low: Int64 = -1, high: Int64 = -1
        let err = rd_kafka_get_watermark_offsets(handle, partition.topic, partition.partition, &low, &high)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR, high >= 0 else { return nil }
        return (low, high)
    }

    /// Asks the broker for watermarks (ListOffsets). Correct on Apache Kafka; on Tansu the high
    /// watermark is the start of the last batch + 1, so prefer ``cachedWatermarks(_:)`` there.
    public func queryWatermarks(_ partition: KafkaTopicPartition, timeout: Duration = .seconds(10)) async throws -> (low: Int64, high: Int64) {
        let handle = shared
        return try await controlThread.run {
            var low: Int64 = -1, high: Int64 = -1
            let err = rd_kafka_query_watermark_offsets(handle.pointer, partition.topic, partition.partition,
                                                       &low, &high, timeout.milliseconds)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError.rdkafka(err, "query watermarks \(partition)") }
            return (low, high)
        }
    }

    /// Leaves the group after the listener has handled the final revocation. Idempotent.
    public func close() async {
        let alreadyClosed = closed.withLock { state in
            defer { state = true }
            return state
        }
        if alreadyClosed { return }
        let handle = shared, logger = logger
        // On the poll thread, so it runs after any poll in progress.
        _ = try? await pollThread.run {
            let err = rd_kafka_consumer_close(handle.pointer)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR {
                logger.warning("consumer close", metadata: ["kafka.error": "\(String(cString: rd_kafka_err2name(err)))"])
            }
        }
    }
}

extension KafkaConsumer {
    /// The one record at `topic`/`partition`/`offset`, read by a short-lived consumer without a group;
    /// `nil` when it has not arrived within `timeout` (compacted, past retention, or not written yet).
    public static func record(client: KafkaClientConfiguration, topic: String, partition: Int32, offset: Int64,
                              timeout: Duration = .seconds(5)) async throws -> KafkaConsumerRecord? {
        let consumer = try KafkaConsumer(configuration: .init(client: client, groupID: nil))
        try consumer.assign([KafkaTopicPartitionOffset(topic: topic, partition: partition, offset: offset)])
        var found: KafkaConsumerRecord?
        var passed = false  // a later offset arrived first: the record is gone
        let deadline = ContinuousClock.now + timeout
        while found == nil, !passed, ContinuousClock.now < deadline {
            for record in try await consumer.poll(maxRecords: 10, timeout: .milliseconds(100)) where record.offset >= offset {
                if record.offset == offset { found = record } else { passed = true }
                break
            }
        }
        await consumer.close()
        return found
    }
}
