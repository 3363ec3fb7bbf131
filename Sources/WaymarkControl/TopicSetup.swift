import WaymarkConfig
import WaymarkKafka

/// One change `topics apply` made (or would make) to bring the cluster in line with config.
public struct TopicChange: Sendable, Hashable, CustomStringConvertible {
    public enum Action: String, Sendable, Hashable {
        case created, grewPartitions = "grew_partitions", updatedConfigs = "updated_configs"
        /// Declared fewer partitions than exist: Kafka cannot shrink a topic, nothing is done.
        case cannotShrink = "cannot_shrink"
        /// The broker refused (for example Tansu has no CreatePartitions).
        case failed
    }
    public var topic: String
    public var action: Action
    public var detail: String

    public init(topic: String, action: Action, detail: String) {
        self.topic = topic
        self.action = action
        self.detail = detail
    }

    public var description: String { "\(topic): \(action.rawValue) \(detail)" }
}

/// Creates or updates every topic declared in the settings. Idempotent: a second run reports no changes.
public struct TopicSetup: Sendable {
    public let settings: KafkaSettings

    public init(settings: KafkaSettings) { self.settings = settings }

    /// Applies the declared topics and returns what changed (empty when already in line).
    public func apply(admin: KafkaAdmin) async throws -> [TopicChange] {
        let declared = settings.allTopics
        let existing = Dictionary(uniqueKeysWithValues: try await admin.describeTopics(declared.map(\.name)).map { ($0.name, $0) })
        var changes: [TopicChange] = []
        let missing = declared.filter { existing[$0.name] == nil }
        if !missing.isEmpty {
            let results = try await admin.createTopics(missing.map {
                KafkaTopicSpec(name: $0.name, partitions: Int32($0.partitions), replicationFactor: Int32($0.replicationFactor), configs: $0.configs)
            })
            for topic in missing {
                switch results[topic.name] {
                case .some(.none): changes.append(TopicChange(topic: topic.name, action: .created, detail: "partitions=\(topic.partitions)"))
                case .some(.some(let error)) where error.isTopicAlreadyExists: break  // raced with another apply
                case .some(.some(let error)): changes.append(TopicChange(topic: topic.name, action: .failed, detail: error.message))
                case .none: changes.append(TopicChange(topic: topic.name, action: .failed, detail: "no result from broker"))
                }
            }
        }
        for topic in declared {
            guard let current = existing[topic.name] else { continue }
            let have = current.partitions.count
            if have < topic.partitions {
                do {
                    try await admin.createPartitions(topic: topic.name, totalPartitions: Int32(topic.partitions))
                    changes.append(TopicChange(topic: topic.name, action: .grewPartitions, detail: "\(have) → \(topic.partitions)"))
                } catch let error as KafkaError {
                    changes.append(TopicChange(topic: topic.name, action: .failed, detail: "grow \(have) → \(topic.partitions): \(error.message)"))
                }
            } else if have > topic.partitions {
                changes.append(TopicChange(topic: topic.name, action: .cannotShrink, detail: "has \(have), config says \(topic.partitions)"))
            }
            if !topic.configs.isEmpty {
                let actual = try await admin.describeConfigs(topic: topic.name)
                let differing = topic.configs.filter { actual[$0.key] != $0.value }
                if !differing.isEmpty {
                    try await admin.alterConfigs(topic: topic.name, set: differing)
                    let detail = differing.keys.sorted().map { "\($0)=\(differing[$0]!)" }.joined(separator: " ")
                    changes.append(TopicChange(topic: topic.name, action: .updatedConfigs, detail: detail))
                }
            }
        }
        return changes.sorted { ($0.topic, $0.action.rawValue) < ($1.topic, $1.action.rawValue) }
    }
}
