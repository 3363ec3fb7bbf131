import ArgumentParser
import Foundation
import WaymarkControl

struct Funnel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Journey funnels from journey.decisions: entered, per stage, converted, dropped off and where.",
        discussion: """
            Reads the decisions topic, keeps decisions whose decided_at is in [--from, --to), and prints \
            per journey the instances that entered, reached each stage, converted, and dropped off \
            (exited or completed without converting) by the last stage they reached, as bar charts; \
            plus messages decided per channel and decisions by reason. Instances that entered before \
            --from are counted from the first decision seen in range.

            Times are RFC 3339, 'now', or a span ago (24h, 7d).

            Examples:
              waymark funnel --from 7d
              waymark funnel --from 2026-11-01T00:00:00Z --to 2026-12-01T00:00:00Z --journey abandoned_cart
              waymark funnel --from 30d --html funnel.html
              waymark funnel --json | jq '.funnels.abandoned_cart'
            """)
    @OptionGroup var global: GlobalOptions
    @Option(help: "Start of the range (inclusive).") var from: String?
    @Option(help: "End of the range (exclusive).") var to: String?
    @Option(help: "Only this journey.") var journey: String?
    @Flag(help: "Print as JSON.") var json = false
    @Option(help: "Also write a self-contained HTML report with bar charts to this file.") var html: String?
    @Flag(help: "No progress on stderr.") var quiet = false

    func validate() throws {
        let start = try parseTime(from, option: "--from"), end = try parseTime(to, option: "--to")
        if let start, let end, start >= end { throw ValidationError("--from must be before --to") }
    }

    func run() async throws {
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
