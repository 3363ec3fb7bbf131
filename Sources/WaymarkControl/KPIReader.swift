import WaymarkAnalytics
import WaymarkRedis
import WaymarkState

/// Reads a journey's KPI counters for a time range into a ``KPISeries`` (one pipelined `HGETALL`
/// per hour: 720 for 30 days, a few milliseconds on a local Redis).
public struct KPIReader: Sendable {
    public let store: KPIStore
    public init(connection: RedisConnection, keys: KeySpace) { store = KPIStore(connection: connection, keys: keys) }

    /// Counters of `journey` for the hours overlapping [from, to) (ms; widened to whole hours).
    public func series(journey: String, from: Int64, to: Int64) async throws -> KPISeries {
        let start = from - ((from % 3_600_000) + 3_600_000) % 3_600_000
        var end = to - ((to % 3_600_000) + 3_600_000) % 3_600_000
        if end < to { end += 3_600_000 }
        var hours: [Int64: [KPICell: Int64]] = [:]
        for (hour, fields) in try await store.read(journey: journey, from: start, to: end) {
            var cells: [KPICell: Int64] = [:]
            for (field, n) in fields { if let cell = KPICell(field: field) { cells[cell, default: 0] += n } }
            if !cells.isEmpty { hours[hour] = cells }
        }
        return KPISeries(journey: journey, from: start, to: end, hours: hours)
    }
}
