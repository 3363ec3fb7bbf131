import Foundation
import WaymarkEngine
import WaymarkWire
import WaymarkKafka

/// One message in a replay comparison.
public struct ReplayMessage: Sendable, Hashable, Codable {
    public var messageID: String
    public var customer: String
    public var journey: String
    public var step: String
    public var channel: String
    /// Milliseconds since the epoch (RFC 3339 in JSON).
    @RFC3339Time public var sendAfter: Int64
    /// The instance's experiment arm (nil: its journey runs no experiment).
    public var arm: String?
    public var template: String?
}

/// One journey arm's messages in a dry run: what the baseline had, what the new rules give, and how
/// they differ (the what-if of a change to variants or weights).
public struct ReplayArmSummary: Sendable, Hashable, Codable {
    public var journey: String
    /// Empty for a journey without experiment.
    public var arm: String
    public var baseline = 0
    public var replayed = 0
    public var added = 0
    public var removed = 0
    public var moved = 0
    /// In both, with another template (a variant changed).
    public var templateChanged = 0
    /// Customers with at least one message of the arm.
    public var baselineCustomers = 0
    public var replayedCustomers = 0
}

/// How a message differs between the baseline and the replay under new rules.
public struct ReplayChange: Sendable, Hashable, Codable {
    public enum Kind: String, Sendable, Codable { case added, removed, moved }
    public var kind: Kind
    public var before: ReplayMessage?
    public var after: ReplayMessage?
    public var customer: String { (after ?? before)!.customer }
    public var journey: String { (after ?? before)!.journey }
    public var channel: String { (after ?? before)!.channel }
}

/// The result of a dry run.
public struct ReplayReport: Sendable, Codable {
    @RFC3339Time public var from: Int64
    @RFC3339Time public var to: Int64
    public var eventsRead = 0
    public var eventsInRange = 0
    public var customers = 0
    public var baselineMessages = 0
    public var replayedMessages = 0
    public var changes: [ReplayChange] = []
    /// Per journey and arm, in journey then arm order.
    public var arms: [ReplayArmSummary] = []
    public var customersAffected: Int { Set(changes.map(\.customer)).count }

    /// Counts per journey and channel: (added, removed, moved).
    public var summary: [String: [String: (added: Int, removed: Int, moved: Int)]] {
        var out: [String: [String: (added: Int, removed: Int, moved: Int)]] = [:]
        for change in changes {
            var cell = out[change.journey, default: [:]][change.channel] ?? (0, 0, 0)
            switch change.kind {
            case .added: cell.added += 1
            case .removed: cell.removed += 1
            case .moved: cell.moved += 1
            }
            out[change.journey, default: [:]][change.channel] = cell
        }
        return out
    }

    enum CodingKeys: String, CodingKey { case from, to, eventsRead, eventsInRange, customers, baselineMessages, replayedMessages, arms, changes }
}

/// Re-runs history through the engine in event time, isolated from live state, and compares.
///
/// Each customer's state at `from` is derived by replaying the retained history before `from` with the
/// current rules (what was live then); `[from, to]` is then replayed with the new rules. Messages are
/// matched by their deterministic `message_id`: present only in the replay = added, only in the
/// baseline = removed, in both with another channel or a send time more than ``moveTolerance`` apart =
/// moved. Nothing is written to Redis and nothing is published.
public struct ReplayDryRun: Sendable {
    public enum Baseline: String, Sendable { case actual, replay }
    public var current: JourneyEngine
    public var proposed: JourneyEngine
    public var from: Timestamp
    public var to: Timestamp
    /// `actual`: the messages published on the outbound topics; `replay`: the current rules replayed
    /// in event time (isolates the rule change from live timing effects such as consumer lag).
    public var baseline: Baseline = .actual
    public var moveTolerance = TimeSpan.minutes(1)

    public init(current: JourneyEngine, proposed: JourneyEngine, from: Timestamp, to: Timestamp) {
        self.current = current
        self.proposed = proposed
        self.from = from
        self.to = to
    }

    /// Runs over touchpoints and receipts already read (in topic order) and the published messages.
    public func run(events: [Touchpoint], profiles: [String: CustomerProfile], published: [ReplayMessage],
                    progress: (Int, Int) -> Void = { _, _ in }) -> ReplayReport {
        var report = ReplayReport(from: from.milliseconds, to: to.milliseconds)
        report.eventsRead = events.count
        var byCustomer: [String: [Touchpoint]] = [:]
        var order: [String] = []
        for event in events where event.occurredAt <= to {
            if byCustomer[event.customerID] == nil { order.append(event.customerID) }
            byCustomer[event.customerID, default: []].append(event)
        }
        report.customers = order.count
        var replayed: [String: ReplayMessage] = [:]
        var baseline: [String: ReplayMessage] = [:]
        for (n, customer) in order.enumerated() {
            // Stable sort: event time, then topic order.
            let history = byCustomer[customer]!.enumerated().sorted { ($0.element.occurredAt, $0.offset) < ($1.element.occurredAt, $1.offset) }.map(\.element)
            let before = history.filter { $0.occurredAt < from }
            let during = history.filter { $0.occurredAt >= from }
            report.eventsInRange += during.count
            let profile = profiles[customer]
            let start = current.process(CustomerState(), customerID: customer, profile: profile, touchpoints: before,
                                        now: from.adding(TimeSpan(milliseconds: -1)), timing: .replay).state
            for m in proposed.process(start, customerID: customer, profile: profile, touchpoints: during, now: to, timing: .replay).messages
            where m.sendAfter >= from && m.sendAfter <= to {
                replayed[m.messageID.description] = Self.message(m)
            }
            if self.baseline == .replay {
                for m in current.process(start, customerID: customer, profile: profile, touchpoints: during, now: to, timing: .replay).messages
                where m.sendAfter >= from && m.sendAfter <= to {
                    baselineStore(&baseline, Self.message(m))
                }
            }
            if n % 1_000 == 0 { progress(n, order.count) }
        }
        if self.baseline == .actual {
            for m in published where m.sendAfter >= from.milliseconds && m.sendAfter <= to.milliseconds { baselineStore(&baseline, m) }
        }
        report.baselineMessages = baseline.count
        report.replayedMessages = replayed.count
        for (id, b) in baseline {
            if let r = replayed[id] {
                if r.channel != b.channel || abs(r.sendAfter - b.sendAfter) > moveTolerance.milliseconds {
                    report.changes.append(ReplayChange(kind: .moved, before: b, after: r))
                }
            } else {
                report.changes.append(ReplayChange(kind: .removed, before: b, after: nil))
            }
        }
        for (id, r) in replayed where baseline[id] == nil { report.changes.append(ReplayChange(kind: .added, before: nil, after: r)) }
        report.arms = Self.armSummaries(baseline: baseline, replayed: replayed, changes: report.changes)
        report.changes.sort { ($0.customer, $0.journey, ($0.after ?? $0.before)!.messageID) < ($1.customer, $1.journey, ($1.after ?? $1.before)!.messageID) }
        return report
    }

    /// Messages per journey and arm on both sides, with the differences.
    static func armSummaries(baseline: [String: ReplayMessage], replayed: [String: ReplayMessage], changes: [ReplayChange]) -> [ReplayArmSummary] {
        struct Key: Hashable { var journey: String; var arm: String }
        var rows: [Key: ReplayArmSummary] = [:]
        var customers: [Key: (before: Set<String>, after: Set<String>)] = [:]
        func key(_ m: ReplayMessage) -> Key { Key(journey: m.journey, arm: m.arm ?? "") }
        func row(_ k: Key) -> ReplayArmSummary { rows[k] ?? ReplayArmSummary(journey: k.journey, arm: k.arm) }
        for m in baseline.values {
            let k = key(m); var r = row(k); r.baseline += 1; rows[k] = r
            customers[k, default: ([], [])].before.insert(m.customer)
        }
        for (id, m) in replayed {
            let k = key(m); var r = row(k); r.replayed += 1
            if let b = baseline[id], b.template != nil, m.template != nil, b.template != m.template { r.templateChanged += 1 }
            rows[k] = r
            customers[k, default: ([], [])].after.insert(m.customer)
        }
        for c in changes {
            // An added message counts in its new arm, a removed one in its old arm.
            let k = key((c.after ?? c.before)!)
            var r = row(k)
            switch c.kind {
            case .added: r.added += 1
            case .removed: r.removed += 1
            case .moved: r.moved += 1
            }
            rows[k] = r
        }
        for (k, c) in customers { rows[k]?.baselineCustomers = c.before.count; rows[k]?.replayedCustomers = c.after.count }
        return rows.values.sorted { ($0.journey, $0.arm) < ($1.journey, $1.arm) }
    }

    private func baselineStore(_ map: inout [String: ReplayMessage], _ m: ReplayMessage) {
        // A message re-published after a crash appears twice; the latest copy (e.g. a fallback) wins.
        map[m.messageID] = m
    }

    static func message(_ m: OutboundMessage) -> ReplayMessage {
        ReplayMessage(messageID: m.messageID.description, customer: m.customerID, journey: m.journey, step: m.step,
                      channel: m.channel.rawValue, sendAfter: m.sendAfter.milliseconds, arm: m.arm.isEmpty ? nil : m.arm,
                      template: m.template)
    }

    /// Reads what a dry run needs from Kafka: touchpoints and receipts, latest profiles, published messages.
    public static func readHistory(client: KafkaClientConfiguration, admin: KafkaAdmin, touchpointTopics: [String],
                                   customersTopic: String, outboundTopics: [String],
                                   progress: @escaping (String, Int) -> Void = { _, _ in })
        async throws -> (events: [Touchpoint], profiles: [String: CustomerProfile], published: [ReplayMessage]) {
        let parser = RecordParser(limits: IngestLimits(maxFutureSkew: .days(36_500), maxAge: .zero))
        let far = Timestamp(milliseconds: Int64(Date().timeIntervalSince1970 * 1000))
        var events: [Touchpoint] = []
        for topic in touchpointTopics {
            let records = try await TopicReader.readAll(topic, client: client, admin: admin)
            progress(topic, records.count)
            events.reserveCapacity(events.count + records.count)
            for record in records {
                if case .success(let t) = parser.touchpoint(key: record.key, value: record.value, now: far) { events.append(t) }
            }
        }
        var profiles: [String: CustomerProfile] = [:]
        let profileRecords = try await TopicReader.readAll(customersTopic, client: client, admin: admin)
        progress(customersTopic, profileRecords.count)
        for record in profileRecords {
            if case .success(let p) = parser.profile(key: record.key, value: record.value) { profiles[p.customerID] = p }
        }
        var published: [ReplayMessage] = []
        for topic in outboundTopics {
            let records = try await TopicReader.readAll(topic, client: client, admin: admin)
            progress(topic, records.count)
            for record in records {
                if case .success(let m) = parser.outbound(key: record.key, value: record.value) { published.append(message(m)) }
            }
        }
        return (events, profiles, published)
    }
}
