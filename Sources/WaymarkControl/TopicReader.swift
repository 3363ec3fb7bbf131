import WaymarkKafka

/// Reads whole topics from the beginning without a consumer group (inspection, summaries, audits).
public enum TopicReader {
    /// Every record currently in `topic`, up to its end offsets at the time of the call.
    public static func readAll(_ topic: String, client: KafkaClientConfiguration, admin: KafkaAdmin,
                               timeout: Duration = .seconds(60)) async throws -> [KafkaConsumerRecord] {
        let ends = try await admin.endOffsets(topics: [topic])
        let total = ends.values.reduce(Int64(0)) { $0 + $1.high - $1.low }
        if total == 0 { return [] }
        let consumer = try KafkaConsumer(configuration: .init(client: client, groupID: nil))
        try consumer.assign(ends.keys.map { KafkaTopicPartitionOffset(topic: $0.topic, partition: $0.partition, offset: KafkaOffset.beginning) })
        var records: [KafkaConsumerRecord] = []
        let deadline = ContinuousClock.now + timeout
        while records.count < total, ContinuousClock.now < deadline {
            records += try await consumer.poll(maxRecords: 10_000, timeout: .milliseconds(200))
        }
        await consumer.close()
        return records
    }
}
