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
        subcommands: [Journey.self, SchedulerCommand.self, Sender.self, Receipts.self, KPIs.self])

    struct Receipts: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve providers' status callbacks and STOP replies; publish receipts to deliveries.",
            discussion: """
                Checks every provider's signature (a provider without its secret in receipts: has no route),                 publishes each message's receipts once and in order (sent, delivered, read; failed, clicked,                 unsubscribed), and withdraws a channel's consent at once on an unsubscribe or STOP reply.                 Stateless: run several behind a load balancer.

                Point the providers at <receipts.public_url>/receipts/<provider>:
                  twilio: each message's StatusCallback (set by the sender); inbound messages: /receipts/twilio/inbound
                  whatsapp_cloud: app webhook (GET handshake and POST), field "messages"
                  sendgrid: signed event webhook;  viber: set_webhook;  rbm: agent webhook;  webhook: /receipts/webhook

                Examples:
                  waymark worker receipts
                  WAYMARK_RECEIPTS_PORT=8443 waymark worker receipts --config /etc/waymark/waymark.yaml
                """)
        @OptionGroup var global: GlobalOptions
        @Option(help: "Directory with rules.yaml and journeys/.") var journeys = "config"

        func run() async throws {
            let runtime = try WorkerRuntime(global: global, journeys: journeys)
            let receipts = ReceiptsWorker(environment: runtime.environment, client: runtime.client, redis: runtime.redis)
            try await runtime.run([receipts])
        }
    }

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
                senderSettings.providers = [:]
            }
            let providers = try ChannelProviders.configured(senderSettings, channels: served)
            let sender = SenderWorker(environment: runtime.environment, channels: served, providers: providers,
                                      client: runtime.client, redis: runtime.redis)
            try await runtime.run([sender])
        }
    }

    struct KPIs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "kpis",
            abstract: "Roll journey.decisions and deliveries up into per-journey, per-hour KPI counters in Redis.",
            discussion: """
                What `waymark report` and `waymark funnel` read. Run one or more (they share the
                consumer group kafka.groups.kpis); each record counts exactly once.

                Examples:
                  waymark worker kpis
                  waymark worker kpis --log-level info
                """)
        @OptionGroup var global: GlobalOptions
        @Option(help: "Directory with rules.yaml and journeys/.") var journeys = "config"

        func run() async throws {
            let runtime = try WorkerRuntime(global: global, journeys: journeys)
            let worker = KPIWorker(environment: runtime.environment, client: runtime.client, redis: runtime.redis)
            try await runtime.run([worker], ready: { worker.isReady })
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
            try await runtime.run([worker] + (scheduler.map { [$0] } ?? []), ready: { worker.isReady })
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
            try await runtime.run([scheduler])
        }
    }
}

extension WorkerRuntime {
    /// Loads and validates settings and journeys (exit status 2 on a mistake) and bootstraps metrics.
    init(global: GlobalOptions, journeys: String, maxEventAgeDays: Int? = nil) throws {
        global.bootstrapLogging()
        let exporter = PrometheusExporter()
        exporter.bootstrap()  // before any worker exists: metric handles bind to the factory present when created
        try KafkaLibrary.checkVersion()
        var settings = try WaymarkSettings.load(path: global.config)
        if let maxEventAgeDays { settings.worker.maxEventAgeDays = maxEventAgeDays }
        let (engine, templates) = try JourneyLoader.loadConfiguration(configDirectory: journeys)
        self.init(settings: settings, engine: engine, exporter: exporter)
        environment.templates = templates
    }
}
