import ArgumentParser
import Dispatch
import Foundation
import Logging
import WaymarkConfig
import WaymarkEngine
import WaymarkHTTP
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
              waymark worker sender --channel sms --channel whatsapp
            """,
        subcommands: [Journey.self, SchedulerCommand.self, Sender.self])

    struct Sender: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Hand outbound messages to a provider: send-time rules, dedup by message id, rate limit, retries, fallback.",
            discussion: """
                One process can serve several channels; run more processes for more throughput (they share \
                the consumer group, the per-channel rate limit and the dedup claims in Redis).

                Examples:
                  waymark worker sender --channel sms
                  waymark worker sender --channel email --channel push
                  waymark worker sender            # every channel in kafka.channels
                """)
        @OptionGroup var global: GlobalOptions
        @Option(help: "Directory with rules.yaml and journeys/.") var journeys = "config"
        @Option(name: .customLong("channel"), help: "A channel to serve (repeatable); default: all configured channels.")
        var channels: [String] = []
        @Option(help: "File provider: write here instead of sender.file_path (one file per process).")
        var providerFile: String?

        func validate() throws {
            for channel in channels where WaymarkEngine.Channel(rawValue: channel) == nil {
                throw ValidationError("unknown channel '\(channel)'; known: \(WaymarkEngine.Channel.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }

        func run() async throws {
            let runtime = try WorkerRuntime(global: global, journeys: journeys)
            let settings = runtime.environment.settings
            let served = (channels.isEmpty ? settings.kafka.channels : channels).compactMap(WaymarkEngine.Channel.init(rawValue:))
            var senderSettings = settings.sender
            if let providerFile {
                senderSettings.provider = .file
                senderSettings.filePath = providerFile
            }
            let provider = try makeProvider(senderSettings)
            let sender = SenderWorker(environment: runtime.environment, channels: served, provider: provider,
                                      client: runtime.client, redis: runtime.redis)
            try await runtime.run(stop: { sender.stop() }) { group in
                group.addTask { try await sender.run() }
            }
        }
    }

    struct Journey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Consume touchpoints, profiles and receipts; run journeys; publish messages and decisions.",
            discussion: """
                Examples:
                  waymark worker journey
                  waymark worker journey --with-scheduler --log-level info
                  waymark worker journey --max-event-age-days 0      # accept an archive of any age
                """)
        @OptionGroup var global: GlobalOptions
        @Option(help: "Directory with rules.yaml and journeys/.") var journeys = "config"
        @Flag(help: "Also run a scheduler in this process.") var withScheduler = false
        @Option(help: "Dead-letter touchpoints older than this many days as absurd_timestamp (0 = no bound); overrides worker.max_event_age_days.")
        var maxEventAgeDays: Int?

        func validate() throws {
            if let days = maxEventAgeDays, !(0...36_500).contains(days) { throw ValidationError("--max-event-age-days must be 0...36500") }
        }

        func run() async throws {
            let runtime = try WorkerRuntime(global: global, journeys: journeys, maxEventAgeDays: maxEventAgeDays)
            let worker = JourneyWorker(environment: runtime.environment, client: runtime.client, redis: runtime.redis)
            let scheduler = withScheduler ? Scheduler(environment: runtime.environment, client: runtime.client, redis: runtime.redis) : nil
            try await runtime.run(ready: { worker.isReady }, stop: { worker.stop(); scheduler?.stop() }) { group in
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
    /// Bootstrapped before any worker exists: metric handles bind to the factory present when created.
    let exporter = PrometheusExporter()

    init(global: GlobalOptions, journeys: String, maxEventAgeDays: Int? = nil) throws {
        global.bootstrapLogging()
        exporter.bootstrap()
        try KafkaLibrary.checkVersion()
        var settings = try WaymarkSettings.load(path: global.config)
        if let maxEventAgeDays { settings.worker.maxEventAgeDays = maxEventAgeDays }
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
    /// Serves `/metrics`, `/healthz` and `/readyz` on `worker.metrics_host:metrics_port` meanwhile.
    func run(ready: @escaping @Sendable () -> Bool = { true }, stop: @escaping @Sendable () -> Void,
             _ body: (inout ThrowingTaskGroup<Void, any Error>) -> Void) async throws {
        let signals = ShutdownSignals(logger: logger, stop: stop)
        defer { withExtendedLifetime(signals) {} }
        let settings = environment.settings.worker
        var server: HTTPServer?
        if settings.metricsPort > 0 {
            var router = HTTPRouter()
            router.addOperationsRoutes(metrics: exporter) { Readiness(isReady: ready()) }
            server = try HTTPServer.start(HTTPServerConfiguration(host: settings.metricsHost, port: settings.metricsPort),
                                          router: router, logger: logger)
            logger.info("operations endpoint up", metadata: ["http.address": "\(settings.metricsHost):\(settings.metricsPort)"])
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            body(&group)
            try await group.waitForAll()
        }
        await server?.shutdown()
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

/// The provider configured in `sender:`.
func makeProvider(_ settings: SenderSettings) throws -> any MessageProvider {
    switch settings.provider {
    case .file: return try FileProvider(path: settings.filePath)
    case .webhook: return try WebhookProvider(url: settings.webhookURL, timeout: .milliseconds(settings.timeoutMilliseconds))
    }
}
