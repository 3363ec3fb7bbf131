import Foundation

/// CPU-bound work of one batch spread over the machine's cores.
///
/// A journey worker's batch is parsed and computed on one thread otherwise, while Redis and the
/// broker wait for it: `make bench` measured the processing thread at 100 % of a core with the
/// rest of the machine partly idle. Parsing records and running the (pure) engine per customer
/// are independent per item, so both are split into contiguous chunks, one child task each, on
/// Swift's cooperative pool (no blocking calls inside), and the results put back in order.
enum ParallelMap {
    /// Chunks per batch: a few per core, so a slow chunk does not leave a core idle and other
    /// tasks on the pool (the publish stage) get a turn between chunks.
    static let chunksPerCore = 2
    /// Below this many items the work is done inline (child tasks cost more than they save).
    static let minimumItems = 256

    static let cores = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// `items.map(transform)`, in order, computed in chunks concurrently when worth it.
    static func map<Item: Sendable, Result: Sendable>(
        _ items: [Item], cores: Int = ParallelMap.cores, _ transform: @escaping @Sendable (Item) throws -> Result
    ) async throws -> [Result] {
        let chunks = min(cores * chunksPerCore, items.count / max(minimumItems / 2, 1))
        if cores <= 1 || items.count < minimumItems || chunks <= 1 { return try items.map(transform) }
        let size = (items.count + chunks - 1) / chunks
        return try await withThrowingTaskGroup(of: (Int, [Result]).self) { group in
            for (index, start) in stride(from: 0, to: items.count, by: size).enumerated() {
                let end = min(start + size, items.count)
                group.addTask { (index, try items[start..<end].map(transform)) }
            }
            var parts = [[Result]](repeating: [], count: chunks)
            for try await (index, part) in group { parts[index] = part }
            return parts.flatMap { $0 }
        }
    }
}
