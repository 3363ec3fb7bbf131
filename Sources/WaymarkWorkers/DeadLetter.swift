import WaymarkIngest
import WaymarkKafka

/// Headers Waymark puts on dead-letter records, next to the original key and value bytes.
public enum DeadLetterHeader {
    /// A ``RejectionReason`` raw value, for example `invalid_json`.
    public static let reason = "x-waymark-reason"
    /// Human-readable context (field names, positions; never values).
    public static let detail = "x-waymark-detail"
    public static let sourceTopic = "x-waymark-source-topic"
    public static let sourcePartition = "x-waymark-source-partition"
    public static let sourceOffset = "x-waymark-source-offset"
    /// Milliseconds since the epoch when the record was dead-lettered.
    public static let deadLetteredAt = "x-waymark-dead-lettered-at"
}

extension KafkaProducerRecord {
    /// The dead-letter copy of `record`: its original key and value, the reason in headers.
    static func deadLetter(_ record: KafkaConsumerRecord, rejection: Rejection, topic: String, at now: Int64) -> KafkaProducerRecord {
        KafkaProducerRecord(
            topic: topic, key: record.key.map(Array.init), value: record.value.map(Array.init),
            headers: record.headers + [
                KafkaHeader(name: DeadLetterHeader.reason, string: rejection.reason.rawValue),
                KafkaHeader(name: DeadLetterHeader.detail, string: rejection.detail),
                KafkaHeader(name: DeadLetterHeader.sourceTopic, string: record.topic),
                KafkaHeader(name: DeadLetterHeader.sourcePartition, string: String(record.partition)),
                KafkaHeader(name: DeadLetterHeader.sourceOffset, string: String(record.offset)),
                KafkaHeader(name: DeadLetterHeader.deadLetteredAt, string: String(now)),
            ])
    }
}
