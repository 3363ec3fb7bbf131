import ArgumentParser
import Foundation
import Logging
import WaymarkConfig

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
              waymark queues --watch
              waymark inspect customer c-1042
              waymark dlq list
              waymark funnel --from 7d --html funnel.html
              waymark replay --from 7d --rules new-rules/ --dry-run
              waymark forget customer c-1042

            Exit status: 0 ok; 1 not found or not confirmed; 2 usage or configuration error; \
            3 runtime failure (broker or Redis unreachable, …).
            """,
        version: waymarkVersion,
        subcommands: [Demo.self, Topics.self, Worker.self, Queues.self, Inspect.self, Dlq.self, Funnel.self, Report.self, Replay.self, Forget.self, Template.self])

    /// Runs the command, mapping errors to exit codes scripts can rely on (see the discussion above).
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as ConfigError {
            FileHandle.standardError.write(Data("Error: \(error)\n".utf8))
            Foundation.exit(2)
        } catch let error as JourneyConfigError {  // journeys or rules: a configuration error too
            FileHandle.standardError.write(Data("Error: \(error)\n".utf8))
            Foundation.exit(2)
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            if code == .failure && !(error is ExitCode) {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(3)
            }
            exit(withError: error)
        }
    }
}

/// The version `waymark --version` prints.
let waymarkVersion = "0.3.0"

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
