import ArgumentParser
import Foundation
import WaymarkConfig
import WaymarkControl
import WaymarkKafka
import WaymarkWorkers

struct Topics: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, list, describe and delete Waymark's Kafka topics.",
        subcommands: [Apply.self, List.self, Describe.self, Delete.self])

    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create or update every topic declared in the settings (idempotent).",
            discussion: """
                Creates missing topics, grows partition counts and sets differing topic configs. \
                Prints what changed; prints nothing to change when the cluster already matches.

                Examples:
                  waymark topics apply
                  waymark topics apply --config /etc/waymark/waymark.yaml --json
                """)
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print changes as JSON.") var json = false

        func run() async throws {
            global.bootstrapLogging()
            let (settings, admin) = try global.settingsAndAdmin()
            let changes = try await TopicSetup(settings: settings.kafka).apply(admin: admin)
            if json {
                try printJSON(changes.map { ["topic": $0.topic, "action": $0.action.rawValue, "detail": $0.detail] })
            } else if changes.isEmpty {
                print("Topics already match \(global.config): nothing to change.")
            } else {
                print(table([["TOPIC", "CHANGE", "DETAIL"]] + changes.map { [$0.topic, $0.action.rawValue, $0.detail] }))
            }
            if changes.contains(where: { $0.action == .failed }) { throw ExitCode(3) }  // runtime failure
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List topics on the cluster with their partition counts.",
            discussion: "Examples:\n  waymark topics list\n  waymark topics list --json")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print as JSON.") var json = false

        func run() async throws {
            global.bootstrapLogging()
            let (settings, admin) = try global.settingsAndAdmin()
            let topics = try await admin.describeTopics(nil)
            let declared = Set(settings.kafka.allTopics.map(\.name))
            if json {
                try printJSON(topics.map { TopicRow(name: $0.name, partitions: $0.partitions.count, declared: declared.contains($0.name)) })
            } else {
                print(table([["TOPIC", "PARTITIONS", "DECLARED"]] + topics.map {
                    [$0.name, "\($0.partitions.count)", declared.contains($0.name) ? "yes" : "no"]
                }))
            }
        }
    }

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a topic's partitions, leaders and configs.",
            discussion: "Examples:\n  waymark topics describe touchpoints\n  waymark topics describe outbound.sms --json")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print as JSON.") var json = false
        @Argument(help: "Topic name.") var name: String

        func run() async throws {
            global.bootstrapLogging()
            let (_, admin) = try global.settingsAndAdmin()
            guard let topic = try await admin.describeTopics([name]).first else {
                printError("topic '\(name)' does not exist")
                throw ExitCode(1)  // not found (the README's exit statuses)
            }
            let configs = try await admin.describeConfigs(topic: name)
            let ends = try await admin.endOffsets(topics: [name])
            if json {
                try printJSON(TopicDetail(
                    name: name, configs: configs,
                    partitions: topic.partitions.map { p in
                        let marks = ends[KafkaTopicPartition(topic: name, partition: p.id)]
                        return .init(id: p.id, leader: p.leader, replicas: p.replicas, low: marks?.low ?? -1, high: marks?.high ?? -1)
                    }))
            } else {
                print("Topic \(name): \(topic.partitions.count) partitions")
                print(table([["PARTITION", "LEADER", "REPLICAS", "LOW", "HIGH"]] + topic.partitions.map { p in
                    let marks = ends[KafkaTopicPartition(topic: name, partition: p.id)]
                    return ["\(p.id)", "\(p.leader)", p.replicas.map(String.init).joined(separator: ","),
                            "\(marks?.low ?? -1)", "\(marks?.high ?? -1)"]
                }))
                if !configs.isEmpty {
                    print("\nConfigs:")
                    for key in configs.keys.sorted() { print("  \(key) = \(configs[key]!)") }
                }
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a topic and all its records (asks for confirmation).",
            discussion: "Examples:\n  waymark topics delete outbound.viber\n  waymark topics delete old.topic --yes")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Do not ask for confirmation.") var yes = false
        @Argument(help: "Topic name.") var name: String

        func run() async throws {
            global.bootstrapLogging()
            if !yes {
                print("Delete topic '\(name)' and all its records? Type the topic name to confirm: ", terminator: "")
                guard readLine()?.trimmingCharacters(in: .whitespaces) == name else {
                    print("Not confirmed; nothing deleted.")
                    throw ExitCode(1)
                }
            }
            let (_, admin) = try global.settingsAndAdmin()
            let result = try await admin.deleteTopics([name])
            if let error = result[name] ?? nil { throw error }
            print("Deleted topic \(name).")
        }
    }
}

struct TopicRow: Encodable { var name: String; var partitions: Int; var declared: Bool }
struct TopicDetail: Encodable {
    struct Partition: Encodable { var id: Int32; var leader: Int32; var replicas: [Int32]; var low: Int64; var high: Int64 }
    var name: String
    var configs: [String: String]
    var partitions: [Partition]
}

extension GlobalOptions {
    /// The validated settings and an admin client for their cluster.
    func settingsAndAdmin() throws -> (WaymarkSettings, KafkaAdmin) {
        let settings = try WaymarkSettings.load(path: config)
        let client = WorkerRuntime.kafkaClient(settings)
        return (settings, try KafkaAdmin(client: client))
    }
}
