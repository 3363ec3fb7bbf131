import WaymarkEngine

// Builds the report documents of Reports.swift from a ``KPISeries`` and the journey definition.
// Exposures are intention to treat: every instance entered counts for its arm, whether or not it was
// sent anything (the holdout never is).

extension JourneyReport {
    /// The funnel and KPIs of `journey` over the series' range.
    public init(series: KPISeries, journey: JourneyDefinition) {
        let counters = Counters(series.totals)
        let entered = counters.sum(.entered)
        let converted = counters.sum(.converted)
        self.init(journey: series.journey.isEmpty ? journey.name : series.journey,
                  range: ReportRange(series: series),
                  entered: entered, converted: converted, conversionRate: Statistics.rate(converted, entered),
                  stages: Self.stageRows(counters, journey: journey, entered: entered),
                  timeToConvert: Statistics.percentiles(histogram: counters.histogram()),
                  channels: Self.channelRows(counters), steps: Self.stepRows(counters, journey: journey),
                  arms: ReportArms.order(journey: journey, seen: counters.arms).map { arm in
                      let armEntered = counters.sum(.entered, arm: arm), armConverted = counters.sum(.converted, arm: arm)
                      return ArmRow(arm: arm, entered: armEntered, converted: armConverted,
                                    conversionRate: Statistics.rate(armConverted, armEntered),
                                    counts: counters.messageCounts { $0.arm == arm })
                  },
                  daily: series.daily.map { day in
                      let c = Counters(day.cells)
                      return DayRow(day: ReportRange.day(day.day), entered: c.sum(.entered), sent: c.sum(.sent),
                                    delivered: c.sum(.delivered), clicked: c.sum(.clicked), converted: c.sum(.converted))
                  })
    }

    /// Declared stages in order, then stages only the counters know (renamed or removed since), by name.
    static func stageRows(_ counters: Counters, journey: JourneyDefinition, entered: Int64) -> [StageRow] {
        let declared = journey.stages.map(\.name)
        let known = Set(declared)
        var extra = Set<String>()
        for (cell, _) in counters.cells where !cell.stage.isEmpty && !known.contains(cell.stage)
            && [.stageReached, .exited, .completed].contains(cell.metric) {
            extra.insert(cell.stage)
        }
        let stages = declared + extra.sorted()
        var reached: [String: Int64] = [:]
        for stage in stages { reached[stage] = counters.sum(.stageReached) { $0.stage == stage } }
        var rows: [StageRow] = []
        for (index, stage) in stages.enumerated() {
            let here = reached[stage] ?? 0
            // Only between declared stages: a stage the definition no longer has has no "next".
            let next: Int64? = index + 1 < declared.count ? reached[declared[index + 1]] : nil
            let toNext = next.flatMap { Statistics.rate($0, here) }
            rows.append(StageRow(stage: stage, reached: here, shareOfEntered: Statistics.rate(here, entered),
                                 conversionToNext: toNext, dropOff: toNext.map { 1 - $0 },
                                 exitedHere: counters.sum(.exited) { $0.stage == stage },
                                 completedHere: counters.sum(.completed) { $0.stage == stage },
                                 convertedHere: counters.sum(.converted) { $0.stage == stage }))
        }
        return rows
    }

    /// Every channel with a counter, by messages decided (most first), then name.
    static func channelRows(_ counters: Counters) -> [ChannelRow] {
        let channels = Set(counters.cells.keys.filter { Counters.messageMetrics.contains($0.metric) }.map(\.channel)).filter { !$0.isEmpty }
        return channels.map { channel in ChannelRow(channel: channel, counts: counters.messageCounts { $0.channel == channel }) }
            .sorted { ($0.counts.decided, $1.channel) > ($1.counts.decided, $0.channel) }
    }

    /// Send steps in declaration order (with the stage that declares them), then steps only the
    /// counters know, by name.
    static func stepRows(_ counters: Counters, journey: JourneyDefinition) -> [StepRow] {
        var rows: [StepRow] = []
        var known = Set<String>()
        for stage in journey.stages {
            for step in stage.steps {
                guard case .send = step.action else { continue }
                known.insert(step.id)
                rows.append(StepRow(step: step.id, stage: stage.name, counts: counters.messageCounts { $0.step == step.id }))
            }
        }
        var extra: [String: String] = [:]
        for (cell, _) in counters.cells where !cell.step.isEmpty && !known.contains(cell.step) && Counters.messageMetrics.contains(cell.metric) {
            if extra[cell.step, default: ""].isEmpty { extra[cell.step] = cell.stage }
        }
        for step in extra.keys.sorted() {
            rows.append(StepRow(step: step, stage: extra[step] ?? "", counts: counters.messageCounts { $0.step == step }))
        }
        return rows
    }
}

extension ExperimentReport {
    /// The result of `journey`'s experiment over the series' range; nil when the journey runs none.
    public init?(series: KPISeries, journey: JourneyDefinition) {
        guard let experiment = journey.experiment, let control = experiment.arms.first else { return nil }
        let counters = Counters(series.totals)
        let configured = experiment.arms.map(\.name)
        let totalWeight = experiment.arms.reduce(0) { $0 + max(0, $1.weight) }
        let exposures = { (arm: String) in counters.sum(.entered, arm: arm) }
        let conversions = { (arm: String) in counters.sum(.converted, arm: arm) }
        let holdout = Experiment.holdoutArm
        let holdoutExposures = exposures(holdout)

        var results: [ExperimentArmResult] = []
        for arm in ReportArms.order(journey: journey, seen: counters.arms) {
            let weight = experiment.arms.first { $0.name == arm }?.weight
            let isConfigured = weight != nil
            results.append(ExperimentArmResult(
                arm: arm,
                configuredShare: weight.flatMap { totalWeight > 0 ? max(0, $0) / totalWeight : nil },
                conversion: Statistics.proportion(successes: conversions(arm), trials: exposures(arm)),
                vsControl: isConfigured && arm != control.name
                    ? Comparison(arm: arm, against: control.name, counters: counters) : nil,
                vsHoldout: isConfigured && holdoutExposures > 0 ? Comparison(arm: arm, against: holdout, counters: counters) : nil,
                messages: counters.messageCounts { $0.arm == arm },
                timeToConvert: Statistics.percentiles(histogram: counters.histogram(arm: arm))))
        }

        let tested = configured.filter { exposures($0) > 0 }
        let chi = Statistics.chiSquaredIndependence(tested.map { (conversions($0), exposures($0)) })
        self.init(experiment: experiment.name, journey: series.journey.isEmpty ? journey.name : series.journey,
                  range: ReportRange(series: series), control: control.name, holdoutPercent: experiment.holdoutPercent,
                  arms: results, chiSquared: chi,
                  verdict: Self.verdict(configured: configured, counters: counters, chiSquared: chi),
                  holdoutVerdict: holdoutExposures > 0 ? Self.holdoutVerdict(configured: configured, counters: counters) : nil,
                  daily: series.daily.map { day in
                      let c = Counters(day.cells)
                      var arms: [String: DayArm] = [:]
                      for arm in c.arms {
                          let dayArm = DayArm(exposures: c.sum(.entered, arm: arm), conversions: c.sum(.converted, arm: arm))
                          if dayArm.exposures > 0 || dayArm.conversions > 0 { arms[arm] = dayArm }
                      }
                      return ExperimentDay(day: ReportRange.day(day.day), arms: arms)
                  })
    }

    /// Significance level of the verdict.
    public static let alpha = 0.05
    /// Power the "more exposures needed" estimate is for.
    public static let power = 0.8

    /// The verdict sentence: the best non-control arm against the control.
    static func verdict(configured: [String], counters: Counters, chiSquared: ChiSquared?) -> String {
        guard let control = configured.first, configured.count >= 2 else { return "not enough data yet" }
        let exposures = { (arm: String) in counters.sum(.entered, arm: arm) }
        let conversions = { (arm: String) in counters.sum(.converted, arm: arm) }
        guard configured.allSatisfy({ exposures($0) > 0 }) else { return "not enough data yet" }
        let rate = { (arm: String) in Double(conversions(arm)) / Double(exposures(arm)) }
        // The best challenger; ties go to the first declared.
        var best = configured[1]
        for arm in configured.dropFirst(2) where rate(arm) > rate(best) { best = arm }
        let controlRate = rate(control), bestRate = rate(best)
        guard bestRate != controlRate,
              let test = Statistics.twoProportionZTest(successes: conversions(best), trials: exposures(best),
                                                       referenceSuccesses: conversions(control), referenceTrials: exposures(control))
        else { return "no difference seen yet" }
        let omnibus = configured.count > 2 ? chiSquared.map { " (best of \(configured.count) arms; chi-squared \(ReportFormat.p($0.pValue)))" } ?? "" : ""
        if test.pValue < alpha {
            let (winner, loser) = bestRate > controlRate ? (best, control) : (control, best)
            return "\(winner) beats \(loser), \(ReportFormat.p(test.pValue))\(omnibus)"
        }
        guard let perArm = Statistics.sampleSizePerArm(rate: bestRate, referenceRate: controlRate, alpha: alpha, power: power)
        else { return "no difference seen yet" }
        let needed = Int64(perArm.rounded(.up))
        let more = max(0, needed - exposures(best)) + max(0, needed - exposures(control))
        if more == 0 { return "not significant yet: \(ReportFormat.p(test.pValue))\(omnibus)" }
        return "not significant yet: about \(ReportFormat.integer(ReportFormat.roundUp(more, significantFigures: 2))) more exposures needed"
    }

    /// "Journey vs holdout: +12.0 % conversions, p = 0.04": every configured arm pooled against the holdout.
    static func holdoutVerdict(configured: [String], counters: Counters) -> String {
        let holdout = Experiment.holdoutArm
        let treatedExposures = configured.reduce(0) { $0 + counters.sum(.entered, arm: $1) }
        let treatedConversions = configured.reduce(0) { $0 + counters.sum(.converted, arm: $1) }
        let holdoutExposures = counters.sum(.entered, arm: holdout), holdoutConversions = counters.sum(.converted, arm: holdout)
        guard let treatedRate = Statistics.rate(treatedConversions, treatedExposures),
              let holdoutRate = Statistics.rate(holdoutConversions, holdoutExposures) else {
            return "Journey vs holdout: not enough data yet"
        }
        let test = Statistics.twoProportionZTest(successes: treatedConversions, trials: treatedExposures,
                                                 referenceSuccesses: holdoutConversions, referenceTrials: holdoutExposures)
        let p = test.map { ReportFormat.p($0.pValue) } ?? "p n/a"
        if holdoutRate > 0 {
            let lift = (treatedRate - holdoutRate) / holdoutRate
            return "Journey vs holdout: \(ReportFormat.signedPercent(lift)) conversions, \(p)"
        }
        return "Journey vs holdout: \(ReportFormat.percent(treatedRate, decimals: 2)) vs \(ReportFormat.percent(holdoutRate, decimals: 2)) conversion rate, \(p)"
    }
}

extension Comparison {
    /// `arm` against the reference arm `against`, from the counters' exposures and conversions.
    init(arm: String, against reference: String, counters: Counters) {
        let x1 = counters.sum(.converted, arm: arm), n1 = counters.sum(.entered, arm: arm)
        let x2 = counters.sum(.converted, arm: reference), n2 = counters.sum(.entered, arm: reference)
        let r1 = Statistics.rate(x1, n1), r2 = Statistics.rate(x2, n2)
        let test = Statistics.twoProportionZTest(successes: x1, trials: n1, referenceSuccesses: x2, referenceTrials: n2)
        var difference: Double?
        var lift: Double?
        if let r1, let r2 {
            difference = r1 - r2
            if r2 > 0 { lift = (r1 - r2) / r2 }
        }
        self.init(against: reference, relativeLift: lift, absoluteDifference: difference, z: test?.z, pValue: test?.pValue)
    }
}

extension ReportRange {
    init(series: KPISeries) {
        self.init(from: Timestamp(milliseconds: series.from).description, to: Timestamp(milliseconds: series.to).description)
    }

    /// The UTC day `YYYY-MM-DD` of an instant.
    static func day(_ milliseconds: Int64) -> String {
        String(Timestamp(milliseconds: milliseconds).description.prefix(10))
    }
}

/// The order arm rows are listed in.
enum ReportArms {
    /// The configured arms (control first), arms only the counters know (a removed arm) by name, then
    /// the holdout (when configured or seen) and the global control group (when seen). Journeys without
    /// an experiment list only the non-empty arms the counters know.
    static func order(journey: JourneyDefinition, seen: Set<String>) -> [String] {
        let configured = journey.experiment?.arms.map(\.name) ?? []
        let special = [Experiment.holdoutArm, Experiment.globalControlArm]
        var out = configured
        out += seen.filter { !$0.isEmpty && !configured.contains($0) && !special.contains($0) }.sorted()
        if (journey.experiment?.holdoutPercent ?? 0) > 0 || seen.contains(Experiment.holdoutArm) {
            if !out.contains(Experiment.holdoutArm) { out.append(Experiment.holdoutArm) }
        }
        if seen.contains(Experiment.globalControlArm) && !out.contains(Experiment.globalControlArm) { out.append(Experiment.globalControlArm) }
        return out
    }
}

/// Sums over a set of counters.
struct Counters {
    let cells: [KPICell: Int64]
    init(_ cells: [KPICell: Int64]) { self.cells = cells }

    /// The metrics of ``MessageCounts``.
    static let messageMetrics: Set<KPIMetric> = [.decided, .suppressed, .heldOut, .sent, .delivered, .read, .failed, .clicked,
                                                 .unsubscribed, .converted]

    func sum(_ metric: KPIMetric, where include: (KPICell) -> Bool = { _ in true }) -> Int64 {
        var total: Int64 = 0
        for (cell, n) in cells where cell.metric == metric && include(cell) { total += n }
        return total
    }

    func sum(_ metric: KPIMetric, arm: String) -> Int64 { sum(metric) { $0.arm == arm } }

    /// Every arm name that appears (including "").
    var arms: Set<String> { Set(cells.keys.map(\.arm)) }

    /// Time-to-convert counts per bucket (optionally of one arm).
    func histogram(arm: String? = nil) -> [Int64] {
        var out = [Int64](repeating: 0, count: TimeToConvert.bucketCount)
        for (cell, n) in cells where cell.metric == .timeToConvert && (arm == nil || cell.arm == arm)
            && cell.bucket >= 0 && cell.bucket < out.count {
            out[cell.bucket] += n
        }
        return out
    }

    /// The message counters of the cells `include` selects, with their rates.
    func messageCounts(_ include: (KPICell) -> Bool) -> MessageCounts {
        var m = MessageCounts()
        for (cell, n) in cells where include(cell) {
            switch cell.metric {
            case .decided: m.decided += n
            case .suppressed: m.suppressed += n
            case .heldOut: m.heldOut += n
            case .sent: m.sent += n
            case .delivered: m.delivered += n
            case .read: m.read += n
            case .failed: m.failed += n
            case .clicked: m.clicked += n
            case .unsubscribed: m.unsubscribed += n
            case .converted: m.converted += n
            case .entered, .stageReached, .exited, .completed, .timeToConvert: break
            }
        }
        m.deliveryRate = Statistics.rate(m.delivered, m.sent)
        m.clickThroughRate = Statistics.rate(m.clicked, m.delivered)
        m.conversionRate = Statistics.rate(m.converted, m.sent)
        m.unsubscribeRate = Statistics.rate(m.unsubscribed, m.delivered)
        return m
    }
}
