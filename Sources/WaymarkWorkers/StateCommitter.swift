import Logging
import Metrics
import WaymarkEngine
import WaymarkState

/// Load → compute → compare-and-set, retried on conflicts: the one loop behind batch processing,
/// scheduler wake-ups and replay rebuilds, with one policy for conflicts and unreadable state.
///
/// - **Conflicts** (another writer committed first: a worker that briefly owned the same partition,
///   a scheduler, a rebuild): reload and recompute, up to ``maxAttempts`` rounds. Event-id
///   deduplication makes recomputing safe. Customers still conflicting after that are reported as
///   ``Outcome/conflicting``, never dropped: each caller says how it retries them.
/// - **Unreadable state** (corrupt bytes, or a format written by a newer version during a rolling
///   upgrade): never overwritten and never skipped silently. Reported as ``Outcome/unreadable``,
///   counted in `waymark_state_unreadable_total`, logged with the customer's shard (not its id).
public struct StateCommitter: Sendable {
    public let store: RedisStateStore
    public let logger: Logger
    /// Rounds of reload-and-recompute before a customer is reported as still conflicting.
    public let maxAttempts: Int

    public init(store: RedisStateStore, logger: Logger, maxAttempts: Int = 50) {
        self.store = store
        self.logger = logger
        self.maxAttempts = maxAttempts
    }

    /// What happened to one customer.
    public enum Outcome<Payload: Sendable>: Sendable {
        /// Written: the new version, the write and what `compute` returned with it.
        case committed(version: Int64, write: StateWrite, payload: Payload)
        /// `compute` chose not to write (nothing to do for this customer).
        case skipped
        /// The stored state could not be decoded; nothing was written.
        case unreadable(StateDecodingError)
        /// Still conflicting after ``maxAttempts`` rounds; nothing was written.
        case conflicting
    }

    /// Time spent per stage, summed over rounds, and conflicts met.
    public struct RunStats: Sendable {
        public var loadMilliseconds: Int64 = 0
        public var computeMilliseconds: Int64 = 0
        public var commitMilliseconds: Int64 = 0
        /// Writes refused because another writer committed first (each was recomputed).
        public var conflicts = 0
    }

    /// Runs the loop for `customers`. `compute` gets the stored record and its decoded state (empty for
    /// a new customer) and returns the write to make with a payload for the caller, or `nil` to skip.
    /// `wallNow` (ms) dates new outbox entries for crash recovery.
    public func run<Payload: Sendable>(
        _ customers: [String], wallNow: @Sendable () -> Int64,
        compute: (StoredCustomer, CustomerState) throws -> (StateWrite, Payload)?
    ) async throws -> (outcomes: [String: Outcome<Payload>], stats: RunStats) {
        var outcomes: [String: Outcome<Payload>] = [:]
        var stats = RunStats()
        var pending = customers
        var attempt = 0
        while !pending.isEmpty {
            attempt += 1
            if attempt > maxAttempts {
                for customer in pending { outcomes[customer] = .conflicting }
                Counter(label: "waymark_state_conflicts_exhausted_total").increment(by: pending.count)
                logger.warning("customers still conflicting after every attempt", metadata: [
                    "state.customers": "\(pending.count)", "state.attempts": "\(maxAttempts)",
                ])
                break
            }
            let loadStart = ContinuousClock.now
            let loaded = try await store.load(pending)
            let computeStart = ContinuousClock.now
            stats.loadMilliseconds += (computeStart - loadStart).milliseconds
            var writes: [StateWrite] = []
            var payloads: [Payload] = []
            writes.reserveCapacity(loaded.count)
            for stored in loaded {
                var state = CustomerState()
                if let bytes = stored.state {
                    do throws(StateDecodingError) { state = try CustomerState(decoding: bytes) } catch {
                    outcomes[stored.customer] = .unreadable(error)
                    Counter(label: "waymark_state_unreadable_total").increment()
                    logger.error("unreadable customer state left untouched", metadata: [
                        "error": "\(error)", "state.shard": "\(store.keys.shard(of: stored.customer))",
                    ])
                    continue
                    }
                }
                guard let (write, payload) = try compute(stored, state) else {
                    outcomes[stored.customer] = .skipped
                    continue
                }
                writes.append(write)
                payloads.append(payload)
            }
            let commitStart = ContinuousClock.now
            stats.computeMilliseconds += (commitStart - computeStart).milliseconds
            let results = try await store.commit(writes, now: wallNow())
            stats.commitMilliseconds += (ContinuousClock.now - commitStart).milliseconds
            var conflicted: [String] = []
            for ((write, payload), result) in zip(zip(writes, payloads), results) {
                switch result {
                case .committed(let version): outcomes[write.customer] = .committed(version: version, write: write, payload: payload)
                case .conflict: conflicted.append(write.customer)
                }
            }
            stats.conflicts += conflicted.count
            pending = conflicted
        }
        return (outcomes, stats)
    }
}
