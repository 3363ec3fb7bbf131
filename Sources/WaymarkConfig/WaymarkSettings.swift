import Foundation
import Yams

/// A Kafka topic Waymark uses, as declared in `config/waymark.yaml`.
public struct TopicSettings: Sendable, Hashable {
    public var name: String
    public var partitions: Int
    public var replicationFactor: Int
    /// Topic configs (`retention.ms`, `cleanup.policy`, …), applied by `waymark topics apply`.
    public var configs: [String: String]

    public init(name: String, partitions: Int, replicationFactor: Int = 1, configs: [String: String] = [:]) {
        self.name = name
        self.partitions = partitions
        self.replicationFactor = replicationFactor
        self.configs = configs
    }
}

/// Kafka connection, topics and consumer groups.
public struct KafkaSettings: Sendable {
    public var bootstrapServers: String
    /// librdkafka properties passed through unchanged (SASL, TLS, tuning).
    public var properties: [String: String]
    public var touchpoints: TopicSettings
    public var customers: TopicSettings
    public var decisions: TopicSettings
    public var deadLetter: TopicSettings
    public var deliveries: TopicSettings
    /// Outbound topics are `<outboundPrefix>.<channel>`.
    public var outboundPrefix: String
    public var outbound: TopicSettings
    public var channels: [String]
    public var journeyGroup: String
    public var senderGroup: String

    /// Every topic Waymark needs, outbound topics expanded per channel.
    public var allTopics: [TopicSettings] {
        var topics = [touchpoints, customers, decisions, deadLetter, deliveries]
        for channel in channels {
            var topic = outbound
            topic.name = outboundTopic(channel)
            topics.append(topic)
        }
        return topics
    }

    public func outboundTopic(_ channel: String) -> String { "\(outboundPrefix).\(channel)" }
}

/// Redis connection.
public struct RedisSettings: Sendable {
    public var host: String
    public var port: Int
    public var username: String?
    /// Taken from the environment variable named by `password_env`, never stored in the file.
    public var password: String?
    public var database: Int
    public var connectTimeoutMilliseconds: Int
    public var commandTimeoutMilliseconds: Int
}

/// Waymark's runtime settings (`config/waymark.yaml`). Validated when loaded: every error names
/// the file, the line and the setting.
public struct WaymarkSettings: Sendable {
    public var kafka: KafkaSettings
    public var redis: RedisSettings

    public static let knownChannels: Set<String> = ["sms", "rcs", "whatsapp", "viber", "email", "push"]

    /// Loads and validates the settings file. Environment overrides (for containers):
    /// `WAYMARK_KAFKA_BOOTSTRAP`, `WAYMARK_REDIS_HOST`, `WAYMARK_REDIS_PORT`.
    public static func load(path: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> WaymarkSettings {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(file: path, line: 0, path: "", problem: "cannot read the file")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(file: path, line: 0, path: "", problem: "the file is not UTF-8")
        }
        return try parse(text, file: path, environment: environment)
    }

    /// Parses settings from YAML text (see ``load(path:environment:)``).
    public static func parse(_ text: String, file: String, environment: [String: String] = [:]) throws -> WaymarkSettings {
        let reader = ConfigReader(file: file)
        let root = try reader.mapping(reader.parse(text), "", allowed: ["kafka", "redis"])

        let kafkaNode = try reader.mapping(root["kafka"] ?? Node.mapping(.init([])), "kafka", allowed: [
            "bootstrap_servers", "properties", "topics", "channels", "groups",
        ])
        let topicsNode = try reader.mapping(kafkaNode["topics"] ?? Node.mapping(.init([])), "kafka.topics", allowed: [
            "touchpoints", "customers", "decisions", "dead_letter", "deliveries", "outbound",
        ])
        func topic(_ key: String, name: String, partitions: Int, configs: [String: String] = [:]) throws -> TopicSettings {
            let path = "kafka.topics.\(key)"
            let node = try reader.mapping(topicsNode[key] ?? Node.mapping(.init([])), path,
                                          allowed: ["name", "prefix", "partitions", "replication_factor", "configs"])
            let explicit = try reader.stringMap(node, "configs", path)
            return TopicSettings(
                name: try reader.string(node, key == "outbound" ? "prefix" : "name", path, default: name),
                partitions: try reader.int(node, "partitions", path, default: partitions, range: 1...10_000),
                replicationFactor: try reader.int(node, "replication_factor", path, default: 1, range: 1...16),
                configs: configs.merging(explicit) { _, new in new })
        }
        let channels = try reader.stringList(kafkaNode, "channels", "kafka", default: ["sms", "rcs", "whatsapp", "viber", "email", "push"])
        for channel in channels where !knownChannels.contains(channel) {
            throw reader.fail(kafkaNode["channels"], "kafka.channels",
                              "unknown channel '\(channel)'; known: \(knownChannels.sorted().joined(separator: ", "))")
        }
        let groups = try reader.mapping(kafkaNode["groups"] ?? Node.mapping(.init([])), "kafka.groups", allowed: ["journey", "sender"])
        let outbound = try topic("outbound", name: "outbound", partitions: 6)
        var kafka = KafkaSettings(
            bootstrapServers: try reader.string(kafkaNode, "bootstrap_servers", "kafka", default: "127.0.0.1:9092"),
            properties: try reader.stringMap(kafkaNode, "properties", "kafka"),
            touchpoints: try topic("touchpoints", name: "touchpoints", partitions: 6),
            customers: try topic("customers", name: "customers", partitions: 6, configs: ["cleanup.policy": "compact"]),
            decisions: try topic("decisions", name: "journey.decisions", partitions: 6),
            deadLetter: try topic("dead_letter", name: "touchpoints.dlq", partitions: 1),
            deliveries: try topic("deliveries", name: "deliveries", partitions: 6),
            outboundPrefix: outbound.name,
            outbound: outbound,
            channels: channels,
            journeyGroup: try reader.string(groups, "journey", "kafka.groups", default: "waymark-journey"),
            senderGroup: try reader.string(groups, "sender", "kafka.groups", default: "waymark-sender"))
        if let bootstrap = environment["WAYMARK_KAFKA_BOOTSTRAP"], !bootstrap.isEmpty { kafka.bootstrapServers = bootstrap }
        let names = kafka.allTopics.map(\.name)
        if Set(names).count != names.count {
            throw reader.fail(kafkaNode["topics"], "kafka.topics", "two topics share a name: \(names.sorted())")
        }

        let redisNode = try reader.mapping(root["redis"] ?? Node.mapping(.init([])), "redis", allowed: [
            "host", "port", "username", "password_env", "database", "connect_timeout_ms", "command_timeout_ms",
        ])
        var redis = RedisSettings(
            host: try reader.string(redisNode, "host", "redis", default: "127.0.0.1"),
            port: try reader.int(redisNode, "port", "redis", default: 6379, range: 1...65_535),
            username: try reader.optionalString(redisNode, "username", "redis"),
            password: nil,
            database: try reader.int(redisNode, "database", "redis", default: 0, range: 0...15),
            connectTimeoutMilliseconds: try reader.int(redisNode, "connect_timeout_ms", "redis", default: 2_000, range: 1...600_000),
            commandTimeoutMilliseconds: try reader.int(redisNode, "command_timeout_ms", "redis", default: 5_000, range: 1...600_000))
        if let variable = try reader.optionalString(redisNode, "password_env", "redis") {
            guard let secret = environment[variable], !secret.isEmpty else {
                throw reader.fail(redisNode["password_env"], "redis.password_env",
                                  "environment variable \(variable) is not set (it should hold the Redis password)")
            }
            redis.password = secret
        }
        if let host = environment["WAYMARK_REDIS_HOST"], !host.isEmpty { redis.host = host }
        if let port = environment["WAYMARK_REDIS_PORT"] {
            guard let value = Int(port), (1...65_535).contains(value) else {
                throw ConfigError(file: "environment", line: 0, path: "WAYMARK_REDIS_PORT", problem: "'\(port)' is not a port")
            }
            redis.port = value
        }
        return WaymarkSettings(kafka: kafka, redis: redis)
    }
}
