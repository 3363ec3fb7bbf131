import ArgumentParser
import Foundation
import WaymarkAnalytics
import WaymarkConfig
import WaymarkControl
import WaymarkEngine

struct Funnel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Journey funnels: entered, per stage with conversion and drop-off, converted; from the KPI counters.",
        discussion: """
            By default reads the hourly KPI counters `waymark worker kpis` keeps in Redis (milliseconds \
            for any range) and prints per journey the instances entered, each stage reached with its \
            share of entries, the conversion to the next stage and the drop-off, the instances that \
            ended in each stage, and conversions (the journey's goal within its window). \
            `waymark report journey NAME` adds channels, steps, arms and a daily trend.

            --scan-topic instead reads the whole decisions topic (slow; no KPI worker needed), which \
            also shows decisions by reason and drop-off by the last stage reached.

            Times are RFC 3339, 'now', or a span ago (24h, 7d).

            Examples:
              waymark funnel --from 7d
              waymark funnel --from 2026-11-01T00:00:00Z --to 2026-12-01T00:00:00Z --journey abandoned_cart
              waymark funnel --journey abandoned_cart --html funnel.html
              waymark funnel --json | jq '.[] | {journey, entered, converted}'
              waymark funnel --scan-topic --from 30d
            """)
    @OptionGroup var global: GlobalOptions
    @Option(help: "Start of the range (inclusive); default 30d with the counters, the beginning with --scan-topic.") var from: String?
    @Option(help: "End of the range (exclusive).") var to: String?
    @Option(help: "Only this journey.") var journey: String?
    @Option(help: "Directory with rules.yaml and journeys/ (stage order).") var journeys = "config"
    @Flag(help: "Print as JSON.") var json = false
    @Option(help: "Also write a self-contained HTML report with charts to this file (needs --journey unless --scan-topic).") var html: String?
    @Flag(help: "Read the decisions topic instead of the KPI counters.") var scanTopic = false
    @Flag(help: "No progress on stderr.") var quiet = false

    func validate() throws {
        let start = try parseTime(from, option: "--from"), end = try parseTime(to, option: "--to")
        if let start, let end, start >= end { throw ValidationError("--from must be before --to") }
        if html != nil && journey == nil && !scanTopic { throw ValidationError("--html needs --journey (or --scan-topic for all journeys on one page)") }
    }

    func run() async throws {
        if scanTopic { try await runScan() } else { try await runCounters() }
    }

    private func runCounters() async throws {
        let definitions = try JourneyLoader.load(directory: (journeys as NSString).appendingPathComponent("journeys"))
            .filter { journey == nil || $0.name == journey }
        if definitions.isEmpty { throw ValidationError("no journey '\(journey ?? "")' in \(journeys)/journeys") }
        let context = try OperatorContext(global: global)
        let connection = try await context.redis()
        let reader = KPIReader(connection: connection, keys: context.keys)
        let start = try parseTime(from ?? "30d", option: "--from")!, end = try parseTime(to ?? "now", option: "--to")!
        var reports: [JourneyReport] = []
        for definition in definitions {
            reports.append(JourneyReport(series: try await reader.series(journey: definition.name, from: start, to: end), journey: definition))
        }
        await connection.close()
        if let html, let report = reports.first {
            try ReportHTML.journey(report).write(toFile: html, atomically: true, encoding: .utf8)
            if !quiet { printError("wrote \(html)") }
        }
        if json { try printJSON(reports); return }
        print("Funnels \(TimeFormat.utc(start)) – \(TimeFormat.utc(end)) from the KPI counters\n")
        for r in reports { print(Self.render(r)) }
    }

    /// Stage bars scaled to the journey's entries, with conversion to the next stage and drop-off.
    static func render(_ r: JourneyReport) -> String {
        func pct(_ x: Double?) -> String { x.map { String(format: "%5.1f %%", $0 * 100) } ?? "      —" }
        let width = max(8, r.stages.map(\.stage.count).max() ?? 8)
        var lines = ["Funnel \(r.journey): entered \(r.entered), converted \(r.converted) (\(pct(r.conversionRate).trimmingCharacters(in: .whitespaces)))"]
        lines.append("  " + "stage".padding(toLength: width, withPad: " ", startingAt: 0)
                     + "  reached  of entered  to next  drop-off  ended here  converted here")
        for s in r.stages {
            let bar = String(repeating: "█", count: Int(((s.shareOfEntered ?? 0) * 30).rounded()))
            lines.append("  " + s.stage.padding(toLength: width, withPad: " ", startingAt: 0)
                         + String(format: " %8lld", s.reached) + "   " + pct(s.shareOfEntered) + "  " + pct(s.conversionToNext)
                         + "   " + pct(s.dropOff) + String(format: "  %10lld  %14lld", s.exitedHere + s.completedHere, s.convertedHere) + "  " + bar)
        }
        if let t = r.timeToConvert {
            lines.append("  time to convert: p50 \(duration(t.p50)), p90 \(duration(t.p90)) (\(t.count) conversions)")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func duration(_ ms: Double) -> String {
        let minutes = Int(ms / 60_000)
        if minutes < 60 { return "\(minutes)m" }
        if minutes < 48 * 60 { return "\(minutes / 60)h \(minutes % 60)m" }
        return "\(minutes / 1440)d \((minutes % 1440) / 60)h"
    }

    private func runScan() async throws {
        let context = try OperatorContext(global: global)
        let report = FunnelReport(from: try parseTime(from, option: "--from"), to: try parseTime(to, option: "--to"), journey: journey)
        let progress = ProgressLine(label: "decisions", quiet: quiet)
        let summary = try await report.run(topic: context.settings.kafka.decisions.name, client: context.client,
                                           admin: context.admin, progress: progress.callback())
        progress.finish()
        let range = "\(report.from.map(TimeFormat.utc) ?? "beginning") – \(report.to.map(TimeFormat.utc) ?? "now")"
        if let html {
            let title = "Waymark funnel" + (journey.map { ": \($0)" } ?? "")
            try summary.html(title: title, subtitle: range).write(toFile: html, atomically: true, encoding: .utf8)
            if !quiet { printError("wrote \(html)") }
        }
        if json {
            try printJSON(summary)
        } else {
            print("Decisions decided \(range)\(journey.map { ", journey \($0)" } ?? "")\n")
            print(summary.render())
        }
    }
}
