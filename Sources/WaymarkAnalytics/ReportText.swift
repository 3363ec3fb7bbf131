import WaymarkEngine

/// The reports as aligned plain-text tables for the terminal (no colours; fits 100 columns for
/// ordinary names).
public enum ReportText {
    /// A journey's funnel, time to convert, channels, steps, arms and days.
    public static func journey(_ r: JourneyReport) -> String {
        var out: [String] = []
        out.append("Journey \(r.journey)")
        out.append("Range \(r.range.from) → \(r.range.to)")
        out.append("Entered \(ReportFormat.integer(r.entered)) · converted \(ReportFormat.integer(r.converted)) "
                   + "(\(ReportFormat.percent(r.conversionRate)))")

        out.append("")
        out.append("Funnel")
        out.append(table(["stage", "reached", "of entered", "to next", "drop-off", "exited", "completed", "converted"],
                         r.stages.map { s in
                             [s.stage, ReportFormat.integer(s.reached), ReportFormat.percent(s.shareOfEntered),
                              ReportFormat.percent(s.conversionToNext), ReportFormat.percent(s.dropOff),
                              ReportFormat.integer(s.exitedHere), ReportFormat.integer(s.completedHere), ReportFormat.integer(s.convertedHere)]
                         }))

        out.append("")
        out.append(timeToConvert(r.timeToConvert))

        if !r.channels.isEmpty {
            out.append("")
            out.append("Channels")
            out.append(table(["channel"] + messageHeader, r.channels.map { [$0.channel] + messageCells($0.counts) }))
        }
        if !r.steps.isEmpty {
            out.append("")
            out.append("Steps")
            out.append(table(["step", "stage"] + messageHeader, r.steps.map { [$0.step, $0.stage] + messageCells($0.counts) }))
        }
        if !r.arms.isEmpty {
            out.append("")
            out.append("Arms")
            out.append(table(["arm", "entered", "converted", "rate", "decided", "held out", "sent", "CTR", "unsub"],
                             r.arms.map { a in
                                 [a.arm, ReportFormat.integer(a.entered), ReportFormat.integer(a.converted), ReportFormat.percent(a.conversionRate),
                                  ReportFormat.integer(a.counts.decided), ReportFormat.integer(a.counts.heldOut), ReportFormat.integer(a.counts.sent),
                                  ReportFormat.percent(a.counts.clickThroughRate), ReportFormat.percent(a.counts.unsubscribeRate)]
                             }))
        }
        if !r.daily.isEmpty {
            out.append("")
            out.append("Daily (UTC)")
            out.append(table(["day", "entered", "sent", "delivered", "clicked", "converted"],
                             r.daily.map { d in
                                 [d.day] + [d.entered, d.sent, d.delivered, d.clicked, d.converted].map(ReportFormat.integer)
                             }))
        }
        return out.joined(separator: "\n") + "\n"
    }

    /// An experiment's arms with confidence intervals and tests, then the verdicts.
    public static func experiment(_ r: ExperimentReport) -> String {
        var out: [String] = []
        out.append("Experiment \(r.experiment) (journey \(r.journey))")
        out.append("Range \(r.range.from) → \(r.range.to)")
        out.append("Control: \(r.control) · holdout \(ReportFormat.number(r.holdoutPercent, decimals: 1)) %")
        out.append("")
        out.append(table(["arm", "share", "exposures", "conversions", "rate", "95 % CI", "lift vs \(r.control)", "p"],
                         r.arms.map { a in
                             [a.arm, ReportFormat.percent(a.configuredShare), ReportFormat.integer(a.conversion.trials),
                              ReportFormat.integer(a.conversion.successes), ReportFormat.percent(a.conversion.rate, decimals: 2),
                              interval(a.conversion), lift(a.vsControl), ReportFormat.shortP(a.vsControl?.pValue)]
                         }))
        let vsHoldout = r.arms.filter { $0.vsHoldout != nil }
        if !vsHoldout.isEmpty {
            out.append("")
            out.append(table(["arm", "lift vs \(Experiment.holdoutArm)", "difference", "p"], vsHoldout.map { a in
                [a.arm, lift(a.vsHoldout), ReportFormat.points(a.vsHoldout?.absoluteDifference), ReportFormat.shortP(a.vsHoldout?.pValue)]
            }))
        }
        out.append("")
        if let chi = r.chiSquared {
            out.append("Chi-squared (arms × converted): \(ReportFormat.number(chi.statistic, decimals: 2)), df \(chi.degreesOfFreedom), "
                       + ReportFormat.p(chi.pValue))
        }
        out.append("Verdict: \(r.verdict)")
        if let holdout = r.holdoutVerdict { out.append(holdout) }

        out.append("")
        out.append("Messages and time to convert per arm")
        out.append(table(["arm", "decided", "held out", "sent", "delivery", "CTR", "unsub", "ttc p50", "ttc p90"],
                         r.arms.map { a in
                             [a.arm, ReportFormat.integer(a.messages.decided), ReportFormat.integer(a.messages.heldOut),
                              ReportFormat.integer(a.messages.sent), ReportFormat.percent(a.messages.deliveryRate),
                              ReportFormat.percent(a.messages.clickThroughRate), ReportFormat.percent(a.messages.unsubscribeRate),
                              ReportFormat.duration(a.timeToConvert?.p50), ReportFormat.duration(a.timeToConvert?.p90)]
                         }))
        if !r.daily.isEmpty {
            let arms = r.arms.map(\.arm)
            out.append("")
            out.append("Daily (UTC), conversions / exposures")
            out.append(table(["day"] + arms, r.daily.map { d in
                [d.day] + arms.map { arm in
                    d.arms[arm].map { "\(ReportFormat.integer($0.conversions)) / \(ReportFormat.integer($0.exposures))" } ?? "—"
                }
            }))
        }
        return out.joined(separator: "\n") + "\n"
    }

    static let messageHeader = ["decided", "sent", "delivery", "CTR", "conversion", "unsub"]

    static func messageCells(_ m: MessageCounts) -> [String] {
        [ReportFormat.integer(m.decided), ReportFormat.integer(m.sent), ReportFormat.percent(m.deliveryRate),
         ReportFormat.percent(m.clickThroughRate), ReportFormat.percent(m.conversionRate), ReportFormat.percent(m.unsubscribeRate)]
    }

    static func timeToConvert(_ p: Percentiles?) -> String {
        guard let p else { return "Time to convert: no conversions" }
        return "Time to convert (\(ReportFormat.integer(p.count)) conversions): p50 \(ReportFormat.duration(p.p50)) · "
            + "p90 \(ReportFormat.duration(p.p90)) · p99 \(ReportFormat.duration(p.p99))"
    }

    static func interval(_ p: Proportion) -> String {
        guard let low = p.low, let high = p.high else { return "—" }
        return "\(ReportFormat.number(low * 100, decimals: 2)) – \(ReportFormat.number(high * 100, decimals: 2)) %"
    }

    /// The relative lift; `—` without one (no comparison, or a reference rate of 0: see the difference).
    static func lift(_ c: Comparison?) -> String {
        guard let lift = c?.relativeLift else { return "—" }
        return ReportFormat.signedPercent(lift)
    }

    /// An aligned table: the first column left-aligned, the others right-aligned, two spaces apart.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        let columns = all.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: columns)
        for row in all { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        func line(_ row: [String]) -> String {
            var parts: [String] = []
            for i in 0..<columns {
                let cell = i < row.count ? row[i] : ""
                let pad = String(repeating: " ", count: widths[i] - cell.count)
                parts.append(i == 0 ? cell + pad : pad + cell)
            }
            var text = parts.joined(separator: "  ")
            while text.last == " " { text.removeLast() }
            return text
        }
        return all.map(line).joined(separator: "\n")
    }
}

/// Number formatting shared by the text reports and the verdict sentences (no Foundation, no locale:
/// `,` thousands, `.` decimals).
public enum ReportFormat {
    /// `12,345`.
    public static func integer(_ n: Int64) -> String {
        let digits = String(n.magnitude)
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return n < 0 ? "-" + out : out
    }

    /// `x` with exactly `decimals` decimals (`—` when not finite).
    public static func number(_ x: Double, decimals: Int) -> String {
        guard x.isFinite else { return "—" }
        var scale = 1.0
        for _ in 0..<max(0, decimals) { scale *= 10 }
        let scaled = (abs(x) * scale).rounded()
        guard scaled < 9e15 else { return x < 0 ? "-\(abs(x))" : "\(x)" }
        let whole = Int64(scaled) / Int64(scale), fraction = Int64(scaled) % Int64(scale)
        var text = integer(whole)
        if decimals > 0 {
            let f = String(fraction)
            text += "." + String(repeating: "0", count: decimals - f.count) + f
        }
        return x < 0 && scaled != 0 ? "-" + text : text
    }

    /// A fraction as a percentage: `12.3 %`; `—` for nil.
    public static func percent(_ fraction: Double?, decimals: Int = 1) -> String {
        guard let fraction else { return "—" }
        return number(fraction * 100, decimals: decimals) + " %"
    }

    /// A relative change as a signed percentage: `+12.0 %`, `-3.5 %`.
    public static func signedPercent(_ fraction: Double) -> String {
        let text = percent(fraction)
        return text.hasPrefix("-") ? text : "+" + text
    }

    /// A difference of rates in percentage points: `+1.20 pt`.
    public static func points(_ difference: Double?) -> String {
        guard let difference else { return "—" }
        let text = number(difference * 100, decimals: 2)
        return (text.hasPrefix("-") ? text : "+" + text) + " pt"
    }

    /// `p < 0.001`, else `p = 0.034` (three decimals; four just below 0.05 so a significant value
    /// never reads as 0.050).
    public static func p(_ value: Double) -> String {
        if value < 0.001 { return "p < 0.001" }
        return "p = " + pNumber(value)
    }

    /// The p column: `<0.001`, `0.034`, `—`.
    public static func shortP(_ value: Double?) -> String {
        guard let value else { return "—" }
        return value < 0.001 ? "<0.001" : pNumber(value)
    }

    static func pNumber(_ value: Double) -> String {
        let decimals = value >= 0.0495 && value < 0.05 ? 4 : 3
        return number(min(1, value), decimals: decimals)
    }

    /// `n` rounded up to `significantFigures` significant figures (1,873 → 1,900).
    public static func roundUp(_ n: Int64, significantFigures: Int) -> Int64 {
        guard n > 0 else { return n }
        var unit: Int64 = 1
        var limit: Int64 = 1
        for _ in 0..<significantFigures { limit *= 10 }
        while n / unit >= limit { unit *= 10 }
        return (n + unit - 1) / unit * unit
    }

    /// A duration in milliseconds for people: `45s`, `7m 04s`, `25m`, `3h 12m`, `2d 4h`; `—` for nil.
    public static func duration(_ milliseconds: Double?) -> String {
        guard let milliseconds, milliseconds.isFinite, milliseconds >= 0 else { return "—" }
        let seconds = Int64(milliseconds / 1000)
        if seconds < 60 { return "\(seconds)s" }
        let minutes = seconds / 60
        if minutes < 10 {
            let s = seconds % 60
            return s == 0 ? "\(minutes)m" : "\(minutes)m \(s < 10 ? "0" : "")\(s)s"
        }
        if minutes < 60 { return "\(minutes)m" }
        let hours = minutes / 60
        if hours < 24 { return minutes % 60 == 0 ? "\(hours)h" : "\(hours)h \(minutes % 60)m" }
        let days = hours / 24
        return hours % 24 == 0 ? "\(days)d" : "\(days)d \(hours % 24)h"
    }
}
