import CoreMetrics
import Hummingbird
import Prometheus

/// A Prometheus registry, the swift-metrics factory that records into it, and the `/metrics` handler.
///
/// Libraries record through swift-metrics (`Counter`, `Timer`, `Gauge`, `Recorder`) and never see
/// this type. The executable's `main` creates one exporter, calls ``bootstrap()`` once and serves
/// ``render()`` (see ``OperationsRoutes``). Tests create their own
/// exporter and pass ``factory`` explicitly (`Counter(label:dimensions:factory:)`) or bind it with
/// `withMetricsFactory(exporter.factory) { ... }`, so they never touch the global bootstrap.
///
/// Mapping (swift-prometheus): `Counter` → counter; `Gauge`/`Meter`/non-aggregating `Recorder` →
/// gauge; `Timer` → histogram in seconds (``durationBuckets``); aggregating `Recorder` → histogram
/// (``valueBuckets``). Dots and other characters invalid in Prometheus names become `_`
/// (`waymark.events` → `waymark_events`).
///
/// - Important: swift-prometheus stops the process (`fatalError`) if one metric name is used with
///   two types, or both with and without dimensions. Give every metric a fixed type and label set.
public struct PrometheusExporter: Sendable {
    /// The registry metrics are recorded into.
    public let registry: PrometheusCollectorRegistry
    /// The swift-metrics factory recording into ``registry``.
    public let factory: PrometheusMetricsFactory

    /// Default `Timer` buckets: 0.5 ms to 10 s, dense where Waymark's batch and provider latencies live.
    public static let durationBuckets: [Duration] = [
        .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
    ]

    /// Default aggregating `Recorder` buckets (sizes, counts).
    public static let valueBuckets: [Double] = [1, 5, 10, 50, 100, 500, 1000, 5000, 10000, 50000, 100000]

    /// Creates an exporter with a fresh registry.
    /// - Parameters:
    ///   - durationBuckets: histogram buckets for every `Timer` (default ``durationBuckets``).
    ///   - valueBuckets: histogram buckets for every aggregating `Recorder` (default ``valueBuckets``).
    public init(durationBuckets: [Duration] = PrometheusExporter.durationBuckets,
                valueBuckets: [Double] = PrometheusExporter.valueBuckets) {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = durationBuckets
        factory.defaultValueHistogramBuckets = valueBuckets
        factory.nameAndLabelSanitizer = { name, labels in
            (Self.sanitize(name), labels.map { (Self.sanitize($0.0), $0.1) })
        }
        self.registry = registry
        self.factory = factory
    }

    /// Makes ``factory`` the process-wide swift-metrics backend. Call once, from `main` only.
    public func bootstrap() {
        MetricsSystem.bootstrap(factory)
    }

    /// The current values in the Prometheus text exposition format (version 0.0.4).
    public func render() -> [UInt8] {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(4096)
        registry.emit(into: &buffer)
        return buffer
    }

    /// `Content-Type` of ``render()``'s output.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// Replaces every character not allowed in a Prometheus name (`[a-zA-Z_:][a-zA-Z0-9_:]*`;
    /// colons are kept only in metric names, but Waymark uses none) with `_`.
    static func sanitize(_ name: String) -> String {
        var bytes = Array(name.utf8)
        for index in bytes.indices {
            let byte = bytes[index]
            let letter = (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122) || byte == 95
            let digit = byte >= 48 && byte <= 57
            if !(letter || (digit && index > 0)) { bytes[index] = 95 }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// What `/readyz` reports.
public struct Readiness: Sendable, Equatable {
    /// `true` when the worker can take traffic.
    public var isReady: Bool
    /// A short reason shown in the response body (for example `"kafka: partitions not assigned"`);
    /// must not contain personal data.
    public var detail: String

    /// Creates a readiness report.
    public init(isReady: Bool, detail: String = "") {
        self.isReady = isReady
        self.detail = detail
    }

    /// Ready, with detail `ready`.
    public static let ready = Readiness(isReady: true, detail: "ready")
}

/// The operations endpoint every worker serves, on Hummingbird:
/// - `GET /metrics`: the exporter's metrics in the Prometheus text format;
/// - `GET /healthz`: `200 ok` while the process can answer at all (liveness);
/// - `GET /readyz`: `200` when `readiness()` says ready, else `503`, with its detail as the body.
///
/// `readiness` runs on every probe: keep it cheap and non-blocking (read state a background task
/// maintains; do not ping Redis from it).
public enum OperationsRoutes {
    public static func router(metrics: PrometheusExporter,
                              readiness: @escaping @Sendable () -> Readiness = { .ready }) -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/metrics") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: PrometheusExporter.contentType],
                     body: ResponseBody(byteBuffer: ByteBuffer(bytes: metrics.render())))
        }
        router.get("/healthz") { _, _ -> Response in text("ok\n", .ok) }
        router.get("/readyz") { _, _ -> Response in
            let state = readiness()
            let detail = state.detail.isEmpty ? (state.isReady ? "ready" : "not ready") : state.detail
            return text(detail + "\n", state.isReady ? .ok : .serviceUnavailable)
        }
        return router
    }

    static func text(_ body: String, _ status: HTTPResponse.Status) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"],
                 body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }
}
