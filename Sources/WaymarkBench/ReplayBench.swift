import ArgumentParser
import Foundation
import WaymarkConfig
import WaymarkControl
import WaymarkEngine
import WaymarkKafka
import WaymarkLocalStack
import WaymarkSample

/// How long a dry-run replay of N events takes: read from Kafka, parse, replay under two rule sets, compare.
struct ReplayBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Dry-run replay of a large history (read, parse, replay twice, compare).",
        discussion: "Examples:\n  waymark-bench replay --events 1000000")

    @Option(help: "Touchpoints in the history.") var events = 1_000_000
    @Option(help: "Directory with rules.yaml and journeys/.") var journeys = "config"

    func run() async throws {
        bootstrapBenchLogging()
        let engine = try JourneyLoader.loadEngine(configDirectory: journeys)
        try await LocalStack.with { stack in
            let client = KafkaClientConfiguration(bootstrapServers: stack.kafka!.bootstrapServers, properties: KafkaClientConfiguration.localTuning)
            let admin = try KafkaAdmin(client: client)
            _ = try await admin.createTopics([KafkaTopicSpec(name: "touchpoints", partitions: 6), KafkaTopicSpec(name: "customers", partitions: 6)])
            print("Generating and producing \(events) touchpoints…")
            let day = RetailDay(seed: 3, customers: events / 10 + 1).generate()
            let producer = try KafkaProducer(configuration: .init(client: client))
            let touchpoints = day.filter { $0.kind == .touchpoint }.prefix(events)
            let profiles = day.filter { $0.kind == .profile }
            for (topic, records) in [("customers", ArraySlice(profiles)), ("touchpoints", ArraySlice(touchpoints))] {
                for chunk in stride(from: records.startIndex, to: records.endIndex, by: 50_000) {
                    try await producer.sendAll(records[chunk..<min(chunk + 50_000, records.endIndex)].map {
                        KafkaProducerRecord(topic: topic, key: Array($0.key.utf8), value: $0.value)
                    })
                }
            }
            let first = Timestamp(milliseconds: touchpoints.first!.timestamp)
            let started = ContinuousClock.now
            let history = try await ReplayDryRun.readHistory(client: client, admin: admin, touchpointTopics: ["touchpoints"],
                                                             customersTopic: "customers", outboundTopics: [])
            let read = ContinuousClock.now - started
            var dryRun = ReplayDryRun(current: engine, proposed: engine, from: first.adding(.hours(12)), to: first.adding(.days(2)))
            dryRun.baseline = .replay
            let report = dryRun.run(events: history.events, profiles: history.profiles, published: [])
            let total = ContinuousClock.now - started
            print(String(format: "Replayed %d events (%d customers): read+parse %.1f s, replay twice and compare %.1f s, total %.1f s",
                         report.eventsRead, report.customers, read.seconds, (total - read).seconds, total.seconds))
            try appendResults([
                Measurement(benchmark: "replay", metric: "dry run", value: total.seconds, unit: "s",
                            detail: "\(report.eventsRead) events from Kafka, current and new rules, compare"),
                Measurement(benchmark: "replay", metric: "rate", value: Double(report.eventsRead) / total.seconds, unit: "events/s", detail: "end to end"),
            ])
        }
    }
}
