import ArgumentParser
import Foundation
import WaymarkChaos
import WaymarkConfig
import WaymarkControl
import WaymarkHTTPTesting
import WaymarkKafka
import WaymarkLocalStack
import WaymarkSample

/// The sender side of the pipeline: how fast sender processes hand a backlog of outbound messages to
/// a provider, with the file provider and with the webhook provider against a local fake provider
/// that answers after a fixed latency.
struct Pipeline: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sender pipeline benchmark: messages/s handed to providers by N sender processes.",
        discussion: """
            One fresh stack per case. A journey worker first turns a generated day into outbound messages \
            (profiles stored, sends decided) and stops; then the sender processes start on the outbound \
            backlog and the time from their first committed progress to an empty backlog gives messages/s. \
            The webhook case uses a local fake provider answering after --latency-ms; its ceiling is about \
            sender.concurrency / latency per process.
            Then a latency phase on another fresh stack: a journey worker and one sender run while purchases \
            are produced at --latency-rate for --latency-seconds; each purchase's order confirmation \
            (transactional: no quiet hours, no caps) goes to the fake webhook provider, and the time from the \
            purchase's produce call to the provider receiving its first request gives p50/p99.

            Examples:
              waymark-bench pipeline                                   # file and webhook (50 ms), 1 and 2 senders
              waymark-bench pipeline --senders 1 --provider webhook --latency-ms 50
              waymark-bench pipeline --provider none --latency-rate 500 --latency-seconds 10   # latency only
            """)

    @Option(help: "Touchpoints of the generated day that feed the outbound backlog.") var events = 300_000
    @Option(help: "Sender processes: one number, or several separated by commas (each its own case).") var senders = "1,2"
    @Option(help: "file, webhook, both, or none (latency phase only).") var provider = "both"
    @Option(help: "Latency of the fake webhook provider, in milliseconds.") var latencyMs = 50
    @Option(help: "sender.concurrency (provider calls in flight per sender process).") var concurrency = 64
    @Option(help: "Directory with rules.yaml and journeys/.") var journeys = "config"
    @Option(help: "Purchases/s of the produce->provider-call latency phase (0: no latency phase).") var latencyRate = 500
    @Option(help: "Duration of the latency phase in seconds.") var latencySeconds = 10

    func run() async throws {
        bootstrapBenchLogging()
        let counts = senders.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }.filter { $0 > 0 }
        guard !counts.isEmpty else { throw ValidationError("--senders needs at least one positive number") }
        let providers = provider == "both" ? ["file", "webhook"] : provider == "none" ? [] : [provider]
        guard providers.allSatisfy({ $0 == "file" || $0 == "webhook" }) else { throw ValidationError("--provider is file, webhook, both or none") }
        var results: [Measurement] = []
        var headlines: [String] = []
        for kind in providers {
            for count in counts {
                let name = kind == "file" ? "file provider" : "webhook provider, \(latencyMs) ms"
                print("— sender pipeline: \(name), \(count) sender process\(count == 1 ? "" : "es")")
                let (rate, messages, cores, redisCores) = try await once(provider: kind, senders: count)
                let line = String(format: "sender pipeline (%@, %d sender%@): %.0f messages/s (%d messages; senders %.2f cores, redis %.2f)",
                                  name, count, count == 1 ? "" : "s", rate, messages, cores, redisCores)
                print("  " + line)
                headlines.append(line)
                if kind == "webhook" {
                    let ceiling = Double(concurrency * count) / (Double(latencyMs) / 1000)
                    headlines.append(String(format: "  bound for the webhook case: concurrency x processes / latency = %.0f messages/s; measured %.2f of it", ceiling, rate / ceiling))
                }
                results.append(Measurement(benchmark: "pipeline", metric: "\(name), \(count) senders", value: rate, unit: "messages/s",
                                           detail: "\(messages) messages, concurrency \(concurrency)"))
            }
        }
        if latencyRate > 0 && latencySeconds > 0 {
            print("— produce->provider call latency: \(latencyRate) purchases/s for \(latencySeconds) s, webhook provider at \(latencyMs) ms, 1 journey worker, 1 sender")
            let (p50, p99, samples, expected) = try await latencyPhase()
            let bound = Double(concurrency) / (Double(latencyMs) / 1000)
            headlines.append(String(format: "p50 produce->provider call at %d/s: %.0f ms", latencyRate, p50))
            headlines.append(String(format: "p99 produce->provider call at %d/s: %.0f ms", latencyRate, p99))
            headlines.append(String(format: "  (%d of %d purchases reached the provider; the rate is %.2f of the webhook bound concurrency / latency = %.0f messages/s)",
                                    samples, expected, Double(latencyRate) / bound, bound))
            for line in headlines.suffix(3) { print("  " + line.trimmingCharacters(in: .whitespaces)) }
            results.append(Measurement(benchmark: "pipeline", metric: "p50 produce->provider call at \(latencyRate)/s", value: p50, unit: "ms",
                                       detail: "\(samples) of \(expected) purchases, webhook at \(latencyMs) ms"))
            results.append(Measurement(benchmark: "pipeline", metric: "p99 produce->provider call at \(latencyRate)/s", value: p99, unit: "ms",
                                       detail: "\(samples) of \(expected) purchases, webhook at \(latencyMs) ms"))
            guard samples == expected else {
                throw ValidationError("\(expected - samples) of \(expected) purchases never reached the provider within 60 s")
            }
        }
        print("\nHEADLINES [sender pipeline: \(events) touchpoints, concurrency \(concurrency)]")
        for line in headlines { print(line) }
        try appendResults(results, quiet: true)
    }

    /// One case on a fresh stack: returns messages/s, messages, sender cores and Redis cores while draining.
    func once(provider kind: String, senders count: Int) async throws -> (Double, Int, Double, Double) {
        let stack = try await LocalStack.start()
        defer { stack.stop() }
        let fake = kind == "webhook" ? try await FakeProvider.start() : nil
        if let fake { fake.delay(.milliseconds(Int64(latencyMs))) }
        let configFile = try writeSettings(stack, webhook: fake)
        let (settings, client, admin) = try await loadSettingsAndCreateTopics(configFile)

        // Yesterday (UTC), as the other live runs: recent enough that sends are still relevant.
        let day = RetailDay(seed: 17, customers: max(events / 8, 100), dayStart: RetailDay.startOfYesterdayUTC).generate()
        let profiles = day.filter { $0.kind == .profile }
        let touchpoints = Array(day.filter { $0.kind == .touchpoint }.prefix(events))
        let producer = try KafkaProducer(configuration: .init(client: client))
        for (records, topic) in [(profiles, settings.kafka.customers.name), (touchpoints, settings.kafka.touchpoints.name)] {
            for chunk in stride(from: 0, to: records.count, by: 50_000) {
                try await producer.sendAll(records[chunk..<min(chunk + 50_000, records.count)].map {
                    KafkaProducerRecord(topic: topic, key: Array($0.key.utf8), value: $0.value)
                })
            }
        }

        func spawn(_ name: String, _ args: [String]) throws -> ManagedProcess {
            try spawnWorker(name, args, config: configFile, stack: stack)
        }
        // 1. The journey worker builds the outbound backlog, then stops.
        let journey = try spawn("journey", ["journey"])
        defer { journey.stop() }
        let inputs = [settings.kafka.touchpoints.name, settings.kafka.customers.name]
        try await waitForNoLag(admin: admin, group: settings.kafka.journeyGroup, topics: inputs, process: journey, what: "journey worker")
        journey.stop(grace: .seconds(20))
        let outbound = settings.kafka.channels.map { settings.kafka.outboundTopic($0) }
        let messages = Int(try await admin.endOffsets(topics: outbound).values.map(\.high).reduce(0, +))
        print("  outbound backlog: \(messages) messages from \(touchpoints.count) touchpoints")
        guard messages > 0 else { throw ValidationError("the journey worker decided no sends") }

        // 2. The senders drain it.
        var pool: [ManagedProcess] = []
        defer { for process in pool { process.stop() } }
        let start = ContinuousClock.now
        for index in 0..<count {
            var args = ["sender"]
            if kind == "file" { args += ["--provider-file", stack.directory.appendingPathComponent("provider-\(index).jsonl").path] }
            pool.append(try spawn("sender-\(index)", args))
        }
        let pids = pool.compactMap(\.pid)
        let redisPID = stack.redis!.process.pid ?? 0
        var first: (at: ContinuousClock.Instant, lag: Int64, cpu: Double, redis: Double)?
        var lastLag = Int64(messages)
        while true {
            try await Task.sleep(for: .milliseconds(200))
            let lag = try await admin.lag(group: settings.kafka.senderGroup, topics: outbound).map(\.lag).reduce(0, +)
            // The window opens at the first sample with progress and work left (with lag already 0 there is no window).
            if first == nil, lag < Int64(messages), lag > 0 {
                first = (ContinuousClock.now, lag, pids.map(Journey.cpuSeconds).reduce(0, +), Journey.cpuSeconds(redisPID))
            }
            lastLag = lag
            if lag == 0 { break }
            for process in pool where !process.isRunning { throw ValidationError("sender exited: \(process.logTail())") }
            if ContinuousClock.now - start > .seconds(600) { throw ValidationError("outbound backlog not drained in 600 s (lag \(lastLag))") }
        }
        let end = ContinuousClock.now
        if first == nil { print("  backlog drained before the first sample: the rate is measured from the senders' start (start-up included)") }
        let progress = first ?? (start, Int64(messages), 0, 0)
        let seconds = max((end - progress.at).seconds, 0.001)
        let cores = (pids.map(Journey.cpuSeconds).reduce(0, +) - progress.cpu) / seconds
        let redisCores = (Journey.cpuSeconds(redisPID) - progress.redis) / seconds
        if let fake { print("  fake provider: \(fake.acceptedRequests.count) requests accepted") }
        return (Double(progress.lag) / seconds, messages, cores, redisCores)
    }

    /// The latency phase (see the discussion): returns p50 and p99 in milliseconds, purchases seen at
    /// the provider, and purchases produced.
    func latencyPhase() async throws -> (Double, Double, Int, Int) {
        let stack = try await LocalStack.start()
        defer { stack.stop() }
        let fake = try await FakeProvider.start()
        do {
            let result = try await measureLatency(stack: stack, fake: fake)
            await fake.shutdown()
            return result
        } catch {
            await fake.shutdown()
            throw error
        }
    }

    private func measureLatency(stack: LocalStack, fake: FakeProvider) async throws -> (Double, Double, Int, Int) {
        fake.delay(.milliseconds(Int64(latencyMs)))
        let configFile = try writeSettings(stack, webhook: fake)
        let (settings, client, admin) = try await loadSettingsAndCreateTopics(configFile)
        let producer = try KafkaProducer(configuration: .init(client: client))

        // Customers with e-mail consent (contacts are example addresses).
        let customers = 2_000
        try await producer.sendAll((0..<customers).map { index in
            KafkaProducerRecord(topic: settings.kafka.customers.name, key: Array("lat-c\(index)".utf8), value: Array(
                #"{"customer_id":"lat-c\#(index)","timezone":"Europe/Oslo","contacts":{"email":"c\#(index)@example.com"},"consent":{"email":true},"preferred_channels":["email"]}"#.utf8))
        })
        func purchase(_ index: Int) -> KafkaProducerRecord {
            let now = ISO8601DateFormatter().string(from: Date())
            let customer = "lat-c\(index % customers)"
            return KafkaProducerRecord(topic: settings.kafka.touchpoints.name, key: Array(customer.utf8), value: Array(
                #"{"event_id":"lat-\#(index)","customer_id":"\#(customer)","type":"purchase","occurred_at":"\#(now)","attributes":{"order_id":"lat-o-\#(index)","value":25,"currency":"NOK"}}"#.utf8))
        }

        func spawn(_ name: String, _ args: [String]) throws -> ManagedProcess {
            try spawnWorker("latency-\(name)", args, config: configFile, stack: stack)
        }
        let journey = try spawn("journey", ["journey"])
        defer { journey.stop() }
        let sender = try spawn("sender", ["sender"])
        defer { sender.stop() }
        try await waitForNoLag(admin: admin, group: settings.kafka.journeyGroup, topics: [settings.kafka.customers.name],
                               process: journey, what: "journey worker (profiles)")
        // Warm up: one purchase through to the provider, so both consumer groups have their partitions.
        let warmUp = -1_000_000
        try await producer.sendAll([purchase(warmUp)])
        let warmStart = ContinuousClock.now
        while fake.requests.isEmpty {
            if ContinuousClock.now - warmStart > .seconds(60) { throw ValidationError("the warm-up purchase never reached the provider") }
            if !journey.isRunning || !sender.isRunning { throw ValidationError("a worker exited: \(journey.logTail()) \(sender.logTail())") }
            try await Task.sleep(for: .milliseconds(20))
        }
        fake.reset()
        fake.delay(.milliseconds(Int64(latencyMs)))

        // Produce at the fixed rate, 100 slices a second.
        let total = latencyRate * latencySeconds
        var producedAt: [String: ContinuousClock.Instant] = [:]
        producedAt.reserveCapacity(total)
        var pending: [KafkaPendingDelivery] = []
        let achieved = try await Paced.run(total: total, rate: latencyRate) { indices in
            let stamp = ContinuousClock.now
            pending.append(try await producer.enqueue(indices.map(purchase)))
            for index in indices { producedAt["lat-\(index)"] = stamp }
        }
        Paced.warnIfBehind(achieved, rate: latencyRate)
        try await Paced.checkDelivered(pending)
        // The first provider request caused by each purchase.
        var firstCall: [String: ContinuousClock.Instant] = [:]
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            for request in fake.requests {
                guard let body = try? JSONSerialization.jsonObject(with: Data(request.body)) as? [String: Any],
                      let message = body["message"] as? [String: Any], let cause = message["caused_by"] as? String,
                      producedAt[cause] != nil else { continue }
                firstCall[cause] = min(firstCall[cause] ?? request.receivedAt, request.receivedAt)
            }
            if firstCall.count == total { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        let latencies = firstCall.map { cause, at in (at - producedAt[cause]!).seconds * 1000 }.sorted()
        return (percentile(latencies, 0.5), percentile(latencies, 0.99), latencies.count, total)
    }

    /// Settings for a case: 6 partitions, batches of 10k, the sender unthrottled at --concurrency, with
    /// the file provider or, given `webhook`, the webhook provider pointed at it.
    private func writeSettings(_ stack: LocalStack, webhook: FakeProvider?) throws -> URL {
        let configFile = stack.directory.appendingPathComponent("waymark.yaml")
        let providerYAML = webhook.map { "  provider: webhook\n  webhook_url: \"\($0.url)\"\n" } ?? "  provider: file\n"
        try LocalSettings.write(
            to: configFile, bootstrap: stack.kafka!.bootstrapServers, redisPort: stack.redis!.port,
            topics: ["touchpoints: { partitions: 6 }", "customers: { partitions: 6 }", "outbound: { partitions: 6 }"],
            sections: "worker:\n  max_batch: 10000\n  poll_timeout_ms: 5\n  metrics_port: 0\nsender:\n\(providerYAML)"
                + "  rate_per_second: 1000000\n  burst: 100000\n  concurrency: \(concurrency)\n")
        return configFile
    }

    /// Starts `waymark worker <args>` on `config`, logging to `<name>.log` in the stack's directory.
    private func spawnWorker(_ name: String, _ args: [String], config: URL, stack: LocalStack) throws -> ManagedProcess {
        let process = ManagedProcess(executable: siblingWaymarkBinary,
                                     arguments: ["worker"] + args + ["--config", config.path, "--journeys", journeys, "--log-level", "warning"],
                                     logFile: stack.directory.appendingPathComponent("\(name).log"))
        try process.start()
        return process
    }

    private func waitForNoLag(admin: KafkaAdmin, group: String, topics: [String], process: ManagedProcess, what: String) async throws {
        let start = ContinuousClock.now
        while true {
            try await Task.sleep(for: .milliseconds(200))
            let lags = try await admin.lag(group: group, topics: topics)
            if !lags.isEmpty, lags.allSatisfy({ $0.committed != nil || $0.end == 0 }), lags.map(\.lag).reduce(0, +) == 0 { return }
            if !process.isRunning { throw ValidationError("\(what) exited: \(process.logTail())") }
            if ContinuousClock.now - start > .seconds(600) { throw ValidationError("\(what) did not drain its input in 600 s") }
        }
    }
}
