import ArgumentParser
import Foundation
import Logging
import WaymarkConfig
import WaymarkControl
import WaymarkKafka
import WaymarkLocalStack
import WaymarkRedis
import WaymarkSample

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run Waymark on a local broker and Redis with a generated retail day, then print a summary.",
        discussion: """
            Starts redis-server and the Tansu broker on free loopback ports, creates the topics declared \
            in the settings, streams a generated day of a retailer (customers in several time zones, web \
            sessions, carts, store purchases, support cases, loyalty) through the Kafka and Redis clients, \
            prints throughput, and stops everything it started.

            Examples:
              waymark demo
              waymark demo --customers 20000 --seed 7
            """)

    @OptionGroup var global: GlobalOptions
    @Option(help: "Customers in the generated day.") var customers = 3_000
    @Option(help: "Seed of the generated day (same seed, same day).") var seed: UInt64 = 42

    func run() async throws {
        global.bootstrapLogging()
        var settings = try WaymarkSettings.load(path: global.config)
        print("Waymark demo — librdkafka \(KafkaLibrary.versionString)")
        let stack = try await LocalStack.start()
        defer { stack.stop() }
        settings.kafka.bootstrapServers = stack.kafka!.bootstrapServers
        settings.redis.port = stack.redis!.port
        print("Local stack: broker 127.0.0.1:\(stack.kafka!.port) (pid \(stack.kafka!.process.pid ?? 0)), "
              + "redis 127.0.0.1:\(stack.redis!.port) (pid \(stack.redis!.process.pid ?? 0))")

        let client = KafkaClientConfiguration(bootstrapServers: settings.kafka.bootstrapServers,
                                              properties: settings.kafka.properties.merging(KafkaClientConfiguration.localTuning) { mine, _ in mine })
        let admin = try KafkaAdmin(client: client)
        let changes = try await TopicSetup(settings: settings.kafka).apply(admin: admin)
        print("Topics: \(changes.filter { $0.action == .created }.count) created from \(global.config)")

        let day = RetailDay(seed: seed, customers: customers).generate()
        let touchpoints = day.filter { $0.kind == .touchpoint }
        let profiles = day.filter { $0.kind == .profile }
        print("Generated day: \(customers) customers, \(profiles.count) profiles, \(touchpoints.count) touchpoints")

        // Produce: profiles to the compacted customers topic, touchpoints keyed by customer.
        let producer = try KafkaProducer(configuration: .init(client: client))
        let produceStart = ContinuousClock.now
        try await producer.sendAll(profiles.map {
            KafkaProducerRecord(topic: settings.kafka.customers.name, key: Array($0.key.utf8), value: $0.value, timestamp: $0.timestamp)
        })
        try await producer.sendAll(touchpoints.map {
            KafkaProducerRecord(topic: settings.kafka.touchpoints.name, key: Array($0.key.utf8), value: $0.value, timestamp: $0.timestamp)
        })
        let produceTime = ContinuousClock.now - produceStart

        // Consume in the journey group, count per customer in Redis (pipelined), commit after each batch.
        let consumer = try KafkaConsumer(configuration: .init(client: client, groupID: settings.kafka.journeyGroup))
        try consumer.subscribe([settings.kafka.touchpoints.name])
        let redis = try await RedisConnection.connect(RedisConfiguration(host: settings.redis.host, port: settings.redis.port))
        var consumed = 0, redisCommands = 0
        var redisTime = Duration.zero
        let consumeStart = ContinuousClock.now
        var firstRecordAt: ContinuousClock.Instant?
        while consumed < touchpoints.count, ContinuousClock.now - consumeStart < .seconds(60) {
            let batch = try await consumer.poll(maxRecords: 5_000, timeout: .milliseconds(200))
            if batch.isEmpty { continue }
            if firstRecordAt == nil { firstRecordAt = ContinuousClock.now }
            let commands = batch.map { record in
                RedisCommand("HINCRBY", "wm:{\(String(decoding: record.key ?? [], as: UTF8.self))}:demo", "events", 1)
            }
            let t0 = ContinuousClock.now
            _ = try await redis.pipeline(commands)
            redisTime += ContinuousClock.now - t0
            redisCommands += commands.count
            try await consumer.commit(nextOffsets(batch))
            consumed += batch.count
        }
        let consumeTime = ContinuousClock.now - (firstRecordAt ?? consumeStart)
        await consumer.close()
        await producer.close()

        let lag = try await admin.lag(group: settings.kafka.journeyGroup, topics: [settings.kafka.touchpoints.name])
        let keys = try await redis.send(RedisCommand("DBSIZE")).integer ?? 0
        await redis.close()

        var byType: [String: Int] = [:]
        for record in touchpoints { byType[record.type, default: 0] += 1 }
        print("")
        print(table([["TOUCHPOINT TYPE", "COUNT"]] + byType.sorted { $0.value > $1.value }.map { [$0.key, "\($0.value)"] }))
        print("")
        print(table([
            ["STEP", "RECORDS", "SECONDS", "RATE/S"],
            ["produce (acks=all, idempotent)", "\(day.count)", String(format: "%.3f", produceTime.seconds), human(Double(day.count) / produceTime.seconds)],
            ["consume + commit per batch", "\(consumed)", String(format: "%.3f", consumeTime.seconds), human(Double(consumed) / consumeTime.seconds)],
            ["redis pipelined HINCRBY", "\(redisCommands)", String(format: "%.3f", redisTime.seconds), human(Double(redisCommands) / redisTime.seconds)],
        ]))
        print("")
        print("Consumer group \(settings.kafka.journeyGroup): lag \(lag.map(\.lag).reduce(0, +)) across \(lag.count) partitions; "
              + "Redis holds \(keys) customer keys.")
        if consumed != touchpoints.count {
            print("ERROR: consumed \(consumed) of \(touchpoints.count) touchpoints")
            throw ExitCode(1)
        }
        print("Stopping local stack.")
    }
}

/// The next offset to read per partition after `batch`.
func nextOffsets(_ batch: [KafkaConsumerRecord]) -> [KafkaTopicPartitionOffset] {
    var next: [KafkaTopicPartition: Int64] = [:]
    for record in batch { next[record.topicPartition] = max(next[record.topicPartition] ?? 0, record.offset + 1) }
    return next.map { KafkaTopicPartitionOffset(topic: $0.key.topic, partition: $0.key.partition, offset: $0.value) }
}
