import ArgumentParser
import Dispatch
import Foundation
import Logging
import WaymarkConfig
import WaymarkEngine
import WaymarkKafka
import WaymarkRedis
import WaymarkWorkers
#if canImport(Glibc)
import Glibc
#endif

struct Worker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run Waymark's workers (journey, scheduler).",
        discussion: """
            Workers are stateless: all state is in Redis and Kafka, so any worker can be killed and \
            restarted anywhere. SIGTERM or SIGINT stops a worker gracefully: it stops fetching, finishes \
            the batch in flight, publishes, commits and leaves the consumer group.

            Examples:
              waymark worker journey --config /etc/waymark/waymark.yaml --journeys /etc/waymark
              waymark worker journey --with-scheduler
              waymark worker scheduler
            """,
        subcommands: [Journey.self, SchedulerCommand.self])

    struct Journey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Consume touchpoints, profiles and receipts; run journeys; publish messages and decisions.",
            discussion: "Examples:\n  waymark worker journey\n  waymark worker journey --with-scheduler --log-level info")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Directory with rules.yaml and journeys/.") var journeys = "config"
        @Flag(help: "Also run a scheduler in this process.") var withScheduler = false

        func run() async throws {
            let runtime = try WorkerRuntime(global: global, journeys: journeys)
            let worker = JourneyWorker(environment: runtime.environment, client: runtime.client, redis: runtime.redis)
            let scheduler = withScheduler ? Scheduler(environment: runtime.environment, client: runtime.client, redis: runtime.redis) : nil
            try await runtime.run(stop: { worker.stop(); scheduler?.stop() }) { group in
                group.addTask { try await worker.run() }
                if let scheduler { group.addTask { try await scheduler.run() } }
            }
        }
    }

    struct SchedulerCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "scheduler",
            abstract: "Release due timers and deferred messages; re-publish outbox entries of crashed workers.",
            discussion: "Several schedulers may run at once: releases are compare-and-set, never doubled.\n\nExamples:\n  waymark worker scheduler")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Directory with rules.yaml and journeys/.") var journeys = "config"

        func run() async throws {
            let runtime = try WorkerRuntime(global: global, journeys: journeys)
            let scheduler = Scheduler(environment: runtime.environment, client: runtime.client, redis: runtime.redis)
            try await runtime.run(stop: { scheduler.stop() }) { group in
                group.addTask { try await scheduler.run() }
            }
        }
    }
}

/// Settings, engine and connections shared by worker commands, validated before anything starts.
struct WorkerRuntime {
    let environment: WorkerEnvironment
    let client: KafkaClientConfiguration
    let redis: RedisConfiguration
    let logger: Logger

    init(global: GlobalOptions, journeys: String) throws {
        global.bootstrapLogging()
        try KafkaLibrary.checkVersion()
        let settings = try WaymarkSettings.load(path: global.config)
        let engine = try JourneyLoader.loadEngine(configDirectory: journeys)
        logger = Logger(label: "waymark.worker")
        environment = WorkerEnvironment(settings: settings, engine: engine, logger: logger)
        client = KafkaClientConfiguration(bootstrapServers: settings.kafka.bootstrapServers, properties: settings.kafka.properties)
        redis = RedisConfiguration(
            host: settings.redis.host, port: settings.redis.port, username: settings.redis.username,
            password: settings.redis.password, database: settings.redis.database,
            connectTimeout: .milliseconds(settings.redis.connectTimeoutMilliseconds),
            commandTimeout: .milliseconds(settings.redis.commandTimeoutMilliseconds))
    }

    /// Runs the services added by `body` until they end; SIGTERM/SIGINT call `stop` (a second signal exits at once).
    func run(stop: @escaping @Sendable () -> Void, _ body: (inout ThrowingTaskGroup<Void, any Error>) -> Void) async throws {
        let signals = ShutdownSignals(logger: logger, stop: stop)
        defer { withExtendedLifetime(signals) {} }
        try await withThrowingTaskGroup(of: Void.self) { group in
            body(&group)
            try await group.waitForAll()
        }
        logger.info("stopped cleanly")
    }
}

/// Turns SIGTERM and SIGINT into a graceful stop; a second signal exits immediately.
final class ShutdownSignals {
    private let sources: [any DispatchSourceSignal]

    init(logger: Logger, stop: @escaping @Sendable () -> Void) {
        let received = ManualFlag()
        sources = [SIGTERM, SIGINT].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                if received.set() {
                    logger.warning("second signal: exiting without finishing in-flight work")
                    exit(130)
                }
                logger.notice("signal received: finishing in-flight work, committing, leaving the group", metadata: ["signal": "\(number)"])
                stop()
            }
            source.resume()
            return source
        }
    }

    deinit { sources.forEach { $0.cancel() } }
}

/// A flag that reports whether it was already set.
final class ManualFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    /// Sets the flag; returns whether it had been set before.
    func set() -> Bool { lock.withLock { defer { value = true }; return value } }
}
