import Foundation
import Testing
import WaymarkAnalytics
import WaymarkEngine

/// The report documents built from a hand-made ``KPISeries`` of a two-stage journey running an A/B
/// test with a 10 % holdout.
@Suite("Report builders")
struct ReportBuilderTests {
    static func send(_ id: String, _ channels: [Channel]) -> Step {
        Step(id: id, action: .send(SendStep(channels: channels, template: id)))
    }

    static func journey(experiment: Bool = true) -> JourneyDefinition {
        JourneyDefinition(
            name: "abandoned_cart", version: 1, entry: [EntryTrigger(event: EventMatcher(type: "cart_updated"))],
            stages: [
                Stage(name: "browse", steps: [send("nudge", [.email, .sms]), Step(id: "pause", action: .wait(.zero)), send("reminder", [.push])]),
                Stage(name: "cart", steps: [send("cart_mail", [.email])]),
            ],
            experiment: experiment
                ? Experiment(name: "subject_test", arms: [ExperimentArm(name: "A", weight: 1), ExperimentArm(name: "B", weight: 3)], holdoutPercent: 10)
                : nil)
    }

    /// 2026-12-07T00:00:00Z.
    static let day1: Int64 = 1_796_601_600_000
    static let hour: Int64 = 3_600_000
    static let day: Int64 = 86_400_000

    /// Per arm (entered, converted); 60 % of both on day 1 at 10:00, the rest on day 2 at 05:00.
    /// Everyone enters `browse`, 30 % reach `cart`. Day-1 conversions follow a `nudge` email, day-2
    /// ones a `cart_mail` email; holdout conversions follow no message.
    static func series(_ arms: [(arm: String, entered: Int64, converted: Int64)]) -> KPISeries {
        var hours: [Int64: [KPICell: Int64]] = [:]
        func add(_ at: Int64, _ cell: KPICell, _ n: Int64) { if n != 0 { hours[at, default: [:]][cell, default: 0] += n } }
        let h1 = day1 + 10 * hour, h2 = day1 + day + 5 * hour
        for (arm, entered, converted) in arms {
            let e1 = entered * 6 / 10, c1 = converted * 6 / 10
            add(h1, KPICell(.entered, arm: arm), e1); add(h2, KPICell(.entered, arm: arm), entered - e1)
            add(h1, KPICell(.stageReached, stage: "browse", arm: arm), entered)
            add(h2, KPICell(.stageReached, stage: "cart", arm: arm), entered * 3 / 10)
            add(h2, KPICell(.exited, stage: "browse", arm: arm), entered / 2)
            add(h2, KPICell(.completed, stage: "cart", arm: arm), entered / 10)
            add(h1, KPICell(.timeToConvert, arm: arm, bucket: arm == "B" ? 12 : 10), converted)
            if arm == Experiment.holdoutArm {
                add(h1, KPICell(.heldOut, stage: "browse", step: "nudge", arm: arm), entered)
                add(h1, KPICell(.converted, arm: arm), c1); add(h2, KPICell(.converted, arm: arm), converted - c1)
                continue
            }
            add(h1, KPICell(.converted, stage: "browse", step: "nudge", channel: "email", arm: arm), c1)
            add(h2, KPICell(.converted, stage: "cart", step: "cart_mail", channel: "email", arm: arm), converted - c1)
            add(h1, KPICell(.decided, stage: "browse", step: "nudge", channel: "email", arm: arm), entered * 9 / 10)
            add(h1, KPICell(.decided, stage: "browse", step: "nudge", channel: "sms", arm: arm), entered / 10)
            add(h1, KPICell(.decided, stage: "browse", step: "reminder", channel: "push", arm: arm), entered / 2)
            add(h2, KPICell(.decided, stage: "cart", step: "cart_mail", channel: "email", arm: arm), entered * 3 / 10)
            add(h1, KPICell(.suppressed, stage: "browse", step: "nudge", arm: arm), entered / 100)
            add(h1, KPICell(.sent, step: "nudge", channel: "email", arm: arm), entered * 8 / 10)
            add(h1, KPICell(.delivered, step: "nudge", channel: "email", arm: arm), entered * 8 / 10 - entered / 100)
            add(h1, KPICell(.clicked, step: "nudge", channel: "email", arm: arm), entered / 20)
            add(h1, KPICell(.unsubscribed, step: "nudge", channel: "email", arm: arm), entered / 1000)
            add(h1, KPICell(.sent, step: "nudge", channel: "sms", arm: arm), entered / 10)
            add(h1, KPICell(.delivered, step: "nudge", channel: "sms", arm: arm), entered / 10)
        }
        return KPISeries(journey: "abandoned_cart", from: day1, to: day1 + 2 * day, hours: hours)
    }

    static let significant = series([("A", 10_000, 500), ("B", 10_000, 650), (Experiment.holdoutArm, 2_000, 82)])
    static let notSignificant = series([("A", 1_000, 50), ("B", 1_000, 60), (Experiment.holdoutArm, 200, 8)])

    @Test("the funnel: reached, share of entered, conversion to the next stage, drop-off, endings per stage")
    func funnel() throws {
        let r = JourneyReport(series: Self.significant, journey: Self.journey())
        #expect(r.journey == "abandoned_cart" && r.range.from == "2026-12-07T00:00:00.000Z" && r.range.to == "2026-12-09T00:00:00.000Z")
        #expect(r.entered == 22_000 && r.converted == 1_232 && r.conversionRate == 1_232.0 / 22_000)
        #expect(r.stages.map(\.stage) == ["browse", "cart"])
        let browse = r.stages[0], cart = r.stages[1]
        #expect(browse.reached == 22_000 && browse.shareOfEntered == 1)
        #expect(abs(browse.conversionToNext! - 0.3) < 1e-12 && abs(browse.dropOff! - 0.7) < 1e-12)
        #expect(browse.exitedHere == 11_000 && browse.completedHere == 0 && browse.convertedHere == 300 + 390)
        #expect(cart.reached == 6_600 && abs(cart.shareOfEntered! - 0.3) < 1e-12)
        #expect(cart.conversionToNext == nil && cart.dropOff == nil)
        #expect(cart.completedHere == 2_200 && cart.convertedHere == 200 + 260)

        // Time to convert: 582 of 1,232 conversions in bucket 10, 650 in bucket 12.
        let ttc = try #require(r.timeToConvert)
        #expect(ttc.count == 1_232 && ttc.p50 == TimeToConvert.upperBound(12) && ttc.p90 == TimeToConvert.upperBound(12))
        #expect(ReportFormat.duration(TimeToConvert.upperBound(12)) == "1h 4m")
    }

    @Test("channels by messages decided, send steps in declaration order, arms control first then holdout")
    func channelsStepsArms() throws {
        let r = JourneyReport(series: Self.significant, journey: Self.journey())
        #expect(r.channels.map(\.channel) == ["email", "push", "sms"])
        let email = r.channels[0].counts
        #expect(email.decided == 2 * (9_000 + 3_000) && email.sent == 16_000 && email.delivered == 15_800)
        #expect(email.deliveryRate == 15_800.0 / 16_000 && email.clickThroughRate == 1_000.0 / 15_800)
        #expect(email.converted == 500 + 650 && email.conversionRate == 1_150.0 / 16_000 && email.unsubscribeRate == 20.0 / 15_800)
        #expect(r.channels[2].counts.deliveryRate == 1 && r.channels[1].counts.deliveryRate == nil)

        #expect(r.steps.map(\.step) == ["nudge", "reminder", "cart_mail"] && r.steps.map(\.stage) == ["browse", "browse", "cart"])
        #expect(r.steps[0].counts.heldOut == 2_000 && r.steps[0].counts.suppressed == 200 && r.steps[0].counts.decided == 20_000)

        #expect(r.arms.map(\.arm) == ["A", "B", Experiment.holdoutArm])
        #expect(r.arms[0].entered == 10_000 && r.arms[0].converted == 500 && r.arms[0].conversionRate == 0.05)
        #expect(r.arms[2].counts.heldOut == 2_000 && r.arms[2].counts.sent == 0 && r.arms[2].counts.converted == 82)

        #expect(r.daily.map(\.day) == ["2026-12-07", "2026-12-08"])
        #expect(r.daily[0].entered == 13_200 && r.daily[1].entered == 8_800)
        #expect(r.daily[0].converted == 300 + 390 + 49 && r.daily[1].converted == 200 + 260 + 33)
        #expect(r.daily[0].sent == 18_000 && r.daily[1].sent == 0 && r.daily[0].clicked == 1_000)
    }

    @Test("a clearly better arm: B beats A, with CIs, lifts and the holdout comparison")
    func significantExperiment() throws {
        let r = try #require(ExperimentReport(series: Self.significant, journey: Self.journey()))
        #expect(r.experiment == "subject_test" && r.control == "A" && r.holdoutPercent == 10)
        #expect(r.arms.map(\.arm) == ["A", "B", Experiment.holdoutArm])
        #expect(r.arms.map(\.configuredShare) == [0.25, 0.75, nil])
        let a = r.arms[0], b = r.arms[1]
        #expect(a.conversion.trials == 10_000 && a.conversion.successes == 500 && a.conversion.rate == 0.05)
        #expect(a.conversion.low! < 0.05 && a.conversion.high! > 0.05)
        #expect(a.vsControl == nil && r.arms[2].vsControl == nil && r.arms[2].vsHoldout == nil)
        let vs = try #require(b.vsControl)
        #expect(vs.against == "A" && abs(vs.relativeLift! - 0.3) < 1e-12 && abs(vs.absoluteDifference! - 0.015) < 1e-12)
        #expect(abs(vs.z! - 4.556188247160008) < 1e-9 && vs.pValue! < 1e-5)
        #expect(a.vsHoldout?.against == Experiment.holdoutArm && abs(a.vsHoldout!.relativeLift! - (0.05 / 0.041 - 1)) < 1e-12)
        #expect(b.timeToConvert?.p50 == TimeToConvert.upperBound(12) && a.messages.sent == 9_000)

        let chi = try #require(r.chiSquared)
        #expect(chi.degreesOfFreedom == 1 && abs(chi.statistic - vs.z! * vs.z!) < 1e-9)
        #expect(r.verdict == "B beats A, p < 0.001")
        let pooled = try #require(Statistics.twoProportionZTest(successes: 1_150, trials: 20_000, referenceSuccesses: 82, referenceTrials: 2_000))
        #expect(r.holdoutVerdict == "Journey vs holdout: +40.2 % conversions, \(ReportFormat.p(pooled.pValue))")
        #expect(r.daily.map(\.day) == ["2026-12-07", "2026-12-08"])
        #expect(r.daily[0].arms["A"]?.exposures == 6_000 && r.daily[0].arms["A"]?.conversions == 300)
        #expect(r.daily[1].arms[Experiment.holdoutArm]?.exposures == 800 && r.daily[1].arms[Experiment.holdoutArm]?.conversions == 33)

        let text = ReportText.experiment(r)
        #expect(text.contains("Verdict: B beats A, p < 0.001") && text.contains("Journey vs holdout: +40.2 %"))
        #expect(text.contains("+30.0 %"), "\(text)")
        for line in text.split(separator: "\n") { #expect(line.count <= 100, "too wide: \(line)") }
        _ = try JSONEncoder().encode(r)
    }

    @Test("not significant yet: the exposures still needed for 80 % power, rounded up to two figures")
    func notSignificantExperiment() throws {
        let r = try #require(ExperimentReport(series: Self.notSignificant, journey: Self.journey()))
        let p = try #require(r.arms[1].vsControl?.pValue)
        #expect(p > 0.05)
        // 5 % vs 6 %: 8,158 per arm (Fleiss); 2 × (8,158 − 1,000) = 14,316 → 15,000.
        #expect(r.verdict == "not significant yet: about 15,000 more exposures needed")
        #expect(r.holdoutVerdict?.hasPrefix("Journey vs holdout: +37.5 % conversions, p = 0.3") == true, "\(r.holdoutVerdict ?? "nil")")
    }

    @Test("verdicts without a difference, without data, and with the control ahead")
    func otherVerdicts() throws {
        let equal = try #require(ExperimentReport(series: Self.series([("A", 1_000, 50), ("B", 2_000, 100)]), journey: Self.journey()))
        #expect(equal.verdict == "no difference seen yet" && equal.holdoutVerdict == nil)
        #expect(equal.arms.map(\.arm) == ["A", "B", Experiment.holdoutArm] && equal.arms[2].conversion.rate == nil)
        let none = try #require(ExperimentReport(series: Self.series([("A", 1_000, 50)]), journey: Self.journey()))
        #expect(none.verdict == "not enough data yet" && none.chiSquared == nil)
        let empty = try #require(ExperimentReport(series: KPISeries(journey: "abandoned_cart", from: Self.day1, to: Self.day1), journey: Self.journey()))
        #expect(empty.verdict == "not enough data yet" && empty.daily.isEmpty && empty.arms.allSatisfy { $0.conversion.low == nil })
        let controlAhead = try #require(ExperimentReport(series: Self.series([("A", 10_000, 700), ("B", 10_000, 500)]), journey: Self.journey()))
        #expect(controlAhead.verdict == "A beats B, p < 0.001")
        let zero = try #require(ExperimentReport(series: Self.series([("A", 1_000, 0), ("B", 1_000, 0)]), journey: Self.journey()))
        #expect(zero.verdict == "no difference seen yet" && zero.chiSquared == nil)
        #expect(zero.arms[1].vsControl?.relativeLift == nil && zero.arms[1].vsControl?.pValue == nil)
        _ = try JSONEncoder().encode(zero)
    }

    @Test("three arms: the best challenger is named, with the chi-squared omnibus p")
    func threeArms() throws {
        var journey = Self.journey()
        journey.experiment?.arms.append(ExperimentArm(name: "C", weight: 1))
        let r = try #require(ExperimentReport(series: Self.series([("A", 10_000, 500), ("B", 10_000, 520), ("C", 10_000, 700)]), journey: journey))
        #expect(r.arms.map(\.arm) == ["A", "B", "C", Experiment.holdoutArm])
        #expect(r.chiSquared?.degreesOfFreedom == 2)
        #expect(r.verdict == "C beats A, p < 0.001 (best of 3 arms; chi-squared p < 0.001)")
    }

    @Test("a journey without an experiment has no experiment report and no arm rows")
    func noExperiment() throws {
        let plain = Self.journey(experiment: false)
        let series = Self.series([("", 1_000, 40)])
        #expect(ExperimentReport(series: series, journey: plain) == nil)
        let r = JourneyReport(series: series, journey: plain)
        #expect(r.arms.isEmpty && r.entered == 1_000 && r.converted == 40 && r.stages[0].reached == 1_000)
        let text = ReportText.journey(r)
        #expect(text.contains("Funnel") && text.contains("browse") && !text.contains("Arms"))
        for line in text.split(separator: "\n") { #expect(line.count <= 100, "too wide: \(line)") }
    }

    @Test("the text report: aligned tables, humanised times, at most 100 columns")
    func journeyText() throws {
        let text = ReportText.journey(JourneyReport(series: Self.significant, journey: Self.journey()))
        #expect(text.contains("Entered 22,000 · converted 1,232 (5.6 %)"), "\(text)")
        #expect(text.contains("Time to convert (1,232 conversions): p50 1h 4m"), "\(text)")
        let funnel = text.split(separator: "\n").drop { !$0.hasPrefix("Funnel") }.dropFirst().prefix(3).map(String.init)
        #expect(funnel[0].hasPrefix("stage ") && funnel[1].hasPrefix("browse") && funnel[2].hasPrefix("cart"))
        #expect(funnel[1].contains("100.0 %") && funnel[1].contains("30.0 %") && funnel[1].contains("70.0 %"), "\(funnel)")
        // Right-aligned columns end at the same offset.
        #expect(Set(funnel.map(\.count)).count == 1, "\(funnel)")
        for line in text.split(separator: "\n") { #expect(line.count <= 100, "too wide: \(line)") }
        #expect(ReportFormat.duration(3 * 3_600_000 + 12 * 60_000) == "3h 12m" && ReportFormat.duration(45_000) == "45s")
        #expect(ReportFormat.duration(2 * 86_400_000 + 4 * 3_600_000) == "2d 4h" && ReportFormat.duration(nil) == "—")
        #expect(ReportFormat.integer(1_234_567) == "1,234,567" && ReportFormat.roundUp(14_316, significantFigures: 2) == 15_000)
        #expect(ReportFormat.roundUp(7, significantFigures: 2) == 7 && ReportFormat.roundUp(1_800, significantFigures: 2) == 1_800)
        #expect(ReportFormat.p(0.0034) == "p = 0.003" && ReportFormat.p(0.0004) == "p < 0.001" && ReportFormat.p(0.04987) == "p = 0.0499")
    }
}
