import WaymarkKafka

/// Reads whole topics from the beginning without a consumer group (inspection, summaries, audits).
public enum TopicReader {
    /// Every record currently in `topic`, up to its end offsets at the time of the call (or up to
    /// `until`, a snapshot of end offsets taken earlier, exclusive).
    public static func readAll(_ topic: String, client: KafkaClientConfiguration, admin: KafkaAdmin,
                               until: [KafkaTopicPartition: Int64]? = nil,
                               timeout: Duration = .seconds(60)) async throws -> [KafkaConsumerRecord] {
        var ends = try await admin.endOffsets(topics: [topic])
        if let until {
            for (partition, marks) in ends { ends[partition] = (marks.low, min(marks.high, until[partition] ?? marks.high)) }
        }
        let total = ends.values.reduce(Int64(0)) { $0 + max($1.high - $1.low, 0) }
        if total == 0 { return [] }
        let consumer = try KafkaConsumer(configuration: .init(client: client, groupID: nil))
        try consumer.assign(ends.keys.map { KafkaTopicPartitionOffset(topic: $0.topic, partition: $0.partition, offset: KafkaOffset.beginning) })
        var records: [KafkaConsumerRecord] = []
        let deadline = ContinuousClock.now + timeout
        while records.count < total, ContinuousClock.now < deadline {
            records += try await consumer.poll(maxRecords: 10_000, timeout: .milliseconds(200)).filter {
                $0.offset < ends[$0.topicPartition]?.high ?? .max
            }
        }
        await consumer.close()
        return records
    }
}
