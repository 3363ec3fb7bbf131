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
    /// Consumer group of `waymark worker kpis` (reads decisions and receipts into KPI counters).
    public var kpiGroup: String

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
    /// `standalone` (one server) or `cluster` (Redis Cluster; `host:port` and `seeds` are where the
    /// slot map is read from).
    public var mode: String = "standalone"
    /// Further cluster nodes (`host:port`) for reading the slot map (cluster mode).
    public var seeds: [String] = []
    /// Replicas that must confirm every write (`WAIT`) before it counts as stored; 0 = do not wait.
    public var waitReplicas: Int = 0
    /// How long to wait for them.
    public var waitReplicasTimeoutMilliseconds: Int = 500
    public var host: String
    public var port: Int
    public var username: String?
    /// Taken from the environment variable named by `password_env`, never stored in the file.
    public var password: String?
    public var database: Int
    public var connectTimeoutMilliseconds: Int
    public var commandTimeoutMilliseconds: Int
    /// Prefix of every Waymark key.
    public var keyPrefix: String
    /// Customer shards (hash tags). Part of the data layout: never change it on a live deployment.
    public var shards: Int
    /// TLS to Redis (`redis.tls`); `nil` speaks plain TCP.
    public var tls: RedisTLSSettings? = nil
}

/// `redis.tls`: the server's certificate is always verified, chain and name.
public struct RedisTLSSettings: Sendable, Equatable {
    /// CA certificates (PEM) that sign the server's certificate; `nil` uses the system's store.
    public var caFile: String?
    /// Client certificate (PEM), for servers with `tls-auth-clients yes`; goes with ``keyFile``.
    public var certificateFile: String?
    /// The client certificate's private key (PEM).
    public var keyFile: String?
    /// Name the server's certificate must carry (and SNI); `nil` checks the host each node is reached at.
    public var serverName: String?

    public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil, serverName: String? = nil) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.serverName = serverName
    }
}

/// How journey workers, schedulers and senders behave (`worker:` in `config/waymark.yaml`).
public struct WorkerSettings: Sendable {
    /// Most records taken from Kafka per batch.
    public var maxBatch: Int
    /// How long a poll waits for the first record.
    public var pollTimeoutMilliseconds: Int
    /// Touchpoints larger than this go to the dead-letter topic as `oversize`.
    public var maxRecordBytes: Int
    /// `occurred_at` further in the future than this is `absurd_timestamp`.
    public var maxFutureSkewSeconds: Int
    /// `occurred_at` further in the past than this many days is `absurd_timestamp` (0 = no bound).
    public var maxEventAgeDays: Int
    /// A tombstone on `customers` (or `waymark forget customer`) also erases the journey state.
    public var eraseState: Bool
    /// … and the sender's claims and parked messages.
    public var eraseSenderClaims: Bool
    /// `process`: events of customers without a profile update state (sends wait for consent);
    /// `dead_letter`: they go to the dead-letter topic as `unknown_customer`.
    public var unknownCustomer: UnknownCustomerPolicy
    /// How often the scheduler looks for due timers and deferred messages.
    public var schedulerIntervalMilliseconds: Int
    /// Outbox entries older than this are re-published by recovery (a worker died before publishing).
    public var outboxGraceMilliseconds: Int
    /// Idle customers' state expires after this many days (0 = never).
    public var stateTTLDays: Int
    /// Recent decisions kept per customer for `waymark inspect customer`.
    public var decisionsKept: Int
    /// Port of the metrics and health HTTP endpoint (0 = off; each worker process needs its own).
    public var metricsPort: Int
    /// Address the endpoint binds (127.0.0.1 by default; 0.0.0.0 in containers so Prometheus can scrape).
    public var metricsHost: String

    public enum UnknownCustomerPolicy: String, Sendable { case process, deadLetter = "dead_letter" }
}

/// How sender workers call providers (`sender:` in `config/waymark.yaml`).
public struct SenderSettings: Sendable {
    public enum Provider: String, Sendable { case file, webhook }
    public var provider: Provider
    /// File provider: where to append JSON lines (`-` = standard output).
    public var filePath: String
    /// Webhook provider: the URL messages are POSTed to (JSON, with an `Idempotency-Key` header).
    public var webhookURL: String
    public var timeoutMilliseconds: Int
    /// Provider calls per second per channel, shared by all sender processes (Redis token bucket).
    public var ratePerSecond: Double
    public var burst: Int
    /// Attempts on transient failures before the channel counts as failed (then fallback).
    public var maxAttempts: Int
    /// First retry delay; doubled per attempt, capped at 5 minutes.
    public var retryBackoffMilliseconds: Int
    /// Provider calls in flight per sender process.
    public var concurrency: Int
    /// A claim older than this is considered abandoned by a crashed sender and is taken over.
    public var claimStaleMilliseconds: Int
    /// Per-channel providers (`sender.providers`); a channel not listed uses ``provider``.
    public var providers: [String: ProviderSettings] = [:]
}

/// Waymark's runtime settings (`config/waymark.yaml`). Validated when loaded: every error names
/// the file, the line and the setting.
public struct WaymarkSettings: Sendable {
    public var kafka: KafkaSettings
    public var redis: RedisSettings
    public var worker: WorkerSettings
    public var sender: SenderSettings
    public var receipts: ReceiptsSettings = ReceiptsSettings()

    public static let knownChannels: Set<String> = ["sms", "rcs", "whatsapp", "viber", "email", "push"]

    /// Loads and validates the settings file. Environment overrides (for containers):
    /// `WAYMARK_KAFKA_BOOTSTRAP`, `WAYMARK_REDIS_HOST`, `WAYMARK_REDIS_PORT`, `WAYMARK_METRICS_HOST`,
    /// `WAYMARK_METRICS_PORT`. Secrets come from the environment or a file (`*_env`, `*_file`).
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
        let root = try reader.mapping(reader.parse(text), "", allowed: ["kafka", "redis", "worker", "sender", "receipts"])

        let kafkaNode = try reader.mapping(root["kafka"] ?? Node.mapping(.init([])), "kafka", allowed: [
            "bootstrap_servers", "properties", "topics", "channels", "groups", "sasl_password_env", "sasl_password_file",
        ])
        /// A secret named by `<key>_env` (an environment variable) or `<key>_file` (a file, e.g. a mounted
        /// Kubernetes secret; one trailing newline is dropped), never written in the YAML itself.
        func secret(_ mapping: Node.Mapping, _ key: String, _ path: String, what: String) throws -> String? {
            let variable = try reader.optionalString(mapping, key + "_env", path)
            let file = try reader.optionalString(mapping, key + "_file", path)
            if variable != nil && file != nil {
                throw reader.fail(mapping[key + "_file"], "\(path).\(key)_file", "give \(key)_env or \(key)_file, not both")
            }
            if let variable {
                guard let value = environment[variable], !value.isEmpty else {
                    throw reader.fail(mapping[key + "_env"], "\(path).\(key)_env",
                                      "environment variable \(variable) is not set (it should hold the \(what))")
                }
                return value
            }
            if let file {
                guard let data = FileManager.default.contents(atPath: file), var value = String(data: data, encoding: .utf8) else {
                    throw reader.fail(mapping[key + "_file"], "\(path).\(key)_file", "cannot read \(file) (it should hold the \(what))")
                }
                if value.hasSuffix("\n") { value.removeLast() }
                guard !value.isEmpty else { throw reader.fail(mapping[key + "_file"], "\(path).\(key)_file", "\(file) is empty") }
                return value
            }
            return nil
        }
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
        let groups = try reader.mapping(kafkaNode["groups"] ?? Node.mapping(.init([])), "kafka.groups", allowed: ["journey", "sender", "kpis"])
        let outbound = try topic("outbound", name: "outbound", partitions: 6)
        var kafka = KafkaSettings(
            bootstrapServers: try reader.string(kafkaNode, "bootstrap_servers", "kafka", default: "127.0.0.1:9092"),
            properties: try reader.stringMap(kafkaNode, "properties", "kafka"),
            touchpoints: try topic("touchpoints", name: "touchpoints", partitions: 6),
            customers: try topic("customers", name: "customers", partitions: 6, configs: ["cleanup.policy": "compact"]),
            decisions: try topic("decisions", name: "journey.decisions", partitions: 6),
            deadLetter: try topic("dead_letter", name: "touchpoints.dlq", partitions: 1,
                                  configs: ["max.message.bytes": "10485760"]),
            deliveries: try topic("deliveries", name: "deliveries", partitions: 6),
            outboundPrefix: outbound.name,
            outbound: outbound,
            channels: channels,
            journeyGroup: try reader.string(groups, "journey", "kafka.groups", default: "waymark-journey"),
            senderGroup: try reader.string(groups, "sender", "kafka.groups", default: "waymark-sender"),
            kpiGroup: try reader.string(groups, "kpis", "kafka.groups", default: "waymark-kpis"))
        if let bootstrap = environment["WAYMARK_KAFKA_BOOTSTRAP"], !bootstrap.isEmpty { kafka.bootstrapServers = bootstrap }
        for plaintext in ["sasl.password", "ssl.key.password", "ssl.keystore.password"] where kafka.properties[plaintext] != nil {
            throw reader.fail(kafkaNode["properties"], "kafka.properties.\(plaintext)",
                              "secrets do not belong in the YAML: use kafka.sasl_password_env or kafka.sasl_password_file")
        }
        if let password = try secret(kafkaNode, "sasl_password", "kafka", what: "Kafka SASL password") {
            kafka.properties["sasl.password"] = password
        }
        let names = kafka.allTopics.map(\.name)
        if Set(names).count != names.count {
            throw reader.fail(kafkaNode["topics"], "kafka.topics", "two topics share a name: \(names.sorted())")
        }

        let redisNode = try reader.mapping(root["redis"] ?? Node.mapping(.init([])), "redis", allowed: [
            "host", "port", "username", "password_env", "password_file", "database", "connect_timeout_ms", "command_timeout_ms",
            "key_prefix", "shards", "mode", "seeds", "wait_replicas", "wait_replicas_timeout_ms", "tls",
        ])
        var redis = RedisSettings(
            host: try reader.string(redisNode, "host", "redis", default: "127.0.0.1"),
            port: try reader.int(redisNode, "port", "redis", default: 6379, range: 1...65_535),
            username: try reader.optionalString(redisNode, "username", "redis"),
            password: nil,
            database: try reader.int(redisNode, "database", "redis", default: 0, range: 0...15),
            connectTimeoutMilliseconds: try reader.int(redisNode, "connect_timeout_ms", "redis", default: 2_000, range: 1...600_000),
            commandTimeoutMilliseconds: try reader.int(redisNode, "command_timeout_ms", "redis", default: 5_000, range: 1...600_000),
            keyPrefix: try reader.string(redisNode, "key_prefix", "redis", default: "wm"),
            shards: try reader.int(redisNode, "shards", "redis", default: 256, range: 1...65_536))
        if redis.keyPrefix.isEmpty || redis.keyPrefix.contains("{") || redis.keyPrefix.contains("}") {
            throw reader.fail(redisNode["key_prefix"], "redis.key_prefix", "must be non-empty and contain no braces")
        }
        redis.password = try secret(redisNode, "password", "redis", what: "Redis password")
        redis.mode = try reader.string(redisNode, "mode", "redis", default: "standalone")
        if redis.mode != "standalone" && redis.mode != "cluster" {
            throw reader.fail(redisNode["mode"], "redis.mode", "expected standalone or cluster, got '\(redis.mode)'")
        }
        redis.seeds = try reader.stringList(redisNode, "seeds", "redis", default: [])
        redis.waitReplicas = try reader.int(redisNode, "wait_replicas", "redis", default: 0, range: 0...16)
        redis.waitReplicasTimeoutMilliseconds = try reader.int(redisNode, "wait_replicas_timeout_ms", "redis", default: 500, range: 1...60_000)
        if let mode = environment["WAYMARK_REDIS_MODE"], !mode.isEmpty {
            guard mode == "standalone" || mode == "cluster" else {
                throw ConfigError(file: "environment", line: 0, path: "WAYMARK_REDIS_MODE", problem: "'\(mode)' is not standalone or cluster")
            }
            redis.mode = mode
        }
        if let seeds = environment["WAYMARK_REDIS_SEEDS"], !seeds.isEmpty {
            redis.seeds = seeds.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        for seed in redis.seeds where !Self.isEndpoint(seed) {
            throw reader.fail(redisNode["seeds"], "redis.seeds", "'\(seed)' is not host:port")
        }
        if redis.mode == "cluster" && redis.database != 0 {
            throw reader.fail(redisNode["database"], "redis.database", "must be 0 in cluster mode (Redis Cluster has one database)")
        }
        redis.tls = try Self.redisTLS(redisNode, reader: reader, environment: environment)
        if let host = environment["WAYMARK_REDIS_HOST"], !host.isEmpty { redis.host = host }
        if let port = environment["WAYMARK_REDIS_PORT"] {
            guard let value = Int(port), (1...65_535).contains(value) else {
                throw ConfigError(file: "environment", line: 0, path: "WAYMARK_REDIS_PORT", problem: "'\(port)' is not a port")
            }
            redis.port = value
        }
        let workerNode = try reader.mapping(root["worker"] ?? Node.mapping(.init([])), "worker", allowed: [
            "max_batch", "poll_timeout_ms", "max_record_bytes", "max_future_skew_s", "max_event_age_days", "unknown_customer",
            "erase_state", "erase_sender_claims",
            "scheduler_interval_ms", "outbox_grace_ms", "state_ttl_days", "decisions_kept", "metrics_port", "metrics_host",
        ])
        let policyText = try reader.string(workerNode, "unknown_customer", "worker", default: "process")
        guard let policy = WorkerSettings.UnknownCustomerPolicy(rawValue: policyText) else {
            throw reader.fail(workerNode["unknown_customer"], "worker.unknown_customer", "expected process or dead_letter")
        }
        var worker = WorkerSettings(
            maxBatch: try reader.int(workerNode, "max_batch", "worker", default: 5_000, range: 1...100_000),
            pollTimeoutMilliseconds: try reader.int(workerNode, "poll_timeout_ms", "worker", default: 100, range: 1...60_000),
            maxRecordBytes: try reader.int(workerNode, "max_record_bytes", "worker", default: 65_536, range: 256...10_485_760),
            maxFutureSkewSeconds: try reader.int(workerNode, "max_future_skew_s", "worker", default: 86_400, range: 0...31_536_000),
            maxEventAgeDays: try reader.int(workerNode, "max_event_age_days", "worker", default: 3_650, range: 0...36_500),
            eraseState: try reader.bool(workerNode, "erase_state", "worker", default: true),
            eraseSenderClaims: try reader.bool(workerNode, "erase_sender_claims", "worker", default: true),
            unknownCustomer: policy,
            schedulerIntervalMilliseconds: try reader.int(workerNode, "scheduler_interval_ms", "worker", default: 250, range: 10...60_000),
            outboxGraceMilliseconds: try reader.int(workerNode, "outbox_grace_ms", "worker", default: 5_000, range: 100...3_600_000),
            stateTTLDays: try reader.int(workerNode, "state_ttl_days", "worker", default: 400, range: 0...3_650),
            decisionsKept: try reader.int(workerNode, "decisions_kept", "worker", default: 50, range: 0...10_000),
            metricsPort: try reader.int(workerNode, "metrics_port", "worker", default: 9_464, range: 0...65_535),
            metricsHost: try reader.string(workerNode, "metrics_host", "worker", default: "127.0.0.1"))
        // Containers bind the operations endpoint to the pod address; every address and port can come from the environment.
        if let host = environment["WAYMARK_METRICS_HOST"], !host.isEmpty { worker.metricsHost = host }
        if let port = environment["WAYMARK_METRICS_PORT"] {
            guard let value = Int(port), (0...65_535).contains(value) else {
                throw ConfigError(file: "environment", line: 0, path: "WAYMARK_METRICS_PORT", problem: "'\(port)' is not a port")
            }
            worker.metricsPort = value
        }
        let senderNode = try reader.mapping(root["sender"] ?? Node.mapping(.init([])), "sender", allowed: [
            "provider", "file_path", "webhook_url", "timeout_ms", "rate_per_second", "burst", "max_attempts",
            "retry_backoff_ms", "concurrency", "claim_stale_ms", "providers",
        ])
        let providerText = try reader.string(senderNode, "provider", "sender", default: "file")
        guard let provider = SenderSettings.Provider(rawValue: providerText) else {
            throw reader.fail(senderNode["provider"], "sender.provider", "expected file or webhook")
        }
        let webhookURL = try reader.string(senderNode, "webhook_url", "sender", default: "")
        if provider == .webhook, !(webhookURL.hasPrefix("http://") || webhookURL.hasPrefix("https://")) {
            throw reader.fail(senderNode["webhook_url"] ?? senderNode["provider"], "sender.webhook_url", "the webhook provider needs an http(s) URL")
        }
        let rate = try reader.int(senderNode, "rate_per_second", "sender", default: 200, range: 1...1_000_000)
        let sender = SenderSettings(
            provider: provider,
            filePath: try reader.string(senderNode, "file_path", "sender", default: "-"),
            webhookURL: webhookURL,
            timeoutMilliseconds: try reader.int(senderNode, "timeout_ms", "sender", default: 5_000, range: 1...600_000),
            ratePerSecond: Double(rate),
            burst: try reader.int(senderNode, "burst", "sender", default: 50, range: 1...1_000_000),
            maxAttempts: try reader.int(senderNode, "max_attempts", "sender", default: 5, range: 1...100),
            retryBackoffMilliseconds: try reader.int(senderNode, "retry_backoff_ms", "sender", default: 1_000, range: 1...3_600_000),
            concurrency: try reader.int(senderNode, "concurrency", "sender", default: 32, range: 1...1_024),
            claimStaleMilliseconds: try reader.int(senderNode, "claim_stale_ms", "sender", default: 30_000, range: 100...86_400_000))
        var senderSettings = sender
        if let providersNode = senderNode["providers"], !reader.isNull(providersNode) {
            for (key, value) in try reader.mapping(providersNode, "sender.providers", allowed: Self.knownChannels) {
                let channel = key.string ?? ""
                senderSettings.providers[channel] = try ProviderSettings.parse(value, channel: channel, reader: reader) { m, k, p, what in
                    try secret(m, k, p, what: what)
                }
            }
        }
        var settings = WaymarkSettings(kafka: kafka, redis: redis, worker: worker, sender: senderSettings)
        let receiptsNode = root["receipts"].flatMap { reader.isNull($0) ? nil : $0 } ?? Node.mapping(.init([]))
        settings.receipts = try ReceiptsSettings.parse(receiptsNode, reader: reader, environment: environment) { m, k, p, what in
            try secret(m, k, p, what: what)
        }
        return settings
    }

    /// `redis.tls` (a mapping; `enabled: false` or no mapping means plain TCP), then the
    /// `WAYMARK_REDIS_TLS*` environment overrides; every named file must be readable now.
    static func redisTLS(_ redisNode: Node.Mapping, reader: ConfigReader,
                         environment: [String: String]) throws -> RedisTLSSettings? {
        var tls: RedisTLSSettings?
        var node: Node.Mapping?
        if let tlsNode = redisNode["tls"] {
            let mapping = try reader.mapping(tlsNode, "redis.tls", allowed: ["enabled", "ca_file", "cert_file", "key_file", "server_name"])
            node = mapping
            if try reader.bool(mapping, "enabled", "redis.tls", default: true) {
                tls = RedisTLSSettings(
                    caFile: try reader.optionalString(mapping, "ca_file", "redis.tls"),
                    certificateFile: try reader.optionalString(mapping, "cert_file", "redis.tls"),
                    keyFile: try reader.optionalString(mapping, "key_file", "redis.tls"),
                    serverName: try reader.optionalString(mapping, "server_name", "redis.tls"))
            }
        }
        if let flag = environment["WAYMARK_REDIS_TLS"], !flag.isEmpty {
            switch flag.lowercased() {
            case "1", "true", "yes", "on": tls = tls ?? RedisTLSSettings()
            case "0", "false", "no", "off": tls = nil
            default:
                throw ConfigError(file: "environment", line: 0, path: "WAYMARK_REDIS_TLS", problem: "'\(flag)' is not true or false")
            }
        }
        let overrides: [(String, WritableKeyPath<RedisTLSSettings, String?>)] = [
            ("WAYMARK_REDIS_TLS_CA_FILE", \.caFile), ("WAYMARK_REDIS_TLS_CERT_FILE", \.certificateFile),
            ("WAYMARK_REDIS_TLS_KEY_FILE", \.keyFile), ("WAYMARK_REDIS_TLS_SERVER_NAME", \.serverName),
        ]
        for (variable, field) in overrides {
            if let value = environment[variable], !value.isEmpty {
                guard tls != nil else {
                    throw ConfigError(file: "environment", line: 0, path: variable,
                                      problem: "set, but TLS is off (add redis.tls or WAYMARK_REDIS_TLS=true)")
                }
                tls![keyPath: field] = value
            }
        }
        guard let tls else { return nil }
        func fail(_ key: String, _ problem: String) -> ConfigError {
            reader.fail(node?[key] ?? node?.first?.key, "redis.tls.\(key)", problem)
        }
        if (tls.certificateFile == nil) != (tls.keyFile == nil) {
            throw fail(tls.certificateFile == nil ? "key_file" : "cert_file", "cert_file and key_file go together: give both or neither")
        }
        for (key, path) in [("ca_file", tls.caFile), ("cert_file", tls.certificateFile), ("key_file", tls.keyFile)] {
            if let path, !FileManager.default.isReadableFile(atPath: path) {
                throw fail(key, "'\(path)' is not a readable file")
            }
        }
        if tls.serverName?.isEmpty == true { throw fail("server_name", "must not be empty") }
        return tls
    }

    /// `host:port` with a non-empty host and a port in 1...65535.
    static func isEndpoint(_ text: String) -> Bool {
        guard let colon = text.lastIndex(of: ":"), colon != text.startIndex,
              let port = Int(text[text.index(after: colon)...]) else { return false }
        return (1...65_535).contains(port)
    }
}
