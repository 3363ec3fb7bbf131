#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization
import WaymarkConfig
import WaymarkRedis
import WaymarkEngine
import WaymarkWire
import WaymarkState

/// What every worker needs besides its connections: topics, rules, limits and the clock.
public struct WorkerEnvironment: Sendable {
    public var settings: WaymarkSettings
    public var engine: JourneyEngine
    public var keys: KeySpace
    public var parser: RecordParser
    /// The clock. Live workers use the wall clock; tests inject their own.
    public var clock: @Sendable () -> Timestamp
    public var logger: Logger
    /// Message templates (`config/templates/`), rendered by senders; empty when there are none.
    public var templates: TemplateStore = TemplateStore()

    public init(settings: WaymarkSettings, engine: JourneyEngine, clock: @escaping @Sendable () -> Timestamp = WallClock.now,
                logger: Logger = Logger(label: "waymark.worker")) {
        self.settings = settings
        self.engine = engine
        self.keys = KeySpace(prefix: settings.redis.keyPrefix, shards: settings.redis.shards)
        self.parser = RecordParser(limits: IngestLimits(
            maxBytes: settings.worker.maxRecordBytes,
            maxFutureSkew: .seconds(Int64(settings.worker.maxFutureSkewSeconds)),
            maxAge: .days(Int64(settings.worker.maxEventAgeDays)),
            maxAgeSetting: "worker.max_event_age_days, or --max-event-age-days of `waymark worker journey`, now \(settings.worker.maxEventAgeDays)"))
        self.clock = clock
        self.logger = logger
    }

    /// What erasure (a tombstone, `waymark forget customer`) removes besides the profile.
    public var erasureScope: RedisStateStore.ErasureScope {
        .init(state: settings.worker.eraseState, senderClaims: settings.worker.eraseSenderClaims)
    }

    /// A state store on `connection` with this environment's key space and retention.
    public func stateStore(_ connection: RedisConnection) -> RedisStateStore {
        RedisStateStore(connection: connection, keys: keys, stateTTLSeconds: settings.worker.stateTTLDays * 86_400,
                        decisionsKept: settings.worker.decisionsKept)
    }
}

/// The wall clock in milliseconds.
public enum WallClock {
    @Sendable public static func now() -> Timestamp {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Timestamp(milliseconds: Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000)
    }
}


/// A clock moved by hand: simulations (`waymark demo` walks through a generated day) and tests.
public final class ManualClock: Sendable {
    private let value: Mutex<Int64>
    public init(_ start: Timestamp) { value = Mutex(start.milliseconds) }
    public var now: Timestamp { Timestamp(milliseconds: value.withLock { $0 }) }
    public func set(_ time: Timestamp) { value.withLock { $0 = time.milliseconds } }
}

extension Duration {
    /// Whole milliseconds, for logs and metrics.
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}
