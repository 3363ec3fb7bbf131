import Foundation
import Logging
import WaymarkConfig
import WaymarkControl
import WaymarkEngine
import WaymarkKafka
import WaymarkLocalStack
import WaymarkRedis
import WaymarkState
import WaymarkWorkers

/// A clock the test moves by hand (the one `waymark demo` uses for simulated time).
public typealias TestClock = ManualClock

/// A real local stack for integration tests: redis-server and a Tansu broker on free loopback
/// ports, Waymark's topics created, the shipped journeys and rules loaded, and helpers to produce,
/// read back (independently of the code under test) and run workers in-process.
public struct TestStack: Sendable {
    /// Settings the suites start from; `extraYAML` passed to ``with(_:extraYAML:_:)`` is appended.
    public enum Preset: Sendable {
        /// Worker suites: three-partition inputs, 16 shards, the shipped channels.
        case workers
        /// Operator suites: three channels, few partitions, unknown customers processed.
        case operators

        var yaml: String {
            switch self {
            case .workers:
                "kafka:\n  topics:\n    touchpoints: { partitions: 3 }\n    customers: { partitions: 3 }\n    deliveries: { partitions: 3 }\n    outbound: { partitions: 2 }\n    decisions: { partitions: 2 }\nredis:\n  shards: 16\nworker:\n  scheduler_interval_ms: 50\n"
            case .operators:
                "kafka:\n  channels: [sms, email, push]\n  topics:\n    touchpoints: { partitions: 3 }\n    customers: { partitions: 2 }\n    deliveries: { partitions: 1 }\n    outbound: { partitions: 1 }\n    decisions: { partitions: 2 }\nredis:\n  shards: 8\nworker:\n  scheduler_interval_ms: 50\n  unknown_customer: process\n"
            }
        }
    }

    /// The processes (for their ports, directory, and to freeze or kill them).
    public let local: LocalStack
    public let settings: WaymarkSettings
    public let client: KafkaClientConfiguration
    public let admin: KafkaAdmin
    public let redis: RedisConfiguration
    public let engine: JourneyEngine

    /// The repository checkout (for `config/`, `deploy/` and the built binary).
    public static var repoRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// Which Redis a suite runs against.
    public enum RedisTopology: String, Sendable, CaseIterable {
        /// One `redis-server`.
        case standalone
        /// A local Redis Cluster of three masters (`redis.mode: cluster`).
        case cluster
        /// One `redis-server` speaking TLS only and requiring a client certificate (`redis.tls`),
        /// with a throw-away authority made by `openssl`.
        case tls
        /// The three-master cluster speaking TLS only (clients, cluster bus, replication).
        case clusterOverTLS
    }

    /// Starts a stack, runs `body`, stops the stack (also when `body` throws).
    public static func with(_ preset: Preset = .workers, extraYAML: String = "", redis topology: RedisTopology = .standalone,
                            _ body: (TestStack) async throws -> Void) async throws {
        let shape = topology == .cluster || topology == .clusterOverTLS ? LocalRedisCluster.Shape(masters: 3) : nil
        try await LocalStack.with(cluster: shape, redisTLS: topology == .tls || topology == .clusterOverTLS) { local in
            var settings = try WaymarkSettings.parse(preset.yaml + extraYAML, file: "test.yaml")
            settings.kafka.bootstrapServers = local.kafka!.bootstrapServers
            if let cluster = local.cluster {
                settings.redis.mode = "cluster"
                settings.redis.port = cluster.nodes[0].port
                settings.redis.seeds = cluster.seeds
            } else {
                settings.redis.port = local.redis!.port
            }
            if let certificates = local.redisCertificates {
                settings.redis.tls = RedisTLSSettings(caFile: certificates.caFile, certificateFile: certificates.clientCertificate,
                                                      keyFile: certificates.clientKey)
            }
            let redis = WorkerRuntime.redisConfiguration(settings)
            let client = KafkaClientConfiguration(bootstrapServers: settings.kafka.bootstrapServers,
                                                  properties: KafkaClientConfiguration.localTuning)
            let admin = try KafkaAdmin(client: client)
            _ = try await TopicSetup(settings: settings.kafka).apply(admin: admin)
            try await body(TestStack(local: local, settings: settings, client: client, admin: admin, redis: redis,
                                     engine: try JourneyLoader.loadEngine(configDirectory: repoRoot + "/config")))
        }
    }

    public var keys: KeySpace { KeySpace(prefix: settings.redis.keyPrefix, shards: settings.redis.shards) }

    /// A worker environment on `clock`, logging warnings and worse only.
    public func environment(clock: TestClock) -> WorkerEnvironment {
        var logger = Logger(label: "test.worker")
        logger.logLevel = .warning
        return WorkerEnvironment(settings: settings, engine: engine, clock: { clock.now }, logger: logger)
    }

    /// Runs a journey worker and a scheduler in-process on `clock` until `body` returns, then
    /// stops both gracefully (also when `body` throws).
    public func withWorkers(clock: TestClock, _ body: (JourneyWorker, Scheduler) async throws -> Void) async throws {
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

    /// Produces `records`, throwing the first delivery error.
    @discardableResult
    public func produce(_ records: [KafkaProducerRecord]) async throws -> [KafkaDeliveryReport] {
        var big = client
        big.properties["message.max.bytes"] = "10485760"
        let producer = try KafkaProducer(configuration: .init(client: big))
        let reports = try await producer.send(records)
        await producer.close()
        for report in reports { if let error = report.error { throw error } }
        return reports
    }

    public func produce(_ topic: String, key: String?, json: String) async throws {
        try await produce([KafkaProducerRecord(topic: topic, key: key.map { Array($0.utf8) }, value: Array(json.utf8))])
    }

    public func produce(_ topic: String, _ records: [(key: String?, value: [UInt8])]) async throws {
        try await produce(records.map { KafkaProducerRecord(topic: topic, key: $0.key.map { Array($0.utf8) }, value: $0.value) })
    }

    /// Records of `topic` from the beginning, read by a consumer of its own (no group).
    ///
    /// With `settle` false it returns as soon as `expected` records arrived (or, without
    /// `expected`, after 700 ms with nothing new). With `settle` true it first waits for `expected`
    /// and then until 700 ms pass with nothing new, so extra copies would show. Gives up at `timeout`.
    public func read(_ topic: String, expected: Int? = nil, settle: Bool = false,
                     timeout: Duration = .seconds(15)) async throws -> [KafkaConsumerRecord] {
        let partitions = try await admin.describeTopics([topic]).first?.partitions.count ?? 0
        let consumer = try KafkaConsumer(configuration: .init(client: client, groupID: nil))
        try consumer.assign((0..<partitions).map { KafkaTopicPartitionOffset(topic: topic, partition: Int32($0), offset: KafkaOffset.beginning) })
        var all: [KafkaConsumerRecord] = []
        let deadline = ContinuousClock.now + timeout
        var quietSince = ContinuousClock.now
        let quiet = Duration.milliseconds(700)
        while ContinuousClock.now < deadline {
            let batch = try await consumer.poll(maxRecords: 10_000, timeout: .milliseconds(100))
            all += batch
            let enough = all.count >= (expected ?? 0)
            if !batch.isEmpty || !enough { quietSince = ContinuousClock.now }
            if let expected, !settle, all.count >= expected { break }
            if enough, ContinuousClock.now - quietSince > quiet { break }
        }
        await consumer.close()
        return all
    }

    /// Polls `condition` until it holds or `timeout` passes; the last evaluation decides.
    public func eventually(timeout: Duration = .seconds(20), _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return try await condition()
    }
}

/// Parses a JSON object from record bytes with Foundation: deliberately independent of Waymark's
/// own decoders, so a test can catch them agreeing with a wrong encoder.
public func jsonObject(_ bytes: ArraySlice<UInt8>?) -> [String: Any] {
    guard let bytes, let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else { return [:] }
    return object
}

/// Runs a program to completion; its exit status and combined standard output and error.
public func runProgram(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    try LocalTools.run(path, arguments)
}
