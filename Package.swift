// swift-tools-version: 6.1
import PackageDescription

/// Waymark: omnichannel customer-journey orchestration on Kafka and Redis.
///
/// Layers (each folder under Sources/ is one):
/// - `CRdKafka`, `CHiredis`: system-library shims (pkg-config) for librdkafka ≥ 2.2 and hiredis ≥ 1.2 with TLS.
/// - `WaymarkThreads`: threads Waymark owns, so blocking C calls never run on the cooperative pool.
/// - `WaymarkKafka`: producer, consumer and admin clients over librdkafka.
/// - `WaymarkRedis`: pipelined Redis connection over hiredis, with EVALSHA script support.
/// - `WaymarkHTTP`: the operations routes (metrics, health, readiness) on Hummingbird and the Prometheus registry.
/// - `WaymarkHTTPTesting`: a fake webhook provider for tests, a Hummingbird app (records requests, fails or stalls on demand).
/// - `WaymarkConfig`: YAML configuration, validated at start-up.
/// - `WaymarkEngine`: the pure journey engine (no I/O, deterministic).
/// - `WaymarkWire`: every wire format, one encoder and one decoder each (touchpoint, profile,
///   outbound message, decision, receipt, dead-letter headers, provider handoff) and the
///   conventions of `--json` output.
/// - `WaymarkState`: the Redis key layout and every read and write of journey and sender state.
/// - `WaymarkLocalStack`: starts a real redis-server and Tansu broker on free loopback ports.
/// - `WaymarkCLI` (`waymark`) and `WaymarkBench` (`waymark-bench`): executables.
let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "Waymark",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "waymark", targets: ["WaymarkCLI"]),
        .executable(name: "waymark-bench", targets: ["WaymarkBench"]),
        .library(name: "WaymarkKafka", targets: ["WaymarkKafka"]),
        .library(name: "WaymarkRedis", targets: ["WaymarkRedis"]),
        .library(name: "WaymarkEngine", targets: ["WaymarkEngine"]),
        .library(name: "WaymarkLocalStack", targets: ["WaymarkLocalStack"]),
        .library(name: "WaymarkHTTP", targets: ["WaymarkHTTP"]),
        .library(name: "WaymarkHTTPTesting", targets: ["WaymarkHTTPTesting"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
    ],
    targets: [
        .systemLibrary(name: "CRdKafka", pkgConfig: "rdkafka",
                       providers: [.apt(["librdkafka-dev (>= 2.2, built by deploy/scripts/setup.sh)"])]),
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis_ssl",
                       providers: [.apt(["libhiredis-dev (>= 1.2 with TLS, built by deploy/scripts/setup.sh)"])]),
        .target(name: "WaymarkThreads", swiftSettings: strict),
        .target(
            name: "WaymarkHTTP",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict),
        .target(
            name: "WaymarkHTTPTesting",
            dependencies: ["WaymarkHTTP", .product(name: "Hummingbird", package: "hummingbird"),
                           .product(name: "Logging", package: "swift-log"),
                           .product(name: "Crypto", package: "swift-crypto"),
                           .product(name: "_CryptoExtras", package: "swift-crypto")],
            swiftSettings: strict),
        .target(
            name: "WaymarkKafka",
            dependencies: ["CRdKafka", "WaymarkThreads", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),
        .target(
            name: "WaymarkRedis",
            dependencies: ["CHiredis", "WaymarkThreads", .product(name: "Logging", package: "swift-log"),
                           .product(name: "CoreMetrics", package: "swift-metrics")],
            swiftSettings: strict),
        .target(
            name: "WaymarkConfig",
            dependencies: ["WaymarkEngine", .product(name: "Yams", package: "Yams"), .product(name: "Mustache", package: "swift-mustache")],
            swiftSettings: strict),
        .target(name: "WaymarkEngine", swiftSettings: strict),
        .target(name: "WaymarkAnalytics", dependencies: ["WaymarkEngine", "WaymarkWire"], swiftSettings: strict),
        .target(name: "WaymarkSample", dependencies: ["WaymarkEngine", "WaymarkWire"], swiftSettings: strict),
        .target(name: "WaymarkState", dependencies: ["WaymarkRedis"], swiftSettings: strict),
        .target(name: "WaymarkWire", dependencies: ["WaymarkEngine"], swiftSettings: strict),
        .target(
            name: "WaymarkWorkers",
            dependencies: ["WaymarkKafka", "WaymarkRedis", "WaymarkState", "WaymarkEngine", "WaymarkWire", "WaymarkConfig", "WaymarkHTTP", "WaymarkAnalytics",
                           .product(name: "Logging", package: "swift-log"), .product(name: "Metrics", package: "swift-metrics"),
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                           .product(name: "Hummingbird", package: "hummingbird"),
                           .product(name: "AsyncHTTPClient", package: "async-http-client"),
                           .product(name: "NIOSSL", package: "swift-nio-ssl"),
                           .product(name: "Crypto", package: "swift-crypto"),
                           .product(name: "_CryptoExtras", package: "swift-crypto"),
                           .product(name: "Mustache", package: "swift-mustache")],
            swiftSettings: strict),
        .target(
            name: "WaymarkControl",
            dependencies: ["WaymarkKafka", "WaymarkRedis", "WaymarkConfig", "WaymarkEngine", "WaymarkWire", "WaymarkState", "WaymarkWorkers",
                           "WaymarkAnalytics",
                           .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),
        .target(
            name: "WaymarkChaos",
            dependencies: ["WaymarkLocalStack", "WaymarkKafka", "WaymarkRedis", "WaymarkState", "WaymarkEngine", "WaymarkWire",
                           "WaymarkConfig", "WaymarkControl", "WaymarkSample", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),
        .target(
            name: "WaymarkLocalStack",
            dependencies: [.product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),
        .executableTarget(
            name: "WaymarkCLI",
            dependencies: [
                "WaymarkKafka", "WaymarkRedis", "WaymarkConfig", "WaymarkEngine", "WaymarkLocalStack",
                "WaymarkControl", "WaymarkSample", "WaymarkWorkers", "WaymarkState", "WaymarkWire", "WaymarkHTTP", "WaymarkAnalytics",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "WaymarkBench",
            dependencies: [
                "WaymarkKafka", "WaymarkRedis", "WaymarkEngine", "WaymarkLocalStack", "WaymarkConfig",
                "WaymarkControl", "WaymarkSample", "WaymarkWorkers", "WaymarkState", "WaymarkWire", "WaymarkChaos",
                "WaymarkHTTPTesting",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        // What the integration suites share (a local stack with topics and journeys, readers, helpers).
        .target(
            name: "WaymarkTestSupport",
            dependencies: ["WaymarkConfig", "WaymarkControl", "WaymarkEngine", "WaymarkKafka", "WaymarkLocalStack", "WaymarkRedis",
                           "WaymarkState", "WaymarkWorkers", .product(name: "Logging", package: "swift-log")],
            path: "Tests/WaymarkTestSupport"),
        .testTarget(name: "WaymarkKafkaTests", dependencies: ["WaymarkKafka", "WaymarkLocalStack"]),
        .testTarget(name: "WaymarkRedisTests", dependencies: ["WaymarkRedis", "WaymarkLocalStack"]),
        .testTarget(name: "WaymarkLocalStackTests", dependencies: ["WaymarkLocalStack"]),
        .testTarget(
            name: "WaymarkControlTests",
            dependencies: ["WaymarkControl", "WaymarkTestSupport", "WaymarkLocalStack", "WaymarkSample", "WaymarkKafka", "WaymarkConfig",
                           "WaymarkWorkers", "WaymarkEngine", "WaymarkState", "WaymarkRedis", "WaymarkWire",
                           .product(name: "Logging", package: "swift-log")]),
        .testTarget(
            name: "WaymarkWorkersTests",
            dependencies: ["WaymarkWorkers", "WaymarkTestSupport", "WaymarkChaos", "WaymarkLocalStack", "WaymarkControl", "WaymarkConfig", "WaymarkKafka",
                           "WaymarkHTTP", "WaymarkHTTPTesting",
                           "WaymarkRedis", "WaymarkEngine", "WaymarkWire", "WaymarkState", "WaymarkSample",
                           .product(name: "Logging", package: "swift-log"),
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                           .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
                           .product(name: "AsyncHTTPClient", package: "async-http-client"),
                           .product(name: "Crypto", package: "swift-crypto"),
                           .product(name: "Hummingbird", package: "hummingbird")]),
        .testTarget(name: "WaymarkStateTests", dependencies: ["WaymarkState", "WaymarkRedis", "WaymarkLocalStack"]),
        .testTarget(
            name: "WaymarkWireTests",
            dependencies: ["WaymarkWire", "WaymarkEngine", "WaymarkSample"]),
        .testTarget(name: "WaymarkAnalyticsTests", dependencies: ["WaymarkAnalytics", "WaymarkEngine", "WaymarkWire"]),
        .testTarget(name: "WaymarkConfigTests", dependencies: ["WaymarkConfig", "WaymarkEngine"]),
        .testTarget(
            name: "WaymarkHTTPTests",
            dependencies: [
                "WaymarkHTTP", "WaymarkHTTPTesting",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]),
        .testTarget(
            name: "WaymarkEngineTests",
            dependencies: ["WaymarkEngine", "WaymarkWire", .product(name: "PropertyBased", package: "swift-property-based")]),
    ],
    swiftLanguageModes: [.v6]
)
