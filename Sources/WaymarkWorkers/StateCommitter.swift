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
        /// Waiting for commits after the last compute (commits overlap computing the next slice).
        public var commitMilliseconds: Int64 = 0
        /// Writes refused because another writer committed first (each was recomputed).
        public var conflicts = 0
    }

    /// Runs the loop for `customers`. `compute` gets the stored record and its decoded state (empty for
    /// a new customer) and returns the write to make with a payload for the caller, or `nil` to skip.
    /// It runs for several customers at once (``ParallelMap``): it must not depend on their order.
    /// `wallNow` (ms) dates new outbox entries for crash recovery.
    public func run<Payload: Sendable>(
        _ customers: [String], wallNow: @Sendable () -> Int64,
        compute: @escaping @Sendable (StoredCustomer, CustomerState) throws -> (StateWrite, Payload)?
    ) async throws -> (outcomes: [String: Outcome<Payload>], stats: RunStats) {
        var outcomes: [String: Outcome<Payload>] = [:]
        outcomes.reserveCapacity(customers.count)
        var stats = RunStats()
        var pending = customers
        var attempt = 0
        let keys = store.keys, logger = logger
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
            stats.loadMilliseconds += (ContinuousClock.now - loadStart).milliseconds
            // Compute and commit overlap: while Redis runs slice k's commit (on the connection's own
            // thread), the engine computes slice k+1 on the cores. Measured on `make bench`: computing
            // and committing one after the other left Redis and the worker waiting for each other.
            var commits: [(writes: [StateWrite], payloads: [Payload], task: Task<[CommitOutcome], any Error>)] = []
            var failure: (any Error)?
            for slice in Self.slices(loaded.count, minimum: Self.minimumSlice) {
                let computeStart = ContinuousClock.now
                let computed: [Computed<Payload>]
                do {
                    computed = try await ParallelMap.map(Array(loaded[slice])) { stored -> Computed<Payload> in
                        var state = CustomerState()
                        if let bytes = stored.state {
                            do throws(StateDecodingError) { state = try CustomerState(decoding: bytes) } catch {
                                Counter(label: "waymark_state_unreadable_total").increment()
                                logger.error("unreadable customer state left untouched", metadata: [
                                    "error": "\(error)", "state.shard": "\(keys.shard(of: stored.customer))",
                                ])
                                return .unreadable(error)
                            }
                        }
                        guard let (write, payload) = try compute(stored, state) else { return .skipped }
                        return .write(write, payload)
                    }
                } catch {
                    failure = error
                    break
                }
                var writes: [StateWrite] = []
                var payloads: [Payload] = []
                writes.reserveCapacity(slice.count)
                payloads.reserveCapacity(slice.count)
                for (stored, result) in zip(loaded[slice], computed) {
                    switch result {
                    case .write(let write, let payload): writes.append(write); payloads.append(payload)
                    case .skipped: outcomes[stored.customer] = .skipped
                    case .unreadable(let error): outcomes[stored.customer] = .unreadable(error)
                    }
                }
                stats.computeMilliseconds += (ContinuousClock.now - computeStart).milliseconds
                let (store, now, batch) = (store, wallNow(), writes)
                commits.append((writes, payloads, Task { try await store.commit(batch, now: now) }))
            }
            // Every commit started is awaited, also after a failure (none is left running unobserved).
            let waitStart = ContinuousClock.now
            var conflicted: [String] = []
            for commit in commits {
                let results: [CommitOutcome]
                do { results = try await commit.task.value } catch { failure = failure ?? error; continue }
                for ((write, payload), result) in zip(zip(commit.writes, commit.payloads), results) {
                    switch result {
                    case .committed(let version): outcomes[write.customer] = .committed(version: version, write: write, payload: payload)
                    case .conflict: conflicted.append(write.customer)
                    }
                }
            }
            stats.commitMilliseconds += (ContinuousClock.now - waitStart).milliseconds
            if let failure { throw failure }
            stats.conflicts += conflicted.count
            pending = conflicted
        }
        return (outcomes, stats)
    }

    /// Customers per compute-and-commit slice: at least this many (a smaller commit pipeline costs
    /// more round trips than the overlap saves), at most four slices per round.
    static let minimumSlice = 400

    /// `0..<count` cut into at most four contiguous ranges of at least `minimum` (one if fewer).
    static func slices(_ count: Int, minimum: Int) -> [Range<Int>] {
        let pieces = max(1, min(4, count / max(minimum, 1)))
        let size = (count + pieces - 1) / pieces
        return stride(from: 0, to: count, by: max(size, 1)).map { $0..<min($0 + size, count) }
    }

    /// What computing one loaded customer gave.
    private enum Computed<Payload: Sendable>: Sendable {
        case write(StateWrite, Payload)
        case skipped
        case unreadable(StateDecodingError)
    }
}
