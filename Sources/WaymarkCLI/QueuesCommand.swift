import ArgumentParser
import Foundation
import WaymarkControl
import WaymarkKafka
import WaymarkRedis

struct Queues: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show end offsets, consumer lag, deferred work and dead letters.",
        discussion: """
            Per topic and partition: end offsets, and per consumer group (the journey and sender groups \
            from the settings plus every group the cluster lists) the committed offset and the lag. \
            Deferred work from Redis by due time (due now, within the next hour, within 24 h, later): \
            journey timers and quiet-hours deferrals (customers in the scheduler's index) and messages \
            parked by senders. Outbox entries not yet acknowledged by Kafka. Dead letters by reason.

            With --watch the screen is redrawn every --interval seconds with rates (records/s produced \
            and consumed since the previous refresh) until Ctrl-C.

            Examples:
              waymark queues
              waymark queues --watch --interval 2
              waymark queues --json | jq '.groups[] | select(.lag > 0)'
            """)
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print as JSON (one document; with --watch one per refresh).") var json = false
    @Flag(help: "Refresh in place until interrupted.") var watch = false
    @Option(help: "Seconds between refreshes with --watch.") var interval: Double = 5
    @Flag(help: "Skip Redis (Kafka figures only).") var noRedis = false
    @Flag(help: "No progress on stderr.") var quiet = false

    func validate() throws {
        if interval < 0.2 { throw ValidationError("--interval must be at least 0.2 seconds") }
    }

    func run() async throws {
        let context = try OperatorContext(global: global)
        let redis = noRedis ? nil : try await context.redis()
        var inspector = QueueInspector(settings: context.settings, client: context.client, admin: context.admin, redis: redis)
        let progress = ProgressLine(label: "dead letters", quiet: quiet || watch)
        var previous: QueueSnapshot?
        repeat {
            var snapshot = try await inspector.snapshot(progress: progress.callback())
            progress.finish()
            if let previous { snapshot.computeRates(since: previous) }
            if json {
                try printJSON(snapshot)
            } else {
                if watch { print("\u{1B}[H\u{1B}[2J", terminator: "") }
                print(Self.render(snapshot, watching: watch))
            }
            fflush(nil)
            previous = snapshot
            if watch { try await Task.sleep(for: .milliseconds(Int(interval * 1000))) }
        } while watch
    }

    static func render(_ s: QueueSnapshot, watching: Bool) -> String {
        func rate(_ r: Double?) -> String { r.map { String(format: "%.1f", $0) } ?? "-" }
        var out: [String] = []
        out.append("Queues at \(TimeFormat.utc(s.takenAt))\(watching ? "  (refreshing; Ctrl-C to stop)" : "")")
        out.append("")
        out.append(table([["TOPIC", "PART", "LOW", "END", "IN/S"]] + s.partitions.map {
            [$0.topic, "\($0.partition)", "\($0.low)", "\($0.end)", rate($0.producedPerSecond)]
        }))
        out.append("")
        let lagBy = s.lagByGroup
        out.append("Consumer groups (total lag: " + lagBy.keys.sorted().map { "\($0) \(lagBy[$0]!)" }.joined(separator: ", ") + ")")
        out.append(table([["GROUP", "TOPIC", "PART", "COMMITTED", "END", "LAG", "OUT/S"]] + s.groups.map {
            [$0.group, $0.topic, "\($0.partition)", $0.committed.map(String.init) ?? "-", "\($0.end)", "\($0.lag)", rate($0.consumedPerSecond)]
        }))
        out.append("")
        out.append("Deferred work")
        out.append(table([["KIND", "DUE NOW", "NEXT HOUR", "NEXT 24H", "LATER", "TOTAL"],
                          ["journey timers / held messages (customers)", "\(s.timers.dueNow)", "\(s.timers.nextHour)",
                           "\(s.timers.next24Hours)", "\(s.timers.later)", "\(s.timers.total)"],
                          ["sender-parked messages", "\(s.senderDelayed.dueNow)", "\(s.senderDelayed.nextHour)",
                           "\(s.senderDelayed.next24Hours)", "\(s.senderDelayed.later)", "\(s.senderDelayed.total)"]]))
        out.append("Outbox: \(s.outboxPendingCustomers) customers with unpublished entries"
                   + (s.oldestOutboxAgeMs.map { ", oldest \(String(format: "%.1f", Double($0) / 1000)) s" } ?? ""))
        out.append("")
        let total = s.deadLettersByReason.values.reduce(0, +)
        out.append("Dead letters: \(total)")
        for reason in s.deadLettersByReason.keys.sorted() { out.append("  \(reason.padding(toLength: 20, withPad: " ", startingAt: 0)) \(s.deadLettersByReason[reason]!)") }
        return out.joined(separator: "\n")
    }
}
