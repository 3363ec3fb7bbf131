import CRdKafka
import Logging
import Synchronization
import WaymarkThreads

/// A record header. A `nil` value is a header without value.
public struct KafkaHeader: Sendable, Hashable {
    public var name: String
    public var value: [UInt8]?
    public init(name: String, value: [UInt8]?) {
        self.name = name
        self.value = value
    }
    public init(name: String, string: String) {
        self.init(name: name, value: Array(string.utf8))
    }
}

/// A record to produce.
public struct KafkaProducerRecord: Sendable {
    public var topic: String
    /// `nil` lets the partitioner choose from the key (murmur2, as Java clients do).
    public var partition: Int32?
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [KafkaHeader]
    /// Milliseconds since the epoch; `nil` = now.
    public var timestamp: Int64?

    public init(topic: String, partition: Int32? = nil, key: [UInt8]?, value: [UInt8]?,
                headers: [KafkaHeader] = [], timestamp: Int64? = nil) {
        self.topic = topic
        self.partition = partition
        self.key = key
        self.value = value
        self.headers = headers
        self.timestamp = timestamp
    }
}

/// The outcome of one produced record.
public struct KafkaDeliveryReport: Sendable {
    public var topic: String
    public var partition: Int32
    /// The record's offset, or -1 if it failed.
    public var offset: Int64
    /// `nil` when the broker acknowledged the record (with `acks=all`: durable on all in-sync replicas).
    public var error: KafkaError?
}

/// Producer settings. Defaults are idempotent, `acks=all`, batched.
public struct KafkaProducerConfiguration: Sendable {
    public var client: KafkaClientConfiguration
    /// How long `send` waits on a full local queue before giving up.
    public var enqueueTimeout: Duration

    public init(client: KafkaClientConfiguration, enqueueTimeout: Duration = .seconds(30)) {
        self.client = client
        self.enqueueTimeout = enqueueTimeout
    }

    /// Waymark's producer defaults; `client.properties` override them.
    public static let defaults: [String: String] = [
        "enable.idempotence": "true",
        "acks": "all",
        "linger.ms": "5",
        "batch.num.messages": "10000",
        "batch.size": "1000000",
        "queue.buffering.max.messages": "1000000",
        "queue.buffering.max.kbytes": "1048576",
        "message.timeout.ms": "120000",
        // Same partition for a key as Java clients, so producers in any language agree on a
        // customer's partition.
        "partitioner": "murmur2_random",
    ]
}

/// One `send` call's records in flight. Slots point back at the batch so the delivery-report
/// callback can find both the batch and the record's index from the per-message opaque pointer.
final class DeliveryBatch: @unchecked Sendable {
    struct Slot {
        var batch: Unmanaged<DeliveryBatch>
        var index: Int
    }

    let slots: UnsafeMutableBufferPointer<Slot>
    let partitions: UnsafeMutableBufferPointer<Int32>
    let offsets: UnsafeMutableBufferPointer<Int64>
    let errors: UnsafeMutableBufferPointer<Int32>
    let remaining: Atomic<Int>
    private let waiter = Mutex<(done: Bool, continuation: CheckedContinuation<Void, Never>?)>((false, nil))

    init(count: Int) {
        slots = .allocate(capacity: count)
        partitions = .allocate(capacity: count)
        offsets = .allocate(capacity: count)
        errors = .allocate(capacity: count)
        partitions.initialize(repeating: -1)
        offsets.initialize(repeating: -1)
        errors.initialize(repeating: 0)
        remaining = Atomic(count + 1)  // +1 held by the sender until every record is enqueued
        let unmanaged = Unmanaged.passUnretained(self)
        for index in 0..<count { (slots.baseAddress! + index).initialize(to: Slot(batch: unmanaged, index: index)) }
    }

    deinit {
        slots.deallocate()
        partitions.deallocate()
        offsets.deallocate()
        errors.deallocate()
    }

    /// Records one completion; the last one wakes the waiting sender.
    func complete(index: Int, partition: Int32, offset: Int64, error: Int32) {
        partitions[index] = partition
        offsets[index] = offset
        errors[index] = error
        release()
    }

    func release() {
        if remaining.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            let continuation = waiter.withLock { state in
                state.done = true
                return state.continuation
            }
            continuation?.resume()
            // Balances the retain taken when the batch was enqueued: librdkafka's callbacks no
            // longer point into it (it lives on if a caller still holds its pending delivery).
            Unmanaged.passUnretained(self).release()
        }
    }

    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = waiter.withLock { state in
                if state.done { return true }
                state.continuation = continuation
                return false
            }
            if done { continuation.resume() }
        }
    }
}

/// librdkafka delivery-report callback; runs on the producer's poll thread.
private let deliveryCallback: @convention(c) (OpaquePointer?, UnsafePointer<rd_kafka_message_t>?, UnsafeMutableRawPointer?) -> Void = {
    _, message, _ in
    guard let message, let opaque = message.pointee._private else { return }
    let slot = opaque.assumingMemoryBound(to: DeliveryBatch.Slot.self).pointee
    slot.batch.takeUnretainedValue().complete(
        index: slot.index, partition: message.pointee.partition,
        offset: message.pointee.err == RD_KAFKA_RESP_ERR_NO_ERROR ? message.pointee.offset : -1,
        error: message.pointee.err.rawValue)
}

/// Records handed to the producer (``KafkaProducer/enqueue(_:)``) whose delivery reports are awaited.
public struct KafkaPendingDelivery: Sendable {
    let records: [KafkaProducerRecord]
    /// Keeps the slots librdkafka's opaque pointers point into alive until the last report.
    let batch: DeliveryBatch?
    let enqueueError: KafkaError?

    /// Waits for every record's delivery report; one report per record, in enqueue order.
    /// - Throws: the enqueue time-out, if the local queue stayed full (after every report is in).
    public func reports() async throws -> [KafkaDeliveryReport] {
        guard let batch else { return [] }
        await batch.wait()
        if let enqueueError { throw enqueueError }
        var reports: [KafkaDeliveryReport] = []
        reports.reserveCapacity(records.count)
        for i in 0..<records.count {
            let code = batch.errors[i]
            reports.append(KafkaDeliveryReport(
                topic: records[i].topic, partition: batch.partitions[i], offset: batch.offsets[i],
                error: code == 0 ? nil : .rdkafka(rd_kafka_resp_err_t(rawValue: code), "delivery to \(records[i].topic)")))
        }
        return reports
    }
}

/// An idempotent, batching Kafka producer.
///
/// ``send(_:)`` enqueues a batch and returns once every record has a delivery report, so callers
/// know exactly which records are durable before they, for example, commit consumer offsets.
/// Delivery reports are served by a thread this producer owns; no call blocks the cooperative pool
/// except ``flush(timeout:)`` and ``close(timeout:)``, which hop to an owned thread.
public final class KafkaProducer: @unchecked Sendable {
    private let handle: OpaquePointer
    private let context: HandleContext
    private let configuration: KafkaProducerConfiguration
    private let pollThread: OwnedThread
    private let controlThread: OwnedThread
    private let running = RunFlag()
    private let topics = Mutex<[String: OpaquePointer]>([:])
    private let logger: Logger

    /// Creates a producer; fails with a typed error on bad configuration or an old librdkafka.
    public init(configuration: KafkaProducerConfiguration, logger: Logger = Logger(label: "waymark.kafka.producer")) throws {
        guard !configuration.client.bootstrapServers.isEmpty else {
            throw KafkaError(kind: .invalidArgument, message: "bootstrap servers are empty")
        }
        self.configuration = configuration
        self.logger = logger
        context = HandleContext(logger: logger)
        let conf = try makeConf([KafkaProducerConfiguration.defaults, configuration.client.properties,
                                 ["bootstrap.servers": configuration.client.bootstrapServers]], role: .producer)
        rd_kafka_conf_set_dr_msg_cb(conf, deliveryCallback)
        handle = try makeHandle(type: RD_KAFKA_PRODUCER, conf: conf, context: context)
        pollThread = OwnedThread(name: "waymark-kafka-producer-poll")
        controlThread = OwnedThread(name: "waymark-kafka-producer-control")
        let shared = SendableHandle(pointer: handle), running = running
        pollThread.submit {
            while running.isOn { rd_kafka_poll(shared.pointer, 50) }
        }
    }

    deinit {
        running.turnOff()
        pollThread.shutdown()
        controlThread.shutdown()
        topics.withLock { $0.values.forEach { rd_kafka_topic_destroy($0) } }
        rd_kafka_destroy(handle)
    }

    private func topicHandle(_ name: String) throws -> OpaquePointer {
        try topics.withLock { cache in
            if let topic = cache[name] { return topic }
            guard !name.isEmpty, let topic = rd_kafka_topic_new(handle, name, nil) else {
                throw KafkaError(kind: .invalidArgument, message: "invalid topic name '\(name)'")
            }
            cache[name] = topic
            return topic
        }
    }

    /// Produces `records` and waits for all their delivery reports.
    ///
    /// Returns one report per record, in input order. Records that could not even be enqueued
    /// (unknown partition, message too large) get a report with an error, like broker failures.
    /// - Throws: ``KafkaError/Kind/closed`` after ``close(timeout:)``; ``KafkaError/Kind/timedOut`` if the
    ///   local queue stayed full for `enqueueTimeout` (the records already enqueued still get reports).
    public func send(_ records: [KafkaProducerRecord]) async throws -> [KafkaDeliveryReport] {
        try await enqueue(records).reports()
    }

    /// Hands `records` to librdkafka and returns without waiting for the broker: the records are
    /// in the producer's queue, in this order, when this returns. Several batches may be in flight
    /// at once; with idempotence on, librdkafka keeps each partition's records in enqueue order.
    /// Await ``KafkaPendingDelivery/reports()`` for the delivery reports.
    public func enqueue(_ records: [KafkaProducerRecord]) async throws -> KafkaPendingDelivery {
        guard running.isOn else { throw KafkaError(kind: .closed, message: "producer is closed") }
        if records.isEmpty { return KafkaPendingDelivery(records: [], batch: nil, enqueueError: nil) }
        let batch = DeliveryBatch(count: records.count)
        _ = Unmanaged.passRetained(batch)  // released after the last report (DeliveryBatch.release)
        var enqueueError: KafkaError?
        var index = 0
        let deadline = ContinuousClock.now + configuration.enqueueTimeout
        while index < records.count {
            let err: rd_kafka_resp_err_t
            do { err = try enqueue(records[index], opaque: UnsafeMutableRawPointer(batch.slots.baseAddress! + index)) } catch {
                // An invalid topic name: what was enqueued still reports; the rest never will.
                for rest in index..<records.count {
                    batch.complete(index: rest, partition: -1, offset: -1, error: RD_KAFKA_RESP_ERR__INVALID_ARG.rawValue)
                }
                batch.release()
                throw error
            }
            if err == RD_KAFKA_RESP_ERR__QUEUE_FULL {
                if ContinuousClock.now > deadline {
                    enqueueError = KafkaError(kind: .timedOut, message: "local producer queue full for \(configuration.enqueueTimeout)")
                    break
                }
                try? await Task.sleep(for: .milliseconds(2))
                continue
            }
            if err != RD_KAFKA_RESP_ERR_NO_ERROR {
                batch.complete(index: index, partition: records[index].partition ?? -1, offset: -1, error: err.rawValue)
            }
            index += 1
        }
        if enqueueError != nil {
            for rest in index..<records.count {
                batch.complete(index: rest, partition: -1, offset: -1, error: RD_KAFKA_RESP_ERR__QUEUE_FULL.rawValue)
            }
        }
        batch.release()
        return KafkaPendingDelivery(records: records, batch: batch, enqueueError: enqueueError)
    }

    /// Like ``send(_:)``, but throws the first delivery error (for callers that need all-or-retry).
    public func sendAll(_ records: [KafkaProducerRecord]) async throws {
        for report in try await send(records) {
            if let error = report.error { throw error }
        }
    }

    private func enqueue(_ record: KafkaProducerRecord, opaque: UnsafeMutableRawPointer) throws -> rd_kafka_resp_err_t {
        let topic = try topicHandle(record.topic)
        let headerCount = record.headers.count
        return withUnsafeTemporaryAllocation(of: rd_kafka_vu_t.self, capacity: 7 + headerCount) { vus in
            var n = 0
            func add(_ type: rd_kafka_vtype_t, _ fill: (inout rd_kafka_vu_t) -> Void) {
                var vu = rd_kafka_vu_t()
                vu.vtype = type
                fill(&vu)
                vus[n] = vu
                n += 1
            }
            add(RD_KAFKA_VTYPE_RKT) { $0.u.rkt = topic }
            add(RD_KAFKA_VTYPE_PARTITION) { $0.u.i32 = record.partition ?? -1 }  // -1: RD_KAFKA_PARTITION_UA
            add(RD_KAFKA_VTYPE_MSGFLAGS) { $0.u.i = RD_KAFKA_MSG_F_COPY }
            add(RD_KAFKA_VTYPE_OPAQUE) { $0.u.ptr = opaque }
            if let timestamp = record.timestamp { add(RD_KAFKA_VTYPE_TIMESTAMP) { $0.u.i64 = timestamp } }
            // Pointers into the Swift arrays stay valid for the call: librdkafka copies (F_COPY).
            return record.key.withOptionalBytes { key in
                record.value.withOptionalBytes { value in
                    if let key { add(RD_KAFKA_VTYPE_KEY) { $0.u.mem.ptr = UnsafeMutableRawPointer(mutating: key.baseAddress); $0.u.mem.size = key.count } }
                    if let value { add(RD_KAFKA_VTYPE_VALUE) { $0.u.mem.ptr = UnsafeMutableRawPointer(mutating: value.baseAddress); $0.u.mem.size = value.count } }
                    return withHeaders(record.headers, 0) { headerVUs in
                        for h in headerVUs { vus[n] = h; n += 1 }
                        guard let error = rd_kafka_produceva(handle, vus.baseAddress, n) else { return RD_KAFKA_RESP_ERR_NO_ERROR }
                        let code = rd_kafka_error_code(error)
                        rd_kafka_error_destroy(error)
                        return code
                    }
                }
            }
        }
    }

    /// Waits until every enqueued record has been delivered or failed.
    public func flush(timeout: Duration) async throws {
        let shared = SendableHandle(pointer: handle)
        let err = try await controlThread.run { rd_kafka_flush(shared.pointer, timeout.milliseconds) }
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError.rdkafka(err, "flush") }
    }

    /// Flushes outstanding records (up to `timeout`) and stops accepting new ones.
    public func close(timeout: Duration = .seconds(10)) async {
        do { try await flush(timeout: timeout) } catch {
            logger.warning("producer flush on close failed", metadata: ["error": "\(error)"])
        }
        running.turnOff()
    }

    /// Number of records enqueued but not yet delivered.
    public var outstanding: Int { Int(rd_kafka_outq_len(handle)) }
}

/// Builds `RD_KAFKA_VTYPE_HEADER` entries whose pointers stay valid inside `body`.
private func withHeaders<R>(_ headers: [KafkaHeader], _ index: Int, _ body: ([rd_kafka_vu_t]) -> R) -> R {
    if headers.isEmpty { return body([]) }
    func recurse(_ i: Int, _ acc: [rd_kafka_vu_t]) -> R {
        if i == headers.count { return body(acc) }
        return headers[i].name.withCString { name in
            headers[i].value.withOptionalBytes { value in
                var vu = rd_kafka_vu_t()
                vu.vtype = RD_KAFKA_VTYPE_HEADER
                vu.u.header.name = name
                vu.u.header.val = value.map { UnsafeRawPointer($0.baseAddress) } ?? nil
                vu.u.header.size = value.map { $0.count } ?? -1
                return recurse(i + 1, acc + [vu])
            }
        }
    }
    return recurse(0, [])
}

extension Optional where Wrapped == [UInt8] {
    /// Calls `body` with the bytes (a non-nil pointer even for an empty array) or `nil`.
    func withOptionalBytes<R>(_ body: (UnsafeRawBufferPointer?) -> R) -> R {
        switch self {
        case .none: return body(nil)
        case .some(let bytes):
            if bytes.isEmpty {
                var zero: UInt8 = 0
                return withUnsafeBytes(of: &zero) { body(UnsafeRawBufferPointer(start: $0.baseAddress, count: 0)) }
            }
            return bytes.withUnsafeBytes { body($0) }
        }
    }
}
