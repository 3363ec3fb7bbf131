import Foundation
import WaymarkKafka
import WaymarkLocalStack

/// Writes a settings file pointing worker processes at a local stack: the broker (with the
/// local-broker tuning as librdkafka properties), Redis, and any further YAML sections.
public enum LocalSettings {
    /// - Parameters:
    ///   - topics: YAML under `kafka.topics` (for example `touchpoints: { partitions: 6 }`), one entry per line.
    ///   - sections: further top-level YAML (`worker`, `sender` blocks) appended verbatim.
    ///   - clusterSeeds: a Redis Cluster's nodes (`host:port`): cluster mode, every write confirmed by
    ///     `waitReplicas` replicas.
    ///   - tls: Redis over TLS trusting these certificates' authority and presenting their client certificate.
    public static func write(to file: URL, bootstrap: String, redisPort: Int, shards: Int = 256,
                             topics: [String] = [], sections: String = "", clusterSeeds: [String] = [], waitReplicas: Int = 0,
                             tls: LocalCertificates? = nil) throws {
        let properties = KafkaClientConfiguration.localTuning.sorted { $0.key < $1.key }
            .map { "    \($0.key): \"\($0.value)\"" }.joined(separator: "\n")
        var yaml = "kafka:\n  bootstrap_servers: \"\(bootstrap)\"\n  properties:\n\(properties)\n"
        if !topics.isEmpty { yaml += "  topics:\n" + topics.map { "    \($0)\n" }.joined() }
        yaml += "redis:\n  port: \(redisPort)\n  shards: \(shards)\n"
        if !clusterSeeds.isEmpty {
            yaml += "  mode: cluster\n  seeds: [\(clusterSeeds.joined(separator: ", "))]\n  wait_replicas: \(waitReplicas)\n"
        }
        if let tls {
            yaml += "  tls:\n    ca_file: \"\(tls.caFile)\"\n    cert_file: \"\(tls.clientCertificate)\"\n    key_file: \"\(tls.clientKey)\"\n"
        }
        yaml += sections
        try yaml.write(to: file, atomically: true, encoding: .utf8)
    }
}
