import ArgumentParser
import Foundation
import WaymarkConfig
import WaymarkControl
import WaymarkEngine

struct Inspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Look inside Waymark's state.",
        discussion: "Examples:\n  waymark inspect customer c-1042\n  waymark queues            # queues and lag",
        subcommands: [Customer.self])

    struct Customer: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Why did (or didn't) this customer get that message? Profile, journeys, caps, timers, decisions.",
            discussion: """
                Reads the customer's journey state, profile, scheduler index entry, sender claims and \
                recent message decisions (sent, deferred, suppressed, with the rule that decided) from Redis. \
                Times are shown in RFC 3339 (UTC) and in the customer's time zone. Contact addresses are \
                masked; --json includes them in full only with --show-contacts.

                Exit status 1 when Waymark knows nothing about the customer.

                Examples:
                  waymark inspect customer c-1042
                  waymark inspect customer c-1042 --decisions 50
                  waymark inspect customer c-1042 --json | jq '.decisions[] | select(.reason != "sent")'
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Customer id.") var id: String
        @Option(help: "How many recent decisions to show.") var decisions = 20
        @Option(help: "Directory with rules.yaml (for cap windows and the default time zone).") var journeys = "config"
        @Flag(help: "Print as JSON.") var json = false
        @Flag(help: "With --json: include contact addresses unmasked.") var showContacts = false

        func validate() throws {
            if decisions < 0 { throw ValidationError("--decisions must be 0 or more") }
            if showContacts && !json { throw ValidationError("--show-contacts only applies to --json; text output always masks contacts") }
        }

        func run() async throws {
            let context = try OperatorContext(global: global)
            let rulesPath = journeys + "/rules.yaml"
            var rules: Rules?
            if FileManager.default.fileExists(atPath: rulesPath) {
                rules = try RulesLoader.load(file: rulesPath)
            } else {
                printError("note: \(rulesPath) not found; cap windows not evaluated, times in UTC unless the profile has a zone")
            }
            let redis = try await context.redis()
            let inspector = CustomerInspector(redis: redis, keys: context.keys, rules: rules)
            let report = try await inspector.inspect(id, decisions: decisions, showContacts: json && showContacts)
            await redis.close()
            guard report.exists else {
                printError("customer '\(id)' not found: no state, profile, claims or decisions in Redis")
                throw ExitCode(1)
            }
            if json { try printJSON(report) } else { print(report.render()) }
        }
    }
}
