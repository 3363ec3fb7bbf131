import ArgumentParser
import Foundation
import Logging
import WaymarkChaos
import WaymarkConfig
import WaymarkControl
import WaymarkKafka
import WaymarkLocalStack
import WaymarkSample

/// End to end through one journey worker process: sustained throughput on a backlog, latency at a
/// fixed rate, and the worker's peak RSS.
struct Journey: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "End-to-end journey worker benchmark (throughput, latency, peak RSS).",
        discussion: """
            Phase 1 (throughput): a backlog of generated touchpoints is produced first; one `waymark worker \
            journey` process (release build next to this binary) drains it; events/s = backlog / drain time.
            Phase 2 (latency): touchpoints are produced at a fixed rate; latency is the time from produce to \
            the worker's publish of the first decision each caused (Kafka timestamps of both records; later \
            decisions of the same cause, such as releases after quiet hours, are intended delays).

            Examples:
              waymark-bench journey
              waymark-bench journey --events 1000000 --latency-rate 10000 --latency-seconds 30
            """)

    @Option(help: "Backlog size for the throughput phase.") var events = 500_000
    @Option(help: "Touchpoints per second in the latency phase.") var latencyRate = 10_000
    @Option(help: "Duration of the latency phase in seconds.") var latencySeconds = 20
    @Option(help: "Partitions of the touchpoints topic.") var partitions = 6
    @Option(help: "Directory with rules.yaml and journeys/.") var journeys = "config"

    func run() async throws {
        bootstrapBenchLogging()
        let stack = try await LocalStack.start()
        defer { stack.stop() }
        let configFile = stack.directory.appendingPathComponent("waymark.yaml")
        try LocalSettings.write(
            to: configFile, bootstrap: stack.kafka!.bootstrapServers, redisPort: stack.redis!.port,
            topics: ["touchpoints: { partitions: \(partitions) }", "customers: { partitions: \(partitions) }"],
            sections: "worker:\n  max_batch: 10000\n  poll_timeout_ms: 5\n  metrics_port: 0\n")
        let settings = try WaymarkSettings.load(path: configFile.path)
        let client = KafkaClientConfiguration(bootstrapServers: settings.kafka.bootstrapServers, properties: KafkaClientConfiguration.localTuning)
        let admin = try KafkaAdmin(client: client)
        _ = try await TopicSetup(settings: settings.kafka).apply(admin: admin)

        // A recent day (live processing judges timestamps against the wall clock).
        let dayMs: Int64 = 86_400_000
        let nowMs = Int64(Date().timeIntervalSince1970 * 1000)
        let customers = max((events + latencyRate * latencySeconds) / 10, 100)
        print("Generating \(customers) customers' day…")
        let day = RetailDay(seed: 11, customers: customers, dayStart: nowMs / dayMs * dayMs - dayMs).generate()
        let profiles = day.filter { $0.kind == .profile }
        let all = day.filter { $0.kind == .touchpoint }
        let backlog = Array(all.prefix(events))
        let live = Array(all.dropFirst(events).prefix(latencyRate * latencySeconds))

        var big = client
        big.properties["message.max.bytes"] = "10485760"
        let producer = try KafkaProducer(configuration: .init(client: big))
        // End offsets straight from the delivery reports: watching the drain then costs one committed-offsets
        // request per poll instead of a short-lived consumer (which would steal CPU from the worker measured).
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
        print("Backlog: \(profiles.count) profiles + \(backlog.count) touchpoints on \(partitions) partitions")

        // Phase 1: drain the backlog with one worker process.
        let worker = ManagedProcess(
            executable: siblingWaymarkBinary,
            arguments: ["worker", "journey", "--config", configFile.path, "--journeys", journeys, "--log-level", ProcessInfo.processInfo.environment["WAYMARK_BENCH_WORKER_LOG"] ?? "warning"],
            logFile: stack.directory.appendingPathComponent("worker.log"))
        let start = ContinuousClock.now
        try worker.start()
        var peakRSS = 0
        let inputs = [settings.kafka.touchpoints.name, settings.kafka.customers.name]
        var drainedAt = start
        var firstProgress: (at: ContinuousClock.Instant, lag: Int64)?
        let total = Int64(backlog.count + profiles.count)
        let endTotal = ends.values.reduce(0, +)
        while true {
            try await Task.sleep(for: .milliseconds(200))
            peakRSS = max(peakRSS, Self.peakRSS(worker.pid))
            let committed = try await admin.committedOffsets(group: settings.kafka.journeyGroup)
                .filter { inputs.contains($0.topic) }.map(\.offset).reduce(0, +)
            let lag = endTotal - committed
            if firstProgress == nil, lag < total { firstProgress = (ContinuousClock.now, lag) }
            if lag == 0 { drainedAt = ContinuousClock.now; break }
            if !worker.isRunning { throw ValidationError("worker exited: \(worker.logTail())") }
            if ContinuousClock.now - start > .seconds(600) { throw ValidationError("backlog not drained in 600 s (lag \(lag))") }
        }
        let drain = drainedAt - start
        let throughput = Double(total) / drain.seconds
        let progress = firstProgress ?? (start, total)
        let steady = Double(progress.lag) / (drainedAt - progress.at).seconds
        print(String(format: "Throughput: %d records drained in %.2f s including start-up and group join (%.0f records/s); %.0f records/s from the first commit on",
                     total, drain.seconds, throughput, steady))

        // Phase 2: fixed rate; latency from produce to the worker's publish of the caused decisions.
        let decisionsTopic = settings.kafka.decisions.name
        let reader = try KafkaConsumer(configuration: .init(client: client, groupID: nil))
        let decisionEnds = try await admin.endOffsets(topics: [decisionsTopic])
        try reader.assign(decisionEnds.map { KafkaTopicPartitionOffset(topic: $0.key.topic, partition: $0.key.partition, offset: $0.value.high) })
        var producedAt: [String: Int64] = [:]
        let liveStart = ContinuousClock.now
        let chunk = max(latencyRate / 100, 1)  // 10 ms slices
        var latencies: [Int64] = []
        for offset in stride(from: 0, to: live.count, by: chunk) {
            let slice = live[offset..<min(offset + chunk, live.count)]
            let stamp = Int64(Date().timeIntervalSince1970 * 1000)
            try await producer.sendAll(slice.map { record in
                KafkaProducerRecord(topic: settings.kafka.touchpoints.name, key: Array(record.key.utf8), value: record.value, timestamp: stamp)
            })
            for record in slice {
                if let id = Self.eventID(record.value) { producedAt[id] = stamp }
            }
            latencies += Self.collect(try await reader.poll(maxRecords: 10_000, timeout: .milliseconds(0)), &producedAt)
            peakRSS = max(peakRSS, Self.peakRSS(worker.pid))
            let due = liveStart + .milliseconds(Int64(Double(offset + chunk) / Double(latencyRate) * 1000))
            if ContinuousClock.now < due { try await Task.sleep(until: due) }
        }
        let tail = ContinuousClock.now + .seconds(3)
        while ContinuousClock.now < tail { latencies += Self.collect(try await reader.poll(maxRecords: 10_000, timeout: .milliseconds(100)), &producedAt) }
        await reader.close()
        peakRSS = max(peakRSS, Self.peakRSS(worker.pid))
        worker.stop(grace: .seconds(20))
        // Keep the worker's log next to the results (stage timings at --log-level debug).
        try? FileManager.default.createDirectory(atPath: "bench-results", withIntermediateDirectories: true)
        try? FileManager.default.removeItem(atPath: "bench-results/journey-worker.log")
        try? FileManager.default.copyItem(atPath: worker.logFile.path, toPath: "bench-results/journey-worker.log")
        latencies.sort()
        func pct(_ p: Double) -> Double { latencies.isEmpty ? .nan : Double(latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]) }
        print(String(format: "Latency at %d/s: %d decisions measured, p50 %.0f ms, p99 %.0f ms, max %.0f ms", latencyRate, latencies.count, pct(0.5), pct(0.99), pct(1.0)))
        print("Peak RSS of the worker: \(peakRSS / 1024) MB")
        try appendResults([
            Measurement(benchmark: "journey", metric: "throughput steady", value: steady, unit: "records/s",
                        detail: "\(backlog.count) touchpoints + \(profiles.count) profiles, one worker process, \(partitions) partitions, from first commit"),
            Measurement(benchmark: "journey", metric: "throughput incl. start", value: throughput, unit: "records/s",
                        detail: "process start and group join (Tansu holds the first JoinGroup ~3 s) included"),
            Measurement(benchmark: "journey", metric: "latency p50", value: pct(0.5), unit: "ms", detail: "at \(latencyRate)/s, produce → decision published"),
            Measurement(benchmark: "journey", metric: "latency p99", value: pct(0.99), unit: "ms", detail: "at \(latencyRate)/s, \(latencies.count) samples"),
            Measurement(benchmark: "journey", metric: "peak RSS", value: Double(peakRSS) / 1024, unit: "MB", detail: "VmHWM of the worker process"),
        ])
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
}
