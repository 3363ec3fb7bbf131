import ArgumentParser
import Foundation
import Logging
import WaymarkChaos
import WaymarkConfig
import WaymarkControl
import WaymarkKafka
import WaymarkLocalStack
import WaymarkRedis
import WaymarkSample

/// End to end through one journey worker process: sustained throughput on a backlog, latency at
/// fixed rates, the worker's peak RSS and where the CPU went, each beside the same run's ceilings.
struct Journey: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "End-to-end journey worker benchmark: throughput and latency as ratios to the same run's ceilings.",
        discussion: """
            Each run starts a fresh local stack and:
              1. produces profiles and a backlog of generated touchpoints;
              2. measures this machine's ceilings on that stack: Kafka consume of the backlog (no group) \
            and pipelined EVALSHA of a small script (HINCRBY + ZADD + 2×EXPIRE, 100 per pipeline);
              3. drains the backlog with one `waymark worker journey` process (release build next to this \
            binary): steady records/s from the first commit on, and the CPU each process used meanwhile;
              4. produces live touchpoints at 10k/s and at 25 % and 50 % of the measured steady rate; latency \
            is from produce to the worker's publish of the first decision each event caused (Kafka \
            timestamps of both records; later decisions of the same cause, such as releases after quiet \
            hours, are intended delays).
            Machines differ 3–5× in speed, so every figure is printed beside its ratio to the ceilings; \
            headline lines give the median with min and max over the runs.

            Examples:
              waymark-bench journey                                   # retail day, ~8 touchpoints per customer
              waymark-bench journey --customers 200000 --events 400000 --label sparse   # ~2 per customer
              waymark-bench journey --runs 1 --redis-cluster --label cluster            # Redis as a 3-master cluster
              waymark-bench journey --runs 1 --redis-tls --label tls                    # Redis over TLS
              waymark-bench journey --runs 1 --workers 3 --latency-seconds 0 --label scale-out   # 3 worker processes
              waymark-bench journey --runs 1 --latency-seconds 5
            """)

    @Option(help: "Backlog size (touchpoints) for the throughput phase.") var events = 500_000
    @Option(help: "Customers in the generated day (default: events / 8, about a retail day's touchpoints each).") var customers: Int?
    @Option(help: "Runs, each on a fresh stack (headline figures: median, min, max).") var runs = 3
    @Option(help: "Fixed rate (touchpoints/s) of the first latency phase.") var latencyRate = 10_000
    @Option(help: "Duration of each latency phase in seconds (0: no latency phases).") var latencySeconds = 10
    @Option(help: "Partitions of the touchpoints topic.") var partitions = 6
    @Option(help: "Records per worker batch (worker.max_batch).") var batch = 10_000
    @Option(help: "Name of this stream in the headline lines.") var label = "retail day"
    @Option(help: "Directory with rules.yaml and journeys/.") var journeys = "config"
    @Option(help: "Journey worker processes sharing the partitions (scale-out; peak RSS is the largest one's).") var workers = 1
    @Flag(help: "Run Redis as a local 3-master Redis Cluster instead of one server (on one box: the cluster path's overhead, not its scale-out).")
    var redisCluster = false
    @Flag(help: "Speak TLS to Redis (a TLS-only server or cluster with client certificates from a throw-away CA): TLS's cost, ceilings measured over TLS too.")
    var redisTls = false

    func run() async throws {
        bootstrapBenchLogging()
        let customerCount = customers ?? max(events / 8, 100)
        var results: [RunResult] = []
        for index in 1...runs {
            print("— run \(index) of \(runs): \(label), \(events) touchpoints of \(customerCount) customers")
            results.append(try await once(customers: customerCount))
        }
        try report(results, customers: customerCount)
    }

    /// What one run measured.
    struct RunResult {
        var consumeCeiling: Double
        var evalshaCeiling: Double
        /// The broker's produce→consume latency (ms) at the first latency phase's rate, without a worker.
        var brokerFloor: (p50: Double, p99: Double)?
        var steady: Double
        var includingStart: Double
        /// Rate → (p50, p99, samples).
        var latency: [(rate: Int, name: String, p50: Double, p99: Double, samples: Int)]
        var peakRSSkB: Int
        /// Share of one core each process used while draining.
        var cpu: [(process: String, cores: Double)]
        /// What the drained backlog left in Redis.
        var footprint: RedisFootprint
    }

    func once(customers: Int) async throws -> RunResult {
        let stack = try await LocalStack.start(cluster: redisCluster ? .init(masters: 3) : nil, redisTLS: redisTls)
        defer { stack.stop() }
        let certificates = stack.redisCertificates
        let tls = certificates.map {
            RedisConfiguration.TLS(caFile: $0.caFile, certificateFile: $0.clientCertificate, keyFile: $0.clientKey)
        }
        let redis = stack.cluster.map { RedisConfiguration(mode: .cluster, seeds: $0.seeds, host: "127.0.0.1", port: $0.nodes[0].port, tls: tls) }
            ?? RedisConfiguration(host: "127.0.0.1", port: stack.redis!.port, tls: tls)
        let redisPIDs = stack.cluster.map { $0.nodes.map(\.process.pid) } ?? [stack.redis!.process.pid]
        let configFile = stack.directory.appendingPathComponent("waymark.yaml")
        try LocalSettings.write(
            to: configFile, bootstrap: stack.kafka!.bootstrapServers, redisPort: redis.port,
            topics: ["touchpoints: { partitions: \(partitions) }", "customers: { partitions: \(partitions) }"],
            sections: "worker:\n  max_batch: \(batch)\n  poll_timeout_ms: 5\n  metrics_port: 0\n",
            clusterSeeds: stack.cluster?.seeds ?? [], tls: certificates)
        let (settings, client, admin) = try await loadSettingsAndCreateTopics(configFile)

        // A recent day (live processing judges timestamps against the wall clock).
        let dayStart = RetailDay.startOfYesterdayUTC
        let day = RetailDay(seed: 11, customers: customers, dayStart: dayStart).generate()
        let profiles = day.filter { $0.kind == .profile }
        let all = day.filter { $0.kind == .touchpoint }
        guard all.count >= events else {
            throw ValidationError("\(customers) customers give only \(all.count) touchpoints; ask for fewer --events or more --customers")
        }
        let backlog = Array(all.prefix(events))
        var live = Array(all.dropFirst(events))

        var big = client
        big.properties["message.max.bytes"] = "10485760"
        let producer = try KafkaProducer(configuration: .init(client: big))
        var ends: [KafkaTopicPartition: Int64] = [:]
        func send(_ records: ArraySlice<SampleRecord>, topic: String) async throws {
            let reports = try await producer.send(records.map { KafkaProducerRecord(topic: topic, key: Array($0.key.utf8), value: $0.value) })
            for report in reports {
                if let error = report.error { throw error }
                let partition = KafkaTopicPartition(topic: report.topic, partition: report.partition)
                ends[partition] = max(ends[partition] ?? 0, report.offset + 1)
            }
        }
        for chunk in stride(from: 0, to: profiles.count, by: 50_000) {
            try await send(profiles[chunk..<min(chunk + 50_000, profiles.count)], topic: settings.kafka.customers.name)
        }
        for chunk in stride(from: 0, to: backlog.count, by: 50_000) {
            try await send(backlog[chunk..<min(chunk + 50_000, backlog.count)], topic: settings.kafka.touchpoints.name)
        }
        print("  backlog: \(profiles.count) profiles + \(backlog.count) touchpoints on \(partitions) partitions")

        // Ceilings on this stack, before the worker starts (nothing else runs meanwhile).
        let consumeCeiling = try await Ceilings.kafkaConsume(client: client, topic: settings.kafka.touchpoints.name,
                                                            partitions: Int32(partitions), records: backlog.count).recordsPerSecond
        let evalshaCeiling = try await Ceilings.evalshaPipelined(redis, calls: 200_000, depth: 100)
        let emptyMemory = try await RedisFootprint.usedMemory(redis)
        print(String(format: "  ceilings: Kafka consume %.0f records/s, pipelined EVALSHA %.0f calls/s", consumeCeiling, evalshaCeiling))
        // The broker's own produce→consume latency at the first latency phase's rate: the floor under
        // every produce→decision figure (a decision needs the touchpoint consumed first).
        var floor: (p50: Double, p99: Double)?
        if latencySeconds > 0 {
            _ = try await admin.createTopics([KafkaTopicSpec(name: "bench.latency-floor", partitions: Int32(partitions))])
            floor = try await Ceilings.brokerLatency(client: client, producer: producer, topic: "bench.latency-floor",
                                                     partitions: Int32(partitions), rate: latencyRate, seconds: 3)
            if let floor { print(String(format: "  broker floor: produce->consume at %d/s p50 %.0f ms, p99 %.0f ms (no worker)", latencyRate, floor.p50, floor.p99)) }
        }

        // Drain the backlog with the worker processes (one consumer group).
        let pool = (0..<workers).map { index in
            ManagedProcess(
                executable: siblingWaymarkBinary,
                arguments: ["worker", "journey", "--config", configFile.path, "--journeys", journeys, "--log-level", ProcessInfo.processInfo.environment["WAYMARK_BENCH_WORKER_LOG"] ?? "warning"],
                logFile: stack.directory.appendingPathComponent(index == 0 ? "worker.log" : "worker-\(index).log"))
        }
        let worker = pool[0]
        let start = ContinuousClock.now
        defer { for process in pool { process.stop() } }  // on an error below too: never leave a worker running
        for process in pool { try process.start() }
        var peakRSS = 0
        let inputs = [settings.kafka.touchpoints.name, settings.kafka.customers.name]
        var drainedAt = start
        var firstProgress: (at: ContinuousClock.Instant, lag: Int64, cpu: [Int32: Double])?
        let total = Int64(backlog.count + profiles.count)
        let endTotal = ends.values.reduce(0, +)
        // Every Redis node counts as "redis" (summed).
        let pids: [(String, Int32?)] = pool.map { ("journey worker", $0.pid) } + redisPIDs.map { ("redis", $0) } + [("broker", stack.kafka!.process.pid)]
        func cpuNow() -> [Int32: Double] {
            var out: [Int32: Double] = [:]
            for pid in pids.map(\.1) { if let pid { out[pid] = Self.cpuSeconds(pid) } }
            return out
        }
        var cpuAtEnd: [Int32: Double] = [:]
        while true {
            try await Task.sleep(for: .milliseconds(200))
            for process in pool { peakRSS = max(peakRSS, Self.peakRSS(process.pid)) }
            let committed = try await admin.committedOffsets(group: settings.kafka.journeyGroup)
                .filter { inputs.contains($0.topic) }.map(\.offset).reduce(0, +)
            let lag = endTotal - committed
            if firstProgress == nil, lag < total { firstProgress = (ContinuousClock.now, lag, cpuNow()) }
            if lag == 0 { drainedAt = ContinuousClock.now; cpuAtEnd = cpuNow(); break }
            for process in pool where !process.isRunning { throw ValidationError("worker exited: \(process.logTail())") }
            if ContinuousClock.now - start > .seconds(600) { throw ValidationError("backlog not drained in 600 s (lag \(lag))") }
        }
        let drain = drainedAt - start
        let throughput = Double(total) / drain.seconds
        let progress = firstProgress ?? (start, total, [:])
        let steadyTime = (drainedAt - progress.at).seconds
        let steady = Double(progress.lag) / steadyTime
        var cpu: [(String, Double)] = []
        for (name, pid) in pids {
            let p = pid ?? 0
            let cores = ((cpuAtEnd[p] ?? 0) - (progress.cpu[p] ?? 0)) / steadyTime
            if let index = cpu.firstIndex(where: { $0.0 == name }) { cpu[index].1 += cores } else { cpu.append((name, cores)) }
        }
        print(String(format: "  drained %d records in %.2f s (%.0f records/s incl. start and group join); steady %.0f records/s from the first commit",
                     total, drain.seconds, throughput, steady))
        print("  CPU while draining (cores): " + cpu.map { "\($0.0) " + String(format: "%.2f", $0.1) }.joined(separator: ", "))
        let footprint = try await RedisFootprint.measure(redis, emptyMemory: emptyMemory)
        print("  Redis after the drain: \(footprint.customers) customers with state, \(footprint.keys) keys, used_memory +\(footprint.usedMemory / 1_048_576) MB "
              + "(\(footprint.usedMemory / max(footprint.customers, 1)) B per customer; state value \(footprint.stateBytes / max(footprint.customers, 1)) B)")

        // Latency at fixed rates: 10k/s, then 25 % and 50 % of the steady rate just measured.
        let decisionsTopic = settings.kafka.decisions.name
        let reader = try KafkaConsumer(configuration: .init(client: client, groupID: nil))
        let decisionEnds = try await admin.endOffsets(topics: [decisionsTopic])
        try reader.assign(decisionEnds.map { KafkaTopicPartitionOffset(topic: $0.key.topic, partition: $0.key.partition, offset: $0.value.high) })
        var latency: [(rate: Int, name: String, p50: Double, p99: Double, samples: Int)] = []
        let phases = [(latencyRate, "\(latencyRate)/s"), (Int(steady * 0.25), "25% of steady"), (Int(steady * 0.5), "50% of steady")]
        var nextCustomer = customers
        for (rate, name) in phases where rate > 0 && latencySeconds > 0 {
            let wanted = rate * latencySeconds
            if live.count < wanted {  // more of the same day from new customers, with their own ids (not timed)
                var more = RetailDay(seed: UInt64(11 + latency.count + 1), customers: max(customers, wanted / 8),
                                     dayStart: dayStart)
                more.firstCustomer = nextCustomer
                nextCustomer += more.customers
                more.idPrefix = "x\(latency.count)-"
                let extra = more.generate()
                for chunk in stride(from: 0, to: extra.count, by: 50_000) {
                    let profilesChunk = extra[chunk..<min(chunk + 50_000, extra.count)].filter { $0.kind == .profile }
                    try await send(profilesChunk[...], topic: settings.kafka.customers.name)
                }
                live += extra.filter { $0.kind == .touchpoint }
                try await Task.sleep(for: .seconds(2))  // let the worker take the profiles in first
            }
            let slice = Array(live.prefix(wanted))
            live.removeFirst(min(wanted, live.count))
            let (p50, p99, samples, rss) = try await Self.latency(slice, rate: rate, producer: producer, reader: reader,
                                                                 topic: settings.kafka.touchpoints.name, worker: worker)
            peakRSS = max(peakRSS, rss)
            print("  latency at \(rate)/s (\(name)): " + String(format: "p50 %.0f ms, p99 %.0f ms (%d decisions)", p50, p99, samples))
            latency.append((rate, name, p50, p99, samples))
        }
        await reader.close()
        for process in pool { peakRSS = max(peakRSS, Self.peakRSS(process.pid)) }
        for process in pool { process.stop(grace: .seconds(20)) }
        // Keep the worker's log next to the results (stage timings at WAYMARK_BENCH_WORKER_LOG=debug).
        try? FileManager.default.createDirectory(atPath: "bench-results", withIntermediateDirectories: true)
        try? FileManager.default.removeItem(atPath: "bench-results/journey-worker.log")
        try? FileManager.default.copyItem(atPath: worker.logFile.path, toPath: "bench-results/journey-worker.log")
        print("  peak RSS of the worker: \(peakRSS / 1024) MB")
        return RunResult(consumeCeiling: consumeCeiling, evalshaCeiling: evalshaCeiling, brokerFloor: floor, steady: steady, includingStart: throughput,
                         latency: latency, peakRSSkB: peakRSS, cpu: cpu, footprint: footprint)
    }

    /// Produces `records` at `rate`/s in 10 ms slices; returns p50, p99 (ms), samples and the worker's peak RSS (kB).
    static func latency(_ records: [SampleRecord], rate: Int, producer: KafkaProducer, reader: KafkaConsumer, topic: String,
                        worker: ManagedProcess) async throws -> (Double, Double, Int, Int) {
        var producedAt: [String: Int64] = [:]
        var latencies: [Int64] = []
        var pending: [KafkaPendingDelivery] = []
        var rss = 0
        let achieved = try await Paced.run(total: records.count, rate: rate) { range in
            let slice = records[range]
            let stamp = Int64(Date().timeIntervalSince1970 * 1000)
            for record in slice { if let id = eventID(record.value) { producedAt[id] = stamp } }
            pending.append(try await producer.enqueue(slice.map { record in
                KafkaProducerRecord(topic: topic, key: Array(record.key.utf8), value: record.value, timestamp: stamp)
            }))
            latencies += collect(try await reader.poll(maxRecords: 10_000, timeout: .milliseconds(0)), &producedAt)
            rss = max(rss, peakRSS(worker.pid))
        }
        Paced.warnIfBehind(achieved, rate: rate)
        try await Paced.checkDelivered(pending)
        let tail = ContinuousClock.now + .seconds(3)
        while ContinuousClock.now < tail { latencies += collect(try await reader.poll(maxRecords: 10_000, timeout: .milliseconds(100)), &producedAt) }
        let sorted = latencies.map(Double.init).sorted()
        return (percentile(sorted, 0.5), percentile(sorted, 0.99), latencies.count, rss)
    }

    /// Prints the headline lines (stable form, one figure each) and appends the measurements.
    func report(_ runs: [RunResult], customers: Int) throws {
        func spread(_ values: [Double]) -> (median: Double, min: Double, max: Double) {
            let sorted = values.sorted()
            return (sorted[sorted.count / 2], sorted.first!, sorted.last!)
        }
        func line(_ name: String, _ values: [Double], unit: String, format: String = "%.0f") -> String {
            let s = spread(values)
            let range = values.count > 1 ? " (min \(String(format: format, s.min)), max \(String(format: format, s.max)), \(values.count) runs)" : ""
            return "\(name): \(String(format: format, s.median)) \(unit)\(range)"
        }
        let tag = "[\(label): \(events) touchpoints, \(customers) customers, batch \(batch), \(workers) worker\(workers == 1 ? "" : "s") on \(partitions) partitions, redis \(redisCluster ? "3-master cluster" : "one server")\(redisTls ? " over TLS" : "")]"
        print("\nHEADLINES \(tag)")
        var lines: [String] = []
        lines.append(line("ceiling kafka consume", runs.map(\.consumeCeiling), unit: "records/s"))
        lines.append(line("ceiling redis evalsha pipelined", runs.map(\.evalshaCeiling), unit: "calls/s"))
        lines.append(line("end-to-end journey", runs.map(\.steady), unit: "records/s (steady)"))
        lines.append(line("end-to-end journey incl. start", runs.map(\.includingStart), unit: "records/s"))
        lines.append(line("ratio journey/evalsha ceiling", runs.map { $0.steady / $0.evalshaCeiling }, unit: "", format: "%.2f"))
        lines.append(line("ratio journey/kafka consume ceiling", runs.map { $0.steady / $0.consumeCeiling }, unit: "", format: "%.3f"))
        let floors = runs.compactMap(\.brokerFloor)
        if !floors.isEmpty {
            lines.append(line("p50 broker floor produce->consume at \(latencyRate)/s", floors.map(\.p50), unit: "ms"))
            lines.append(line("p99 broker floor produce->consume at \(latencyRate)/s", floors.map(\.p99), unit: "ms"))
        }
        for (index, phase) in (runs.first?.latency ?? []).enumerated() {
            let samples = runs.compactMap { $0.latency.count > index ? $0.latency[index] : nil }
            let rates = samples.map { Double($0.rate) }
            let name = phase.name.hasSuffix("/s") ? phase.name : "\(phase.name), \(Int(spread(rates).median))/s"
            lines.append(line("p50 produce->decision at \(name)", samples.map(\.p50), unit: "ms"))
            lines.append(line("p99 produce->decision at \(name)", samples.map(\.p99), unit: "ms"))
        }
        lines.append(line("peak RSS journey worker", runs.map { Double($0.peakRSSkB) / 1024 }, unit: "MB"))
        let perCustomer = runs.map { Double($0.footprint.usedMemory) / Double(max($0.footprint.customers, 1)) }
        lines.append(line("customers with state after the drain", runs.map { Double($0.footprint.customers) }, unit: ""))
        lines.append(line("redis used_memory per customer", perCustomer, unit: "B"))
        lines.append(line("redis used_memory per million customers", perCustomer.map { $0 * 1_000_000 / 1_048_576 }, unit: "MB"))
        lines.append(line("state bytes per customer", runs.map { Double($0.footprint.stateBytes) / Double(max($0.footprint.customers, 1)) }, unit: "B"))
        for (index, entry) in (runs.first?.cpu ?? []).enumerated() {
            lines.append(line("cores used while draining: \(entry.process)", runs.map { $0.cpu[index].cores }, unit: "", format: "%.2f"))
        }
        // Per-core efficiency of the journey workers (all of them together), comparable across worker counts.
        let perCore = runs.map { run in run.steady / max(run.cpu.first { $0.process == "journey worker" }?.cores ?? 0, 0.01) }
        lines.append(line("journey records/s per worker core", perCore, unit: "records/s"))
        for l in lines { print(l) }
        var measurements: [Measurement] = []
        for (i, run) in runs.enumerated() {
            let d = "\(tag) run \(i + 1)"
            measurements += [
                Measurement(benchmark: "journey", metric: "throughput steady", value: run.steady, unit: "records/s", detail: d),
                Measurement(benchmark: "journey", metric: "ratio to evalsha ceiling", value: run.steady / run.evalshaCeiling, unit: "ratio", detail: d),
                Measurement(benchmark: "journey", metric: "ratio to kafka consume ceiling", value: run.steady / run.consumeCeiling, unit: "ratio", detail: d),
                Measurement(benchmark: "journey", metric: "peak RSS", value: Double(run.peakRSSkB) / 1024, unit: "MB", detail: d),
                Measurement(benchmark: "journey", metric: "redis used_memory per customer", value: Double(run.footprint.usedMemory) / Double(max(run.footprint.customers, 1)),
                            unit: "B", detail: "\(d), \(run.footprint.customers) customers"),
                Measurement(benchmark: "journey", metric: "state bytes per customer", value: Double(run.footprint.stateBytes) / Double(max(run.footprint.customers, 1)),
                            unit: "B", detail: "\(d), \(run.footprint.customers) customers"),
            ]
            if let floor = run.brokerFloor {
                measurements.append(Measurement(benchmark: "journey", metric: "broker floor p50 at \(latencyRate)/s", value: floor.p50, unit: "ms", detail: d))
                measurements.append(Measurement(benchmark: "journey", metric: "broker floor p99 at \(latencyRate)/s", value: floor.p99, unit: "ms", detail: d))
            }
            for phase in run.latency {
                measurements.append(Measurement(benchmark: "journey", metric: "p50 at \(phase.rate)/s", value: phase.p50, unit: "ms", detail: d))
                measurements.append(Measurement(benchmark: "journey", metric: "p99 at \(phase.rate)/s", value: phase.p99, unit: "ms", detail: d))
            }
        }
        try appendResults(measurements, quiet: true)
    }

    /// Latencies (ms) from producing an event to the first decision it caused. Later decisions with the
    /// same cause (a message released by the scheduler at the end of quiet hours, say) are deliberate
    /// delays, not processing latency, and are not counted.
    static func collect(_ batch: [KafkaConsumerRecord], _ producedAt: inout [String: Int64]) -> [Int64] {
        batch.compactMap { record in
            guard let value = record.value, let cause = field("caused_by", in: value), let sent = producedAt.removeValue(forKey: cause) else { return nil }
            return record.timestamp - sent
        }
    }

    static func eventID(_ bytes: [UInt8]) -> String? { field("event_id", in: bytes[...]) }

    /// The string value of `"name":"…"` in a compact JSON document (benchmark-side, cheap).
    static func field(_ name: String, in bytes: ArraySlice<UInt8>) -> String? {
        let needle = Array("\"\(name)\":\"".utf8)
        guard let start = bytes.firstRange(of: needle)?.upperBound,
              let end = bytes[start...].firstIndex(of: UInt8(ascii: "\"")) else { return nil }
        return String(decoding: bytes[start..<end], as: UTF8.self)
    }

    /// Peak resident set size (kB) of `pid`, from /proc.
    static func peakRSS(_ pid: Int32?) -> Int {
        guard let pid, let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
        }
        return 0
    }

    /// CPU seconds (user + system) `pid` has used, from /proc/PID/stat (clock ticks of 1/100 s).
    static func cpuSeconds(_ pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// This machine's ceilings, measured on the benchmark's own stack (the ratios' denominators).
enum Ceilings {
    /// Records/s a groupless consumer reads `topic` from the beginning (first record to the `records`-th),
    /// and how many it read (fewer than `records` if 120 s passed first).
    static func kafkaConsume(client: KafkaClientConfiguration, topic: String, partitions: Int32,
                             records: Int) async throws -> (recordsPerSecond: Double, consumed: Int) {
        let consumer = try KafkaConsumer(configuration: .init(client: client, groupID: nil))
        try consumer.assign((0..<partitions).map { KafkaTopicPartitionOffset(topic: topic, partition: $0, offset: KafkaOffset.beginning) })
        var consumed = 0
        var first: ContinuousClock.Instant?
        let deadline = ContinuousClock.now + .seconds(120)
        while consumed < records, ContinuousClock.now < deadline {
            let batch = try await consumer.poll(maxRecords: 10_000, timeout: .milliseconds(500))
            if first == nil, !batch.isEmpty { first = ContinuousClock.now }
            consumed += batch.count
        }
        let elapsed = ContinuousClock.now - (first ?? ContinuousClock.now)
        await consumer.close()
        return (Double(consumed) / max(elapsed.seconds, 0.001), consumed)
    }

    /// Produce→consume latency (p50, p99 in ms) through the broker alone: `rate` records/s of 200 B
    /// produced in 10 ms slices (as the latency phases do) for `seconds`, read by a groupless consumer;
    /// latency from the produce call to the record's arrival in a poll.
    static func brokerLatency(client: KafkaClientConfiguration, producer: KafkaProducer, topic: String, partitions: Int32,
                              rate: Int, seconds: Int) async throws -> (p50: Double, p99: Double) {
        let reader = try KafkaConsumer(configuration: .init(client: client, groupID: nil))
        try reader.assign((0..<partitions).map { KafkaTopicPartitionOffset(topic: topic, partition: $0, offset: KafkaOffset.end) })
        _ = try await reader.poll(maxRecords: 1, timeout: .milliseconds(500))  // fetch positions settle
        var latencies: [Double] = []
        func collect(_ records: [KafkaConsumerRecord]) {
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            for record in records { latencies.append(Double(now - record.timestamp)) }
        }
        let total = rate * seconds
        let filler = [UInt8](repeating: UInt8(ascii: "x"), count: 200)
        var pending: [KafkaPendingDelivery] = []
        let achieved = try await Paced.run(total: total, rate: rate) { range in
            let stamp = Int64(Date().timeIntervalSince1970 * 1000)
            pending.append(try await producer.enqueue(range.map { i in
                KafkaProducerRecord(topic: topic, key: Array("k\(i)".utf8), value: filler, timestamp: stamp)
            }))
            collect(try await reader.poll(maxRecords: 10_000, timeout: .milliseconds(0)))
        }
        Paced.warnIfBehind(achieved, rate: rate)
        try await Paced.checkDelivered(pending)
        let tail = ContinuousClock.now + .seconds(2)
        while ContinuousClock.now < tail, latencies.count < total { collect(try await reader.poll(maxRecords: 10_000, timeout: .milliseconds(50))) }
        await reader.close()
        latencies.sort()
        return (percentile(latencies, 0.5), percentile(latencies, 0.99))
    }

    /// The script ENVIRONMENT.md measured: HINCRBY + ZADD + 2×EXPIRE, on 50,000 customers' keys.
    static let script = RedisScript(name: "bench", source: """
        redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
        redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
        redis.call('EXPIRE', KEYS[1], 86400)
        redis.call('EXPIRE', KEYS[2], 86400)
        return 1
        """)

    static func command(_ i: Int) -> RedisCommand {
        let customer = "c-\(i % 50_000)"
        return .evalsha(script, keys: ["bench:{\(customer)}:h", "bench:{\(customer)}:z"], arguments: ["f\(i % 7)", i])
    }

    /// Calls/s of that script, `depth` per pipeline, one connection through `redis` (one server, or a
    /// cluster: each pipeline split over the masters); the keys are flushed afterwards.
    static func evalshaPipelined(_ redis: RedisConfiguration, calls: Int, depth: Int) async throws -> Double {
        let connection = try await RedisConnection.connect(redis)
        _ = try await connection.pipeline((0..<depth).map(command))  // loads the script
        let t0 = ContinuousClock.now
        var i = 0
        while i < calls {
            let n = min(depth, calls - i)
            _ = try await connection.pipeline((i..<(i + n)).map(command))
            i += n
        }
        let elapsed = ContinuousClock.now - t0
        _ = try await connection.sendToEveryMaster(RedisCommand("FLUSHDB"))  // the worker has not started: only these keys exist
        await connection.close()
        return Double(calls) / elapsed.seconds
    }
}

/// What customers' journey state costs in Redis, for sizing: `used_memory` grown since the empty
/// database, per customer with a state key, and the state values' own bytes.
struct RedisFootprint {
    /// Bytes of `used_memory` added since the worker started (state, profiles, outbox, indexes, decision lists).
    var usedMemory: Int
    var customers: Int
    var keys: Int
    /// Sum of the state values' lengths.
    var stateBytes: Int

    /// `used_memory` summed over every master.
    static func usedMemory(_ redis: RedisConfiguration) async throws -> Int {
        let connection = try await RedisConnection.connect(redis)
        let infos = try await connection.sendToEveryMaster("INFO", "memory")
        await connection.close()
        var total = 0
        for (_, reply) in infos {
            let line = (reply.string ?? "").split(whereSeparator: \.isNewline).first { $0.hasPrefix("used_memory:") }
            guard let value = line.flatMap({ Int($0.dropFirst("used_memory:".count)) }) else {
                throw ValidationError("INFO memory has no used_memory line")
            }
            total += value
        }
        return total
    }

    /// Counts state keys with SCAN on every master and sums their encoded states (field `s`).
    static func measure(_ redis: RedisConfiguration, emptyMemory: Int) async throws -> RedisFootprint {
        let cluster = try await RedisConnection.connect(redis)
        let masters = try await cluster.sendToEveryMaster("PING").map(\.endpoint)
        await cluster.close()
        var total = RedisFootprint(usedMemory: -emptyMemory, customers: 0, keys: 0, stateBytes: 0)
        for master in masters {
            guard let (host, port) = RedisConfiguration.parseEndpoint(master) else { continue }
            let node = RedisConfiguration(host: host, port: port, password: redis.password, tls: redis.tls)
            let one = try await measureNode(node)
            total.usedMemory += try await usedMemory(node)
            total.customers += one.customers
            total.keys += one.keys
            total.stateBytes += one.stateBytes
        }
        return total
    }

    /// One server's keys, customers with state and state bytes.
    private static func measureNode(_ node: RedisConfiguration) async throws -> RedisFootprint {
        let connection = try await RedisConnection.connect(node)
        defer { Task { await connection.close() } }
        let keys = Int(try await connection.send("DBSIZE").integer ?? 0)
        var cursor = "0", customers = 0, stateBytes = 0
        repeat {
            let reply = try await connection.send("SCAN", cursor, "MATCH", "*:st:*", "COUNT", 10_000).array ?? []
            guard reply.count == 2, let next = reply[0].string, let found = reply[1].array else { throw ValidationError("unexpected SCAN reply") }
            cursor = next
            let names = found.compactMap(\.string)
            customers += names.count
            if !names.isEmpty {
                for length in try await connection.pipeline(names.map { RedisCommand("HSTRLEN", $0, "s") }) { stateBytes += Int(length.integer ?? 0) }
            }
        } while cursor != "0"
        return RedisFootprint(usedMemory: 0, customers: customers, keys: keys, stateBytes: stateBytes)
    }
}
