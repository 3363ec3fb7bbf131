import ArgumentParser
import Foundation
import Synchronization
import WaymarkWire
import Logging
import WaymarkConfig
import WaymarkControl
import WaymarkEngine
import WaymarkKafka
import WaymarkLocalStack
import WaymarkRedis
import WaymarkSample
import WaymarkWorkers
import WaymarkAnalytics
import WaymarkState

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run Waymark on a local broker and Redis through a generated retail day, then print a summary.",
        discussion: """
            Starts redis-server and the Tansu broker on free loopback ports, creates the topics declared \
            in the settings, starts a journey worker and a scheduler, and streams a generated day of a \
            retailer (customers in nine time zones: web sessions, carts, abandoned carts, purchases, store \
            purchases, support cases, loyalty) through them. Time is simulated: the workers' clock follows \
            the stream in 15-minute steps and then runs three more days so waits and quiet-hour deferrals \
            come due. Senders render each message from config/templates/ and hand it to a file provider; a \
            stand-in for the providers' networks calls the receipts endpoint back, signed (delivered, read, \
            clicked, failed, STOP replies), and the receipts flow into the journeys. Prints messages per \
            channel, decisions by reason, journey funnels, templated samples and receipts by type, read back \
            from Kafka, then stops everything it started.

            Examples:
              waymark demo
              waymark demo --customers 20000 --seed 7
            """)

    @OptionGroup var global: GlobalOptions
    @Option(help: "Directory with rules.yaml and journeys/.") var journeys = "config"
    @Option(help: "Customers in the generated day.") var customers = 3_000
    @Option(help: "Seed of the generated day (same seed, same day).") var seed: UInt64 = 42
    @Option(help: "Where to write the experiment report page (HTML with charts).") var reportHTML = "waymark-demo-experiment.html"

    func run() async throws {
        global.bootstrapLogging()
        var settings = try WaymarkSettings.load(path: global.config)
        let (engine, templates) = try JourneyLoader.loadConfiguration(configDirectory: journeys)
        print("Waymark demo — librdkafka \(KafkaLibrary.versionString), \(engine.journeys.count) journeys from \(journeys)/")
        let stack = try await LocalStack.start()
        defer { stack.stop() }
        settings.kafka.bootstrapServers = stack.kafka!.bootstrapServers
        settings.redis.port = stack.redis!.port
        settings.worker.schedulerIntervalMilliseconds = 20
        settings.sender.ratePerSecond = 100_000  // simulated time runs ~10,000× faster than real time
        settings.sender.burst = 10_000
        print("Local stack: broker 127.0.0.1:\(stack.kafka!.port) (pid \(stack.kafka!.process.pid ?? 0)), "
              + "redis 127.0.0.1:\(stack.redis!.port) (pid \(stack.redis!.process.pid ?? 0))")

        let client = KafkaClientConfiguration(
            bootstrapServers: settings.kafka.bootstrapServers,
            properties: settings.kafka.properties.merging(KafkaClientConfiguration.localTuning) { mine, _ in mine })
        let admin = try KafkaAdmin(client: client)
        let changes = try await TopicSetup(settings: settings.kafka).apply(admin: admin)
        print("Topics: \(changes.filter { $0.action == .created }.count) created from \(global.config)")

        let day = RetailDay(seed: seed, customers: customers).generate()
        let profiles = day.filter { $0.kind == .profile }
        let touchpoints = day.filter { $0.kind == .touchpoint }
        print("Generated day: \(customers) customers, \(profiles.count) profiles, \(touchpoints.count) touchpoints")

        let clock = ManualClock(Timestamp(milliseconds: touchpoints.first?.timestamp ?? 0))
        var logger = Logger(label: "waymark.demo")
        logger.logLevel = global.logLevel
        // Receipts: the demo's stand-in for the providers' networks calls the receipts endpoint back (signed).
        settings.receipts.port = 0
        settings.receipts.publicURL = "http://127.0.0.1"
        settings.receipts.secrets = ["webhook": "demo-webhook-secret", "twilio": "demo-twilio-token"]
        var environment = WorkerEnvironment(settings: settings, engine: engine, clock: { clock.now }, logger: logger)
        environment.templates = templates
        let redis = WorkerRuntime.redisConfiguration(settings)
        let worker = JourneyWorker(environment: environment, client: client, redis: redis)
        let scheduler = Scheduler(environment: environment, client: client, redis: redis)
        // Senders hand messages to a file provider (one JSON line per message) in the stack's directory.
        let providerFile = stack.directory.appendingPathComponent("provider.jsonl").path
        let sender = SenderWorker(environment: environment, channels: settings.kafka.channels.compactMap(Channel.init(rawValue:)),
                                  provider: try FileProvider(path: providerFile), client: client, redis: redis)
        let kpis = KPIWorker(environment: environment, client: client, redis: redis)
        let kpiTask = Task { try await kpis.run() }
        let receiptsPort = Mutex(0)
        let receipts = ReceiptsWorker(environment: environment, client: client, redis: redis) { port in receiptsPort.withLock { $0 = port } }
        let services = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await worker.run() }
                group.addTask { try await scheduler.run() }
                group.addTask { try await sender.run() }
                try await group.waitForAll()
            }
        }
        let receiptsTask = Task { try await receipts.run() }
        try await waitFor("receipts endpoint") { receiptsPort.withLock { $0 } > 0 }
        let network = DemoNetwork(file: providerFile, receiptsBase: "http://127.0.0.1:\(receiptsPort.withLock { $0 })",
                                  webhookSecret: "demo-webhook-secret", twilioToken: "demo-twilio-token", publicURL: "http://127.0.0.1")

        let producer = try KafkaProducer(configuration: .init(client: client))
        try await producer.sendAll(profiles.map {
            KafkaProducerRecord(topic: settings.kafka.customers.name, key: Array($0.key.utf8), value: $0.value, timestamp: $0.timestamp)
        })
        try await waitFor("profiles") { worker.stats.profiles + worker.stats.staleProfiles >= profiles.count }

        // Walk through the day in 15-minute steps: produce the step's events, let the worker take them
        // and the scheduler release what came due.
        let step: Int64 = 15 * 60_000
        let start = ContinuousClock.now
        var sent = 0
        var sliceStart = touchpoints.first?.timestamp ?? 0
        print("Streaming the day", terminator: "")
        while sent < touchpoints.count {
            let sliceEnd = sliceStart + step
            var slice: [KafkaProducerRecord] = []
            while sent < touchpoints.count, touchpoints[sent].timestamp < sliceEnd {
                let t = touchpoints[sent]
                slice.append(KafkaProducerRecord(topic: settings.kafka.touchpoints.name, key: Array(t.key.utf8), value: t.value, timestamp: t.timestamp))
                sent += 1
            }
            clock.set(Timestamp(milliseconds: sliceEnd))
            try await producer.sendAll(slice)
            let target = sent
            try await waitFor("touchpoints") { worker.stats.touchpoints + worker.stats.deadLettered.values.reduce(0, +) >= target }
            try await schedulerPass(scheduler)
            try await network.pass(now: clock.now)
            sliceStart = sliceEnd
            if (sliceEnd / step) % 8 == 0 { printProgressDot() }
        }
        let streamed = ContinuousClock.now - start
        print(" done")
        // Three more days in 30-minute steps: reminders, follow-ups and quiet-hour releases come due.
        print("Letting three more days pass", terminator: "")
        for i in 1...(3 * 48) {
            clock.set(Timestamp(milliseconds: sliceStart + Int64(i) * 30 * 60_000))
            try await schedulerPass(scheduler)
            try await network.pass(now: clock.now)
            if i % 12 == 0 { printProgressDot() }
        }
        print(" done")
        let outboundTopics = settings.kafka.channels.map { settings.kafka.outboundTopic($0) }
        let drainDeadline = ContinuousClock.now + .seconds(60)
        while try await admin.lag(group: settings.kafka.senderGroup, topics: outboundTopics).map(\.lag).reduce(0, +) > 0,
              ContinuousClock.now < drainDeadline {
            try await Task.sleep(for: .milliseconds(200))
        }
        try await Task.sleep(for: .milliseconds(300))
        try await network.pass(now: clock.now)
        // Let the journey worker take the last receipts.
        try await Task.sleep(for: .seconds(1))
        worker.stop()
        scheduler.stop()
        sender.stop()
        try await services.value
        receiptsTask.cancel()
        _ = await receiptsTask.result
        await network.shutdown()
        await producer.close()
        // The KPI counters catch up with the last decisions and receipts.
        let kpiDeadline = ContinuousClock.now + .seconds(60)
        while try await admin.lag(group: settings.kafka.kpiGroup, topics: [settings.kafka.decisions.name, settings.kafka.deliveries.name])
            .map(\.lag).reduce(0, +) > 0, ContinuousClock.now < kpiDeadline {
            try await Task.sleep(for: .milliseconds(200))
        }
        kpis.stop()
        try await kpiTask.value

        // Read the results back from Kafka.
        var summary = DecisionSummary()
        for record in try await TopicReader.readAll(settings.kafka.decisions.name, client: client, admin: admin) {
            if let value = record.value { summary.add(value) }
        }
        var outbound: [String: Int] = [:]
        for channel in settings.kafka.channels {
            outbound[channel] = try await TopicReader.readAll(settings.kafka.outboundTopic(channel), client: client, admin: admin).count
        }
        let deadLetters = try await TopicReader.readAll(settings.kafka.deadLetter.name, client: client, admin: admin).count
        let stats = worker.stats
        print("")
        print(summary.render())
        print("")
        print("Outbound topics: " + settings.kafka.channels.map { "\(settings.kafka.outboundTopic($0)) \(outbound[$0] ?? 0)" }.joined(separator: ", "))
        print("Dead letters: \(deadLetters); duplicate events skipped: \(stats.duplicates); state conflicts retried: \(stats.conflicts)")
        print("Scheduler: \(scheduler.stats.wakeUps) wake-ups, \(scheduler.stats.released) messages released from waits and quiet hours")
        let s = sender.stats
        var perChannel: [String: Int] = [:]
        for line in (FileManager.default.contents(atPath: providerFile) ?? Data()).split(separator: 0x0A) {
            if case .success(let handoff) = ProviderHandoff.decode(line) { perChannel[handoff.message.channel.rawValue, default: 0] += 1 }
        }
        var receiptCounts: [String: Int] = [:]
        for record in try await TopicReader.readAll(settings.kafka.deliveries.name, client: client, admin: admin) {
            if let value = record.value, case .success(let t) = RecordParser().touchpoint(key: record.key, value: value, now: clock.now) {
                receiptCounts[t.type, default: 0] += 1
            }
        }
        print("Senders: \(s.delivered) handed to providers (" + perChannel.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
              + "), \(s.parked) parked by send-time rules, \(s.expired) expired, \(s.noConsent) without consent at send time, "
              + "\(s.duplicatesSkipped) duplicates skipped")
        var rendered = 0, samples: [String: String] = [:]
        for line in (FileManager.default.contents(atPath: providerFile) ?? Data()).split(separator: 0x0A) {
            guard case .success(let handoff) = ProviderHandoff.decode(line), let r = handoff.rendered else { continue }
            rendered += 1
            if r.body.isEmpty { continue }  // a provider-rendered template (WhatsApp): nothing to show
            let key = "\(handoff.message.channel.rawValue) \(r.locale)"
            if samples[key] == nil, samples.count < 4 || (key.hasSuffix(" nb") && !samples.keys.contains { $0.hasSuffix(" nb") }) {
                samples[key] = "\(handoff.message.template): " + (r.subject.map { "\($0) — " } ?? "") + r.body
            }
        }
        print("Templates: \(rendered) of \(perChannel.values.reduce(0, +)) handoffs rendered from \(journeys)/templates (locale fallback nb-NO → nb → default), e.g.")
        for (key, text) in samples.sorted(by: { $0.key < $1.key }).prefix(5) { print("  [\(key)] \(text)") }
        let order = ["message_sent", "message_delivered", "message_read", "message_clicked", "message_failed", "message_unsubscribed"]
        print("Receipts on \(settings.kafka.deliveries.name): " + order.map { "\($0) \(receiptCounts[$0] ?? 0)" }.joined(separator: ", ")
              + " (\(network.callbacks) signed status callbacks and \(network.stops) STOP replies from the demo network, fed back into journeys)")
        try await printExperiment(settings: settings, journeys: journeys, directory: stack.directory, from: touchpoints.first?.timestamp ?? 0,
                                  to: clock.now.milliseconds + 1)
        print(String(format: "Throughput: %d touchpoints through Kafka → journey worker → Redis → Kafka in %.2f s wall (%.0f/s, paced by the simulated clock)",
                     touchpoints.count, streamed.seconds, Double(touchpoints.count) / streamed.seconds))
        print("Stopping local stack.")
    }

    /// The shipped experiment's report, read from the KPI counters the KPI worker kept during the run.
    private func printExperiment(settings: WaymarkSettings, journeys: String, directory: URL, from: Int64, to: Int64) async throws {
        let definitions = try JourneyLoader.load(directory: (journeys as NSString).appendingPathComponent("journeys"))
        guard let journey = definitions.first(where: { $0.experiment != nil }) else { return }
        let connection = try await RedisConnection.connect(WorkerRuntime.redisConfiguration(settings))
        let started = ContinuousClock.now
        let series = try await KPIReader(connection: connection, keys: KeySpace(prefix: settings.redis.keyPrefix, shards: settings.redis.shards))
            .series(journey: journey.name, from: from, to: to)
        let read = ContinuousClock.now - started
        // A month of hours, to show what a 30-day report costs (most of them empty here).
        let monthStarted = ContinuousClock.now
        _ = try await KPIReader(connection: connection, keys: KeySpace(prefix: settings.redis.keyPrefix, shards: settings.redis.shards))
            .series(journey: journey.name, from: to - 30 * 86_400_000, to: to)
        let month = ContinuousClock.now - monthStarted
        await connection.close()
        guard let report = ExperimentReport(series: series, journey: journey) else { return }
        let page = reportHTML
        try ReportHTML.experiment(report, journey: JourneyReport(series: series, journey: journey)).write(toFile: page, atomically: true, encoding: .utf8)
        print("")
        print(ReportText.experiment(report))
        print("(`waymark report experiment \(report.experiment)` prints this from the KPI counters; the same with charts: \(page))")
        print(String(format: "KPI counters read in %.1f ms (%d hours); a 30-day range (720 hours) in %.1f ms",
                     read.seconds * 1000, Int((series.to - series.from) / 3_600_000), month.seconds * 1000))
        print("")
    }

    private func waitFor(_ what: String, timeout: Duration = .seconds(60), _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while !condition() {
            if ContinuousClock.now > deadline { throw ValidationError("timed out waiting for \(what)") }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    /// Waits until the scheduler has completed a full pass after the clock moved.
    private func schedulerPass(_ scheduler: Scheduler) async throws {
        let ticks = scheduler.stats.ticks
        try await waitFor("scheduler") { scheduler.stats.ticks >= ticks + 2 }
    }

}
