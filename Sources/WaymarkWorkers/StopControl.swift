import ServiceLifecycle
import Synchronization

/// When a worker loop should end, and how long its in-flight work may keep retrying after that.
///
/// A worker stops on ``request()`` (its `stop()`, or graceful shutdown from a `ServiceGroup` on
/// SIGTERM/SIGINT) or when its task is cancelled. Stopping ends the loop after the batch in
/// flight; that batch may keep retrying (Kafka or Redis briefly away) for ``drainTimeout``, after
/// which it gives up: its state and outbox are already durable in Redis, and its input offsets are
/// not committed, so the next owner of the partitions replays it as a no-op and outbox recovery
/// publishes what it decided. Cancellation gives up at once.
public final class StopControl: Sendable {
    private let requested = Mutex<ContinuousClock.Instant?>(nil)
    private let cancelled = Mutex(false)
    /// How long in-flight work may go on retrying once a stop was requested.
    public let drainTimeout: Duration

    public init(drainTimeout: Duration = .seconds(20)) { self.drainTimeout = drainTimeout }

    /// Asks the loop to end after its current step.
    public func request() { requested.withLock { if $0 == nil { $0 = .now } } }

    /// Marks the worker's task as cancelled (for work running in other tasks, which cannot see it).
    public func cancel() { cancelled.withLock { $0 = true }; request() }

    /// Whether the loop should end: stop requested or the task cancelled.
    public var isStopping: Bool { requested.withLock { $0 != nil } || cancelled.withLock { $0 } || Task.isCancelled }

    /// Whether retries of in-flight work should give up: cancelled, or stopping for longer than ``drainTimeout``.
    public var shouldGiveUp: Bool {
        if cancelled.withLock({ $0 }) { return true }
        guard let since = requested.withLock({ $0 }) else { return false }
        return ContinuousClock.now - since > drainTimeout
    }

    /// Runs a worker's loop so that graceful shutdown and cancellation both end it.
    public func run(_ body: () async throws -> Void) async throws {
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await body()
            } onGracefulShutdown: {
                self.request()
            }
        } onCancel: {
            self.cancel()
        }
    }

    /// Sleeps unless stopping; returns `false` (at once) if the worker should stop.
    public func sleep(for duration: Duration) async -> Bool {
        if isStopping { return false }
        do { try await Task.sleep(for: duration) } catch { return false }
        return !isStopping
    }
}
