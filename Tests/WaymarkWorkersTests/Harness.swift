import Foundation
import Logging
import Synchronization
import WaymarkConfig
import WaymarkControl
import WaymarkEngine
import WaymarkKafka
import WaymarkLocalStack
import WaymarkRedis
import WaymarkWorkers

/// A clock the test moves by hand (the one `waymark demo` uses for simulated time).
typealias TestClock = ManualClock

/// A local stack with Waymark's topics, the shipped journeys and rules, and helpers to produce and read.
struct Harness {
    let stack: LocalStack
    let settings: WaymarkSettings
    let client: KafkaClientConfiguration
    let redis: RedisConfiguration
    let engine: JourneyEngine

    static var repoRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    static func with(workerYAML: String = "", _ body: (Harness) async throws -> Void) async throws {
        try await LocalStack.with { stack in
            var settings = try WaymarkSettings.parse(
                "kafka:\n  topics:\n    touchpoints: { partitions: 3 }\n    customers: { partitions: 3 }\n    deliveries: { partitions: 3 }\n    outbound: { partitions: 2 }\n    decisions: { partitions: 2 }\nredis:\n  shards: 16\nworker:\n  scheduler_interval_ms: 50\n" + workerYAML,
                file: "test.yaml")
            settings.kafka.bootstrapServers = stack.kafka!.bootstrapServers
            settings.redis.port = stack.redis!.port
            let client = KafkaClientConfiguration(bootstrapServers: settings.kafka.bootstrapServers,
                                                  properties: KafkaClientConfiguration.localTuning)
            _ = try await TopicSetup(settings: settings.kafka).apply(admin: try KafkaAdmin(client: client))
            let engine = try JourneyLoader.loadEngine(configDirectory: repoRoot + "/config")
            try await body(Harness(stack: stack, settings: settings, client: client,
                                   redis: RedisConfiguration(host: "127.0.0.1", port: stack.redis!.port), engine: engine))
        }
    }

    func environment(clock: TestClock) -> WorkerEnvironment {
        var logger = Logger(label: "test.worker")
        logger.logLevel = .warning
        return WorkerEnvironment(settings: settings, engine: engine, clock: { clock.now }, logger: logger)
    }

    /// Runs a journey worker and a scheduler on `clock` until `body` returns, then stops both gracefully.
    func withWorkers(clock: TestClock, _ body: (JourneyWorker, Scheduler) async throws -> Void) async throws {
        let env = environment(clock: clock)
        let worker = JourneyWorker(environment: env, client: client, redis: redis)
        let scheduler = Scheduler(environment: env, client: client, redis: redis)
        let services = Task { try await withThrowingTaskGroup(of: Void.self) { g in
            g.addTask { try await worker.run() }
            g.addTask { try await scheduler.run() }
            try await g.waitForAll()
        } }
        do { try await body(worker, scheduler) } catch { worker.stop(); scheduler.stop(); _ = try? await services.value; throw error }
        worker.stop()
        scheduler.stop()
        try await services.value
    }

    func produce(_ topic: String, key: String?, json: String) async throws {
        let producer = try KafkaProducer(configuration: .init(client: client))
        try await producer.sendAll([KafkaProducerRecord(topic: topic, key: key.map { Array($0.utf8) }, value: Array(json.utf8))])
    }

    func produce(_ topic: String, _ records: [(key: String?, value: [UInt8])]) async throws {
        var big = client
        big.properties["message.max.bytes"] = "10485760"
        let producer = try KafkaProducer(configuration: .init(client: big))
        try await producer.sendAll(records.map { KafkaProducerRecord(topic: topic, key: $0.key.map { Array($0.utf8) }, value: $0.value) })
    }

    /// Every record currently in `topic` (reads until `expected` records arrived or `timeout`).
    func read(_ topic: String, expected: Int? = nil, timeout: Duration = .seconds(10)) async throws -> [KafkaConsumerRecord] {
        let partitions = try await KafkaAdmin(client: client).describeTopics([topic]).first?.partitions.count ?? 0
        let consumer = try KafkaConsumer(configuration: .init(client: client, groupID: nil))
        try consumer.assign((0..<partitions).map { KafkaTopicPartitionOffset(topic: topic, partition: Int32($0), offset: KafkaOffset.beginning) })
        var all: [KafkaConsumerRecord] = []
        let deadline = ContinuousClock.now + timeout
        var quietSince = ContinuousClock.now
        while ContinuousClock.now < deadline {
            let batch = try await consumer.poll(maxRecords: 10_000, timeout: .milliseconds(100))
            all += batch
            if !batch.isEmpty { quietSince = ContinuousClock.now }
            if let expected, all.count >= expected { break }
            if expected == nil, ContinuousClock.now - quietSince > .milliseconds(700) { break }
        }
        await consumer.close()
        return all
    }

    /// Polls `condition` until it holds or `timeout` passes.
    func eventually(timeout: Duration = .seconds(20), _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return try await condition()
    }
}

/// Parses a JSON object from record bytes (test-side, independent of Waymark's parser).
func jsonObject(_ bytes: ArraySlice<UInt8>?) -> [String: Any] {
    guard let bytes, let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else { return [:] }
    return object
}

/// Runs a program to completion; its exit status and combined standard output and error.
func runProgram(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: output, as: UTF8.self))
}
