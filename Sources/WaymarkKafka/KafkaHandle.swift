import CRdKafka
import Logging
import Synchronization

/// Properties that only consumers understand, and only producers. One `properties` dictionary
/// from configuration serves every client; each drops the other side's properties instead of
/// logging a CONFWARN per client.
let consumerOnlyProperties: Set<String> = [
    "group.id", "group.instance.id", "session.timeout.ms", "heartbeat.interval.ms", "max.poll.interval.ms",
    "partition.assignment.strategy", "group.protocol", "group.remote.assignor", "auto.offset.reset",
    "enable.auto.commit", "auto.commit.interval.ms", "enable.auto.offset.store", "enable.partition.eof",
    "fetch.wait.max.ms", "fetch.min.bytes", "fetch.max.bytes", "fetch.message.max.bytes", "fetch.error.backoff.ms",
    "fetch.queue.backoff.ms", "queued.min.messages", "queued.max.messages.kbytes", "isolation.level", "check.crcs",
    "coordinator.query.interval.ms",
]
let producerOnlyProperties: Set<String> = [
    "acks", "request.required.acks", "enable.idempotence", "linger.ms", "queue.buffering.max.ms", "batch.num.messages",
    "batch.size", "queue.buffering.max.messages", "queue.buffering.max.kbytes", "message.timeout.ms",
    "delivery.timeout.ms", "compression.type", "compression.codec", "compression.level", "partitioner",
    "retries", "message.send.max.retries", "retry.backoff.ms", "transactional.id", "max.in.flight.requests.per.connection",
    "max.in.flight",
]

/// Which side's properties a client keeps.
enum ClientRole { case producer, consumer, admin }

/// Builds an `rd_kafka_conf_t` from layered property dictionaries (later layers win).
func makeConf(_ layers: [[String: String]], role: ClientRole) throws -> OpaquePointer {
    try KafkaLibrary.checkVersion()
    guard let conf = rd_kafka_conf_new() else {
        throw KafkaError(kind: .invalidConfiguration, message: "rd_kafka_conf_new failed")
    }
    var merged: [String: String] = [:]
    for layer in layers { merged.merge(layer) { _, new in new } }
    var errstr = [CChar](repeating: 0, count: 512)
    // Sorted, so that the first error reported is deterministic.
    let foreign = role == .consumer ? producerOnlyProperties : consumerOnlyProperties.union(role == .admin ? producerOnlyProperties : [])
    for (name, value) in merged.sorted(by: { $0.key < $1.key }) where !foreign.contains(name) {
        if rd_kafka_conf_set(conf, name, value, &errstr, errstr.count) != RD_KAFKA_CONF_OK {
            rd_kafka_conf_destroy(conf)
            let reason = String(decoding: errstr.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw KafkaError(kind: .invalidConfiguration, message: "property '\(name)': \(reason)")
        }
    }
    return conf
}

/// Context reachable from librdkafka callbacks through the handle's opaque pointer.
class HandleContext: @unchecked Sendable {
    let logger: Logger
    init(logger: Logger) { self.logger = logger }
}

/// Routes librdkafka's own log lines to swift-log. Called on librdkafka's threads.
let kafkaLogCallback: @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, UnsafePointer<CChar>?) -> Void = {
    rk, level, facility, message in
    guard let rk, let opaque = rd_kafka_opaque(rk) else { return }
    let context = Unmanaged<HandleContext>.fromOpaque(opaque).takeUnretainedValue()
    let swiftLevel: Logger.Level = switch level {
    case 0...3: .error
    case 4: .warning
    case 5, 6: .info
    default: .debug
    }
    context.logger.log(level: swiftLevel, "\(message.map { String(cString: $0) } ?? "")",
                       metadata: ["kafka.facility": "\(facility.map { String(cString: $0) } ?? "")"])
}

/// Creates an `rd_kafka_t` of `type`, taking ownership of `conf`.
func makeHandle(type: rd_kafka_type_t, conf: OpaquePointer, context: HandleContext) throws -> OpaquePointer {
    rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(context).toOpaque())
    rd_kafka_conf_set_log_cb(conf, kafkaLogCallback)
    var errstr = [CChar](repeating: 0, count: 512)
    guard let handle = rd_kafka_new(type, conf, &errstr, errstr.count) else {
        rd_kafka_conf_destroy(conf)
        let reason = String(decoding: errstr.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        throw KafkaError(kind: .invalidConfiguration, message: "rd_kafka_new: \(reason)")
    }
    return handle
}

/// A topic and partition.
public struct KafkaTopicPartition: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32
    public init(topic: String, partition: Int32) {
        self.topic = topic
        self.partition = partition
    }
    public static func < (a: Self, b: Self) -> Bool { (a.topic, a.partition) < (b.topic, b.partition) }
    public var description: String { "\(topic)[\(partition)]" }
}

/// A topic, partition and offset. For commits, `offset` is the next offset to read
/// (last processed + 1), as in Kafka.
public struct KafkaTopicPartitionOffset: Hashable, Sendable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public init(topic: String, partition: Int32, offset: Int64) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
    }
    public var topicPartition: KafkaTopicPartition { KafkaTopicPartition(topic: topic, partition: partition) }
    public var description: String { "\(topic)[\(partition)]@\(offset)" }
}

/// Special offsets understood by ``KafkaConsumer/assign(_:)`` and ``KafkaConsumer/seek(_:timeout:)``.
public enum KafkaOffset {
    /// The first available offset.
    public static let beginning: Int64 = -2
    /// The end of the partition (the next offset to be written).
    public static let end: Int64 = -1
    /// The committed offset of the group (or `auto.offset.reset` if none).
    public static let stored: Int64 = -1000
    /// No offset.
    public static let invalid: Int64 = -1001
}

/// Owns an `rd_kafka_topic_partition_list_t`.
final class PartitionList {
    let pointer: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>

    init(capacity: Int) { pointer = rd_kafka_topic_partition_list_new(Int32(max(capacity, 1))) }

    convenience init(_ offsets: [KafkaTopicPartitionOffset]) {
        self.init(capacity: offsets.count)
        for item in offsets {
            let element = rd_kafka_topic_partition_list_add(pointer, item.topic, item.partition)
            element?.pointee.offset = item.offset
        }
    }

    convenience init(_ partitions: [KafkaTopicPartition], offset: Int64 = KafkaOffset.invalid) {
        self.init(partitions.map { KafkaTopicPartitionOffset(topic: $0.topic, partition: $0.partition, offset: offset) })
    }

    deinit { rd_kafka_topic_partition_list_destroy(pointer) }

    static func read(_ list: UnsafePointer<rd_kafka_topic_partition_list_t>?) -> [KafkaTopicPartitionOffset] {
        guard let list else { return [] }
        return (0..<Int(list.pointee.cnt)).map { index in
            let element = list.pointee.elems[index]
            return KafkaTopicPartitionOffset(topic: String(cString: element.topic), partition: element.partition,
                                             offset: element.offset)
        }
    }

    /// The first per-partition error in `list`, if any.
    static func firstError(_ list: UnsafePointer<rd_kafka_topic_partition_list_t>?, context: String) -> KafkaError? {
        guard let list else { return nil }
        for index in 0..<Int(list.pointee.cnt) where list.pointee.elems[index].err != RD_KAFKA_RESP_ERR_NO_ERROR {
            let element = list.pointee.elems[index]
            return .rdkafka(element.err, "\(context) \(String(cString: element.topic))[\(element.partition)]")
        }
        return nil
    }
}

extension Duration {
    /// Whole milliseconds, clamped to `Int32` for librdkafka timeouts.
    var milliseconds: Int32 {
        let (seconds, attoseconds) = components
        let ms = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        return Int32(clamping: max(ms, 0))
    }
}

/// Copies a C error buffer into a String.
func cString(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// An `rd_kafka_t*` that may cross threads: librdkafka handles are thread-safe.
struct SendableHandle: @unchecked Sendable {
    let pointer: OpaquePointer
}

/// A shareable on/off flag for loops running on owned threads.
final class RunFlag: Sendable {
    private let value = Atomic<Bool>(true)
    var isOn: Bool { value.load(ordering: .acquiring) }
    func turnOff() { value.store(false, ordering: .releasing) }
}
