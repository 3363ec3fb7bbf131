import Foundation
import WaymarkKafka
import WaymarkLocalStack

/// Integration tests need a real broker: each test starts its own Tansu on a free loopback port
/// (about 20 ms), so tests are isolated and can run in parallel.
func withBroker<T>(_ body: (KafkaClientConfiguration) async throws -> T) async throws -> T {
    try await LocalStack.with(redis: false) { stack in
        try await body(KafkaClientConfiguration(bootstrapServers: stack.kafka!.bootstrapServers,
                                                properties: KafkaClientConfiguration.localTuning))
    }
}

func createTopic(_ client: KafkaClientConfiguration, _ name: String, partitions: Int32) async throws {
    let admin = try KafkaAdmin(client: client)
    let result = try await admin.createTopics([KafkaTopicSpec(name: name, partitions: partitions)])
    if let error = result[name] ?? nil { throw error }
}

func records(topic: String, count: Int, prefix: String = "k") -> [KafkaProducerRecord] {
    (0..<count).map { i in
        KafkaProducerRecord(topic: topic, key: Array("\(prefix)\(i % 997)".utf8), value: Array("value-\(i)".utf8))
    }
}

/// Polls until `predicate` holds for the records gathered so far, or `timeout` passes.
func drain(_ consumer: KafkaConsumer, timeout: Duration = .seconds(30), maxRecords: Int = 10_000,
           commit: Bool = true, until predicate: ([KafkaConsumerRecord]) -> Bool) async throws -> [KafkaConsumerRecord] {
    var all: [KafkaConsumerRecord] = []
    let deadline = ContinuousClock.now + timeout
    while !predicate(all), ContinuousClock.now < deadline {
        let batch = try await consumer.poll(maxRecords: maxRecords, timeout: .milliseconds(100))
        all += batch
        if commit { try await consumer.commit(nextOffsets(batch)) }
    }
    return all
}

/// The next offset to read per partition after `batch`.
func nextOffsets(_ batch: [KafkaConsumerRecord]) -> [KafkaTopicPartitionOffset] {
    var next: [KafkaTopicPartition: Int64] = [:]
    for record in batch { next[record.topicPartition] = max(next[record.topicPartition] ?? 0, record.offset + 1) }
    return next.map { KafkaTopicPartitionOffset(topic: $0.key.topic, partition: $0.key.partition, offset: $0.value) }
}
