import ArgumentParser
import Foundation
import WaymarkControl
import WaymarkWire
import WaymarkKafka
import WaymarkState

struct Dlq: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq",
        abstract: "List, show and redrive dead-lettered touchpoints.",
        discussion: """
            Records the journey worker could not process go to the dead-letter topic \
            (kafka.topics.dead_letter) with their original key and value and headers naming the reason, \
            the detail and the source topic/partition/offset.

            Examples:
              waymark dlq list
              waymark dlq show 42
              waymark dlq redrive --reason unknown_customer --since 24h
            """,
        subcommands: [List.self, Show.self, Redrive.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Counts by reason and the newest dead letters.",
            discussion: "Examples:\n  waymark dlq list\n  waymark dlq list --limit 100 --json")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Newest records to show.") var limit = 20
        @Flag(help: "Print as JSON.") var json = false
        @Flag(help: "No progress on stderr.") var quiet = false

        func run() async throws {
            let context = try OperatorContext(global: global)
            let queue = DeadLetterQueue(topic: context.settings.kafka.deadLetter.name, client: context.client, admin: context.admin,
                                        redis: nil)
            let progress = ProgressLine(label: "dlq", quiet: quiet)
            let (counts, newest) = try await queue.list(limit: limit, progress: progress.callback())
            progress.finish()
            if json {
                try printJSON(DlqListing(topic: queue.topic, total: counts.values.reduce(0, +), byReason: counts,
                                         newest: newest.map(DlqRow.init)))
                return
            }
            let total = counts.values.reduce(0, +)
            print("Dead letters on \(queue.topic): \(total)")
            if total == 0 { return }
            print(table([["REASON", "COUNT"]] + counts.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map { [$0.key, "\($0.value)"] }))
            print("\nNewest \(newest.count):")
            print(table([["PART:OFFSET", "DEAD-LETTERED AT", "REASON", "SOURCE", "DETAIL"]] + newest.map { (l: DeadLetter) -> [String] in
                ["\(l.partition):\(l.offset)", TimeFormat.utc(l.deadLetteredAt), l.reason, l.sourceDescription, l.detail]
            }))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show one dead letter: original key and value bytes and every header.",
            discussion: """
                Bytes are printed as UTF-8 text when valid, otherwise as hex. A value longer than --max-bytes \
                is cut in the text output (the cut is said; --max-bytes 0 or --json shows all of it). Exit \
                status 1 when there is no such record.

                Examples:
                  waymark dlq show 42                  # partition 0
                  waymark dlq show --partition 1 --offset 7
                  waymark dlq show 42 --max-bytes 0    # the whole value, however large
                  waymark dlq show 42 --json
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Offset (on --partition, default 0).") var position: Int64?
        @Option(help: "Partition.") var partition: Int32 = 0
        @Option(help: "Offset (alternative to the argument).") var offset: Int64?
        @Option(help: "Text output: show at most this many bytes of the key and value (0 = all).") var maxBytes = 4_096
        @Flag(help: "Print as JSON.") var json = false

        func validate() throws {
            if position == nil && offset == nil { throw ValidationError("give an offset: 'dlq show OFFSET' or '--offset O'") }
            if maxBytes < 0 { throw ValidationError("--max-bytes must be 0 or more") }
            if let position, let offset, position != offset { throw ValidationError("two different offsets given") }
        }

        func run() async throws {
            let context = try OperatorContext(global: global)
            let queue = DeadLetterQueue(topic: context.settings.kafka.deadLetter.name, client: context.client, admin: context.admin,
                                        redis: nil)
            let at = offset ?? position!
            guard let letter = try await queue.record(partition: partition, offset: at) else {
                printError("no record at \(queue.topic)[\(partition)]@\(at)")
                throw ExitCode(1)
            }
            if json {
                let key = letter.key.map(ByteText.render)
                let value = letter.value.map(ByteText.render)
                try printJSON(DlqRecord(row: DlqRow(letter), key: key?.text, keyIsHex: key?.isHex ?? false,
                                        value: value?.text, valueIsHex: value?.isHex ?? false,
                                        headers: letter.headers.map { h in
                                            let r = h.value.map(ByteText.render)
                                            return DlqRecord.Header(name: h.name, value: r?.text, isHex: r?.isHex ?? false)
                                        }))
                return
            }
            print("\(queue.topic)[\(letter.partition)]@\(letter.offset)  record time \(TimeFormat.utc(letter.timestamp))")
            print("reason:  \(letter.reason)")
            print("detail:  \(letter.detail)")
            print("source:  \(letter.sourceDescription)")
            print("dead-lettered at: \(TimeFormat.utc(letter.deadLetteredAt))")
            if let from = letter.redrivenFrom { print("redriven from: \(from)") }
            print("\nheaders:")
            for h in letter.headers { print("  \(h.name): \(h.value.map { let r = ByteText.render($0); return r.isHex ? "0x" + r.text : r.text } ?? "(null)")") }
            for (name, bytes) in [("key", letter.key), ("value", letter.value)] {
                guard let bytes else { print("\n\(name) (null)"); continue }
                let shown = maxBytes > 0 && bytes.count > maxBytes ? Array(bytes.prefix(maxBytes)) : bytes
                let text = ByteText.render(shown)
                print("\n\(name) (\(text.isHex ? "hex" : "utf-8"), \(bytes.count) bytes):")
                print(text.text)
                if shown.count < bytes.count {
                    print("… \(bytes.count - shown.count) more bytes not shown (--max-bytes 0 shows all)")
                }
            }
        }
    }

    struct Redrive: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy dead letters back to their source topic (after fixing the cause), each exactly once.",
            discussion: """
                Matching records are published to the topic named in their source header with the original \
                key, value and headers, plus x-waymark-redriven-from: <dlq topic>:<partition>:<offset>. \
                Each dead letter is redriven at most once, ever: redriven records are remembered in Redis \
                (<key_prefix>:{dlq}:redriven:<topic>), so running the same redrive twice publishes nothing \
                the second time. A record that fails again is dead-lettered again as a new record, which later runs \
                skip (it would fail the same way) unless --include-failed-again.

                Asks for confirmation unless --yes; exit status 1 when not confirmed.

                Examples:
                  waymark dlq redrive --reason unknown_customer
                  waymark dlq redrive --since 2026-11-20T00:00:00Z --yes
                  waymark dlq redrive --reason invalid_json --since 2h --json --yes
                """)
        @OptionGroup var global: GlobalOptions
        @Option(help: "Only records with this reason (e.g. unknown_customer).") var reason: String?
        @Option(help: "Only records dead-lettered at or after this time (RFC 3339, or a span ago: 2h, 7d).") var since: String?
        @Flag(help: "Also records that were redriven before and failed again (skipped by default).") var includeFailedAgain = false
        @Flag(help: "Do not ask for confirmation.") var yes = false
        @Flag(help: "Print the result as JSON.") var json = false
        @Flag(help: "No progress on stderr.") var quiet = false

        func validate() throws {
            _ = try parseTime(since, option: "--since")
            if let reason, RejectionReason(rawValue: reason) == nil {
                throw ValidationError("unknown reason '\(reason)'; known: \(RejectionReason.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }

        func run() async throws {
            let context = try OperatorContext(global: global)
            let redis = try await context.redis()
            let queue = DeadLetterQueue(topic: context.settings.kafka.deadLetter.name, client: context.client, admin: context.admin,
                                        redis: OperatorStore(connection: redis, keys: context.keys))
            let filter = RedriveFilter(reason: reason, since: try parseTime(since, option: "--since"), includeFailedAgain: includeFailedAgain)
            let progress = ProgressLine(label: "dlq", quiet: quiet)
            let ask = yes
            let result = try await queue.redrive(filter: filter, progress: progress.callback()) { candidates in
                progress.finish()
                if ask { return true }
                var byTopic: [String: Int] = [:]
                for c in candidates { byTopic[c.sourceTopic!, default: 0] += 1 }
                let where_ = byTopic.keys.sorted().map { "\(byTopic[$0]!) to \($0)" }.joined(separator: ", ")
                return confirm("Redrive \(candidates.count) dead letters (\(where_))?")
            }
            await redis.close()
            guard let result else {
                print("Not confirmed; nothing redriven.")
                throw ExitCode(1)
            }
            if json { try printJSON(result); return }
            print("matched \(result.matched), redriven \(result.redriven), already redriven before \(result.alreadyRedriven)"
                  + (result.noSource > 0 ? ", without source topic \(result.noSource)" : "")
                  + (result.failedAgain > 0 ? ", failed again after an earlier redrive \(result.failedAgain) (skipped; --include-failed-again)" : ""))
            for topic in result.byTopic.keys.sorted() { print("  → \(topic): \(result.byTopic[topic]!)") }
            if !result.inDoubt.isEmpty {
                print("in doubt (claimed by an interrupted run, maybe published; not retried): \(result.inDoubt.joined(separator: ", "))")
            }
        }
    }
}

extension DeadLetter {
    /// `touchpoints[2]@1041`, or `-` without a source header.
    var sourceDescription: String {
        guard let sourceTopic else { return "-" }
        return "\(sourceTopic)[\(sourcePartition.map(String.init) ?? "?")]@\(sourceOffset.map(String.init) ?? "?")"
    }
}

struct DlqRow: Encodable {
    var partition: Int32, offset: Int64, deadLetteredAt: String, reason: String, detail: String
    var sourceTopic: String?, sourcePartition: Int32?, sourceOffset: Int64?, redrivenFrom: String?
    init(_ l: DeadLetter) {
        partition = l.partition; offset = l.offset; deadLetteredAt = TimeFormat.utc(l.deadLetteredAt); reason = l.reason
        detail = l.detail; sourceTopic = l.sourceTopic; sourcePartition = l.sourcePartition; sourceOffset = l.sourceOffset
        redrivenFrom = l.redrivenFrom
    }
}
struct DlqListing: Encodable { var topic: String; var total: Int; var byReason: [String: Int]; var newest: [DlqRow] }
struct DlqRecord: Encodable {
    struct Header: Encodable { var name: String; var value: String?; var isHex: Bool }
    var row: DlqRow, key: String?, keyIsHex: Bool, value: String?, valueIsHex: Bool, headers: [Header]
}
