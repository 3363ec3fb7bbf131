import ArgumentParser
import Foundation
import WaymarkConfig
import WaymarkEngine
import WaymarkWire
import WaymarkSample

/// One core, no I/O: touchpoint parsing, the engine, and the state codec on a generated day.
struct Engine: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Engine micro-benchmark on one core: parse, decide, encode (no Kafka, no Redis).",
        discussion: """
            Replays a generated day through the engine in batches the way a journey worker does (group by \
            customer, decode state, run, encode state) and reports rates per stage. Redis round trips per \
            event follow from the batch size: a worker makes one load and one commit pipeline per batch.

            Examples:
              waymark-bench engine
              waymark-bench engine --customers 50000 --batch 10000
            """)

    @Option(help: "Customers in the generated day (≈10 touchpoints each).") var customers = 30_000
    @Option(help: "Records per batch (worker.max_batch).") var batch = 10_000
    @Option(help: "Directory with rules.yaml and journeys/.") var journeys = "config"

    func run() async throws {
        let engine = try JourneyLoader.loadEngine(configDirectory: journeys)
        let day = RetailDay(seed: 5, customers: customers).generate()
        let touchpoints = day.filter { $0.kind == .touchpoint }
        let profileRecords = day.filter { $0.kind == .profile }
        let parser = RecordParser()
        let now = Timestamp(milliseconds: (touchpoints.last?.timestamp ?? 0) + 1)

        // Parse.
        var clock = ContinuousClock.now
        var parsed: [Touchpoint] = []
        parsed.reserveCapacity(touchpoints.count)
        for record in touchpoints {
            if case .success(let t) = parser.touchpoint(key: ArraySlice(record.key.utf8), value: ArraySlice(record.value), now: now) { parsed.append(t) }
        }
        let parseTime = ContinuousClock.now - clock
        clock = ContinuousClock.now
        var profiles: [String: CustomerProfile] = [:]
        for record in profileRecords {
            if case .success(let p) = parser.profile(key: ArraySlice(record.key.utf8), value: ArraySlice(record.value)) { profiles[p.customerID] = p }
        }
        let profileTime = ContinuousClock.now - clock

        // Engine, batch by batch, with the state codec in between (as stored in Redis).
        var states: [String: [UInt8]] = [:]
        var decisions = 0, messages = 0
        var engineTime = Duration.zero, codecTime = Duration.zero, jsonTime = Duration.zero
        var batches = 0
        for start in stride(from: 0, to: parsed.count, by: batch) {
            batches += 1
            let slice = parsed[start..<min(start + batch, parsed.count)]
            var byCustomer: [String: [Touchpoint]] = [:]
            var order: [String] = []
            for t in slice {
                if byCustomer[t.customerID] == nil { order.append(t.customerID) }
                byCustomer[t.customerID, default: []].append(t)
            }
            let batchNow = slice.last!.occurredAt
            for customer in order {
                var t0 = ContinuousClock.now
                let state = try states[customer].map { try CustomerState(decoding: $0) } ?? CustomerState()
                codecTime += ContinuousClock.now - t0
                t0 = ContinuousClock.now
                let result = engine.process(state, customerID: customer, profile: profiles[customer],
                                            touchpoints: byCustomer[customer]!, now: batchNow)
                engineTime += ContinuousClock.now - t0
                t0 = ContinuousClock.now
                states[customer] = result.state.encoded()
                codecTime += ContinuousClock.now - t0
                t0 = ContinuousClock.now
                for d in result.decisions { _ = d.jsonBytes() }
                for m in result.messages { _ = m.jsonBytes() }
                jsonTime += ContinuousClock.now - t0
                decisions += result.decisions.count
                messages += result.messages.count
            }
        }
        let n = Double(parsed.count)
        let stateBytes = states.values.reduce(0) { $0 + $1.count }
        print("Engine micro-benchmark: \(parsed.count) touchpoints, \(profiles.count) profiles, \(batches) batches of ≤ \(batch)")
        try appendResults([
            Measurement(benchmark: "engine", metric: "parse touchpoints", value: n / parseTime.seconds, unit: "docs/s", detail: "RecordParser, bytes → Touchpoint"),
            Measurement(benchmark: "engine", metric: "parse profiles", value: Double(profiles.count) / profileTime.seconds, unit: "docs/s", detail: "RecordParser, bytes → CustomerProfile"),
            Measurement(benchmark: "engine", metric: "decide", value: n / engineTime.seconds, unit: "events/s", detail: "\(decisions) decisions, \(messages) messages"),
            Measurement(benchmark: "engine", metric: "decisions", value: Double(decisions) / engineTime.seconds, unit: "decisions/s", detail: "engine.process only"),
            Measurement(benchmark: "engine", metric: "state codec", value: n / codecTime.seconds, unit: "events/s", detail: "decode + encode per customer per batch; avg state \(stateBytes / max(states.count, 1)) B"),
            Measurement(benchmark: "engine", metric: "output JSON", value: Double(decisions + messages) / jsonTime.seconds, unit: "docs/s", detail: "decisions and messages"),
            Measurement(benchmark: "engine", metric: "all stages", value: n / (parseTime + engineTime + codecTime + jsonTime).seconds, unit: "events/s", detail: "one core"),
            Measurement(benchmark: "engine", metric: "redis round trips", value: 2_000.0 * Double(batches) / n, unit: "per 1k ev", detail: "one load + one commit pipeline per batch of \(batch)"),
        ])
    }
}
