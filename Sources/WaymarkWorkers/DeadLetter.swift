import WaymarkKafka
import WaymarkWire

extension KafkaProducerRecord {
    /// The dead-letter copy of `record`: its original key, value and headers, plus the reason and
    /// origin in ``DeadLetterHeaders``.
    static func deadLetter(_ record: KafkaConsumerRecord, rejection: Rejection, topic: String, at now: Int64) -> KafkaProducerRecord {
        deadLetter(key: record.key.map(Array.init), value: record.value.map(Array.init), headers: record.headers, topic: topic,
                   DeadLetterHeaders(reason: rejection.reason.rawValue, detail: rejection.detail, sourceTopic: record.topic,
                                     sourcePartition: record.partition, sourceOffset: record.offset, deadLetteredAt: now))
    }

    /// A dead letter of `key` and `value` (a message the sender gave up on, say) with `info` in its headers.
    static func deadLetter(key: [UInt8]?, value: [UInt8]?, headers: [KafkaHeader] = [], topic: String,
                           _ info: DeadLetterHeaders) -> KafkaProducerRecord {
        KafkaProducerRecord(topic: topic, key: key, value: value,
                            headers: headers + info.encoded.map { KafkaHeader(name: $0.name, string: $0.value) })
    }
}
