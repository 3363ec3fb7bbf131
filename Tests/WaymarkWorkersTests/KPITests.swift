import Foundation
import Testing
import WaymarkAnalytics
import WaymarkControl
import WaymarkEngine
import WaymarkRedis
import WaymarkSample
import WaymarkTestSupport
import WaymarkWire
@testable import WaymarkWorkers

@Suite("KPI counters on the real stack", .serialized)
struct KPITests {
    /// Runs until the group has read both input topics to their end.
    func drained(_ h: TestStack, group: String) async throws -> Bool {
        try await h.eventually(timeout: .seconds(60)) {
            try await h.admin.lag(group: group, topics: [h.settings.kafka.decisions.name, h.settings.kafka.deliveries.name])
                .map(\.lag).reduce(0, +) == 0
        }
    }

    /// The counters of every shipped journey, summed over the range, as `journey|field` → count.
    func counters(_ h: TestStack, from: Int64, to: Int64) async throws -> [String: Int64] {
        let connection = try await RedisConnection.connect(h.redis)
        let reader = KPIReader(connection: connection, keys: h.keys)
        var out: [String: Int64] = [:]
        for journey in h.engine.journeys.map(\.name) {
            for (cell, n) in try await reader.series(journey: journey, from: from, to: to).totals {
                out["\(journey)|\(cell.metric.rawValue)|\(cell.stage)|\(cell.step)|\(cell.channel)|\(cell.arm)|\(cell.bucket)", default: 0] += n
            }
        }
        await connection.close()
        return out
    }

    @Test("counters equal an independent count of journey.decisions and deliveries over two generated days; re-reading everything adds nothing")
    func countersMatchTopics() async throws {
        try await TestStack.with { h in
            let customers = 200
            let firstDay: Int64 = 1_795_651_200_000 - 3 * 86_400_000
            var profiles: [SampleRecord] = [], events: [SampleRecord] = []
            for day in 0..<2 {
                var generator = RetailDay(seed: 11 + UInt64(day), customers: customers, dayStart: firstDay + Int64(day) * 86_400_000)
                generator.idPrefix = "k\(day)-"
                let records = generator.generate()
                if day == 0 { profiles = records.filter { $0.kind == .profile } }
                events += records.filter { $0.kind == .touchpoint }
            }
            try await h.produce("customers", profiles.map { ($0.key, $0.value) })
            try await h.produce("touchpoints", events.map { ($0.key, $0.value) })
            let now = Timestamp(milliseconds: firstDay + 2 * 86_400_000 + 9 * 3_600_000)
            let clock = TestClock(now)
            let env = h.environment(clock: clock)
            let handoffs = h.local.directory.appendingPathComponent("kpi-handoffs.jsonl").path
            let sender = SenderWorker(environment: env, channels: h.settings.kafka.channels.compactMap(Channel.init(rawValue:)),
                                      provider: try FileProvider(path: handoffs), client: h.client, redis: h.redis)
            let kpis = KPIWorker(environment: env, client: h.client, redis: h.redis)
            let side = Task { try await withThrowingTaskGroup(of: Void.self) { g in
                g.addTask { try await sender.run() }
                g.addTask { try await kpis.run() }
                try await g.waitForAll()
            } }
            try await h.withWorkers(clock: clock) { worker, scheduler in
                #expect(try await h.eventually(timeout: .seconds(90)) { worker.stats.touchpoints >= events.count })
                for step in 1...48 {
                    clock.set(now.adding(.minutes(Int64(30 * step))))
                    let ticks = scheduler.stats.ticks
                    #expect(try await h.eventually { scheduler.stats.ticks >= ticks + 2 })
                }
                try await Task.sleep(for: .seconds(1))
            }
            #expect(try await h.eventually(timeout: .seconds(30)) {
                try await h.admin.lag(group: h.settings.kafka.senderGroup, topics: h.settings.kafka.channels.map(h.settings.kafka.outboundTopic))
                    .map(\.lag).reduce(0, +) == 0
            })
            try await Task.sleep(for: .seconds(1))
            #expect(try await drained(h, group: h.settings.kafka.kpiGroup))

            // The independent count: every decision and receipt read back from Kafka, copies published
            // again by recovery counted once, tallied here by the rules written out plainly.
            var expected: [String: Int64] = [:]
            func count(_ journey: String, _ metric: String, stage: String = "", step: String = "", channel: String = "", arm: String = "", bucket: Int = 0) {
                expected["\(journey)|\(metric)|\(stage)|\(step)|\(channel)|\(arm)|\(bucket)", default: 0] += 1
            }
            var seen = Set<String>()
            for record in try await h.read("journey.decisions", settle: true, timeout: .seconds(5)) {
                if let id = record.header(recordIDHeader), !seen.insert(String(decoding: id, as: UTF8.self)).inserted { continue }
                let d = jsonObject(record.value)
                guard let journey = d["journey"] as? String, let reason = d["reason"] as? String, let rule = d["rule"] as? String else { continue }
                let stage = d["stage"] as? String ?? "", step = d["step"] as? String ?? "", channel = d["channel"] as? String ?? ""
                let arm = d["arm"] as? String ?? ""
                switch reason {
                case "journey_entered": count(journey, "entered", arm: arm)
                case "stage_reached": count(journey, "stage", stage: stage, arm: arm)
                case "journey_exited": count(journey, "exited", stage: stage, arm: arm)
                case "journey_completed": count(journey, "completed", stage: stage, arm: arm)
                case "converted":
                    count(journey, "converted", stage: stage, step: step, channel: channel, arm: arm)
                    // Time-to-convert buckets: [1 min · 2^((i−1)/2), 1 min · 2^(i/2)), by plain floating point.
                    let minutes = Double(d["elapsed_ms"] as! Int) / 60_000
                    let bucket = minutes < 1 ? 0 : min(35, Int((2 * log2(minutes)).rounded(.down)) + 1)
                    count(journey, "ttc:\(bucket)", arm: arm)
                case "sent":
                    count(journey, "decided", stage: stage, step: step, channel: channel, arm: arm)
                case "fallback_channel" where !rule.hasPrefix("provider"):  // a sender's re-send after a provider failure is no new decision
                    count(journey, "decided", stage: stage, step: step, channel: channel, arm: arm)
                case "suppressed_holdout": count(journey, "held_out", stage: stage, step: step, arm: arm)
                case _ where reason.hasPrefix("suppressed_") || reason == "cancelled_journey_exit":
                    count(journey, "suppressed", stage: stage, step: step, channel: channel, arm: arm)
                default: break
                }
            }
            var receipts = Set<String>()
            for record in try await h.read("deliveries", settle: true, timeout: .seconds(5)) {
                let t = jsonObject(record.value)
                guard let id = t["event_id"] as? String, receipts.insert(id).inserted, let type = t["type"] as? String,
                      let a = t["attributes"] as? [String: Any], let journey = a["journey"] as? String, a["message_id"] != nil else { continue }
                count(journey, String(type.dropFirst("message_".count)), step: a["step"] as? String ?? "", channel: a["channel"] as? String ?? "",
                      arm: a["arm"] as? String ?? "")
            }

            let from = firstDay - 86_400_000, to = now.milliseconds + 3 * 86_400_000
            // Store order (metric first in the field) differs from this key order; compare as maps.
            var stored: [String: Int64] = [:]
            let raw = try await counters(h, from: from, to: to)
            for (key, n) in raw {
                var parts = key.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
                if parts[1] == "ttc" { parts[1] = "ttc:\(parts[6])" }
                parts[6] = "0"
                stored[parts.joined(separator: "|"), default: 0] += n
            }
            let differences = Set(expected.keys).union(stored.keys).filter { expected[$0] != stored[$0] }.sorted()
            #expect(differences.isEmpty, "counters differ from the topics: \(differences.prefix(10).map { "\($0): topics \(expected[$0] ?? 0), counters \(stored[$0] ?? 0)" })")
            // The stream exercised what the counters are for: all three arms, the holdout's withheld messages, conversions.
            for arm in ["A", "B", "holdout"] { #expect((expected["abandoned_cart|entered||||\(arm)|0"] ?? 0) > 0, "no \(arm) instances") }
            #expect(expected.keys.contains { $0.hasPrefix("abandoned_cart|held_out|") })
            #expect(expected.keys.contains { $0.hasPrefix("abandoned_cart|converted|") })
            #expect(expected.keys.contains { $0.hasPrefix("abandoned_cart|sent|") })

            // A second KPI worker in a fresh group reads both topics again from the start: the per-partition
            // offset marks make every record count once, so nothing changes.
            var again = env
            again.settings.kafka.kpiGroup = "waymark-kpis-again"
            let second = KPIWorker(environment: again, client: h.client, redis: h.redis)
            let secondTask = Task { try await second.run() }
            #expect(try await drained(h, group: "waymark-kpis-again"))
            #expect(second.totals.records > 0)
            #expect(second.totals.increments == 0)
            second.stop()
            try await secondTask.value
            #expect(try await counters(h, from: from, to: to) == raw)

            // And the report reads them back: the experiment's exposures are the entered counts per arm.
            let connection = try await RedisConnection.connect(h.redis)
            let journey = try #require(h.engine.journeys.first { $0.name == "abandoned_cart" })
            let series = try await KPIReader(connection: connection, keys: h.keys).series(journey: journey.name, from: from, to: to)
            await connection.close()
            let report = try #require(ExperimentReport(series: series, journey: journey))
            for arm in report.arms {
                #expect(arm.conversion.trials == expected["abandoned_cart|entered||||\(arm.arm)|0"] ?? 0)
            }

            kpis.stop(); sender.stop()
            try await side.value
        }
    }
}
