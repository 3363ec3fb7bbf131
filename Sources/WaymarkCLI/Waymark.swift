import ArgumentParser
import Logging

@main
struct Waymark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "waymark",
        abstract: "Omnichannel customer-journey orchestration on Kafka and Redis.",
        discussion: """
            Touchpoints flow through Kafka to stateless journey workers that keep per-customer state in \
            Redis and enqueue messages for per-channel senders, honouring quiet hours, frequency caps and consent.

            Examples:
              waymark demo                         # local broker + Redis, sample day, summary
              waymark topics apply --config config/waymark.yaml
              waymark topics list --json
            """,
        subcommands: [Demo.self, Topics.self, Worker.self, Replay.self])
}

/// Options every command shares.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Runtime settings file.")
    var config: String = "config/waymark.yaml"

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .warning

    /// Bootstraps swift-log once, to stderr, at the requested level.
    func bootstrapLogging() {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
