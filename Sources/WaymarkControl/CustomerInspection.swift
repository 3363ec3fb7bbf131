import Foundation
import WaymarkEngine
import WaymarkWire
import WaymarkRedis
import WaymarkState

/// Everything Waymark knows about one customer, for "why did (or didn't) this customer get that message?".
public struct CustomerReport: Sendable, Codable {
    public struct Profile: Sendable, Codable {
        public var timezone: String?
        public var locale: String?
        /// Channel → address, masked unless contacts were asked for (see ``ContactMask``).
        public var contacts: [String: String]
        public var contactsMasked: Bool
        public var consent: [String: Bool]
        public var preferredChannels: [String]
        /// Scalar attributes as text.
        public var attributes: [String: String]
        /// `partition:offset` of the `customers` record it came from.
        public var source: String?
    }

    public struct Stage: Sendable, Codable { public var stage: String; public var at: Instant }

    public struct Instance: Sendable, Codable {
        public var journey: String
        public var version: Int
        public var key: String
        public var stage: String
        public var enteredAt: Instant
        public var stageEnteredAt: Instant
        public var stagesReached: [Stage]
        /// The wait the instance is blocked on (empty when idle in its stage).
        public var step: String
        public var wakeAt: Instant?
        public var causedBy: String
        public var context: [String: String]
        /// Experiment arm (`holdout`, `global_control`); nil when the journey runs no experiment.
        public var arm: String?
    }

    /// An open conversion window: the goal reached before `closesAt` converts the instance.
    public struct ConversionWindow: Sendable, Codable {
        public var journey: String
        public var key: String
        public var arm: String?
        public var enteredAt: Instant
        public var closesAt: Instant?
        /// The message a conversion would be attributed to now.
        public var lastMessage: String?
    }

    public struct Ended: Sendable, Codable { public var journey: String; public var key: String; public var endedAt: Instant }

    public struct CapEntryView: Sendable, Codable {
        public var at: Instant
        public var channel: String
        public var journey: String
        public var messageID: String
        public var transactional: Bool
    }

    public struct CapUsage: Sendable, Codable {
        public var name: String
        public var limit: Int
        public var window: String
        public var channel: String?
        public var journey: String?
        /// Sends and reservations counted by this cap at report time (planned in the last window or later).
        public var used: Int
        /// When the oldest counted entry leaves the window (a slot frees up), if the cap is full.
        public var freesAt: Instant?
    }

    public struct Deferred: Sendable, Codable {
        public var messageID: String
        public var channel: String
        public var journey: String
        public var stage: String
        public var template: String
        public var createdAt: Instant
        /// Release time (end of quiet hours), or the deadline of a send waiting for the profile.
        public var sendAfter: Instant
        public var expiresAt: Instant
        public var rule: String
        /// `quiet_hours` (decided, holding its cap slot) or `awaiting_profile` (decided when the profile arrives).
        public var hold: String
    }

    public struct SenderClaim: Sendable, Codable {
        public var messageID: String
        /// `done:<channel>` (handed to the provider) or `inflight:<channel>:<ms>`.
        public var status: String
        /// Parked by a sender (send-time deferral or retry) until this time.
        public var parkedUntil: Instant?
    }

    public struct Counter: Sendable, Codable { public var journey: String; public var stage: String; public var kind: String; public var count: Int }

    public struct DecisionView: Sendable, Codable {
        public struct Skip: Sendable, Codable { public var channel: String; public var reason: String; public var rule: String }
        public var reason: String
        public var rule: String
        public var journey: String?
        public var stage: String?
        public var step: String?
        public var channel: String?
        public var messageID: String?
        public var decidedAt: Instant
        public var sendAfter: Instant?
        public var causedBy: String?
        public var detail: String?
        public var skipped: [Skip]
    }

    public var customer: String
    public var shard: Int
    /// 0: the customer has no journey state.
    public var stateVersion: Int64
    /// Zone used for local times (profile's, else the rules' default).
    public var timezone: String
    public var profile: Profile?
    /// What the customer unsubscribed from (a STOP reply, an unsubscribe link, a provider's opt-out):
    /// channel names, or `*` for everything non-transactional, with when. Nothing is sent there.
    public var unsubscribed: [Unsubscribed] = []
    public struct Unsubscribed: Sendable, Codable { public var channel: String; public var at: Instant }
    /// Latest effective time the engine processed for this customer.
    public var clock: Instant?
    public var instances: [Instance] = []
    public var conversionWindows: [ConversionWindow] = []
    public var ended: [Ended] = []
    public var caps: [CapUsage] = []
    public var capHistory: [CapEntryView] = []
    public var deferred: [Deferred] = []
    /// Next wake-up recorded in the scheduler's index (timers and deferred releases).
    public var nextWakeUp: Instant?
    public var senderClaims: [SenderClaim] = []
    public var counters: [Counter] = []
    /// Most recent message decisions, newest first.
    public var decisions: [DecisionView] = []

    /// Whether Waymark knows the customer at all.
    public var exists: Bool { stateVersion > 0 || profile != nil || !decisions.isEmpty || !senderClaims.isEmpty }
}

/// Reads a customer's state, profile, index entries, sender claims and recent decisions from Redis.
public struct CustomerInspector: Sendable {
    public let redis: RedisConnection
    public let keys: KeySpace
    /// For cap windows and the default time zone; without rules caps are shown as raw history only.
    public let rules: Rules?

    public init(redis: RedisConnection, keys: KeySpace, rules: Rules?) {
        self.redis = redis
        self.keys = keys
        self.rules = rules
    }

    /// - Parameters:
    ///   - decisions: how many recent decisions to include.
    ///   - showContacts: include contact addresses in full (otherwise masked).
    ///   - now: report time (ms) for cap windows.
    public func inspect(_ customer: String, decisions count: Int = 20, showContacts: Bool = false,
                        now: Int64 = Int64(Date().timeIntervalSince1970 * 1000)) async throws -> CustomerReport {
        let store = RedisStateStore(connection: redis, keys: keys)
        let stored = try await store.load([customer])[0]
        let shard = keys.shard(of: customer)
        let entries = try await OperatorStore(connection: redis, keys: keys).customerEntries(customer)
        let profile = stored.profile.flatMap { Self.profile($0, customer: customer, source: entries.profileSource, showContacts: showContacts) }
        let zone = profile?.timezone.flatMap { TimeZone(identifier: $0) != nil ? $0 : nil } ?? rules?.defaultTimezone ?? "UTC"
        let format = TimeFormat(zoneIdentifier: zone)
        func at(_ t: Timestamp) -> Instant { Instant(t.milliseconds, format) }

        var report = CustomerReport(customer: customer, shard: shard, stateVersion: stored.version, timezone: zone, profile: profile)
        report.unsubscribed = stored.suppressions.entries.sorted { $0.key < $1.key }.map { .init(channel: $0.key, at: at(Timestamp(milliseconds: $0.value))) }
        if let bytes = stored.state {
            let state = try CustomerState(decoding: bytes)
            report.clock = at(state.clock)
            report.instances = state.instances.map { i in
                .init(journey: i.journey, version: i.version, key: i.key, stage: i.stage, enteredAt: at(i.enteredAt),
                      stageEnteredAt: at(i.stageEnteredAt), stagesReached: i.stagesReached.map { .init(stage: $0.stage, at: at($0.at)) },
                      step: i.step, wakeAt: i.wakeAt.map(at), causedBy: i.causedBy,
                      context: Dictionary(i.context.map { ($0.name, $0.value.keyString ?? "\($0.value)") }) { a, _ in a },
                      arm: i.arm.isEmpty ? nil : i.arm)
            }
            report.conversionWindows = state.conversions.map { w in
                // A journey without a goal keeps its window open until the instance ends (no fixed end).
                .init(journey: w.journey, key: w.key, arm: w.arm.isEmpty ? nil : w.arm, enteredAt: at(w.enteredAt),
                      closesAt: w.closesAt.milliseconds > Int64.max / 8 ? nil : at(w.closesAt), lastMessage: w.lastMessage?.description)
            }
            report.ended = state.ended.map { .init(journey: $0.journey, key: $0.key, endedAt: at($0.endedAt)) }
            report.capHistory = state.capHistory.map {
                .init(at: at($0.at), channel: $0.channel.rawValue, journey: $0.journey, messageID: $0.messageID.description, transactional: $0.transactional)
            }
            if let rules {
                report.caps = rules.frequencyCaps.map { cap in
                    let counted = rules.capOccupancy(cap, history: state.capHistory, at: Timestamp(milliseconds: now))
                    let full = counted.count >= cap.limit
                    return .init(name: cap.name, limit: cap.limit, window: cap.window.description, channel: cap.channel?.rawValue,
                                 journey: cap.journey, used: counted.count,
                                 freesAt: full ? counted.map(\.at).min().map { at($0.adding(cap.window)) } : nil)
                }
            }
            report.deferred = state.deferred.map { d in
                let m = d.message
                return .init(messageID: m.messageID.description, channel: m.channel.rawValue, journey: m.journey, stage: m.stage,
                             template: m.template, createdAt: at(m.createdAt), sendAfter: at(m.sendAfter), expiresAt: at(m.expiresAt), rule: d.rule,
                             hold: d.hold == .awaitingProfile ? "awaiting_profile" : "quiet_hours")
            }
            report.counters = state.counters.map {
                .init(journey: $0.journey, stage: $0.stage, kind: "\($0.kind)", count: Int($0.count))
            }
        }
        report.nextWakeUp = entries.nextWakeUp.map { Instant($0, format) }
        report.senderClaims = entries.senderClaims.map { claim in
            .init(messageID: claim.messageID, status: claim.status, parkedUntil: claim.parkedUntil.map { Instant($0, format) })
        }

        let parser = RecordParser()
        report.decisions = try await store.recentDecisions(customer, count: count).compactMap { bytes in
            guard case .success(let d) = parser.decision(bytes) else { return nil }
            return .init(reason: d.reason.rawValue, rule: d.rule, journey: d.journey, stage: d.stage, step: d.step,
                         channel: d.channel?.rawValue, messageID: d.messageID?.description, decidedAt: at(d.decidedAt),
                         sendAfter: d.sendAfter.map(at), causedBy: d.causedBy, detail: d.detail,
                         skipped: d.skipped.map { .init(channel: $0.channel.rawValue, reason: $0.reason.rawValue, rule: $0.rule) })
        }
        return report
    }

    /// The stored profile (the `customers` record as taken); contacts masked unless `showContacts`.
    static func profile(_ bytes: [UInt8], customer: String, source: String?, showContacts: Bool) -> CustomerReport.Profile? {
        // Limits off: a stored profile was checked when it arrived; this only reads it back.
        guard case .success(let p) = RecordParser(limits: IngestLimits(maxBytes: .max)).profile(key: ArraySlice(customer.utf8), value: ArraySlice(bytes))
        else { return nil }
        let contacts = Dictionary(uniqueKeysWithValues: p.contacts.map { ($0.key.rawValue, showContacts ? $0.value : ContactMask.mask($0.value)) })
        return .init(timezone: p.timezone, locale: p.locale, contacts: contacts, contactsMasked: !showContacts,
                     consent: Dictionary(uniqueKeysWithValues: p.consent.map { ($0.key.rawValue, $0.value) }),
                     preferredChannels: p.preferredChannels.map(\.rawValue),
                     attributes: p.attributes.mapValues { $0.keyString ?? "…" }, source: source)
    }
}

extension CustomerReport {
    /// Readable sections for the terminal. Contacts appear as stored in the report (masked by default).
    public func render() -> String {
        var out: [String] = []
        let format = TimeFormat(zoneIdentifier: timezone)
        func t(_ i: Instant) -> String { "\(i.utc)  (\(format.local(i.ms)) \(timezone))" }
        out.append("Customer \(customer)  (shard \(shard), state version \(stateVersion), zone \(timezone))")
        if let clock { out.append("Engine clock: \(t(clock))") }

        out.append("\nProfile")
        if let p = profile {
            out.append("  timezone: \(p.timezone ?? "-")   locale: \(p.locale ?? "-")   from customers \(p.source ?? "?")")
            for channel in p.contacts.keys.sorted() {
                out.append("  \(channel.padding(toLength: max(9, channel.count), withPad: " ", startingAt: 0)) \(p.contacts[channel]!)  consent: \(p.consent[channel].map { $0 ? "yes" : "no" } ?? "no")")
            }
            for channel in p.consent.keys.sorted() where p.contacts[channel] == nil {
                out.append("  \(channel.padding(toLength: max(9, channel.count), withPad: " ", startingAt: 0)) (no contact)  consent: \(p.consent[channel]! ? "yes" : "no")")
            }
            if !p.preferredChannels.isEmpty { out.append("  preferred: \(p.preferredChannels.joined(separator: ", "))") }
            if !p.attributes.isEmpty {
                out.append("  attributes: " + p.attributes.keys.sorted().map { "\($0)=\(p.attributes[$0]!)" }.joined(separator: " "))
            }
        } else {
            out.append("  none (no profile received: sends are suppressed for lack of consent)")
        }
        for u in unsubscribed {
            let what = u.channel == "*" ? "everything non-transactional (global opt-out)" : u.channel
            out.append("  unsubscribed: \(what) since \(t(u.at)) — nothing is sent there, whatever consent says")
        }

        out.append("\nJourney instances (\(instances.count) active)")
        for i in instances {
            out.append("  \(i.journey) v\(i.version)\(i.key.isEmpty ? "" : " [\(i.key)]"): stage \(i.stage.isEmpty ? "-" : i.stage)\(i.step.isEmpty ? "" : ", waiting at \(i.step)")\(i.arm.map { ", arm \($0)" } ?? "")")
            out.append("    entered       \(t(i.enteredAt))  (caused by \(i.causedBy))")
            let width = max(11, i.stagesReached.map(\.stage.count).max() ?? 0)  // never cut a stage name
            for s in i.stagesReached { out.append("    → \(s.stage.padding(toLength: width, withPad: " ", startingAt: 0)) \(t(s.at))") }
            if let wake = i.wakeAt { out.append("    wakes at      \(t(wake))") }
        }
        for e in ended { out.append("  ended: \(e.journey)\(e.key.isEmpty ? "" : " [\(e.key)]") at \(t(e.endedAt))") }
        for w in conversionWindows {
            out.append("  conversion window: \(w.journey)\(w.key.isEmpty ? "" : " [\(w.key)]")\(w.arm.map { " arm \($0)" } ?? "") open since \(t(w.enteredAt))"
                       + (w.closesAt.map { " until \(t($0))" } ?? " until the instance ends") + (w.lastMessage.map { ", last message \($0)" } ?? ""))
        }

        out.append("\nFrequency caps")
        if caps.isEmpty && capHistory.isEmpty { out.append("  nothing counted") }
        for c in caps {
            let scope = [c.channel.map { "channel \($0)" }, c.journey.map { "journey \($0)" }].compactMap { $0 }.joined(separator: ", ")
            out.append("  \(c.name.padding(toLength: max(24, c.name.count), withPad: " ", startingAt: 0)) \(c.used)/\(c.limit) per \(c.window)\(scope.isEmpty ? "" : " (\(scope))")\(c.freesAt.map { "  FULL until \(t($0))" } ?? "")")
        }
        if !capHistory.isEmpty {
            out.append("  counted sends and reservations:")
            for e in capHistory { out.append("    \(t(e.at))  \(e.channel)  \(e.journey)  \(e.messageID)\(e.transactional ? " (transactional)" : "")") }
        }

        out.append("\nPending timers and deferred messages")
        let timers = instances.filter { $0.wakeAt != nil }
        if timers.isEmpty && deferred.isEmpty { out.append("  none") }
        for i in timers { out.append("  timer  \(i.journey)\(i.key.isEmpty ? "" : " [\(i.key)]") \(i.step): \(t(i.wakeAt!))") }
        for d in deferred {
            if d.hold == "awaiting_profile" {
                out.append("  waits  \(d.messageID) \(d.journey)/\(d.template) for the profile until \(t(d.sendAfter)) (\(d.rule)), expires \(d.expiresAt.utc)")
            } else {
                out.append("  held   \(d.messageID) \(d.channel) \(d.journey)/\(d.template) until \(t(d.sendAfter)) (\(d.rule)), expires \(d.expiresAt.utc)")
            }
        }
        if let wake = nextWakeUp { out.append("  scheduler index: next wake-up \(t(wake))") }

        out.append("\nSender claims")
        if senderClaims.isEmpty { out.append("  none") }
        for c in senderClaims { out.append("  \(c.messageID)  \(c.status)\(c.parkedUntil.map { "  parked until \(t($0))" } ?? "")") }

        out.append("\nRecent decisions (newest first)")
        if decisions.isEmpty { out.append("  none") }
        for d in decisions {
            var line = "  \(d.decidedAt.utc)  \(d.reason)  rule \(d.rule)"
            if let j = d.journey { line += "  \(j)\(d.stage.map { "/\($0)" } ?? "")\(d.step.map { ":\($0)" } ?? "")" }
            if let c = d.channel { line += "  on \(c)" }
            if let m = d.messageID { line += "  msg \(m)" }
            out.append(line)
            out.append("      local \(d.decidedAt.local)\(d.sendAfter.map { ", send after \(t($0))" } ?? "")\(d.causedBy.map { ", caused by \($0)" } ?? "")")
            for s in d.skipped { out.append("      skipped \(s.channel): \(s.reason) (\(s.rule))") }
            if let detail = d.detail { out.append("      \(detail)") }
        }
        return out.joined(separator: "\n")
    }
}
