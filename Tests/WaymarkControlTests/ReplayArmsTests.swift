import Foundation
import Testing
import WaymarkConfig
import WaymarkControl
import WaymarkEngine
import WaymarkSample
import WaymarkWire

/// `<repo>`, from this file's location.
private let repoRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

@Suite("Replay dry run per experiment arm (what-if of weights and variants)")
struct ReplayArmsTests {
    /// The shipped engine, with the cart experiment's weights and arm B's template replaced.
    static func engine(weights: (Double, Double), templateB: String) throws -> JourneyEngine {
        let shipped = try JourneyLoader.loadEngine(configDirectory: repoRoot + "/config")
        var journeys = shipped.journeys
        let i = try #require(journeys.firstIndex { $0.name == "abandoned_cart" })
        journeys[i].experiment?.arms = [ExperimentArm(name: "A", weight: weights.0), ExperimentArm(name: "B", weight: weights.1)]
        for s in journeys[i].stages.indices {
            for t in journeys[i].stages[s].steps.indices where journeys[i].stages[s].steps[t].variants["B"] != nil {
                journeys[i].stages[s].steps[t].variants["B"]?.template = templateB
            }
        }
        return try JourneyEngine(journeys: journeys, rules: shipped.rules)
    }

    /// A generated day, parsed as a replay reads history (touchpoints in order, latest profiles).
    static func day(seed: UInt64, customers: Int, dayStart: Int64) -> (events: [Touchpoint], profiles: [String: CustomerProfile]) {
        let parser = RecordParser(limits: IngestLimits(maxFutureSkew: .days(36_500), maxAge: .zero))
        let far = Timestamp(milliseconds: dayStart + 30 * 86_400_000)
        var profiles: [String: CustomerProfile] = [:]
        var events: [Touchpoint] = []
        for r in RetailDay(seed: seed, customers: customers, dayStart: dayStart).generate() {
            if r.kind == .profile, case .success(let p) = parser.profile(key: ArraySlice(r.key.utf8), value: ArraySlice(r.value)) { profiles[p.customerID] = p }
            if r.kind == .touchpoint, case .success(let t) = parser.touchpoint(key: ArraySlice(r.key.utf8), value: ArraySlice(r.value), now: far) { events.append(t) }
        }
        return (events, profiles)
    }

    @Test("shifting weights to arm A moves carts to A with A's copy; the total of reminders stays")
    func weightsShift() throws {
        let dayStart: Int64 = 1_795_651_200_000
        let (events, profiles) = Self.day(seed: 5, customers: 800, dayStart: dayStart)
        let current = try Self.engine(weights: (50, 50), templateB: "cart_reminder_1_offer")
        let proposed = try Self.engine(weights: (90, 10), templateB: "cart_reminder_1_offer")
        // From noon: carts abandoned in the morning were assigned under the current weights.
        let from = Timestamp(milliseconds: dayStart + 12 * 3_600_000), to = Timestamp(milliseconds: dayStart + 4 * 86_400_000)
        var run = ReplayDryRun(current: current, proposed: proposed, from: from, to: to)
        run.baseline = .replay
        let report = run.run(events: events, profiles: profiles, published: [])
        let rows = report.arms.filter { $0.journey == "abandoned_cart" }
        let a = try #require(rows.first { $0.arm == "A" }), b = try #require(rows.first { $0.arm == "B" })
        #expect(a.baseline + b.baseline == a.replayed + b.replayed, "the same carts get reminders, only their arms move")
        #expect(a.replayed > a.baseline && b.replayed < b.baseline)
        #expect(a.templateChanged > 0, "carts moved from B to A get A's copy: \(a)")
        #expect(b.templateChanged == 0)
        let holdout = rows.first { $0.arm == Experiment.holdoutArm }
        #expect(holdout == nil || holdout!.baseline == 0 && holdout!.replayed == 0, "the holdout gets no messages")
    }

    @Test("changing arm B's template only is reported as template changes in arm B, nothing added or removed")
    func templateOnly() throws {
        let dayStart: Int64 = 1_795_651_200_000
        let (events, profiles) = Self.day(seed: 6, customers: 500, dayStart: dayStart)
        var run = ReplayDryRun(current: try Self.engine(weights: (50, 50), templateB: "cart_reminder_1_offer"),
                               proposed: try Self.engine(weights: (50, 50), templateB: "cart_reminder_2"),
                               from: Timestamp(milliseconds: dayStart), to: Timestamp(milliseconds: dayStart + 4 * 86_400_000))
        run.baseline = .replay
        let report = run.run(events: events, profiles: profiles, published: [])
        let b = try #require(report.arms.first { $0.journey == "abandoned_cart" && $0.arm == "B" })
        let a = try #require(report.arms.first { $0.journey == "abandoned_cart" && $0.arm == "A" })
        #expect(b.templateChanged > 0 && b.added == 0 && b.removed == 0 && b.baseline == b.replayed)
        #expect(a.templateChanged == 0 && a.baseline == a.replayed)
    }
}
