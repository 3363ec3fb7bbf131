import Dispatch
import Hummingbird
import Logging
import Metrics
import ServiceLifecycle
import Synchronization
import WaymarkConfig
import WaymarkEngine
import WaymarkHTTP
import WaymarkKafka
import WaymarkRedis
#if canImport(Glibc)
import Glibc
#endif

/// Runs worker services in one process: one `ServiceGroup` that turns SIGTERM/SIGINT into graceful
/// shutdown (a second signal exits at once), the operations endpoint (`/metrics`, `/healthz`,
/// `/readyz`) and the dependency probe behind readiness.
///
/// The life of a worker process, in order: settings and journeys are loaded and validated (the
/// caller), clients are configured from settings here (the one place that maps settings to Kafka and
/// Redis configurations), the services start, `/readyz` turns 200 once the workers are ready *and*
/// Redis and Kafka answered within the last few seconds, a signal asks every service to drain
/// (finish the batch in flight, publish, commit, leave the group), and ``run(_:ready:)`` returns once
/// all have stopped. If one service fails, the others are shut down gracefully and the error is thrown.
public struct WorkerRuntime: Sendable {
    public var environment: WorkerEnvironment
    public let client: KafkaClientConfiguration
    public let redis: RedisConfiguration
    public let logger: Logger
    /// The Prometheus registry behind `/metrics`; bootstrap it before any worker creates metrics.
    public let exporter: PrometheusExporter

    /// Configures clients from `settings`. Bootstraps metrics (once per process) with `exporter`.
    public init(settings: WaymarkSettings, engine: JourneyEngine, logger: Logger = Logger(label: "waymark.worker"),
                exporter: PrometheusExporter = PrometheusExporter()) {
        self.logger = logger
        self.exporter = exporter
        environment = WorkerEnvironment(settings: settings, engine: engine, logger: logger)
        client = Self.kafkaClient(settings)
        redis = Self.redisConfiguration(settings)
    }

    /// The Kafka client configuration for `settings`.
    public static func kafkaClient(_ settings: WaymarkSettings) -> KafkaClientConfiguration {
        KafkaClientConfiguration(bootstrapServers: settings.kafka.bootstrapServers, properties: settings.kafka.properties)
    }

    /// The Redis connection configuration for `settings`.
    public static func redisConfiguration(_ settings: WaymarkSettings) -> RedisConfiguration {
        RedisConfiguration(
            mode: settings.redis.mode == "cluster" ? .cluster : .standalone, seeds: settings.redis.seeds,
            host: settings.redis.host, port: settings.redis.port, username: settings.redis.username,
            password: settings.redis.password, database: settings.redis.database,
            connectTimeout: .milliseconds(settings.redis.connectTimeoutMilliseconds),
            commandTimeout: .milliseconds(settings.redis.commandTimeoutMilliseconds),
            replicaAcknowledgements: settings.redis.waitReplicas,
            replicaAcknowledgementTimeout: .milliseconds(settings.redis.waitReplicasTimeoutMilliseconds),
            tls: settings.redis.tls.map {
                RedisConfiguration.TLS(caFile: $0.caFile, certificateFile: $0.certificateFile, keyFile: $0.keyFile,
                                       serverName: $0.serverName)
            })
    }

    /// Runs `services` until they stop (signal, failure, or all done). `ready` says whether the
    /// workers themselves can take traffic; `/readyz` also requires fresh answers from Redis and Kafka.
    public func run(_ services: [any Service], ready: @escaping @Sendable () -> Bool = { true }) async throws {
        let settings = environment.settings
        let probe = DependencyProbe(redis: redis, client: client, topic: settings.kafka.touchpoints.name, logger: logger)
        var all = services.map {
            ServiceGroupConfiguration.ServiceConfiguration(service: $0, successTerminationBehavior: .gracefullyShutdownGroup,
                                                           failureTerminationBehavior: .gracefullyShutdownGroup)
        }
        all.append(.init(service: probe, successTerminationBehavior: .ignore, failureTerminationBehavior: .ignore))
        if settings.worker.metricsPort > 0 {
            let endpoint = OperationsEndpoint.application(host: settings.worker.metricsHost, port: settings.worker.metricsPort,
                                                          metrics: exporter, logger: logger) {
                if !ready() { return Readiness(isReady: false, detail: "workers not ready") }
                return probe.readiness()
            }
            all.append(.init(service: endpoint, successTerminationBehavior: .ignore, failureTerminationBehavior: .gracefullyShutdownGroup))
        }
        var configuration = ServiceGroupConfiguration(services: all, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        configuration.maximumGracefulShutdownDuration = .seconds(50)  // inside Kubernetes' 60 s grace period
        let escalation = SecondSignalExits(logger: logger)
        defer { withExtendedLifetime(escalation) {} }
        try await ServiceGroup(configuration: configuration).run()
        logger.info("stopped cleanly")
    }
}

/// `/metrics`, `/healthz` and `/readyz` (``OperationsRoutes``) as a Hummingbird application: a service
/// that serves until graceful shutdown or cancellation.
public enum OperationsEndpoint {
    public static func application(host: String, port: Int, metrics: PrometheusExporter, logger: Logger,
                                   readiness: @escaping @Sendable () -> Readiness) -> some Service {
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .notice)  // no line per probe request
        return Application(router: OperationsRoutes.router(metrics: metrics, readiness: readiness),
                           configuration: .init(address: .hostname(host, port: port), serverName: "waymark"),
                           onServerRunning: { _ in logger.info("operations endpoint up", metadata: ["http.address": "\(host):\(port)"]) },
                           logger: quiet)
    }
}

/// Asks Redis (PING) and Kafka (topic metadata) once a second, each in its own loop, and remembers
/// when each last answered. Readiness needs both within ``freshness``: a frozen Redis or broker makes
/// a worker unready within seconds even while a call to it hangs.
public final class DependencyProbe: Service, Sendable {
    let redis: RedisConfiguration
    let client: KafkaClientConfiguration
    let topic: String
    let logger: Logger
    /// How recent the last answer of each dependency must be.
    public let freshness: Duration
    private let lastAnswer = Mutex<(redis: ContinuousClock.Instant?, kafka: ContinuousClock.Instant?)>((nil, nil))

    public init(redis: RedisConfiguration, client: KafkaClientConfiguration, topic: String, logger: Logger, freshness: Duration = .seconds(4)) {
        var probing = redis
        probing.commandTimeout = .seconds(2)
        probing.connectTimeout = .seconds(2)
        self.redis = probing
        self.client = client
        self.topic = topic
        self.logger = logger
        self.freshness = freshness
    }

    /// Ready when both answered within ``freshness``; otherwise which one did not.
    public func readiness() -> Readiness {
        let (r, k) = lastAnswer.withLock { $0 }
        let now = ContinuousClock.now
        func fresh(_ t: ContinuousClock.Instant?) -> Bool { t.map { now - $0 <= freshness } ?? false }
        switch (fresh(r), fresh(k)) {
        case (true, true): return .ready
        case (false, true): return Readiness(isReady: false, detail: "redis: no answer within \(freshness)")
        case (true, false): return Readiness(isReady: false, detail: "kafka: no answer within \(freshness)")
        case (false, false): return Readiness(isReady: false, detail: "redis and kafka: no answer within \(freshness)")
        }
    }

    public func run() async throws {
        let up = (redis: Gauge(label: "waymark_dependency_up", dimensions: [("dependency", "redis")]),
                  kafka: Gauge(label: "waymark_dependency_up", dimensions: [("dependency", "kafka")]))
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                var connection: RedisConnection?
                while !Self.stopping {
                    do {
                        if connection == nil { connection = try await RedisConnection.connect(redis, logger: logger) }
                        _ = try await connection!.send(RedisCommand("PING"))
                        lastAnswer.withLock { $0.redis = .now }
                        up.redis.record(1)
                    } catch {
                        up.redis.record(0)
                        await connection?.close()
                        connection = nil
                    }
                    try? await Task.sleep(for: .seconds(1))
                }
                await connection?.close()
            }
            group.addTask { [self] in
                guard let admin = try? KafkaAdmin(client: client) else { return }
                while !Self.stopping {
                    if (try? await admin.describeTopics([topic])) != nil {
                        lastAnswer.withLock { $0.kafka = .now }
                        up.kafka.record(1)
                    } else {
                        up.kafka.record(0)
                    }
                    try? await Task.sleep(for: .seconds(1))
                }
            }
        }
    }

    private static var stopping: Bool { Task.isCancelled || Task.isShuttingDownGracefully }
}

/// A second SIGTERM or SIGINT while draining exits at once (status 130): an operator's Ctrl-C twice.
final class SecondSignalExits {
    private let sources: [any DispatchSourceSignal]

    init(logger: Logger) {
        let seen = Mutex(0)
        sources = [SIGTERM, SIGINT].map { number in
            signal(number, SIG_IGN)  // the dispatch source (and the service group's) handle it instead
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                let count = seen.withLock { $0 += 1; return $0 }
                if count == 1 {
                    logger.notice("signal received: finishing in-flight work, committing, leaving the group", metadata: ["signal": "\(number)"])
                } else {
                    logger.warning("second signal: exiting without finishing in-flight work")
                    exit(130)
                }
            }
            source.resume()
            return source
        }
    }

    deinit { sources.forEach { $0.cancel() } }
}
