import Foundation
import Logging
import WaymarkConfig
import WaymarkControl
import WaymarkEngine
import WaymarkWire
import WaymarkKafka
import WaymarkLocalStack
import WaymarkRedis
import WaymarkSample
import WaymarkState
#if canImport(Glibc)
import Glibc
#endif

/// How hard to shake the system.
public struct CrashTestConfiguration: Sendable {
    /// Touchpoints to stream (customers = events / 10).
    public var events = 20_000
    /// Journey worker processes running at once.
    public var journeyWorkers = 2
    /// `kill -9` of a random journey worker, each followed by a restart.
    public var journeyKills = 5
    /// `kill -9` of a random sender process (two run: sms+whatsapp+rcs, email+push+viber).
    public var senderKills = 5
    /// SIGSTOP Redis for this long mid-stream (then SIGCONT); `nil` to skip.
    public var pauseRedis: Duration? = .seconds(5)
    /// Run Redis as a local Redis Cluster (3 masters, one replica each, every write confirmed by a
    /// replica) instead of one server; the Redis fault is then `kill -9` of a master (a failover,
    /// the killed node restarted as a replica) instead of a pause.
    public var redisCluster = false
    /// SIGSTOP the broker for this long mid-stream; `nil` to skip.
    public var pauseBroker: Duration? = .seconds(5)
    /// Touchpoints produced per second.
    public var produceRate = 10_000
    public var seed: UInt64 = 7
    /// The `waymark` executable to run workers with.
    public var waymarkBinary: String
    /// Directory with rules.yaml and journeys/.
    public var journeysDirectory: String

    public init(waymarkBinary: String, journeysDirectory: String) {
        self.waymarkBinary = waymarkBinary
        self.journeysDirectory = journeysDirectory
    }
}

/// What the crash test saw. ``violations`` must be empty.
public struct CrashReport: Sendable {
    public var events = 0
    public var customers = 0
    public var kills = 0
    public var pauses: [String] = []
    public var eventsMissingFromState = 0
    public var deadLetters = 0
    public var senderKills = 0
    public var handedToProvider = 0
    public var providerRepeatsDropped = 0
    public var parkedAtEnd = 0
    public var suppressedAtSend = 0
    public var outboundRecords = 0
    public var distinctMessages = 0
    public var duplicateOutboundRecords = 0
    public var decisions = 0
    public var violations: [String] = []
    public var elapsed: Duration = .zero

    public func render() -> String {
        var lines = [
            "Crash test: \(events) touchpoints, \(customers) customers, \(kills) kill -9 of journey workers, \(senderKills) of senders, pauses: \(pauses.joined(separator: ", "))",
            "  events missing from state: \(eventsMissingFromState)",
            "  dead letters: \(deadLetters)",
            "  outbound records: \(outboundRecords), distinct message ids: \(distinctMessages), re-published copies: \(duplicateOutboundRecords) (deduplicated by senders by message id)",
            "  senders (\(senderKills) kill -9): handed to the provider \(handedToProvider), parked for later \(parkedAtEnd), suppressed at send time \(suppressedAtSend)",
            "  resends after a sender died mid-call, dropped by the provider's idempotency key: \(providerRepeatsDropped)",
            "  decisions: \(decisions)",
            "  elapsed: \(elapsed)",
        ]
        lines.append(violations.isEmpty ? "  RESULT: no loss, no doubled effect, no cap or quiet-hour violation"
                                        : "  VIOLATIONS (\(violations.count)):\n" + violations.prefix(20).map { "    - \($0)" }.joined(separator: "\n"))
        return lines.joined(separator: "\n")
    }
}

/// Streams a generated day through real worker processes while killing and pausing things, then
/// audits the results from Kafka and Redis.
public enum CrashTest {
    public static func run(_ config: CrashTestConfiguration, log: @escaping @Sendable (String) -> Void = { print($0) }) async throws -> CrashReport {
        let started = ContinuousClock.now
        var report = CrashReport()
        let stack = try await LocalStack.start(cluster: config.redisCluster ? .init(masters: 3, replicasPerMaster: 1) : nil)
        defer { stack.stop() }
        let kafka = stack.kafka!
        let redisConfiguration = stack.cluster.map {
            RedisConfiguration(mode: .cluster, seeds: $0.seeds, host: "127.0.0.1", port: $0.nodes[0].port)
        } ?? RedisConfiguration(host: "127.0.0.1", port: stack.redis!.port)
        let shards = 64
        let configFile = stack.directory.appendingPathComponent("waymark.yaml")
        try LocalSettings.write(
            to: configFile, bootstrap: kafka.bootstrapServers, redisPort: redisConfiguration.port, shards: shards,
            topics: ["touchpoints: { partitions: 6 }", "customers: { partitions: 6 }", "deliveries: { partitions: 3 }",
                     "outbound: { partitions: 3 }", "decisions: { partitions: 3 }"],
            sections: """
                sender:
                  rate_per_second: 20000
                  burst: 2000
                  claim_stale_ms: 3000
                worker:
                  max_batch: 2000
                  scheduler_interval_ms: 100
                  outbox_grace_ms: 2000
                  metrics_port: 0

                """, clusterSeeds: stack.cluster?.seeds ?? [], waitReplicas: stack.cluster == nil ? 0 : 1)
        let settings = try WaymarkSettings.load(path: configFile.path)
        let client = KafkaClientConfiguration(bootstrapServers: kafka.bootstrapServers, properties: KafkaClientConfiguration.localTuning)
        let admin = try KafkaAdmin(client: client)
        _ = try await TopicSetup(settings: settings.kafka).apply(admin: admin)
        let engine = try JourneyLoader.loadEngine(configDirectory: config.journeysDirectory)

        // Yesterday: an older day would mostly expire and exercise the senders less.
        let nowMs = Int64(Date().timeIntervalSince1970 * 1000)  // "now" for the audit's parser
        let day = RetailDay(seed: config.seed, customers: max(config.events / 10, 10), dayStart: RetailDay.startOfYesterdayUTC).generate()
        let profiles = day.filter { $0.kind == .profile }
        let touchpoints = Array(day.filter { $0.kind == .touchpoint }.prefix(config.events))
        report.events = touchpoints.count
        report.customers = Set(touchpoints.map(\.key)).count
        log("crash test: \(touchpoints.count) touchpoints for \(report.customers) customers; \(config.journeyWorkers) journey workers + 1 scheduler")

        func spawn(_ name: String, _ args: [String]) throws -> ManagedProcess {
            let process = ManagedProcess(
                executable: config.waymarkBinary,
                arguments: ["worker"] + args + ["--config", configFile.path, "--journeys", config.journeysDirectory, "--log-level", "notice"],
                logFile: stack.directory.appendingPathComponent("\(name).log"))
            try process.start()
            return process
        }
        var workers = try (0..<config.journeyWorkers).map { try spawn("journey-\($0)", ["journey"]) }
        let scheduler = try spawn("scheduler", ["scheduler"])
        let senderChannels = [["sms", "whatsapp", "rcs"], ["email", "push", "viber"]]
        let providerFiles = (0..<senderChannels.count).map { stack.directory.appendingPathComponent("provider-\($0).jsonl").path }
        func spawnSender(_ index: Int, _ round: Int) throws -> ManagedProcess {
            try spawn("sender-\(index)-r\(round)", ["sender"] + senderChannels[index].flatMap { ["--channel", $0] } + ["--provider-file", providerFiles[index]])
        }
        var senders = try senderChannels.indices.map { try spawnSender($0, 0) }

        let producer = try KafkaProducer(configuration: .init(client: client))
        try await producer.sendAll(profiles.map {
            KafkaProducerRecord(topic: settings.kafka.customers.name, key: Array($0.key.utf8), value: $0.value)
        })

        // Produce at the configured rate while the chaos schedule runs.
        let produceSeconds = Double(touchpoints.count) / Double(config.produceRate)
        let producing = Task {
            let chunk = 500
            let start = ContinuousClock.now
            for offset in stride(from: 0, to: touchpoints.count, by: chunk) {
                let slice = touchpoints[offset..<min(offset + chunk, touchpoints.count)]
                try await producer.sendAll(slice.map {
                    KafkaProducerRecord(topic: settings.kafka.touchpoints.name, key: Array($0.key.utf8), value: $0.value)
                })
                let due = start + .milliseconds(Int64(Double(offset + chunk) / Double(config.produceRate) * 1000))
                if ContinuousClock.now < due { try await Task.sleep(until: due) }
            }
        }
        var rng = SeededRandom(seed: config.seed)
        let window = max(produceSeconds, 6.0) + 4
        var moments: [(Double, String)] = (0..<config.journeyKills).map { i in
            (window * (Double(i) + Double(rng.next() % 1000) / 1000) / Double(max(config.journeyKills, 1)), "kill")
        }
        moments += (0..<config.senderKills).map { i in
            (window * (Double(i) + Double(rng.next() % 1000) / 1000) / Double(max(config.senderKills, 1)), "kill-sender")
        }
        if config.pauseRedis != nil || config.redisCluster { moments.append((window * 0.35, "redis")) }
        if config.pauseBroker != nil { moments.append((window * 0.65, "broker")) }
        moments.sort { $0.0 < $1.0 }
        let chaosStart = ContinuousClock.now
        for (at, what) in moments {
            let when = chaosStart + .milliseconds(Int64(at * 1000))
            if ContinuousClock.now < when { try await Task.sleep(until: when) }
            switch what {
            case "kill":
                let index = Int(rng.next() % UInt64(workers.count))
                workers[index].kill9()
                report.kills += 1
                log("  kill -9 journey worker \(index) at \(String(format: "%.1f", at)) s")
                try await Task.sleep(for: .milliseconds(300 + Int64(rng.next() % 700)))
                workers[index] = try spawn("journey-\(index)-r\(report.kills)", ["journey"])
            case "kill-sender":
                let index = Int(rng.next() % UInt64(senders.count))
                senders[index].kill9()
                report.senderKills += 1
                log("  kill -9 sender \(index) at \(String(format: "%.1f", at)) s")
                try await Task.sleep(for: .milliseconds(300 + Int64(rng.next() % 700)))
                senders[index] = try spawnSender(index, report.senderKills)
            case "redis":
                if let cluster = stack.cluster {
                    // kill -9 a master; its replica takes over; the node comes back as a replica.
                    let victim = try await cluster.owner(of: 0)
                    log("  kill -9 redis master 127.0.0.1:\(victim.port)")
                    let killed = ContinuousClock.now
                    victim.process.kill9()
                    try await cluster.waitUntilHealthy()
                    let failover = ContinuousClock.now - killed
                    try victim.process.start()
                    try await cluster.waitUntilHealthy()
                    let resynced = ContinuousClock.now - killed
                    log("  cluster ok again after \(failover); old master back as a replica after \(resynced)")
                    func seconds(_ d: Duration) -> String { String(format: "%.1f s", Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18) }
                    report.pauses.append("redis master kill -9: cluster ok again after \(seconds(failover)), old master back as a replica after \(seconds(resynced))")
                } else {
                    let pause = config.pauseRedis!
                    log("  SIGSTOP redis for \(pause)")
                    stack.redis!.process.send(signal: SIGSTOP)
                    try await Task.sleep(for: pause)
                    stack.redis!.process.send(signal: SIGCONT)
                    report.pauses.append("redis \(pause)")
                }
            default:
                let pause = config.pauseBroker!
                log("  SIGSTOP broker for \(pause)")
                kafka.process.send(signal: SIGSTOP)
                try await Task.sleep(for: pause)
                kafka.process.send(signal: SIGCONT)
                report.pauses.append("broker \(pause)")
            }
        }
        try await producing.value
        log("  produced everything; waiting for workers to drain")

        // Drained: no lag on inputs, no unpublished outbox entries.
        let redis = try await RedisConnection.connect(redisConfiguration)
        let keys = KeySpace(prefix: settings.redis.keyPrefix, shards: shards)
        let deadline = ContinuousClock.now + .seconds(180)
        while true {
            let lag = try await admin.lag(group: settings.kafka.journeyGroup, topics: [settings.kafka.touchpoints.name, settings.kafka.customers.name])
            let pending = try await OperatorStore(connection: redis, keys: keys).pendingOutboxSummary().customers
            let outboundTopics = settings.kafka.channels.map { settings.kafka.outboundTopic($0) }
            let senderLag = try await admin.lag(group: settings.kafka.senderGroup, topics: outboundTopics).map(\.lag).reduce(0, +)
            if lag.map(\.lag).reduce(0, +) == 0, pending == 0, senderLag == 0 { break }
            if ContinuousClock.now > deadline {
                report.violations.append("not drained after 180 s: lag \(lag.map(\.lag).reduce(0, +)), pending outbox \(pending)")
                break
            }
            try await Task.sleep(for: .milliseconds(500))
        }
        // Stop gracefully in pipeline order: first what creates messages (journey workers, and the
        // scheduler, which keeps releasing timers on the live clock), then the senders once they
        // have taken everything published before that. Stopping all at once left a message the
        // scheduler released in the last second unread, and the audit called it lost.
        try await Task.sleep(for: .seconds(2))
        for worker in workers { worker.stop(grace: .seconds(20)) }
        scheduler.stop(grace: .seconds(20))
        let outboundTopics = settings.kafka.channels.map { settings.kafka.outboundTopic($0) }
        let senderDeadline = ContinuousClock.now + .seconds(60)
        while try await admin.lag(group: settings.kafka.senderGroup, topics: outboundTopics).map(\.lag).reduce(0, +) > 0 {
            if ContinuousClock.now > senderDeadline {
                report.violations.append("senders did not take the last published messages within 60 s")
                break
            }
            try await Task.sleep(for: .milliseconds(500))
        }
        try await Task.sleep(for: .seconds(1))
        for sender in senders { sender.stop(grace: .seconds(20)) }

        // 1. Every event is in its customer's state.
        let store = RedisStateStore(connection: redis, keys: keys)
        let byCustomer = Dictionary(grouping: touchpoints, by: \.key)
        let customers = byCustomer.keys.sorted()
        let parser = RecordParser()
        for chunk in stride(from: 0, to: customers.count, by: 1_000) {
            let loaded = try await store.load(Array(customers[chunk..<min(chunk + 1_000, customers.count)]))
            for stored in loaded {
                let seen = Set((stored.state.flatMap { try? CustomerState(decoding: $0) }?.recentEvents ?? []).map(\.fingerprint))
                for record in byCustomer[stored.customer] ?? [] {
                    guard case .success(let t) = parser.touchpoint(key: ArraySlice(record.key.utf8), value: ArraySlice(record.value),
                                                                   now: Timestamp(milliseconds: nowMs)) else { continue }
                    if !seen.contains(StableHash.of(t.eventID)) { report.eventsMissingFromState += 1 }
                }
            }
        }
        if report.eventsMissingFromState > 0 { report.violations.append("\(report.eventsMissingFromState) events missing from state") }
        await redis.close()

        // 2. Published messages and decisions.
        report.deadLetters = try await TopicReader.readAll(settings.kafka.deadLetter.name, client: client, admin: admin).count
        if report.deadLetters > 0 { report.violations.append("\(report.deadLetters) valid events were dead-lettered") }
        var messages: [String: InvariantAudit.Message] = [:]
        for channel in settings.kafka.channels {
            for record in try await TopicReader.readAll(settings.kafka.outboundTopic(channel), client: client, admin: admin) {
                guard let value = record.value, let message = InvariantAudit.message(value) else { continue }
                report.outboundRecords += 1
                if messages[message.id] != nil { report.duplicateOutboundRecords += 1 }
                messages[message.id] = message
            }
        }
        report.distinctMessages = messages.count
        var sentDecisions: [String: Set<[UInt8]>] = [:]
        for record in try await TopicReader.readAll(settings.kafka.decisions.name, client: client, admin: admin) {
            report.decisions += 1
            guard let value = record.value, case .success(let decision) = parser.decision(value),
                  decision.reason == .sent || decision.reason == .fallbackChannel, let id = decision.messageID?.description else { continue }
            sentDecisions[id, default: []].insert(Array(value))
        }
        for (id, docs) in sentDecisions where docs.count > 1 {
            report.violations.append("message \(id) was decided \(docs.count) times with different effects")
        }
        let decidedIDs = Set(sentDecisions.keys), publishedIDs = Set(messages.keys)
        if decidedIDs != publishedIDs {
            report.violations.append("sent decisions and outbound messages differ: \(decidedIDs.subtracting(publishedIDs).count) decided but not published, \(publishedIDs.subtracting(decidedIDs).count) published without decision")
        }
        // 3. Caps and quiet hours.
        var profileMap: [String: CustomerProfile] = [:]
        for record in profiles {
            if case .success(let p) = parser.profile(key: ArraySlice(record.key.utf8), value: ArraySlice(record.value)) { profileMap[p.customerID] = p }
        }
        let audit = InvariantAudit(engine: engine)
        report.violations += audit.capViolations(Array(messages.values))
        report.violations += audit.quietHourViolations(Array(messages.values), profiles: profileMap)

        // 4. The provider side: each message id handed over once, at an allowed time; none lost.
        var handed: [String: Int] = [:]
        var handedMessages: [InvariantAudit.Message] = []
        for path in providerFiles {
            let data = FileManager.default.contents(atPath: path) ?? Data()
            for line in data.split(separator: 0x0A) {
                guard case .success(let handoff) = ProviderHandoff.decode(line, parser: parser),
                      var message = messages[handoff.idempotencyKey] else { continue }
                handed[handoff.idempotencyKey, default: 0] += 1
                message.sendAfter = Timestamp(milliseconds: handoff.handedAt)  // the moment of the provider call
                handedMessages.append(message)
            }
            let repeats = FileManager.default.contents(atPath: path + ".repeats") ?? Data()
            report.providerRepeatsDropped += repeats.split(separator: 0x0A).count
        }
        report.handedToProvider = handed.count
        if handed.isEmpty {
            let sizes = providerFiles.map { (try? FileManager.default.attributesOfItem(atPath: $0)[.size] as? Int) ?? -1 }
            log("  no provider calls recorded; provider file sizes \(sizes); last sender log:\n\(senders.last?.logTail(bytes: 1500) ?? "")")
        }
        for (key, count) in handed where count > 1 { report.violations.append("message \(key) handed to the provider \(count) times") }
        report.violations += audit.quietHourViolations(handedMessages, profiles: profileMap).map { "provider call: " + $0 }
        let redis2 = try await RedisConnection.connect(redisConfiguration)
        let senderStore = SenderStore(connection: redis2, keys: keys)
        let parkedIDs = Set(try await senderStore.dueDelayed(now: .max, limitPerShard: 100_000).map(\.messageID))
        await redis2.close()
        report.parkedAtEnd = parkedIDs.count
        var suppressed = Set<String>()
        for record in try await TopicReader.readAll(settings.kafka.decisions.name, client: client, admin: admin) {
            guard let value = record.value, case .success(let decision) = parser.decision(value),
                  decision.rule.hasPrefix("send_time:"), decision.reason.rawValue.hasPrefix("suppressed"),
                  let id = decision.messageID?.description else { continue }
            suppressed.insert(id)
        }
        report.suppressedAtSend = suppressed.count
        let unaccounted = Set(messages.keys).subtracting(handed.keys).subtracting(parkedIDs).subtracting(suppressed)
        if !unaccounted.isEmpty {
            report.violations.append("\(unaccounted.count) published messages were neither handed to the provider, parked nor suppressed (lost)")
            // Evidence for whoever investigates: where the raw id still appears (a line that does not decode, a repeat).
            let files = providerFiles.flatMap { [$0, $0 + ".repeats"] }
            for id in unaccounted.sorted().prefix(5) {
                let needle = Array(id.utf8)
                let found = files.filter { path in (FileManager.default.contents(atPath: path).map { [UInt8]($0) } ?? []).firstRange(of: needle) != nil }
                log("  lost \(id): raw id in \(found.isEmpty ? "no provider file" : found.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ", "))")
            }
        }
        report.elapsed = ContinuousClock.now - started
        return report
    }

}
