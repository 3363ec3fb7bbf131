import ArgumentParser
import Foundation
import WaymarkAnalytics
import WaymarkConfig
import WaymarkControl
import WaymarkEngine

struct Report: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Journey and experiment reports from the KPI counters (`waymark worker kpis` keeps them).",
        subcommands: [JourneyReportCommand.self, ExperimentReportCommand.self])
}

/// Options both reports share.
struct ReportOptions: ParsableArguments {
    @Option(help: "Start of the range (inclusive): RFC 3339, 'now', or a span ago (24h, 7d, 30d).") var from = "30d"
    @Option(help: "End of the range (exclusive).") var to = "now"
    @Option(help: "Directory with rules.yaml and journeys/ (for stage order, steps and arms).") var journeys = "config"
    @Flag(help: "Print as JSON.") var json = false
    @Option(help: "Also write one self-contained HTML page with charts to this file.") var html: String?

    func validate() throws {
        guard let start = try parseTime(from, option: "--from"), let end = try parseTime(to, option: "--to") else { return }
        if start >= end { throw ValidationError("--from must be before --to") }
    }

    /// The journey named `name` (or running the experiment `name`), and its counters for the range.
    func load(_ name: String, global: GlobalOptions, experiment: Bool) async throws -> (JourneyDefinition, KPISeries) {
        let definitions = try JourneyLoader.load(directory: (journeys as NSString).appendingPathComponent("journeys"))
        let match = definitions.first { experiment ? ($0.experiment?.name == name || ($0.name == name && $0.experiment != nil)) : $0.name == name }
        guard let definition = match else {
            let known = experiment ? definitions.compactMap { $0.experiment?.name } : definitions.map(\.name)
            throw ValidationError("no \(experiment ? "experiment" : "journey") '\(name)' in \(journeys)/journeys (known: \(known.joined(separator: ", ")))")
        }
        let context = try OperatorContext(global: global)
        let connection = try await context.redis()
        defer { Task { await connection.close() } }
        let series = try await KPIReader(connection: connection, keys: context.keys)
            .series(journey: definition.name, from: try parseTime(from, option: "--from")!, to: try parseTime(to, option: "--to")!)
        return (definition, series)
    }

    func write(html page: String) throws {
        guard let html else { return }
        try page.write(toFile: html, atomically: true, encoding: .utf8)
        printError("wrote \(html)")
    }
}

struct JourneyReportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "journey",
        abstract: "Funnel with per-stage conversion and drop-off, time to convert, KPIs per channel, step and arm, daily trend.",
        discussion: """
            Reads the hourly KPI counters in Redis (milliseconds for any range). Exposures are \
            instances entered; rates are fractions of what came before (delivery rate = delivered / \
            sent, CTR = clicked / delivered, conversion rate = converted / sent for a channel).

            Examples:
              waymark report journey abandoned_cart
              waymark report journey lifecycle --from 7d --html lifecycle.html
              waymark report journey abandoned_cart --from 2026-11-01T00:00:00Z --to 2026-12-01T00:00:00Z --json
            """)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var options: ReportOptions
    @Argument(help: "Journey name.") var name: String

    func run() async throws {
        let (definition, series) = try await options.load(name, global: global, experiment: false)
        let report = JourneyReport(series: series, journey: definition)
        try options.write(html: ReportHTML.journey(report))
        if options.json { try printJSON(report) } else { print(ReportText.journey(report)) }
    }
}

struct ExperimentReportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "experiment",
        abstract: "Per arm: exposures, conversions, rate with 95 % CI, lift against control and holdout, p-values, a verdict.",
        discussion: """
            NAME is the experiment's name (or the name of the journey running it). The first arm is \
            the control. Conversion rates are per instance entered (intent to treat, so the holdout, \
            which is sent nothing, is measured the same way); intervals are Wilson score intervals; \
            p-values are two-sided two-proportion z-tests, with a chi-squared test over all arms.

            Examples:
              waymark report experiment cart_reminder_copy
              waymark report experiment abandoned_cart --from 14d --html experiment.html
              waymark report experiment cart_reminder_copy --json | jq '.arms[] | {arm, rate: .conversion.rate}'
            """)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var options: ReportOptions
    @Argument(help: "Experiment (or journey) name.") var name: String

    func run() async throws {
        let (definition, series) = try await options.load(name, global: global, experiment: true)
        guard let report = ExperimentReport(series: series, journey: definition) else {
            throw ValidationError("journey '\(definition.name)' runs no experiment")
        }
        try options.write(html: ReportHTML.experiment(report, journey: JourneyReport(series: series, journey: definition)))
        if options.json { try printJSON(report) } else { print(ReportText.experiment(report)) }
    }
}
