import Foundation
import Testing
import WaymarkConfig

@Suite("Runtime settings (config/waymark.yaml)")
struct SettingsTests {
    static var shippedPath: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("config/waymark.yaml").path
    }

    @Test("the shipped settings file loads, with every topic declared")
    func shippedFileLoads() throws {
        let settings = try WaymarkSettings.load(path: Self.shippedPath, environment: [:])
        #expect(settings.kafka.touchpoints.name == "touchpoints")
        #expect(settings.kafka.customers.configs["cleanup.policy"] == "compact")
        #expect(settings.kafka.allTopics.count == 5 + 6)
        #expect(settings.kafka.allTopics.contains { $0.name == "outbound.whatsapp" })
        #expect(settings.redis.port == 6379)
    }

    @Test("a misspelt key is rejected with its line and a suggestion")
    func unknownKey() throws {
        let yaml = "kafka:\n  bootstrap_servers: x:1\n  topcs: {}\n"
        do {
            _ = try WaymarkSettings.parse(yaml, file: "w.yaml")
            Issue.record("expected an error")
        } catch let error as ConfigError {
            #expect(error.line == 3)
            #expect(error.path == "kafka.topcs")
            #expect(error.description.contains("did you mean 'topics'"))
        }
    }

    @Test("wrong types and out-of-range values name the setting")
    func badValues() throws {
        let cases: [(String, String, Int)] = [
            ("kafka:\n  topics:\n    touchpoints:\n      partitions: many\n", "kafka.topics.touchpoints.partitions", 4),
            ("kafka:\n  topics:\n    touchpoints:\n      partitions: 0\n", "kafka.topics.touchpoints.partitions", 4),
            ("redis:\n  port: 70000\n", "redis.port", 2),
            ("kafka:\n  channels: [sms, pigeon]\n", "kafka.channels", 2),
            ("redis:\n  password_env: NOPE_NOT_SET\n", "redis.password_env", 2),
            ("redis:\n  mode: sentinel\n", "redis.mode", 2),
            ("redis:\n  mode: cluster\n  seeds: [nohost]\n", "redis.seeds", 3),
            ("redis:\n  mode: cluster\n  database: 3\n", "redis.database", 3),
            ("redis:\n  wait_replicas: -1\n", "redis.wait_replicas", 2),
        ]
        for (yaml, path, line) in cases {
            do {
                _ = try WaymarkSettings.parse(yaml, file: "w.yaml")
                Issue.record("expected an error for \(path)")
            } catch let error as ConfigError {
                #expect(error.path == path)
                #expect(error.line == line)
            }
        }
        #expect(throws: ConfigError.self) { try WaymarkSettings.parse("kafka: [1, 2\n", file: "w.yaml") }
    }

    @Test("Redis Cluster settings: mode, seeds and replica acknowledgements are read and checked; the environment overrides mode and seeds")
    func clusterSettings() throws {
        let settings = try WaymarkSettings.parse(
            "redis:\n  mode: cluster\n  seeds: [10.0.0.2:7000, 10.0.0.3:7000]\n  wait_replicas: 1\n  wait_replicas_timeout_ms: 250\n", file: "w.yaml")
        #expect(settings.redis.mode == "cluster")
        #expect(settings.redis.seeds == ["10.0.0.2:7000", "10.0.0.3:7000"])
        #expect(settings.redis.waitReplicas == 1 && settings.redis.waitReplicasTimeoutMilliseconds == 250)
        #expect(try WaymarkSettings.parse("", file: "w.yaml").redis.mode == "standalone")
        let fromEnvironment = try WaymarkSettings.parse("", file: "w.yaml", environment: [
            "WAYMARK_REDIS_MODE": "cluster", "WAYMARK_REDIS_SEEDS": "a:1, b:2",
        ])
        #expect(fromEnvironment.redis.mode == "cluster" && fromEnvironment.redis.seeds == ["a:1", "b:2"])
        // Bad mode, seeds, database and wait_replicas values: in badValues' table.
        #expect(throws: ConfigError.self) { try WaymarkSettings.parse("", file: "w.yaml", environment: ["WAYMARK_REDIS_MODE": "nope"]) }
    }

    @Test("environment overrides addresses and supplies the Redis password")
    func environment() throws {
        let settings = try WaymarkSettings.parse("redis:\n  password_env: PW\n", file: "w.yaml", environment: [
            "PW": "s3cret", "WAYMARK_KAFKA_BOOTSTRAP": "10.0.0.1:9092", "WAYMARK_REDIS_PORT": "6380",
        ])
        #expect(settings.redis.password == "s3cret")
        #expect(settings.redis.port == 6380)
        #expect(settings.kafka.bootstrapServers == "10.0.0.1:9092")
    }

    @Test("secrets come from the environment or a file, never from the YAML; metrics address and port from the environment")
    func secretsAndEnvironment() throws {
        let fromEnv = try WaymarkSettings.parse("kafka:\n  sasl_password_env: KP\nredis:\n  password_env: RP\n", file: "w.yaml",
                                                environment: ["KP": "k-secret", "RP": "r-secret", "WAYMARK_METRICS_HOST": "0.0.0.0",
                                                              "WAYMARK_METRICS_PORT": "9500"])
        #expect(fromEnv.kafka.properties["sasl.password"] == "k-secret" && fromEnv.redis.password == "r-secret")
        #expect(fromEnv.worker.metricsHost == "0.0.0.0" && fromEnv.worker.metricsPort == 9500)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("waymark-secrets-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "k-file\n".write(to: dir.appendingPathComponent("kafka"), atomically: true, encoding: .utf8)
        try "r-file".write(to: dir.appendingPathComponent("redis"), atomically: true, encoding: .utf8)
        let fromFile = try WaymarkSettings.parse(
            "kafka:\n  sasl_password_file: \(dir.path)/kafka\nredis:\n  password_file: \(dir.path)/redis\n", file: "w.yaml")
        #expect(fromFile.kafka.properties["sasl.password"] == "k-file" && fromFile.redis.password == "r-file")
        func problem(_ yaml: String, environment: [String: String] = [:]) -> String {
            do { _ = try WaymarkSettings.parse(yaml, file: "w.yaml", environment: environment); return "accepted" } catch { return "\(error)" }
        }
        #expect(problem("kafka:\n  properties: { sasl.password: hunter2 }\n").contains("sasl_password_env"))
        #expect(problem("kafka:\n  sasl_password_env: NOPE\n").contains("NOPE is not set"))
        #expect(problem("redis:\n  password_env: A\n  password_file: /x\n", environment: ["A": "a"]).contains("not both"))
        #expect(problem("redis:\n  password_file: /nonexistent/secret\n").contains("cannot read"))
        #expect(problem("", environment: ["WAYMARK_METRICS_PORT": "http"]).contains("not a port"))
    }

    @Test("redis.tls: files are read and checked at start-up, cert and key go together, the environment can turn TLS on and point at files")
    func redisTLS() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("waymark-tls-settings-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for name in ["ca.crt", "client.crt", "client.key"] {
            try "pem".write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        let ca = dir.appendingPathComponent("ca.crt").path, cert = dir.appendingPathComponent("client.crt").path
        let key = dir.appendingPathComponent("client.key").path
        let full = try WaymarkSettings.parse(
            "redis:\n  tls:\n    ca_file: \(ca)\n    cert_file: \(cert)\n    key_file: \(key)\n    server_name: redis.internal\n", file: "w.yaml")
        #expect(full.redis.tls == RedisTLSSettings(caFile: ca, certificateFile: cert, keyFile: key, serverName: "redis.internal"))
        #expect(try WaymarkSettings.parse("", file: "w.yaml").redis.tls == nil)
        // `tls: {}` trusts the system store; `enabled: false` keeps the block but speaks plain TCP.
        #expect(try WaymarkSettings.parse("redis:\n  tls: {}\n", file: "w.yaml").redis.tls == RedisTLSSettings())
        #expect(try WaymarkSettings.parse("redis:\n  tls: { enabled: false, ca_file: /nope }\n", file: "w.yaml").redis.tls == nil)
        let fromEnvironment = try WaymarkSettings.parse("", file: "w.yaml", environment: [
            "WAYMARK_REDIS_TLS": "true", "WAYMARK_REDIS_TLS_CA_FILE": ca, "WAYMARK_REDIS_TLS_SERVER_NAME": "r.example",
        ])
        #expect(fromEnvironment.redis.tls == RedisTLSSettings(caFile: ca, serverName: "r.example"))
        #expect(try WaymarkSettings.parse("redis:\n  tls: {}\n", file: "w.yaml", environment: ["WAYMARK_REDIS_TLS": "off"]).redis.tls == nil)

        func problem(_ yaml: String, environment: [String: String] = [:]) -> String {
            do { _ = try WaymarkSettings.parse(yaml, file: "w.yaml", environment: environment); return "accepted" } catch { return "\(error)" }
        }
        let missing = problem("redis:\n  tls:\n    ca_file: /nonexistent/ca.crt\n")
        #expect(missing.contains("redis.tls.ca_file") && missing.contains("not a readable file") && missing.contains("w.yaml:3"), "\(missing)")
        #expect(problem("redis:\n  tls:\n    cert_file: \(cert)\n").contains("go together"))
        #expect(problem("redis:\n  tls:\n    verify: false\n").contains("unknown setting"))
        #expect(problem("redis:\n  tls: { server_name: '' }\n").contains("must not be empty"))
        #expect(problem("", environment: ["WAYMARK_REDIS_TLS": "maybe"]).contains("not true or false"))
        #expect(problem("", environment: ["WAYMARK_REDIS_TLS_CA_FILE": ca]).contains("TLS is off"))
    }
}
