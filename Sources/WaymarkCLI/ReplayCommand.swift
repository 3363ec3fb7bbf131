import ArgumentParser
import Foundation
import WaymarkConfig
import WaymarkControl
import WaymarkEngine
import WaymarkKafka
import WaymarkRedis
import WaymarkState
import WaymarkWorkers

struct Replay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay history under new rules as a dry run: what would have been sent differently.",
        discussion: """
            Reads the retained touchpoints and delivery receipts, derives each customer's state at --from by \
            replaying earlier history with the current rules, replays [--from, --to] in event time with the \
            rules in --rules, and compares the messages with the baseline, matched by message id: added, \
            removed, or moved (another channel, or a send time more than a minute apart). Nothing is written \
            to Redis and nothing is published.

            --rebuild re-derives live state instead: it raises a fence (journey workers and schedulers pause \
            and keep their partitions), replays history the same way up to now, replaces each customer's \
            state, re-schedules timers and held messages still in the future, and never sends again what \
            the new rules would have sent in the past. It checkpoints progress in Redis: run the same command \
            again to resume an interrupted rebuild. The fence is lifted when the rebuild completes: roll the new \
            rules out to the workers first (they pick them up on restart and wait at the fence).

            Times are RFC 3339 or a duration back from now (7d, 36h).

            Examples:
              waymark replay --from 7d --to now --rules /tmp/stricter-caps --dry-run
              waymark replay --from 2026-11-16T00:00:00Z --to 2026-11-23T00:00:00Z --rules new/ --dry-run --json
              waymark replay --from 7d --rules new/ --dry-run --baseline replay
              waymark replay --from 7d --rules /etc/waymark --rebuild
            """)

    @OptionGroup var global: GlobalOptions
    @Option(help: "Directory with the current rules.yaml and journeys/.") var journeys = "config"
    @Option(help: "Directory with the new rules.yaml and journeys/.") var rules: String
    @Option(help: "Start of the replayed range (RFC 3339, or a duration ago such as 7d).") var from: String
    @Option(help: "End of the replayed range (RFC 3339, a duration ago, or now).") var to = "now"
    @Flag(help: "Compare only; never write state or publish.") var dryRun = false
    @Flag(help: "Re-derive live state from history under the new rules (journey workers and schedulers pause meanwhile).")
    var rebuild = false
    @Option(help: "Rebuild: an id for resuming an interrupted rebuild (default: derived from --from and --rules).")
    var id: String?
    @Option(help: "Rebuild: seconds to let batches in flight finish after raising the fence.") var settle = 5
    @Option(help: "Compare with: actual (published messages) or replay (current rules replayed in event time).")
    var baseline: String = "actual"
    @Flag(help: "Print the full report as JSON.") var json = false

    func validate() throws {
        guard dryRun != rebuild else { throw ValidationError("choose exactly one of --dry-run and --rebuild") }
        if rebuild, to != "now" { throw ValidationError("a rebuild always runs up to now; leave out --to") }
        guard ["actual", "replay"].contains(baseline) else { throw ValidationError("--baseline must be actual or replay") }
        if try Self.time(from) >= Self.time(to) { throw ValidationError("--from must be before --to") }
    }

    static func time(_ text: String, now: Timestamp = Timestamp(milliseconds: Int64(Date().timeIntervalSince1970 * 1000))) throws -> Timestamp {
        if text == "now" { return now }
        if case .success(let t) = Timestamp.parseRFC3339(text) { return t }
        if let span = TimeSpan.parse(text) { return now.adding(TimeSpan(milliseconds: -span.milliseconds)) }
        throw ValidationError("'\(text)' is neither RFC 3339, a duration (7d, 36h) nor now")
    }

    func run() async throws {
        global.bootstrapLogging()
        let settings = try WaymarkSettings.load(path: global.config)
        let current = try JourneyLoader.loadEngine(configDirectory: journeys)
        let proposed = try JourneyLoader.loadEngine(configDirectory: rules)
        let client = WorkerRuntime.kafkaClient(settings)
        let admin = try KafkaAdmin(client: client)
        if rebuild {
            try await runRebuild(settings: settings, current: current, proposed: proposed, client: client, admin: admin)
            return
        }
        let started = ContinuousClock.now
        let history = try await ReplayDryRun.readHistory(
            client: client, admin: admin, touchpointTopics: [settings.kafka.touchpoints.name, settings.kafka.deliveries.name],
            customersTopic: settings.kafka.customers.name,
            outboundTopics: settings.kafka.channels.map { settings.kafka.outboundTopic($0) }) { topic, count in
                let elapsed = (ContinuousClock.now - started).seconds
                FileHandle.standardError.write(Data("read \(count) records from \(topic) (\(String(format: "%.1f", elapsed)) s)\n".utf8))
            }
        var dryRun = ReplayDryRun(current: current, proposed: proposed, from: try Self.time(from), to: try Self.time(to))
        dryRun.baseline = baseline == "replay" ? .replay : .actual
        let replayStart = ContinuousClock.now
        let report = dryRun.run(events: history.events, profiles: history.profiles, published: history.published) { done, total in
            let elapsed = (ContinuousClock.now - replayStart).seconds
            let rate = Double(done) / max(elapsed, 0.001)
            let eta = rate > 0 ? Double(total - done) / rate : 0
            FileHandle.standardError.write(Data(String(format: "\rreplaying: %d/%d customers, %.0f/s, ETA %.0f s   ", done, total, rate, eta).utf8))
        }
        FileHandle.standardError.write(Data(String(format: "\rreplayed %d events (%d in range) for %d customers in %.2f s\n",
                                                   report.eventsRead, report.eventsInRange, report.customers,
                                                   (ContinuousClock.now - replayStart).seconds).utf8))
        if json {
            try printJSON(report)
            return
        }
        print("Dry run \(Timestamp(milliseconds: report.from)) … \(Timestamp(milliseconds: report.to)) against the \(baseline) baseline:")
        print("  baseline messages \(report.baselineMessages), under the new rules \(report.replayedMessages); "
              + "\(report.changes.count) differences for \(report.customersAffected) customers")
        var rows = [["JOURNEY", "CHANNEL", "ADDED", "REMOVED", "MOVED"]]
        for (journey, channels) in report.summary.sorted(by: { $0.key < $1.key }) {
            for (channel, c) in channels.sorted(by: { $0.key < $1.key }) {
                rows.append([journey, channel, "\(c.added)", "\(c.removed)", "\(c.moved)"])
            }
        }
        if rows.count > 1 { print(table(rows)) }
        // Per experiment arm: what a change of variants or weights does to each arm's messages.
        let experimentRows = report.arms.filter { !$0.arm.isEmpty }
        if !experimentRows.isEmpty {
            print("  per experiment arm (messages in range; customers with a message):")
            var armRows = [["JOURNEY", "ARM", "BASELINE", "NEW RULES", "ADDED", "REMOVED", "MOVED", "TEMPLATE CHANGED", "CUSTOMERS BEFORE", "AFTER"]]
            for a in experimentRows {
                armRows.append([a.journey, a.arm, "\(a.baseline)", "\(a.replayed)", "\(a.added)", "\(a.removed)", "\(a.moved)",
                                "\(a.templateChanged)", "\(a.baselineCustomers)", "\(a.replayedCustomers)"])
            }
            print(table(armRows))
        }
        for change in report.changes.prefix(20) {
            let m = (change.after ?? change.before)!
            print("  \(change.kind.rawValue.padding(toLength: 7, withPad: " ", startingAt: 0)) \(m.messageID) \(m.customer) \(m.journey)/\(m.step) "
                  + "\(change.before.map { "\($0.channel)@\(Timestamp(milliseconds: $0.sendAfter))" } ?? "-") → "
                  + "\(change.after.map { "\($0.channel)@\(Timestamp(milliseconds: $0.sendAfter))" } ?? "-")")
        }
        if report.changes.count > 20 { print("  … \(report.changes.count - 20) more (use --json for the full list)") }
    }

    func runRebuild(settings: WaymarkSettings, current: JourneyEngine, proposed: JourneyEngine,
                    client: KafkaClientConfiguration, admin: KafkaAdmin) async throws {
        let redis = try await RedisConnection.connect(WorkerRuntime.redisConfiguration(settings))
        let store = RedisStateStore(connection: redis, keys: KeySpace(prefix: settings.redis.keyPrefix, shards: settings.redis.shards))
        let start = try Self.time(from)
        let rebuildID = id ?? "from-\(start.milliseconds)-\(URL(fileURLWithPath: rules).standardized.path.utf8.reduce(UInt32(2_166_136_261)) { ($0 ^ UInt32($1)) &* 16_777_619 })"
        var job = ReplayRebuild(current: current, proposed: proposed, from: start, now: try Self.time("now"), id: rebuildID)
        job.settle = .seconds(settle)
        let started = ContinuousClock.now
        FileHandle.standardError.write(Data("rebuild \(rebuildID): fence raised, workers pausing\n".utf8))
        let report = try await job.run(store: store, client: client, admin: admin,
                                       touchpointTopics: [settings.kafka.touchpoints.name, settings.kafka.deliveries.name],
                                       customersTopic: settings.kafka.customers.name) { done, total in
            let elapsed = (ContinuousClock.now - started).seconds
            let rate = Double(done) / max(elapsed, 0.001)
            FileHandle.standardError.write(Data(String(format: "\rrebuilding: %d/%d customers, %.0f/s, ETA %.0f s   ",
                                                       done, total, rate, rate > 0 ? Double(total - done) / rate : 0).utf8))
        }
        await redis.close()
        if json { try printJSON(report); return }
        print("\nRebuilt \(report.rebuilt) of \(report.customers) customers from \(report.events) events "
              + "(\(report.resumedPast) done by an earlier, interrupted run); \(report.rescheduled) with future timers re-scheduled; "
              + "\(report.pastMessagesNotResent) past messages under the new rules not sent again. Fence lifted.")
        if !report.unreadable.isEmpty {
            print("\(report.unreadable.count) customers have a stored state this version cannot read; left untouched (see waymark_state_unreadable_total).")
        }
    }
}
