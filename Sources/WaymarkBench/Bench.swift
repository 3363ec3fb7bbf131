import ArgumentParser
import Foundation
import Logging
import WaymarkChaos
import WaymarkConfig
import WaymarkControl
import WaymarkKafka
import WaymarkLocalStack
import WaymarkRedis

@main
struct WaymarkBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "waymark-bench",
        abstract: "Rerunnable benchmarks of Waymark's clients and engine on a local broker and Redis.",
        discussion: """
            Each benchmark starts its own redis-server and Tansu broker on free loopback ports and stops \
            them afterwards. Results are printed and appended as JSON lines to bench-results/results.jsonl.

            Examples:
              waymark-bench clients                 # Kafka produce/consume and Redis pipeline rates
              waymark-bench clients --messages 1000000
            """,
        subcommands: [Clients.self, Engine.self, Journey.self, Pipeline.self, ReplayBenchmark.self, Crash.self])
}

/// One measured figure.
struct Measurement: Codable {
    var benchmark: String
    var metric: String
    var value: Double
    var unit: String
    var detail: String
}

/// Prints measurements as a table (unless `quiet`) and appends them to bench-results/results.jsonl.
func appendResults(_ measurements: [Measurement], quiet: Bool = false) throws {
    let widths = [38, 14, 10]
    if !quiet { print("BENCHMARK".padding(toLength: widths[0], withPad: " ", startingAt: 0) + "VALUE".padding(toLength: widths[1], withPad: " ", startingAt: 0) + "UNIT".padding(toLength: widths[2], withPad: " ", startingAt: 0) + "DETAIL") }
    for m in measurements where !quiet {
        let value = m.value >= 1000 ? String(format: "%.0f", m.value) : String(format: "%.2f", m.value)
        print("\(m.benchmark) \(m.metric)".padding(toLength: widths[0], withPad: " ", startingAt: 0)
              + value.padding(toLength: widths[1], withPad: " ", startingAt: 0)
              + m.unit.padding(toLength: widths[2], withPad: " ", startingAt: 0) + m.detail)
    }
    try FileManager.default.createDirectory(atPath: "bench-results", withIntermediateDirectories: true)
    let path = "bench-results/results.jsonl"
    if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    try handle.seekToEnd()
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys
    let stamp = ISO8601DateFormatter().string(from: Date())
    for m in measurements {
        var line = try encoder.encode(m)
        line.removeLast()  // "}"
        line.append(contentsOf: Array(",\"at\":\"\(stamp)\"}\n".utf8))
        try handle.write(contentsOf: line)
    }
    try handle.close()
}


struct Clients: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Raw ceilings: librdkafka produce/consume from Swift, Redis pipelined script and SET rates.")

    @Option(help: "Kafka messages to produce and consume.") var messages = 500_000
    @Option(help: "Payload size in bytes.") var size = 200
    @Option(help: "Partitions of the benchmark topic.") var partitions: Int32 = 3
    @Option(help: "Redis script calls.") var scriptCalls = 500_000
    @Option(help: "Commands per Redis pipeline.") var depth = 100

    func run() async throws {
        bootstrapBenchLogging()
        var results: [Measurement] = []
        try await LocalStack.with { stack in
            results += try await kafka(stack.kafka!.bootstrapServers)
            results += try await redis(port: stack.redis!.port)
        }
        try appendResults(results)
    }

    func kafka(_ bootstrap: String) async throws -> [Measurement] {
        let client = KafkaClientConfiguration(bootstrapServers: bootstrap, properties: KafkaClientConfiguration.localTuning)
        let admin = try KafkaAdmin(client: client)
        _ = try await admin.createTopics([KafkaTopicSpec(name: "bench", partitions: partitions)])
        let producer = try KafkaProducer(configuration: .init(client: client))
        let payload = [UInt8](repeating: UInt8(ascii: "x"), count: size)
        let chunk = 50_000
        let start = ContinuousClock.now
        // Keep two chunks in flight, as a pipelined worker would.
        try await withThrowingTaskGroup(of: Void.self) { group in
            var sent = 0
            var inFlight = 0
            while sent < messages {
                let n = min(chunk, messages - sent)
                let base = sent
                let records = (0..<n).map { i in
                    KafkaProducerRecord(topic: "bench", key: Array("c-\((base + i) % 10_007)".utf8), value: payload)
                }
                group.addTask { try await producer.sendAll(records) }
                sent += n
                inFlight += 1
                if inFlight >= 2 { try await group.next(); inFlight -= 1 }
            }
            try await group.waitForAll()
        }
        let produceTime = ContinuousClock.now - start

        let (consumeRate, consumed) = try await Ceilings.kafkaConsume(client: client, topic: "bench", partitions: partitions, records: messages)
        let detail = "\(messages) × \(size) B, \(partitions) partitions, acks=all idempotent"
        return [
            Measurement(benchmark: "kafka", metric: "produce", value: Double(messages) / produceTime.seconds, unit: "msg/s", detail: detail),
            Measurement(benchmark: "kafka", metric: "consume", value: consumeRate, unit: "msg/s",
                        detail: "\(consumed) records, batches of ≤ 10k (first record to last)"),
        ]
    }

    func redis(port: Int) async throws -> [Measurement] {
        let connection = try await RedisConnection.connect(RedisConfiguration(host: "127.0.0.1", port: port))
        // The shape ENVIRONMENT.md measured (the journey benchmark's ceiling uses the same script).
        let command = Ceilings.command
        // Unpipelined: one round trip per call.
        let single = min(scriptCalls / 10, 50_000)
        var t0 = ContinuousClock.now
        for i in 0..<single { _ = try await connection.send(command(i)) }
        let singleTime = ContinuousClock.now - t0

        let pipelined = try await Ceilings.evalshaPipelined(RedisConfiguration(host: "127.0.0.1", port: port), calls: scriptCalls, depth: depth)

        t0 = ContinuousClock.now
        let sets = scriptCalls * 2
        var i = 0
        while i < sets {
            let n = min(1_000, sets - i)
            _ = try await connection.pipeline((i..<(i + n)).map { RedisCommand("SET", "k\($0 % 100_000)", "v") })
            i += n
        }
        let setTime = ContinuousClock.now - t0
        await connection.close()
        return [
            Measurement(benchmark: "redis", metric: "evalsha unpipelined", value: Double(single) / singleTime.seconds,
                        unit: "calls/s", detail: "\(single) calls, one round trip each"),
            Measurement(benchmark: "redis", metric: "evalsha pipelined", value: pipelined,
                        unit: "calls/s", detail: "\(scriptCalls) calls, \(depth) per pipeline"),
            Measurement(benchmark: "redis", metric: "SET pipelined", value: Double(sets) / setTime.seconds,
                        unit: "cmd/s", detail: "\(sets) commands, 1000 per pipeline"),
        ]
    }
}

struct Crash: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Crash test: stream events through worker processes while killing and pausing things; audit the result.",
        discussion: """
            Exits non-zero if any event is missing from state, any message was decided twice with different \
            effects, or any cap or quiet-hour rule was broken.

            Examples:
              waymark-bench crash                                  # full size: 200k events, 5 kills
              waymark-bench crash --events 20000 --rate 2000       # the CI size
              waymark-bench crash --redis-cluster                  # on a 3-master cluster with replicas: kill -9 a master
            """)

    @Option(help: "Touchpoints to stream.") var events = 200_000
    @Option(help: "Touchpoints produced per second.") var rate = 10_000
    @Option(help: "kill -9 of journey workers.") var kills = 5
    @Option(help: "Journey worker processes.") var workers = 2
    @Option(help: "Directory with rules.yaml and journeys/.") var journeys = "config"
    @Flag(help: "Redis Cluster (3 masters, a replica each, writes confirmed by WAIT); kill -9 a master instead of pausing Redis.")
    var redisCluster = false

    func run() async throws {
        bootstrapBenchLogging()
        var config = CrashTestConfiguration(waymarkBinary: siblingWaymarkBinary, journeysDirectory: journeys)
        config.redisCluster = redisCluster
        config.events = events
        config.produceRate = rate
        config.journeyKills = kills
        config.journeyWorkers = workers
        let report = try await CrashTest.run(config)
        print(report.render())
        try appendResults([
            Measurement(benchmark: redisCluster ? "crash-cluster" : "crash", metric: "events", value: Double(report.events), unit: "events", detail: "\(report.kills) kills; \(report.pauses.joined(separator: "; "))"),
            Measurement(benchmark: redisCluster ? "crash-cluster" : "crash", metric: "violations", value: Double(report.violations.count), unit: "count", detail: "must be 0"),
        ])
        if !report.violations.isEmpty { throw ExitCode(1) }
    }
}

/// Warnings and errors to stderr: benchmarks print their own results.
func bootstrapBenchLogging() {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = .warning
        return handler
    }
}

/// Loads the settings file a benchmark wrote for its stack and creates Waymark's topics on its broker.
func loadSettingsAndCreateTopics(_ configFile: URL) async throws -> (WaymarkSettings, KafkaClientConfiguration, KafkaAdmin) {
    let settings = try WaymarkSettings.load(path: configFile.path)
    let client = KafkaClientConfiguration(bootstrapServers: settings.kafka.bootstrapServers, properties: KafkaClientConfiguration.localTuning)
    let admin = try KafkaAdmin(client: client)
    _ = try await TopicSetup(settings: settings.kafka).apply(admin: admin)
    return (settings, client, admin)
}

/// The `waymark` executable built next to this one (worker processes for crash and end-to-end runs).
var siblingWaymarkBinary: String {
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("waymark").path
}

/// The benches' fixed-rate producer loop: `0..<total` in slices of `rate / 100` (100 slices a second),
/// each handed to `body` on time. Records are handed over without waiting for the broker's
/// acknowledgement (``KafkaProducer/enqueue(_:)``): waiting per slice paced the loop by the broker's
/// round trip, below the rate asked for (a 10 ms slice waited ~40 ms on Tansu).
enum Paced {
    /// Runs the loop; returns the rate achieved (records/s).
    static func run(total: Int, rate: Int, _ body: (Range<Int>) async throws -> Void) async throws -> Double {
        let chunk = max(rate / 100, 1)
        let begin = ContinuousClock.now
        for offset in stride(from: 0, to: total, by: chunk) {
            try await body(offset..<min(offset + chunk, total))
            let due = begin + .milliseconds(Int64(Double(offset + chunk) / Double(rate) * 1000))
            if ContinuousClock.now < due { try await Task.sleep(until: due) }
        }
        return Double(total) / max((ContinuousClock.now - begin).seconds, 0.001)
    }

    /// Says so when the loop fell more than 5 % behind `rate`.
    static func warnIfBehind(_ achieved: Double, rate: Int) {
        if achieved < Double(rate) * 0.95 { print(String(format: "  (produced at %.0f/s only: the bench's producer could not keep up)", achieved)) }
    }

    /// Throws the first delivery error of the slices handed over.
    static func checkDelivered(_ pending: [KafkaPendingDelivery]) async throws {
        for delivery in pending {
            for report in try await delivery.reports() { if let error = report.error { throw error } }
        }
    }
}

/// The `p` quantile (0…1) of ascending `sorted` values; NaN when empty.
func percentile(_ sorted: [Double], _ p: Double) -> Double {
    sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}
