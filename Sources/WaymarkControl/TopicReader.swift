import WaymarkKafka

/// Reads whole topics into memory (summaries, audits, replay): a collector over ``TopicScan``.
public enum TopicReader {
    /// Every record in `topic` up to its end offsets at the time of the call, or up to `until`, a
    /// snapshot of end offsets taken earlier (exclusive).
    public static func readAll(_ topic: String, client: KafkaClientConfiguration, admin: KafkaAdmin,
                               until: [KafkaTopicPartition: Int64]? = nil) async throws -> [KafkaConsumerRecord] {
        var caps: [Int32: Int64] = [:]
        for (partition, offset) in until ?? [:] where partition.topic == topic { caps[partition.partition] = offset }
        var records: [KafkaConsumerRecord] = []
        try await TopicScan(client: client).scan(topic: topic, until: caps, admin: admin) { records += $0 }
        return records
    }
}
