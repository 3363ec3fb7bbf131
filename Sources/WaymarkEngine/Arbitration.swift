/// Rule evaluation for sends: consent, contact, quiet hours, expiry, frequency caps, fallback and
/// priority arbitration.
///
/// Sends gathered at the same effective instant (one event, one batch in live timing, or deferred
/// messages released together) are evaluated in order of priority (higher first), then creation
/// time (earlier first), then the order in which steps ran. A capped slot therefore goes to the
/// highest priority. A message held for quiet hours holds its slot; a later, strictly
/// higher-priority message that cannot fit displaces held (not yet published) lower-priority
/// messages, lowest priority and latest created first.
extension Run {
    mutating func flush() {
        guard !candidates.isEmpty else { return }
        var batch = candidates
        candidates = []
        batch.sort {
            if $0.priority != $1.priority { return $0.priority > $1.priority }
            if $0.createdAt != $1.createdAt { return $0.createdAt < $1.createdAt }
            return $0.seq < $1.seq
        }
        let firstDecision = decisions.count
        for c in batch {
            switch c.kind {
            case .new(let plan): decide(plan)
            case .release(let d): release(d)
            case .awaitingProfile(let d): decide(SendPlan(heldForProfile: d, variables: profileVariables(d)))
            }
        }
        noteLastMessages(since: firstDecision)
    }

    /// Remembers, for each open conversion window, the last message decided for its instance: a
    /// conversion is attributed to it.
    mutating func noteLastMessages(since first: Int) {
        guard !state.conversions.isEmpty else { return }
        for d in decisions[first...] {
            guard d.reason == .sent || d.reason == .fallbackChannel || d.reason == .deferredQuietHours,
                  let journey = d.journey, let id = d.messageID else { continue }
            let key = d.instanceKey ?? ""
            if let w = state.conversions.lastIndex(where: { $0.journey == journey && $0.key == key }) {
                state.conversions[w].lastMessage = id
                state.conversions[w].lastStep = d.step ?? ""
                state.conversions[w].lastChannel = d.channel
            }
        }
    }

    func orderedChannels(_ chans: [Channel]) -> [Channel] {
        guard rules.channelOrder == .customerPreference, let p = profile, !p.preferredChannels.isEmpty else { return chans }
        var out: [Channel] = []
        for c in p.preferredChannels where chans.contains(c) && !out.contains(c) { out.append(c) }
        for c in chans where !out.contains(c) { out.append(c) }
        return out
    }

    /// Consent and contact checks for one channel.
    func reachability(_ ch: Channel, transactional: Bool) -> ChannelRejection? {
        guard let p = profile else {
            return rules.consent.allowWithoutProfile ? nil
                : ChannelRejection(channel: ch, reason: .suppressedNoConsent, rule: "consent:no_profile")
        }
        if p.withdrawn.contains(ch) {
            return ChannelRejection(channel: ch, reason: .suppressedNoConsent, rule: "consent:\(ch.rawValue):unsubscribed")
        }
        if p.optedOut && !transactional {
            return ChannelRejection(channel: ch, reason: .suppressedNoConsent, rule: "consent:opted_out")
        }
        let needsConsent = !(transactional && !rules.consent.transactionalRequiresConsent)
        if needsConsent && p.consent[ch] != true {
            return ChannelRejection(channel: ch, reason: .suppressedNoConsent, rule: "consent:\(ch.rawValue)")
        }
        if (p.contacts[ch] ?? "").isEmpty {
            return ChannelRejection(channel: ch, reason: .suppressedNoContact, rule: "contact:\(ch.rawValue)")
        }
        return nil
    }

    func capExempt(_ transactional: Bool) -> Bool { transactional && rules.capsExemptTransactional }

    /// The first cap a send at `t` would exceed, ignoring the listed entries.
    func capViolation(at t: Timestamp, channel: Channel, journey: String, transactional: Bool,
                      ignoring: [MessageID]) -> FrequencyCap? {
        if capExempt(transactional) { return nil }
        let T = t.milliseconds
        var times: [Int64] = []
        for cap in rules.frequencyCaps where rules.capCounts(cap, channel: channel, journey: journey, transactional: transactional) {
            let W = cap.window.milliseconds
            times.removeAll(keepingCapacity: true)
            times.append(T)
            for e in state.capHistory where rules.capCounts(cap, channel: e.channel, journey: e.journey, transactional: e.transactional) {
                let dt = e.at.milliseconds - T
                if dt > -W && dt < W && !ignoring.contains(e.messageID) { times.append(e.at.milliseconds) }
            }
            if times.count <= cap.limit { continue }
            times.sort()
            // Max count over windows [s, s+W) that contain T: start s at each point in (T-W, T].
            for i in times.indices where times[i] <= T && times[i] > T - W {
                var n = 0
                var j = i
                while j < times.count && times[j] < times[i] + W { n += 1; j += 1 }
                if n > cap.limit { return cap }
            }
        }
        return nil
    }

    enum CapOutcome {
        case fits(evict: [(MessageID, String)])
        case blocked(FrequencyCap)
    }

    /// Checks caps at `t`, displacing held lower-priority messages if that makes the send fit.
    func fitCaps(at t: Timestamp, channel: Channel, journey: String, transactional: Bool, priority: Int) -> CapOutcome {
        var evict: [(MessageID, String)] = []
        var ignoring: [MessageID] = []
        var firstBlock: FrequencyCap? = nil
        while let cap = capViolation(at: t, channel: channel, journey: journey, transactional: transactional, ignoring: ignoring) {
            if firstBlock == nil { firstBlock = cap }
            var victim: DeferredMessage? = nil
            for d in state.deferred where d.hold == .quietHours && d.message.priority < priority && !ignoring.contains(d.message.messageID) {
                let m = d.message
                guard rules.capCounts(cap, channel: m.channel, journey: m.journey, transactional: m.transactional),
                      abs(m.sendAfter.milliseconds - t.milliseconds) < cap.window.milliseconds else { continue }
                if let v = victim {
                    let vm = v.message
                    if m.priority < vm.priority || (m.priority == vm.priority && (m.createdAt > vm.createdAt ||
                        (m.createdAt == vm.createdAt && m.messageID > vm.messageID))) { victim = d }
                } else { victim = d }
            }
            guard let v = victim else { return .blocked(firstBlock!) }
            ignoring.append(v.message.messageID)
            evict.append((v.message.messageID, cap.name))
        }
        return .fits(evict: evict)
    }

    mutating func insertCapEntry(_ e: CapEntry) {
        var idx = state.capHistory.count
        while idx > 0 && state.capHistory[idx - 1].at > e.at { idx -= 1 }
        state.capHistory.insert(e, at: idx)
    }

    mutating func insertDeferred(_ d: DeferredMessage) {
        var idx = state.deferred.count
        while idx > 0 {
            let p = state.deferred[idx - 1].message
            if p.sendAfter > d.message.sendAfter || (p.sendAfter == d.message.sendAfter && p.messageID > d.message.messageID) { idx -= 1 } else { break }
        }
        state.deferred.insert(d, at: idx)
    }

    mutating func applyEvictions(_ evict: [(MessageID, String)], by winner: MessageID) {
        for (id, capName) in evict {
            guard let idx = state.deferred.firstIndex(where: { $0.message.messageID == id }) else { continue }
            let d = state.deferred.remove(at: idx)
            state.capHistory.removeAll { $0.messageID == id }
            decisions.append(messageDecision(.suppressedFrequencyCap, rule: "cap:\(capName)", d.message, key: d.instanceKey,
                                             skipped: [], detail: "displaced by higher-priority \(winner)"))
        }
    }

    /// Decides one send: relevance (expiry from the moment the step became due), the wait for a
    /// missing profile, then per channel in order consent, contact, quiet hours and caps.
    mutating func decide(_ p: SendPlan) {
        var msg = OutboundMessage(messageID: p.messageID, customerID: customerID, channel: p.channels[0], journey: p.journey,
                                  journeyVersion: p.version, stage: p.stage, step: p.step, template: p.template,
                                  priority: p.priority, transactional: p.transactional, createdAt: p.createdAt, sendAfter: clock,
                                  expiresAt: p.expiresAt, causedBy: p.causedBy, locale: profile?.locale,
                                  variables: p.variables, fallbackChannels: [], arm: p.arm)
        if state.capHistory.contains(where: { $0.messageID == p.messageID })
            || state.deferred.contains(where: { $0.message.messageID == p.messageID }) {
            decisions.append(messageDecision(.suppressedDuplicate, rule: "dedup:message_id", msg, key: p.key, skipped: []))
            return
        }
        // Relevance is judged in event time: a backlog, a restart or a new consumer group must not
        // send what stopped being relevant, transactional messages included.
        if clock >= p.expiresAt {
            decisions.append(messageDecision(.suppressedExpired, rule: p.expiryRule, msg, key: p.key, skipped: [],
                                             detail: "expired at \(p.expiresAt), before it could be decided"))
            return
        }
        let wait = rules.consent.profileWait
        if profile == nil && !rules.consent.allowWithoutProfile && p.mayAwaitProfile && wait.milliseconds > 0 {
            // Profiles and touchpoints travel on different topics: hold the send for the profile
            // (no channel chosen, no cap slot taken) instead of losing it to the race.
            msg.sendAfter = min(clock.adding(wait), p.expiresAt)
            msg.fallbackChannels = Array(p.channels.dropFirst())
            insertDeferred(DeferredMessage(message: msg, instanceKey: p.key, rule: "consent:awaiting_profile", hold: .awaitingProfile))
            decisions.append(messageDecision(.deferredAwaitingProfile, rule: "consent:awaiting_profile", msg, key: p.key, skipped: []))
            return
        }
        let channels = orderedChannels(p.channels)
        var skipped: [ChannelRejection] = []
        for (ci, ch) in channels.enumerated() {
            if let r = reachability(ch, transactional: p.transactional) { skipped.append(r); continue }
            var at = clock
            var quietRule: String? = nil
            if let q = engine.quietHours.releaseTime(messageID: p.messageID, channel: ch, transactional: p.transactional,
                                                     profile: profile, at: clock) {
                at = q.release
                quietRule = q.rule
                if at >= p.expiresAt {
                    skipped.append(ChannelRejection(channel: ch, reason: .suppressedExpired, rule: p.expiryRule))
                    continue
                }
            }
            switch fitCaps(at: at, channel: ch, journey: p.journey, transactional: p.transactional, priority: p.priority) {
            case .blocked(let cap):
                skipped.append(ChannelRejection(channel: ch, reason: .suppressedFrequencyCap, rule: "cap:\(cap.name)"))
                continue
            case .fits(let evict):
                applyEvictions(evict, by: p.messageID)
            }
            msg.channel = ch
            msg.sendAfter = at
            msg.fallbackChannels = channels[(ci + 1)...].filter { reachability($0, transactional: p.transactional) == nil }
            insertCapEntry(CapEntry(at: at, channel: ch, journey: p.journey, transactional: p.transactional, messageID: p.messageID))
            if let quietRule {
                insertDeferred(DeferredMessage(message: msg, instanceKey: p.key, rule: quietRule))
                decisions.append(messageDecision(.deferredQuietHours, rule: quietRule, msg, key: p.key, skipped: skipped))
            } else {
                messages.append(msg)
                if skipped.isEmpty {
                    decisions.append(messageDecision(.sent, rule: "rules_passed", msg, key: p.key, skipped: []))
                } else {
                    decisions.append(messageDecision(.fallbackChannel, rule: skipped[0].rule, msg, key: p.key, skipped: skipped))
                }
            }
            return
        }
        let first = skipped[0]
        let detail = profile == nil && !p.mayAwaitProfile ? "no profile arrived within \(wait)" : nil
        decisions.append(messageDecision(first.reason, rule: first.rule, msg, key: p.key, skipped: skipped, channel: first.channel,
                                         detail: detail))
    }

    /// Template variables of a send that waited for the profile, with `profile.*` ones filled in now.
    func profileVariables(_ d: DeferredMessage) -> [String: AttributeValue] {
        var vars = d.message.variables
        guard profile != nil, let j = engine.journeyIndex[d.message.journey] else { return vars }
        let cj = engine.compiled[j]
        guard let loc = cj.stepLocation[d.message.step],
              case .send(let s) = cj.def.stages[loc.stage].steps[loc.index].action, let names = s.variables else { return vars }
        for n in names where n.hasPrefix("profile.") {
            let k = String(n.dropFirst(8))
            if let v = profileValue(k) { vars[k] = v }
        }
        return vars
    }

    /// A message held for quiet hours: its release time came: re-check expiry, consent and quiet hours (rules or the
    /// profile may have changed) and publish it.
    mutating func release(_ d: DeferredMessage) {
        var m = d.message
        func drop(_ reason: DecisionReason, _ rule: String) {
            state.capHistory.removeAll { $0.messageID == m.messageID }
            decisions.append(messageDecision(reason, rule: rule, m, key: d.instanceKey, skipped: []))
        }
        if clock >= m.expiresAt { drop(.suppressedExpired, "expiry"); return }
        if let r = reachability(m.channel, transactional: m.transactional) { drop(r.reason, r.rule); return }
        if let q = engine.quietHours.releaseTime(messageID: m.messageID, channel: m.channel, transactional: m.transactional,
                                                 profile: profile, at: clock) {
            if q.release >= m.expiresAt { drop(.suppressedExpired, "expiry"); return }
            state.capHistory.removeAll { $0.messageID == m.messageID }
            if let cap = capViolation(at: q.release, channel: m.channel, journey: m.journey, transactional: m.transactional, ignoring: []) {
                decisions.append(messageDecision(.suppressedFrequencyCap, rule: "cap:\(cap.name)", m, key: d.instanceKey, skipped: []))
                return
            }
            m.sendAfter = q.release
            insertCapEntry(CapEntry(at: q.release, channel: m.channel, journey: m.journey, transactional: m.transactional, messageID: m.messageID))
            insertDeferred(DeferredMessage(message: m, instanceKey: d.instanceKey, rule: q.rule))
            decisions.append(messageDecision(.deferredQuietHours, rule: q.rule, m, key: d.instanceKey, skipped: []))
            return
        }
        messages.append(m)
        decisions.append(messageDecision(.sent, rule: "deferral_released:\(d.rule)", m, key: d.instanceKey, skipped: []))
    }
}


/// A send to decide: a step that just ran, or one that waited for the customer's profile.
struct SendPlan {
    var messageID: MessageID
    var journey: String
    var version: Int
    var key: String
    var stage: String
    var step: String
    var template: String
    var priority: Int
    var transactional: Bool
    /// The step's channels in step order (the customer's preference is applied when deciding).
    var channels: [Channel]
    var causedBy: String
    var variables: [String: AttributeValue]
    var createdAt: Timestamp
    /// The moment the step became due in event time plus the step's lifetime.
    var expiresAt: Timestamp
    /// The rule named when the message has expired.
    var expiryRule: String
    /// A new send may wait for a missing profile; one that already waited is decided as it stands.
    var mayAwaitProfile: Bool
    /// The instance's experiment arm (empty: none).
    var arm: String = ""
}

extension SendPlan {
    /// A send that waited for the customer's profile, decided now as it stands.
    init(heldForProfile d: DeferredMessage, variables: [String: AttributeValue]) {
        let m = d.message
        self.init(messageID: m.messageID, journey: m.journey, version: m.journeyVersion, key: d.instanceKey, stage: m.stage,
                  step: m.step, template: m.template, priority: m.priority, transactional: m.transactional,
                  channels: [m.channel] + m.fallbackChannels, causedBy: m.causedBy, variables: variables,
                  createdAt: m.createdAt, expiresAt: m.expiresAt, expiryRule: "expiry", mayAwaitProfile: false, arm: m.arm)
    }
}
