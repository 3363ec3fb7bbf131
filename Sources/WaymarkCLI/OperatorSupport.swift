import ArgumentParser
import Foundation
import WaymarkConfig
import WaymarkControl
import WaymarkKafka
import WaymarkRedis
import WaymarkState
import WaymarkWorkers

/// Settings and connections for operator commands (queues, inspect, dlq, funnel).
struct OperatorContext {
    let settings: WaymarkSettings
    let client: KafkaClientConfiguration
    let admin: KafkaAdmin
    let keys: KeySpace

    init(global: GlobalOptions) throws {
        global.bootstrapLogging()
        settings = try WaymarkSettings.load(path: global.config)
        client = WorkerRuntime.kafkaClient(settings)
        admin = try KafkaAdmin(client: client)
        keys = KeySpace(prefix: settings.redis.keyPrefix, shards: settings.redis.shards)
    }

    var redisConfiguration: RedisConfiguration { WorkerRuntime.redisConfiguration(settings) }

    func redis() async throws -> RedisConnection { try await RedisConnection.connect(redisConfiguration) }
}

/// Progress of long reads on stderr: `read 12.3k/40k records (8.1k/s)`, rewritten in place on a terminal.
struct ProgressLine: Sendable {
    let label: String
    let quiet: Bool
    static let isTerminal = isatty(STDERR_FILENO) == 1

    func callback() -> (@Sendable (ScanProgress) -> Void)? {
        if quiet { return nil }
        let label = label
        return { p in
            guard p.total > 0 else { return }
            let line = "\(label): read \(human(Double(p.records)))/\(human(Double(p.total))) records (\(human(p.rate))/s)"
            FileHandle.standardError.write(Data((Self.isTerminal ? "\r\u{1B}[K" + line : line + "\n").utf8))
        }
    }

    /// Ends an in-place line.
    func finish() {
        if !quiet && Self.isTerminal { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }
}

/// Parses a `--from`/`--to`/`--since` value or fails with a usage error.
func parseTime(_ text: String?, option: String) throws -> Int64? {
    guard let text else { return nil }
    guard let ms = TimeArgument.parse(text) else {
        throw ValidationError("\(option): '\(text)' is not a time; use RFC 3339 (2026-11-20T08:00:00Z), 'now', or a span ago (90m, 24h, 7d)")
    }
    return ms
}

/// Asks on the terminal; `true` only for an explicit yes.
func confirm(_ question: String) -> Bool {
    print("\(question) [y/N] ", terminator: "")
    fflush(nil)
    guard let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased() else { return false }
    return answer == "y" || answer == "yes"
}

/// Writes a line to stderr.
func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
