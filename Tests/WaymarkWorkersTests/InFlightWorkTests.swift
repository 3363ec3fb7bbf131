import Synchronization
import Testing
@testable import WaymarkWorkers

/// The journey worker's publish stages (``InFlightWork``): offsets committed in batch order, never
/// past a stage that failed, and back-pressure that waits for the oldest stage. No timing involved:
/// each stage is held by a gate the test opens.
@Suite("Publish stages in flight")
struct InFlightWorkTests {
    struct Failed: Error {}

    /// Indexes of the stages that committed, in commit order.
    final class Log: Sendable {
        private let entries = Mutex<[Int]>([])
        func append(_ index: Int) { entries.withLock { $0.append(index) } }
        var all: [Int] { entries.withLock { $0 } }
    }

    /// A stage body: waits for its gate, optionally fails, else waits for the stage before it and
    /// "commits" (appends its index), as the worker's stage does.
    static func stage(_ index: Int, gate: AsyncStream<Void>, fails: Bool = false,
                      log: Log) -> @Sendable (InFlightWork.Stage?) async throws -> Void {
        { previous in
            for await _ in gate {}
            if fails { throw Failed() }
            try await previous?.value
            log.append(index)
        }
    }

    /// Starts `count` stages of `records` records each (stage `failing` throws); returns their gates.
    static func startStages(_ count: Int, on work: InFlightWork, records: Int = 1, failing: Int? = nil,
                            log: Log) -> [AsyncStream<Void>.Continuation] {
        (0..<count).map { i in
            let (stream, continuation) = AsyncStream<Void>.makeStream()
            work.start(records: records, stage(i, gate: stream, fails: i == failing, log: log))
            return continuation
        }
    }

    @Test("commits in batch order although later stages are acknowledged first")
    func ordered() async {
        let work = InFlightWork()
        let log = Log()
        let gates = Self.startStages(5, on: work, log: log)
        #expect(work.count == 5)
        for gate in gates.reversed() { gate.finish() }
        await work.finish()
        #expect(log.all == [0, 1, 2, 3, 4])
        #expect(work.count == 0)
    }

    @Test("a failed stage holds back every later commit")
    func failureStopsLaterCommits() async {
        let work = InFlightWork()
        let log = Log()
        let gates = Self.startStages(5, on: work, failing: 2, log: log)
        for gate in gates { gate.finish() }
        await work.finish()
        #expect(log.all == [0, 1])
        #expect(work.count == 0)
    }

    @Test("makeRoom waits for the oldest stage when the depth or the record limit is reached")
    func backPressure() async {
        let work = InFlightWork()
        let log = Log()
        let gates = Self.startStages(2, on: work, records: 10, log: log)
        // Depth 2 reached: returns only once stage 0 has ended.
        let byDepth = Task { await work.makeRoom(depth: 2, records: 1, limit: 100); return log.all }
        gates[0].finish()
        #expect(await byDepth.value == [0])
        // 10 records in flight, 95 more would pass the limit of 100: waits for stage 1 too.
        let byRecords = Task { await work.makeRoom(depth: 16, records: 95, limit: 100); return log.all }
        gates[1].finish()
        #expect(await byRecords.value == [0, 1])
        // Nothing in flight: room for a batch larger than the limit.
        await work.makeRoom(depth: 16, records: 1_000, limit: 100)
        #expect(work.count == 0)
    }
}
