import CRdKafka

/// Connection settings shared by producers, consumers and admin clients.
///
/// Any librdkafka property can be given in ``properties`` (for example `security.protocol`,
/// `sasl.mechanisms`, `sasl.username`, `ssl.ca.location`), so SASL and TLS are plain configuration.
/// Properties set here override Waymark's defaults.
public struct KafkaClientConfiguration: Sendable {
    /// `host:port[,host:port…]`.
    public var bootstrapServers: String
    /// Extra librdkafka properties, passed through unchanged.
    public var properties: [String: String]

    public init(bootstrapServers: String, properties: [String: String] = [:]) {
        self.bootstrapServers = bootstrapServers
        self.properties = properties
    }

    /// Settings that make the local Tansu broker responsive (see ENVIRONMENT.md): short fetch waits,
    /// a short fetch back-off, and short session timeouts because Tansu holds the first JoinGroup for
    /// half the session timeout. Safe against Apache Kafka too, but production configs should
    /// choose their own values.
    ///
    /// The back-off applies while the local fetch queue is full (a backlog). librdkafka's default
    /// (1 s) stalls a consumer between batches; 0 makes a broker thread spin on its queue check
    /// (`perf` on `make bench`: 54 % of a journey worker's CPU in mutex and clock calls). 5 ms does neither.
    public static let localTuning: [String: String] = [
        "fetch.wait.max.ms": "10",
        "fetch.queue.backoff.ms": "5",
        "session.timeout.ms": "6000",
        "heartbeat.interval.ms": "500",
        "topic.metadata.refresh.interval.ms": "5000",
    ]
}

/// The lowest librdkafka Waymark runs with. 2.0.x mis-parses KIP-482 tagged fields.
public enum KafkaLibrary {
    /// `rd_kafka_version()` of 2.2.0.
    public static let minimumVersion: Int32 = 0x0202_0000

    /// The loaded librdkafka's version string, for example `2.8.0`.
    public static var versionString: String { String(cString: rd_kafka_version_str()) }

    /// Throws ``KafkaError/Kind/unsupportedLibrary`` when the loaded librdkafka is older than 2.2.
    public static func checkVersion() throws {
        if rd_kafka_version() < minimumVersion {
            throw KafkaError(kind: .unsupportedLibrary, message: """
                librdkafka \(versionString) is loaded, but Waymark needs 2.2 or newer (older versions cannot \
                parse KIP-482 tagged fields). Run `make setup` to build it into /usr/local, and make sure \
                /usr/local/lib precedes the distribution's copy in the loader cache (`ldconfig`).
                """)
        }
    }
}
