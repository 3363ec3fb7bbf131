import WaymarkEngine

/// Renders the report documents as one self-contained HTML page each (`waymark report … --html FILE`).
///
/// A page holds inline CSS and inline SVG only: no script, no external stylesheet, font or image,
/// no network reference; it reads without JavaScript. Every string that comes from the data
/// (journey, stage, step, channel, arm names, verdicts) is escaped for HTML. Numbers are formatted
/// for people (thousands separators, percentages with one decimal) without a locale, and nothing
/// depends on the clock, so the same report always gives the same bytes.
public enum ReportHTML {
    /// The journey page: headline numbers, the funnel, channel, step and arm KPIs and the daily trend.
    public static func journey(_ r: JourneyReport) -> String {
        var body = header(kind: "Journey report", name: r.journey, sub: rangeText(r.range))
        body += journeyHeadline(r)
        body += section("Funnel", note: "Bars are scaled to the \(count(r.entered)) instances that entered the journey.",
                        funnel(r) + stageTable(r))
        body += section("Channels", note: "Bars are scaled to the highest value of their column.", channelTable(r.channels))
        body += section("Send steps", stepTable(r.steps))
        if !r.arms.isEmpty {
            body += section("Arms", note: "Bars are scaled to the highest value of their column.", armTable(r.arms))
        }
        body += section("Daily trend", dailyJourney(r.daily))
        body += footer(r.range)
        return page(title: "Journey \(r.journey) · Waymark report", body: body)
    }

    /// The experiment page: the verdicts, conversion per arm with 95 % intervals, the arm table,
    /// the chi-squared test, daily exposures and conversions per arm and, when `journey` is given,
    /// that journey's funnel.
    public static func experiment(_ r: ExperimentReport, journey: JourneyReport?) -> String {
        var sub = "Journey \(escape(r.journey)) · \(rangeText(r.range))"
        if r.holdoutPercent > 0 { sub += " · holdout \(fixed(r.holdoutPercent, 1))\u{A0}%" }
        var body = header(kind: "Experiment report", name: r.experiment, sub: sub)
        body += verdicts(r)
        body += section("Conversion per arm",
                        note: "Points are conversion rates (conversions / exposures), lines their 95\u{A0}% Wilson intervals; "
                            + "the dashed line is the control’s rate.",
                        ciChart(r))
        body += section("Arms", experimentTable(r) + chiSquaredLine(r.chiSquared))
        body += section("Daily exposures and conversions per arm", dailyExperiment(r))
        if let journey {
            body += section("Journey funnel: \(escape(journey.journey))",
                            note: "\(rangeText(journey.range)). Bars are scaled to the \(count(journey.entered)) instances that entered the journey.",
                            journeyHeadline(journey) + funnel(journey))
        }
        body += footer(r.range)
        return page(title: "Experiment \(r.experiment) · Waymark report", body: body)
    }
}

// MARK: - Page frame

extension ReportHTML {
    static let css = """
        *{box-sizing:border-box}
        body{margin:0;background:#f3f5f8;color:#1f2933;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans","Liberation Sans","DejaVu Sans",sans-serif}
        main{max-width:1120px;margin:0 auto;padding:28px 24px 40px}
        header{margin-bottom:18px}
        header .kind{color:#616e7c;font-size:12px;text-transform:uppercase;letter-spacing:.06em;font-weight:600}
        header h1{font-size:28px;line-height:1.2;margin:2px 0 4px;font-weight:700;word-break:break-word}
        .sub{color:#52606d}
        section{background:#fff;border:1px solid #dde3ea;border-radius:10px;padding:18px 22px 20px;margin:16px 0}
        section h2{font-size:17px;margin:0 0 4px;font-weight:650}
        .note{color:#616e7c;font-size:12.5px;margin:0 0 12px}
        .empty{color:#616e7c;font-style:italic;margin:8px 0}
        .cards{display:grid;grid-template-columns:repeat(5,1fr);gap:12px;margin:0 0 4px}
        .card{background:#fff;border:1px solid #dde3ea;border-radius:10px;padding:12px 16px}
        section .card{background:#f8fafc}
        .card .k{color:#616e7c;font-size:11.5px;text-transform:uppercase;letter-spacing:.05em;font-weight:600}
        .card .v{font-size:26px;font-weight:700;font-variant-numeric:tabular-nums;margin-top:2px}
        .card .s{color:#616e7c;font-size:12px}
        .scroll{overflow-x:auto}
        table{border-collapse:collapse;width:100%;font-size:13px;font-variant-numeric:tabular-nums;margin-top:6px}
        th,td{padding:6px 8px;border-bottom:1px solid #e6eaef;text-align:right;white-space:nowrap}
        th{font-size:11px;color:#52606d;font-weight:600;background:#f8fafc;text-transform:uppercase;letter-spacing:.03em;white-space:normal;vertical-align:bottom}
        th.l,td.l{text-align:left}
        td.name{font-weight:600;white-space:normal;min-width:110px;max-width:280px;overflow-wrap:anywhere}
        tr.control td{background:#eef4fb}
        tr.holdout td{background:#fdf3ec}
        .tag{display:inline-block;font-size:10.5px;font-weight:600;text-transform:uppercase;letter-spacing:.04em;border-radius:4px;padding:0 5px;margin-left:6px;vertical-align:1px}
        .tag.control{background:#1f4e8c;color:#fff}
        .tag.holdout{background:#d9480f;color:#fff}
        .tag.global{background:#7b8794;color:#fff}
        .bar{display:inline-block;width:56px;height:8px;background:#e6eaef;border-radius:4px;vertical-align:middle;margin-left:8px;overflow:hidden}
        .bar i{display:block;height:100%;background:#3b6ea8;border-radius:4px}
        .up{color:#2f7d4f;font-weight:650}
        .down{color:#c0392b;font-weight:650}
        .muted{color:#7b8794}
        .verdict{border-left:6px solid #1f4e8c}
        .verdict .k{color:#616e7c;font-size:11.5px;text-transform:uppercase;letter-spacing:.05em;font-weight:600}
        .verdict p{font-size:22px;font-weight:650;margin:2px 0 10px;line-height:1.3}
        .verdict p.second{font-size:18px;margin-bottom:0}
        .legend{display:flex;flex-wrap:wrap;gap:6px 18px;font-size:12.5px;color:#3e4c59;margin:4px 0 6px}
        .legend span{display:inline-flex;align-items:center;gap:6px}
        .legend i{display:inline-block;width:14px;height:10px;border-radius:2px}
        h3{font-size:13px;color:#3e4c59;margin:14px 0 2px;font-weight:650}
        svg{display:block;width:100%;height:auto;overflow:visible}
        svg text{font-family:inherit;fill:#3e4c59}
        details{margin-top:10px}
        summary{cursor:pointer;color:#3b6ea8;font-size:13px}
        footer{color:#7b8794;font-size:12px;margin-top:20px;text-align:center}
        """

    static func page(title: String, body: String) -> String {
        """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(escape(title))</title>
        <style>
        \(css)
        </style>
        </head>
        <body>
        <main>
        \(body)</main>
        </body>
        </html>

        """
    }

    /// `sub` is HTML (already escaped).
    static func header(kind: String, name: String, sub: String) -> String {
        "<header><div class=\"kind\">\(kind)</div><h1>\(escape(name))</h1><div class=\"sub\">\(sub)</div></header>\n"
    }

    /// `title` and `note` are HTML (already escaped); so is `content`.
    static func section(_ title: String, note: String? = nil, _ content: String) -> String {
        var s = "<section>\n<h2>\(title)</h2>\n"
        if let note { s += "<p class=\"note\">\(note)</p>\n" }
        return s + content + "</section>\n"
    }

    static func footer(_ range: ReportRange) -> String {
        "<footer>Waymark report · \(rangeText(range)) · times in UTC</footer>\n"
    }

    static func rangeText(_ range: ReportRange) -> String {
        "\(escape(range.from)) → \(escape(range.to))"
    }

    static func empty(_ text: String) -> String { "<p class=\"empty\">\(text)</p>\n" }

    static func card(_ key: String, _ value: String, _ small: String? = nil) -> String {
        var s = "<div class=\"card\"><div class=\"k\">\(key)</div><div class=\"v\">\(value)</div>"
        if let small { s += "<div class=\"s\">\(small)</div>" }
        return s + "</div>"
    }

    static func legend(_ items: [(name: String, color: String)]) -> String {
        "<div class=\"legend\">"
            + items.map { "<span><i style=\"background:\($0.color)\"></i>\(escape($0.name))</span>" }.joined()
            + "</div>\n"
    }
}

// MARK: - Journey parts

extension ReportHTML {
    static func journeyHeadline(_ r: JourneyReport) -> String {
        let ttc = r.timeToConvert
        let n = ttc.map { "of \(count($0.count)) conversions" }
        return "<div class=\"cards\">"
            + card("Entered", count(r.entered))
            + card("Converted", count(r.converted))
            + card("Conversion rate", percent(r.conversionRate))
            + card("Time to convert p50", ttc.map { duration($0.p50) } ?? "–", n)
            + card("Time to convert p90", ttc.map { duration($0.p90) } ?? "–", ttc.map { "p99 \(duration($0.p99))" })
            + "</div>\n"
    }

    /// One horizontal bar per stage (and one for the conversions), scaled to the journey's entered
    /// count, with the conversion to the next stage and the drop-off between the bars.
    static func funnel(_ r: JourneyReport) -> String {
        guard !r.stages.isEmpty else { return empty("The journey has no stages.") }
        let width = 1040.0, labelEnd = 228.0, barX = 240.0, barMax = 760.0, barH = 26.0, gap = 24.0
        func share(_ n: Int64, _ given: Double?) -> Double? {
            given ?? (r.entered > 0 ? Double(n) / Double(r.entered) : nil)
        }
        var rows: [(label: String, reached: Int64, share: Double?, next: String?, color: String, bold: Bool)] = []
        for s in r.stages {
            var next: String?
            if let c = s.conversionToNext {
                next = "↓ \(percent(c)) continue to the next stage · \(percent(s.dropOff ?? (1 - c))) drop off"
            }
            rows.append((s.stage, s.reached, share(s.reached, s.shareOfEntered), next, "#3b6ea8", false))
        }
        rows.append(("Converted", r.converted, share(r.converted, r.conversionRate), nil, "#2f855a", true))
        let height = Double(rows.count) * (barH + gap) - gap + 10
        var s = svgOpen(width: width, height: height, label: "Funnel of journey \(r.journey)")
        var y = 4.0
        for row in rows {
            let fraction = min(1, max(0, row.share ?? 0))
            var w = (fraction * barMax).rounded()
            if row.reached > 0 { w = max(w, 2) }
            s += "<g><title>\(escape(row.label)): \(count(row.reached)) (\(percent(row.share)) of entered)</title>"
            s += text(x: labelEnd, y: y + 17.5, anchor: "end", size: 13, weight: row.bold ? 700 : 600, truncate(row.label, 30))
            s += rect(x: barX, y: y, w: barMax, h: barH, fill: "#eef1f5", rx: 4)
            s += rect(x: barX, y: y, w: w, h: barH, fill: row.color, rx: 4)
            let value = "\(count(row.reached)) · \(percent(row.share))"
            if w >= 170 {
                s += text(x: barX + w - 10, y: y + 17.5, anchor: "end", size: 13, weight: 650, fill: "#ffffff", value)
            } else {
                s += text(x: barX + w + 8, y: y + 17.5, size: 13, weight: 650, value)
            }
            s += "</g>\n"
            if let next = row.next {
                s += text(x: barX + 4, y: y + barH + 16, size: 12, fill: "#616e7c", escape(next))
            }
            y += barH + gap
        }
        return s + "</svg>\n"
    }

    static func stageTable(_ r: JourneyReport) -> String {
        guard !r.stages.isEmpty else { return "" }
        var s = tableOpen(["Stage", "Reached", "% of entered", "To next", "Drop-off", "Exited here", "Completed here", "Converted here"])
        for st in r.stages {
            s += "<tr><td class=\"l name\">\(escape(st.stage))</td><td>\(count(st.reached))</td><td>\(percent(st.shareOfEntered))</td>"
                + "<td>\(percent(st.conversionToNext))</td><td>\(percent(st.dropOff))</td><td>\(count(st.exitedHere))</td>"
                + "<td>\(count(st.completedHere))</td><td>\(count(st.convertedHere))</td></tr>\n"
        }
        return s + tableClose
    }

    static func channelTable(_ rows: [ChannelRow]) -> String {
        guard !rows.isEmpty else { return empty("No messages in this range.") }
        let cols = RateColumns(rows.map(\.counts))
        var s = tableOpen(["Channel", "Sent", "Delivered", "Clicked", "Converted", "Delivery rate", "CTR", "Conversion", "Unsubscribe"])
        for row in rows {
            let c = row.counts
            s += "<tr><td class=\"l name\">\(escape(row.channel))</td><td>\(count(c.sent))</td><td>\(count(c.delivered))</td>"
                + "<td>\(count(c.clicked))</td><td>\(count(c.converted))</td>"
                + rateCell(c.deliveryRate, max: cols.delivery) + rateCell(c.clickThroughRate, max: cols.ctr)
                + rateCell(c.conversionRate, max: cols.conversion) + rateCell(c.unsubscribeRate, max: cols.unsubscribe, color: "#c0392b")
                + "</tr>\n"
        }
        return s + tableClose
    }

    static func stepTable(_ rows: [StepRow]) -> String {
        guard !rows.isEmpty else { return empty("The journey has no send steps.") }
        var s = tableOpen(["Step", "Stage", "Decided", "Suppressed", "Held out", "Sent", "Delivered", "Clicked", "Converted",
                           "Delivery", "CTR", "Conversion"], left: 2)
        for row in rows {
            let c = row.counts
            s += "<tr><td class=\"l name\">\(escape(row.step))</td><td class=\"l\">\(escape(row.stage))</td>"
                + "<td>\(count(c.decided))</td><td>\(count(c.suppressed))</td><td>\(count(c.heldOut))</td><td>\(count(c.sent))</td>"
                + "<td>\(count(c.delivered))</td><td>\(count(c.clicked))</td><td>\(count(c.converted))</td>"
                + "<td>\(percent(c.deliveryRate))</td><td>\(percent(c.clickThroughRate))</td><td>\(percent(c.conversionRate))</td></tr>\n"
        }
        return s + tableClose
    }

    static func armTable(_ rows: [ArmRow]) -> String {
        let maxRate = rows.compactMap(\.conversionRate).max()
        let cols = RateColumns(rows.map(\.counts))
        var s = tableOpen(["Arm", "Entered", "Converted", "Conversion rate", "Sent", "Delivered", "CTR", "Unsubscribe"])
        for row in rows {
            let c = row.counts
            s += "<tr><td class=\"l name\">\(escape(row.arm))\(armTag(row.arm, control: rows.first?.arm))</td>"
                + "<td>\(count(row.entered))</td><td>\(count(row.converted))</td>" + rateCell(row.conversionRate, max: maxRate, color: "#2f855a")
                + "<td>\(count(c.sent))</td><td>\(count(c.delivered))</td>" + rateCell(c.clickThroughRate, max: cols.ctr)
                + rateCell(c.unsubscribeRate, max: cols.unsubscribe, color: "#c0392b") + "</tr>\n"
        }
        return s + tableClose
    }

    static func dailyJourney(_ days: [DayRow]) -> String {
        guard !days.isEmpty else { return empty("No days in this range.") }
        let series: [Series] = [
            Series(name: "Entered", color: "#3b6ea8", values: days.map { Double($0.entered) }),
            Series(name: "Sent", color: "#9b7fd1", values: days.map { Double($0.sent) }),
            Series(name: "Converted", color: "#2f855a", values: days.map { Double($0.converted) }),
        ]
        var s = legend(series.map { ($0.name, $0.color) })
        s += timeChart(days: days.map(\.day), series: series, label: "Entered, sent and converted per day")
        s += "<details><summary>Daily numbers</summary>\n"
        s += tableOpen(["Day", "Entered", "Sent", "Delivered", "Clicked", "Converted"])
        for d in days {
            s += "<tr><td class=\"l\">\(escape(d.day))</td><td>\(count(d.entered))</td><td>\(count(d.sent))</td>"
                + "<td>\(count(d.delivered))</td><td>\(count(d.clicked))</td><td>\(count(d.converted))</td></tr>\n"
        }
        return s + tableClose + "</details>\n"
    }

    /// The highest value of each rate column, for the bars.
    struct RateColumns {
        var delivery, ctr, conversion, unsubscribe: Double?
        init(_ counts: [MessageCounts]) {
            delivery = counts.compactMap(\.deliveryRate).max()
            ctr = counts.compactMap(\.clickThroughRate).max()
            conversion = counts.compactMap(\.conversionRate).max()
            unsubscribe = counts.compactMap(\.unsubscribeRate).max()
        }
    }

    static func rateCell(_ value: Double?, max: Double?, color: String = "#3b6ea8") -> String {
        guard let value else { return "<td><span class=\"muted\">–</span><span class=\"bar\"></span></td>" }
        var fraction = 0.0
        if let max, max > 0 { fraction = Swift.min(1, Swift.max(0, value / max)) }
        return "<td>\(percent(value))<span class=\"bar\"><i style=\"width:\(fixed(fraction * 100, 1, grouped: false))%;background:\(color)\"></i></span></td>"
    }

    static func tableOpen(_ headers: [String], left: Int = 1) -> String {
        var s = "<div class=\"scroll\"><table>\n<thead><tr>"
        for (i, h) in headers.enumerated() { s += i < left ? "<th class=\"l\">\(h)</th>" : "<th>\(h)</th>" }
        return s + "</tr></thead>\n<tbody>\n"
    }

    static let tableClose = "</tbody></table></div>\n"
}

// MARK: - Experiment parts

extension ReportHTML {
    enum ArmKind { case control, arm, holdout, globalControl }

    static func armKind(_ arm: String, control: String?) -> ArmKind {
        if arm == Experiment.holdoutArm { return .holdout }
        if arm == Experiment.globalControlArm { return .globalControl }
        return arm == control ? .control : .arm
    }

    static func armTag(_ arm: String, control: String?) -> String {
        switch armKind(arm, control: control) {
        case .control: "<span class=\"tag control\">control</span>"
        case .holdout: "<span class=\"tag holdout\">holdout</span>"
        case .globalControl: "<span class=\"tag global\">global control</span>"
        case .arm: ""
        }
    }

    static let armPalette = ["#2a9d8f", "#8e5ccf", "#d4a017", "#c2417b", "#4c9be8", "#6b8e23", "#b5651d", "#5d6d7e"]

    /// Colours by arm, in `arms` order: the control dark blue, the holdout orange, the global control grey.
    static func armColors(_ arms: [String], control: String) -> [String: String] {
        var colors: [String: String] = [:]
        var next = 0
        for arm in arms where colors[arm] == nil {
            switch armKind(arm, control: control) {
            case .control: colors[arm] = "#1f4e8c"
            case .holdout: colors[arm] = "#d9480f"
            case .globalControl: colors[arm] = "#7b8794"
            case .arm: colors[arm] = armPalette[next % armPalette.count]; next += 1
            }
        }
        return colors
    }

    /// The report's arms, then any arm that only appears in the daily rows (sorted).
    static func armOrder(_ r: ExperimentReport) -> [String] {
        var order = r.arms.map(\.arm)
        let known = Set(order)
        order += Set(r.daily.flatMap(\.arms.keys)).subtracting(known).sorted()
        return order
    }

    static func verdicts(_ r: ExperimentReport) -> String {
        var s = "<section class=\"verdict\">\n<div class=\"k\">Verdict</div><p>\(escape(r.verdict))</p>\n"
        if let h = r.holdoutVerdict {
            s += "<div class=\"k\">Holdout</div><p class=\"second\">\(escape(h))</p>\n"
        }
        return s + "</section>\n"
    }

    /// One row per arm on a shared rate axis: the rate as a point, the 95 % interval as a line with caps.
    static func ciChart(_ r: ExperimentReport) -> String {
        guard !r.arms.isEmpty else { return empty("The experiment has no arms.") }
        let width = 1040.0, labelEnd = 232.0, plotX = 248.0, plotW = 560.0, textX = 830.0, rowH = 42.0, top = 6.0
        let colors = armColors(armOrder(r), control: r.control)
        let highest = r.arms.map { $0.conversion.high ?? $0.conversion.rate ?? 0 }.max() ?? 0
        let axis = Axis(max: highest, integer: false)
        func x(_ v: Double) -> Double { plotX + min(1, max(0, v / axis.max)) * plotW }
        let plotBottom = top + Double(r.arms.count) * rowH
        let height = plotBottom + 30
        var s = svgOpen(width: width, height: height, label: "Conversion rate per arm with 95 % confidence intervals")
        for (i, a) in r.arms.enumerated() where armKind(a.arm, control: r.control) == .control {
            s += rect(x: 0, y: top + Double(i) * rowH, w: width, h: rowH, fill: "#eef4fb", rx: 6)
        }
        for tick in axis.ticks {
            let tx = x(tick)
            s += line(x1: tx, y1: top, x2: tx, y2: plotBottom, stroke: tick == 0 ? "#9aa5b1" : "#e3e8ee")
            s += text(x: tx, y: plotBottom + 18, anchor: "middle", size: 12, fill: "#616e7c", axis.label(tick))
        }
        if let c = r.arms.first(where: { $0.arm == r.control })?.conversion.rate {
            s += line(x1: x(c), y1: top, x2: x(c), y2: plotBottom, stroke: "#1f4e8c", width: 1.5, dash: "5 4")
        }
        for (i, a) in r.arms.enumerated() {
            let kind = armKind(a.arm, control: r.control)
            let color = colors[a.arm] ?? "#3b6ea8"
            let cy = top + Double(i) * rowH + rowH / 2
            let p = a.conversion
            s += "<g><title>\(escape(a.arm)): \(percent(p.rate)) (95 % CI \(percent(p.low)) – \(percent(p.high))), "
                + "\(count(p.successes)) of \(count(p.trials))</title>"
            let tag = kind == .control ? " (control)" : ""
            s += text(x: labelEnd, y: cy + 4.5, anchor: "end", size: 13, weight: kind == .control ? 700 : 600,
                      fill: kind == .arm ? "#1f2933" : color, truncate(a.arm, 24) + escape(tag))
            if let rate = p.rate {
                if let low = p.low, let high = p.high {
                    s += line(x1: x(low), y1: cy, x2: x(high), y2: cy, stroke: color, width: 2.5)
                    s += line(x1: x(low), y1: cy - 7, x2: x(low), y2: cy + 7, stroke: color, width: 2)
                    s += line(x1: x(high), y1: cy - 7, x2: x(high), y2: cy + 7, stroke: color, width: 2)
                }
                let px = x(rate)
                switch kind {
                case .holdout, .globalControl:
                    s += "<path d=\"M\(n(px)) \(n(cy - 8))L\(n(px + 8)) \(n(cy))L\(n(px)) \(n(cy + 8))L\(n(px - 8)) \(n(cy))Z\" "
                        + "fill=\"#ffffff\" stroke=\"\(color)\" stroke-width=\"2.5\"/>"
                case .control, .arm:
                    s += "<circle cx=\"\(n(px))\" cy=\"\(n(cy))\" r=\"\(kind == .control ? 7 : 6)\" fill=\"\(color)\" stroke=\"#ffffff\" stroke-width=\"1.5\"/>"
                }
                let interval = p.low.flatMap { low in p.high.map { "\(fixed(low * 100, 1))–\(percent($0))" } } ?? "no interval"
                s += text(x: textX, y: cy + 4.5, size: 13, weight: 650, fill: "#1f2933", "\(percent(rate))")
                s += text(x: textX + 62, y: cy + 4.5, size: 12, fill: "#616e7c", "[\(interval)] · n = \(count(p.trials))")
            } else {
                s += text(x: plotX + 8, y: cy + 4.5, size: 12, fill: "#7b8794", "no exposures")
            }
            s += "</g>\n"
        }
        return s + "</svg>\n"
    }

    static func experimentTable(_ r: ExperimentReport) -> String {
        var s = tableOpen(["Arm", "Share", "Exposures", "Conversions", "Rate", "95 % CI", "Lift vs control", "p vs control", "vs holdout"])
        for a in r.arms {
            let kind = armKind(a.arm, control: r.control)
            let rowClass = switch kind {
            case .control: " class=\"control\""
            case .holdout: " class=\"holdout\""
            default: ""
            }
            let share: String = if let c = a.configuredShare {
                percent(c)
            } else if kind == .holdout, r.holdoutPercent > 0 {
                "\(fixed(r.holdoutPercent, 1))\u{A0}%"
            } else {
                "–"
            }
            let p = a.conversion
            let ci = p.low.flatMap { low in p.high.map { "\(fixed(low * 100, 1))–\(percent($0))" } } ?? "–"
            var lift = "<span class=\"muted\">–</span>", pControl = "<span class=\"muted\">–</span>"
            if kind == .control {
                lift = "<span class=\"muted\">reference</span>"
            } else if let v = a.vsControl {
                lift = liftText(v)
                pControl = pValueText(v.pValue)
            }
            var holdout = "<span class=\"muted\">–</span>"
            if let h = a.vsHoldout, kind != .holdout {
                holdout = "\(liftText(h, difference: false)) · p\u{A0}\(pValueText(h.pValue, bare: true))"
            }
            s += "<tr\(rowClass)><td class=\"l name\">\(escape(a.arm))\(armTag(a.arm, control: r.control))</td><td>\(share)</td>"
                + "<td>\(count(p.trials))</td><td>\(count(p.successes))</td><td><b>\(percent(p.rate))</b></td><td>\(ci)</td>"
                + "<td>\(lift)</td><td>\(pControl)</td><td>\(holdout)</td></tr>\n"
        }
        return s + tableClose
    }

    /// "+12.0 % (+1.2 pp)", green or red when significant at 5 %.
    static func liftText(_ c: Comparison, difference: Bool = true) -> String {
        var s = c.relativeLift.map { signedPercent($0) } ?? "–"
        if difference, let d = c.absoluteDifference { s += " <span class=\"muted\">(\(signed(d * 100, 1))\u{A0}pp)</span>" }
        if let p = c.pValue, p < 0.05, let d = c.absoluteDifference ?? c.relativeLift, d != 0 {
            return "<span class=\"\(d > 0 ? "up" : "down")\">\(s)</span>"
        }
        return s
    }

    static func pValueText(_ p: Double?, bare: Bool = false) -> String {
        guard let p else { return "–" }
        let text = p < 0.001 ? "< 0.001" : (bare ? "= " : "") + fixed(p, 3)
        return p < 0.05 ? "<b>\(escape(text))</b>" : escape(text)
    }

    static func chiSquaredLine(_ c: ChiSquared?) -> String {
        guard let c else {
            return "<p class=\"note\" style=\"margin-top:12px\">Chi-squared test of independence: not computed (needs at least two arms with exposures).</p>\n"
        }
        return "<p style=\"margin:12px 0 0\">Chi-squared test of independence over the arms (holdout and global control excluded): "
            + "<b>χ² = \(fixed(c.statistic, 2)), df = \(c.degreesOfFreedom), p \(pValueText(c.pValue, bare: true))</b>"
            + (c.pValue < 0.05 ? " — the arms’ conversion rates differ." : " — no significant difference between the arms.") + "</p>\n"
    }

    static func dailyExperiment(_ r: ExperimentReport) -> String {
        guard !r.daily.isEmpty else { return empty("No days in this range.") }
        let arms = armOrder(r)
        let colors = armColors(arms, control: r.control)
        func series(_ value: (DayArm) -> Int64) -> [Series] {
            arms.map { arm in
                Series(name: arm, color: colors[arm] ?? "#3b6ea8", values: r.daily.map { Double($0.arms[arm].map(value) ?? 0) })
            }
        }
        let days = r.daily.map(\.day)
        var s = legend(arms.map { ($0, colors[$0] ?? "#3b6ea8") })
        s += "<h3>Exposures per day</h3>\n" + timeChart(days: days, series: series(\.exposures), height: 220, label: "Exposures per day and arm")
        s += "<h3>Conversions per day</h3>\n" + timeChart(days: days, series: series(\.conversions), height: 220, label: "Conversions per day and arm")
        return s
    }
}

// MARK: - Charts

extension ReportHTML {
    struct Series {
        var name: String
        var color: String
        var values: [Double]
    }

    /// A value axis from 0 with 4–6 round ticks.
    struct Axis {
        var max: Double
        var step: Double
        var integer: Bool

        init(max value: Double, integer: Bool) {
            self.integer = integer
            guard value > 0, value.isFinite else {
                (max, step) = integer ? (4, 1) : (0.1, 0.025)
                return
            }
            let raw = value / 4
            var magnitude = 1.0
            while magnitude * 10 <= raw { magnitude *= 10 }
            while magnitude > raw { magnitude /= 10 }
            let factors: [Double] = integer && magnitude < 10 ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10]
            var s = factors.map { $0 * magnitude }.first { $0 >= raw } ?? 10 * magnitude
            if integer { s = Swift.max(1, s.rounded(.up)) }
            step = s
            max = s * (value / s).rounded(.up)
            if max < value { max += s }
        }

        var ticks: [Double] {
            let count = Int((max / step).rounded())
            return (0...count).map { Double($0) * step }
        }

        func label(_ v: Double) -> String {
            if integer { return fixed(v, 0) }
            let pct = step * 100
            return fixed(v * 100, (pct - pct.rounded()).magnitude < 1e-9 ? 0 : 1) + "\u{A0}%"
        }
    }

    /// Values per day: grouped bars for up to 14 days, lines (with points up to 62 days) beyond.
    static func timeChart(days: [String], series: [Series], height: Double = 260, label: String) -> String {
        guard !days.isEmpty else { return empty("No days in this range.") }
        let width = 1040.0, left = 64.0, right = 12.0, top = 10.0, bottom = 30.0
        let plotW = width - left - right, plotH = height - top - bottom, baseline = top + plotH
        let highest = series.flatMap(\.values).max() ?? 0
        let axis = Axis(max: highest, integer: true)
        func y(_ v: Double) -> Double { baseline - min(1, max(0, v / axis.max)) * plotH }
        var s = svgOpen(width: width, height: height, label: label)
        for tick in axis.ticks {
            s += line(x1: left, y1: y(tick), x2: width - right, y2: y(tick), stroke: tick == 0 ? "#9aa5b1" : "#e3e8ee")
            s += text(x: left - 8, y: y(tick) + 4, anchor: "end", size: 11.5, fill: "#616e7c", axis.label(tick))
        }
        let dayCount = days.count
        let bars = dayCount <= 14
        let slot = plotW / Double(dayCount)
        func cx(_ i: Int) -> Double {
            bars ? left + slot * (Double(i) + 0.5) : left + 6 + Double(i) * (plotW - 12) / Double(dayCount - 1)
        }
        let labelEvery = bars ? 1 : (dayCount + 11) / 12
        for (i, day) in days.enumerated() where i % labelEvery == 0 {
            s += text(x: cx(i), y: baseline + 18, anchor: "middle", size: 11.5, fill: "#616e7c", escape(shortDay(day)))
        }
        if bars {
            let groupW = Swift.min(slot * 0.72, 48 * Double(Swift.max(1, series.count)))
            let barW = groupW / Double(Swift.max(1, series.count))
            for (i, day) in days.enumerated() {
                let x0 = cx(i) - groupW / 2
                for (k, se) in series.enumerated() {
                    let v = i < se.values.count ? se.values[i] : 0
                    let barTop = y(v)
                    s += "<rect x=\"\(n(x0 + Double(k) * barW + 1))\" y=\"\(n(barTop))\" width=\"\(n(Swift.max(1, barW - 2)))\" "
                        + "height=\"\(n(baseline - barTop))\" fill=\"\(se.color)\" rx=\"2\"><title>\(escape(day)) · \(escape(se.name)): "
                        + "\(fixed(v, 0))</title></rect>"
                }
                s += "\n"
            }
        } else {
            for se in series {
                let points = se.values.indices.prefix(dayCount).map { "\(n(cx($0))),\(n(y(se.values[$0])))" }.joined(separator: " ")
                s += "<polyline points=\"\(points)\" fill=\"none\" stroke=\"\(se.color)\" stroke-width=\"2\" stroke-linejoin=\"round\"/>\n"
                if dayCount <= 62 {
                    for (i, v) in se.values.prefix(dayCount).enumerated() {
                        s += "<circle cx=\"\(n(cx(i)))\" cy=\"\(n(y(v)))\" r=\"2.5\" fill=\"\(se.color)\"><title>\(escape(days[i])) · "
                            + "\(escape(se.name)): \(fixed(v, 0))</title></circle>"
                    }
                    s += "\n"
                }
            }
        }
        return s + "</svg>\n"
    }

    /// `2026-12-07` → `12-07`; anything else unchanged.
    static func shortDay(_ day: String) -> String {
        let parts = day.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].count == 4 else { return day }
        return "\(parts[1])-\(parts[2])"
    }

    static func svgOpen(width: Double, height: Double, label: String) -> String {
        "<svg viewBox=\"0 0 \(n(width)) \(n(height))\" role=\"img\" aria-label=\"\(escape(label))\">\n"
    }

    /// `content` is HTML (already escaped).
    static func text(x: Double, y: Double, anchor: String = "start", size: Double, weight: Int = 400, fill: String = "#3e4c59",
                     _ content: String) -> String {
        "<text x=\"\(n(x))\" y=\"\(n(y))\" text-anchor=\"\(anchor)\" font-size=\"\(n(size))\" font-weight=\"\(weight)\" "
            + "style=\"fill:\(fill)\">\(content)</text>"
    }

    static func rect(x: Double, y: Double, w: Double, h: Double, fill: String, rx: Double = 0) -> String {
        "<rect x=\"\(n(x))\" y=\"\(n(y))\" width=\"\(n(w))\" height=\"\(n(h))\" rx=\"\(n(rx))\" fill=\"\(fill)\"/>"
    }

    static func line(x1: Double, y1: Double, x2: Double, y2: Double, stroke: String, width: Double = 1, dash: String? = nil) -> String {
        "<line x1=\"\(n(x1))\" y1=\"\(n(y1))\" x2=\"\(n(x2))\" y2=\"\(n(y2))\" stroke=\"\(stroke)\" stroke-width=\"\(n(width))\""
            + (dash.map { " stroke-dasharray=\"\($0)\"" } ?? "") + "/>"
    }

    /// An SVG coordinate with at most one decimal.
    static func n(_ v: Double) -> String { fixed(v, v == v.rounded() ? 0 : 1, grouped: false) }

    /// Escaped, cut to `limit` characters with an ellipsis.
    static func truncate(_ s: String, _ limit: Int) -> String {
        escape(s.count > limit ? String(s.prefix(limit - 1)) + "…" : s)
    }
}

// MARK: - Formatting

extension ReportHTML {
    /// Escapes `&`, `<`, `>`, `"` and `'` (safe in text and in quoted attributes).
    static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// `1234567` → `1,234,567`.
    static func count(_ v: Int64) -> String {
        (v < 0 ? "−" : "") + grouped(String(v.magnitude))
    }

    static func grouped(_ digits: String) -> String {
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0, (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return out
    }

    /// `x` with `decimals` digits after the point, rounded half away from zero; "–" when not finite.
    static func fixed(_ x: Double, _ decimals: Int, grouped group: Bool = true) -> String {
        guard x.isFinite else { return "–" }
        var scale: UInt64 = 1
        for _ in 0..<decimals { scale *= 10 }
        let scaled = (x.magnitude * Double(scale)).rounded()
        guard scaled < 9e18 else { return "\(x)" }
        let v = UInt64(scaled)
        let whole = String(v / scale)
        var s = group ? grouped(whole) : whole
        if decimals > 0 {
            let fraction = String(v % scale)
            s += "." + String(repeating: "0", count: decimals - fraction.count) + fraction
        }
        return (x < 0 && v != 0 ? "−" : "") + s
    }

    /// A fraction as a percentage with one decimal (`0.1234` → `12.3 %`); "–" for nil.
    static func percent(_ fraction: Double?) -> String {
        guard let fraction, fraction.isFinite else { return "–" }
        return fixed(fraction * 100, 1) + "\u{A0}%"
    }

    static func signed(_ x: Double, _ decimals: Int) -> String {
        let s = fixed(x, decimals)
        return s.hasPrefix("−") || s.allSatisfy({ $0 == "0" || $0 == "." }) ? s : "+" + s
    }

    /// `0.12` → `+12.0 %`.
    static func signedPercent(_ fraction: Double) -> String { signed(fraction * 100, 1) + "\u{A0}%" }

    /// Milliseconds for people: `850 ms`, `4.2 s`, `12 min`, `3.5 h`, `2.1 d`.
    static func duration(_ ms: Double) -> String {
        guard ms.isFinite, ms >= 0 else { return "–" }
        func short(_ v: Double, _ unit: String) -> String { fixed(v, v < 10 ? 1 : 0) + "\u{A0}" + unit }
        switch ms {
        case ..<1_000: return fixed(ms, 0) + "\u{A0}ms"
        case ..<60_000: return short(ms / 1_000, "s")
        case ..<3_600_000: return short(ms / 60_000, "min")
        case ..<86_400_000: return short(ms / 3_600_000, "h")
        default: return short(ms / 86_400_000, "d")
        }
    }
}
