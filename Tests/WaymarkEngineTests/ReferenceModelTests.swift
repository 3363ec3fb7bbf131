import Foundation
import PropertyBased
import Testing
import WaymarkEngine

/// A deliberately simple model of the contract's delivery rules (DESIGN-BRIEF §3), written from the
/// contract and not from the engine: it shares no rule code with it. It covers a small family of
/// single-step journeys (send at once, or wait then send, with an exit event) and the rules that
/// decide them: consent, quiet hours in the recipient's zone (found by stepping minute by minute
/// through Foundation's zone offsets), rolling frequency caps (checked by counting every window),
/// expiry counted from the moment the step became due, deferral holding its cap slot, and release
/// at the end of the window.
///
/// To stay simple it relies on instants of different kinds never coinciding: events happen at
/// `.500` s, timers end at `.750` s, quiet-hour windows end on whole minutes. Several events may share
/// an instant: the sends they start are decided after all of them (sends of one instant compete
/// together, and an exit at that instant comes first). All sends have the same priority and
/// quiet-hour releases are not spread.
struct ReferenceModel {
    struct Journey {
        var name: String
        var trigger: String
        var exitOn: String?
        /// 0: send when the trigger happens; else wait this long (ms) first.
        var wait: Int64
        var channels: [Channel]
        var ttl: Int64
        var transactional: Bool
    }

    struct Window {
        var start: Int, end: Int  // local minutes after midnight; start == end: none
        func contains(_ m: Int) -> Bool {
            if start < end { return m >= start && m < end }
            if start > end { return m >= start || m < end }
            return false
        }
    }

    struct Cap {
        var limit: Int
        var window: Int64
        var channel: Channel?
        var journey: String?
    }

    /// A message handed to a provider: which journey, caused by which event, on which channel, when.
    struct Sent: Hashable, Comparable, CustomStringConvertible {
        var journey: String
        var cause: String
        var channel: Channel
        var at: Int64
        static func < (a: Sent, b: Sent) -> Bool { (a.at, a.journey, a.cause) < (b.at, b.journey, b.cause) }
        var description: String { "\(journey)/\(cause) \(channel) @\(Timestamp(milliseconds: at))" }
    }

    var journeys: [Journey]
    var zone: TimeZone
    var defaultWindow: Window?
    var channelWindows: [Channel: Window]
    var exemptTransactionalQuiet: Bool
    var caps: [Cap]
    var capsExemptTransactional: Bool
    /// Channels with consent and a contact address (empty: no profile, nothing may be sent).
    var reachable: Set<Channel>

    // MARK: Rules

    /// The local wall clock at `t`, in minutes since 1970-01-01 00:00 local (a "naive" reading).
    func localReading(_ t: Int64) -> Int64 {
        let offset = Int64(zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(t) / 1000)))
        return Int64((Double(t) / 1000).rounded(.down)) / 60 + offset / 60
    }

    func localMinute(_ t: Int64) -> Int { Int(((localReading(t) % 1440) + 1440) % 1440) }

    func isQuiet(_ channel: Channel, transactional: Bool, at t: Int64) -> Bool {
        if transactional && exemptTransactionalQuiet { return false }
        guard let w = channelWindows[channel] ?? defaultWindow else { return false }
        return w.contains(localMinute(t))
    }

    /// The end of the window `t` is in: the first whole minute after `t` that is not quiet and whose
    /// local reading is later than `t`'s (when clocks fall back out of the window, it is not over).
    func quietEnd(_ channel: Channel, transactional: Bool, after t: Int64) -> Int64 {
        let start = localReading(t)
        var x = (t / 60_000 + 1) * 60_000
        while isQuiet(channel, transactional: transactional, at: x) || localReading(x) <= start { x += 60_000 }
        return x
    }

    struct Slot { var at: Int64; var channel: Channel; var journey: String; var transactional: Bool; var id: Int }

    func capBlocks(_ slots: [Slot], at: Int64, channel: Channel, journey: String, transactional: Bool) -> Bool {
        if transactional && capsExemptTransactional { return false }
        for cap in caps where (cap.channel == nil || cap.channel == channel) && (cap.journey == nil || cap.journey == journey) {
            var times = [at]
            for s in slots where !(s.transactional && capsExemptTransactional)
                && (cap.channel == nil || cap.channel == s.channel) && (cap.journey == nil || cap.journey == s.journey) {
                times.append(s.at)
            }
            for start in times where times.filter({ $0 >= start && $0 < start + cap.window }).count > cap.limit { return true }
        }
        return false
    }

    // MARK: Simulation

    struct Event { var id: String; var type: String; var at: Int64 }

    /// Everything sent up to `until`, and for every send intent (journey, cause) its due time.
    func run(_ events: [Event], until: Int64) -> (sent: [Sent], due: [String: Int64]) {
        struct Waiting { var cause: String; var due: Int64 }
        struct Held { var journey: Int; var cause: String; var channel: Channel; var release: Int64; var expiry: Int64; var slot: Int }
        var waiting: [Int: Waiting] = [:]
        var held: [Held] = []
        var slots: [Slot] = []
        var sent: [Sent] = []
        var dueOf: [String: Int64] = [:]
        var nextSlot = 0
        var e = 0

        func decide(_ j: Int, cause: String, at t: Int64) {
            let jd = journeys[j]
            dueOf["\(jd.name)/\(cause)"] = t
            let expiry = t + jd.ttl
            for ch in jd.channels where reachable.contains(ch) {
                var at = t
                if isQuiet(ch, transactional: jd.transactional, at: t) {
                    at = quietEnd(ch, transactional: jd.transactional, after: t)
                    if at >= expiry { continue }
                }
                if capBlocks(slots, at: at, channel: ch, journey: jd.name, transactional: jd.transactional) { continue }
                nextSlot += 1
                slots.append(Slot(at: at, channel: ch, journey: jd.name, transactional: jd.transactional, id: nextSlot))
                if at == t { sent.append(Sent(journey: jd.name, cause: cause, channel: ch, at: t)) }
                else { held.append(Held(journey: j, cause: cause, channel: ch, release: at, expiry: expiry, slot: nextSlot)) }
                return
            }
        }

        while true {
            var next = Int64.max
            if e < events.count { next = events[e].at }
            for w in waiting.values { next = min(next, w.due) }
            for h in held { next = min(next, h.release) }
            if next == .max || next > until { break }
            // Releases at this instant (a release past its expiry is dropped and frees its slot).
            for h in held where h.release == next {
                if next < h.expiry { sent.append(Sent(journey: journeys[h.journey].name, cause: h.cause, channel: h.channel, at: next)) }
                else { slots.removeAll { $0.id == h.slot } }
            }
            held.removeAll { $0.release == next }
            // Timers ending now run their send step.
            for j in journeys.indices { if let w = waiting[j], w.due == next { waiting[j] = nil; decide(j, cause: w.cause, at: next) } }
            // Events at this instant, in order (per journey: exit first, then entry); the sends they
            // start are decided after all of them, as sends of one instant compete together.
            var starting: [(journey: Int, cause: String)] = []
            while e < events.count && events[e].at == next {
                let ev = events[e]
                for (j, jd) in journeys.enumerated() {
                    if jd.exitOn == ev.type {
                        waiting[j] = nil
                        for h in held where h.journey == j { slots.removeAll { $0.id == h.slot } }
                        held.removeAll { $0.journey == j }
                        starting.removeAll { $0.journey == j }
                    }
                    if jd.trigger == ev.type && waiting[j] == nil {
                        if jd.wait == 0 { starting.append((j, ev.id)) } else { waiting[j] = Waiting(cause: ev.id, due: next + jd.wait) }
                    }
                }
                e += 1
            }
            for s in starting { decide(s.journey, cause: s.cause, at: next) }
        }
        return (sent.sorted(), dueOf)
    }
}

/// A random multi-day stream with gaps, its rules, journeys and profile, as both the engine and the
/// reference model see them.
struct GapScenario: CustomStringConvertible {
    var seed: UInt64
    var rules: Rules
    var journeys: [JourneyDefinition]
    var profile: CustomerProfile?
    var events: [Touchpoint]
    var model: ReferenceModel
    var until: Timestamp
    var description: String { "GapScenario(seed: \(seed), events: \(events.count))" }

    static let zones = ["Europe/Oslo", "America/Los_Angeles", "Asia/Kathmandu", "Australia/Lord_Howe", "UTC"]
    /// Starts near daylight-saving changes (and one ordinary day) so DST nights are covered often.
    static let starts = ["2026-03-27T12:00:00Z", "2026-10-23T12:00:00Z", "2026-03-06T12:00:00Z", "2026-10-30T12:00:00Z",
                         "2026-04-02T12:00:00Z", "2026-06-15T12:00:00Z"]

    init(seed: UInt64) {
        self.seed = seed
        var g = SplitMix(seed: seed)

        func window() -> (QuietWindow, ReferenceModel.Window)? {
            guard g.chance(0.85) else { return nil }
            let s = g.int(0...47) * 30, e = g.int(0...47) * 30
            return (QuietWindow(startMinute: s, endMinute: e, rule: "quiet_hours:default"), .init(start: s, end: e))
        }
        let main = window()
        var overrides: [Channel: QuietWindow] = [:]
        var modelOverrides: [Channel: ReferenceModel.Window] = [:]
        if g.chance(0.4) {
            let s = g.chance(0.3) ? 0 : g.int(0...47) * 30, e = s == 0 ? 0 : g.int(0...47) * 30  // 0-0: quiet hours off for push
            overrides[.push] = QuietWindow(startMinute: s, endMinute: e, rule: "quiet_hours:push")
            modelOverrides[.push] = .init(start: s, end: e)
        }
        var caps: [FrequencyCap] = []
        var modelCaps: [ReferenceModel.Cap] = []
        for n in 0..<g.int(0...3) {
            let limit = g.int(1...3)
            let window = g.pick([TimeSpan.hours(1), .minutes(90), .hours(24), .days(7)])
            let channel: Channel? = g.chance(0.5) ? g.pick([.sms, .email, .push]) : nil
            let journey: String? = g.chance(0.3) ? g.pick(["a", "b", "d"]) : nil
            caps.append(FrequencyCap(name: "cap\(n)", limit: limit, window: window, channel: channel, journey: journey))
            modelCaps.append(.init(limit: limit, window: window.milliseconds, channel: channel, journey: journey))
        }
        let exemptQuiet = g.chance(0.5), exemptCaps = g.chance(0.5)
        let defaultExpiry = g.pick([TimeSpan.hours(6), .hours(14), .hours(48)])
        rules = Rules(defaultTimezone: "Europe/Oslo",
                      quietHours: QuietHoursRules(defaultWindow: main?.0, channelWindows: overrides, exemptTransactional: exemptQuiet,
                                                  spread: .zero),
                      frequencyCaps: caps, capsExemptTransactional: exemptCaps,
                      consent: ConsentRules(allowWithoutProfile: false), defaultExpiry: defaultExpiry, channelOrder: .journey)

        // Journeys: two that send at once, two that wait first (waits end at .750 s: never on an event).
        let bWait = g.pick([TimeSpan.hours(1), .hours(5), .days(2)]).milliseconds + 250
        let bTTL: TimeSpan? = g.chance(0.5) ? g.pick([.hours(3), .hours(12)]) : nil
        let specs: [(ReferenceModel.Journey, TimeSpan?)] = [
            (.init(name: "a", trigger: "a", exitOn: nil, wait: 0, channels: [.sms, .email], ttl: 0, transactional: false), nil),
            (.init(name: "b", trigger: "b", exitOn: "purchase", wait: bWait, channels: [.push, .sms], ttl: 0, transactional: false), bTTL),
            (.init(name: "c", trigger: "a", exitOn: nil, wait: 0, channels: [.email, .sms], ttl: 0, transactional: true), .hours(2)),
            (.init(name: "d", trigger: "c", exitOn: nil, wait: TimeSpan.minutes(30).milliseconds + 250, channels: [.sms, .push, .email],
                   ttl: 0, transactional: false), nil),
        ]
        var modelJourneys: [ReferenceModel.Journey] = []
        journeys = []
        for (spec, ttl) in specs {
            var steps: [Step] = []
            if spec.wait > 0 { steps.append(Step(id: "wait", action: .wait(TimeSpan(milliseconds: spec.wait)))) }
            steps.append(Step(id: "send", action: .send(SendStep(channels: spec.channels, template: "\(spec.name)_tpl", priority: 1,
                                                                 transactional: spec.transactional, expiresAfter: ttl))))
            journeys.append(JourneyDefinition(name: spec.name, version: 1, entry: [EntryTrigger(event: EventMatcher(type: spec.trigger))],
                                              stages: [Stage(name: "main", steps: steps)],
                                              exits: spec.exitOn.map { [ExitGoal(on: EventMatcher(type: $0), converted: true)] } ?? [],
                                              reentryCooldown: .zero))
            var m = spec
            m.ttl = (ttl ?? defaultExpiry).milliseconds
            modelJourneys.append(m)
        }

        let zone = g.pick(GapScenario.zones)
        var reachable = Set<Channel>()
        if g.chance(0.1) {
            profile = nil
        } else {
            var p = CustomerProfile(customerID: "c-1", timezone: zone, locale: "en")
            for c in [Channel.sms, .email, .push] {
                let contact = g.chance(0.85), consent = g.chance(0.8)
                if contact { p.contacts[c] = "addr-\(c.rawValue)" }
                if consent { p.consent[c] = true }
                if contact && consent { reachable.insert(c) }
            }
            profile = p
        }

        // Events at .500 s; gaps from none to days, so customers go quiet for days or for good.
        var t = ts(g.pick(GapScenario.starts)).adding(.minutes(Int64(g.int(0...2880)))).milliseconds / 1000 * 1000 + 500
        events = []
        for n in 0..<g.int(1...24) {
            let gap: Int64 = g.pick([0, Int64(g.int(1...1800)), Int64(g.int(1800...36_000)), Int64(g.int(86_400...518_400))])
            t += gap * 1000
            events.append(Touchpoint(eventID: "e\(n)", customerID: "c-1", type: g.pick(["a", "b", "c", "purchase", "page_view"]),
                                     occurredAt: Timestamp(milliseconds: t)))
        }
        until = Timestamp(milliseconds: t).adding(.days(20))
        model = ReferenceModel(journeys: modelJourneys, zone: TimeZone(identifier: zone)!, defaultWindow: main?.1,
                               channelWindows: modelOverrides, exemptTransactionalQuiet: exemptQuiet, caps: modelCaps,
                               capsExemptTransactional: exemptCaps, reachable: reachable)
    }

    var engine: JourneyEngine { WaymarkEngineTests.engine(journeys, rules) }

    var modelEvents: [ReferenceModel.Event] { events.map { .init(id: $0.eventID, type: $0.type, at: $0.occurredAt.milliseconds) } }

    static func sent(_ messages: [OutboundMessage]) -> [ReferenceModel.Sent] {
        messages.map { ReferenceModel.Sent(journey: $0.journey, cause: $0.causedBy, channel: $0.channel, at: $0.sendAfter.milliseconds) }.sorted()
    }

    /// Replay: the whole history in event time, in one call or in chunks with a final wake-up.
    func replay(chunked: Bool) -> [OutboundMessage] {
        let e = engine
        guard chunked else {
            return e.process(CustomerState(), customerID: "c-1", profile: profile, touchpoints: events, now: until, timing: .replay).messages
        }
        var g = SplitMix(seed: seed ^ 0x77)
        var state = CustomerState()
        var out: [OutboundMessage] = []
        var i = 0
        while i < events.count {
            // Chunks of 1–3 events, never splitting an instant (its sends are arbitrated in one call).
            var n = min(1 + Int(g.next() % 3), events.count - i)
            while i + n < events.count && events[i + n].occurredAt == events[i + n - 1].occurredAt { n += 1 }
            let chunk = Array(events[i..<i + n])
            i += n
            let r = e.process(state, customerID: "c-1", profile: profile, touchpoints: chunk, now: chunk.last!.occurredAt, timing: .replay)
            state = try! CustomerState(decoding: r.state.encoded())
            out += r.messages
        }
        return out + e.wake(state, customerID: "c-1", profile: profile, now: until, timing: .replay).messages
    }

    /// Live: a simulated wall clock that runs through the period, as a worker and a scheduler see
    /// it. Event `i` reaches the worker at `arrivals[i]` (non-decreasing; default: when it happens).
    /// While the worker is behind (the next unread event has already happened), the event-time
    /// watermark is the last event read, and timers due after it wait; otherwise the scheduler wakes
    /// the customer at each wake-up.
    func live(arrivals given: [Int64]? = nil) -> [OutboundMessage] {
        let e = engine
        let arrivals = given ?? events.map(\.occurredAt.milliseconds)
        var state = CustomerState()
        var out: [OutboundMessage] = []
        var clock = Int64.min
        var read = -1  // index of the last event read
        /// The watermark at wall time `w`: `nil` when caught up.
        func watermark(at w: Int64) -> Timestamp? {
            guard read + 1 < events.count, events[read + 1].occurredAt.milliseconds <= w else { return nil }
            return read >= 0 ? events[read].occurredAt : Timestamp(milliseconds: .min / 2)
        }
        func wakeUntil(_ limit: Int64) {
            var stuck = 0
            while let due = state.nextWakeUp?.milliseconds {
                let at = max(due, clock)
                guard at < limit else { return }
                // A wake-up that leaves the next wake-up where it was would spin a real scheduler.
                if at == clock && due <= clock { stuck += 1 } else { stuck = 0 }
                if stuck > 3 { Issue.record("the wake-up at \(Timestamp(milliseconds: at)) does not move on: \(self)"); return }
                let mark = watermark(at: at)
                if let mark, mark.milliseconds < due { return }  // held until the worker reads further
                let r = e.wake(state, customerID: "c-1", profile: profile, now: Timestamp(milliseconds: at), timing: .live, watermark: mark)
                state = try! CustomerState(decoding: r.state.encoded())
                out += r.messages
                clock = at
            }
        }
        var i = 0
        while i < events.count {
            // Events of one instant that arrive together are one batch (their sends compete together).
            var n = 1
            while i + n < events.count && events[i + n].occurredAt == events[i].occurredAt && arrivals[i + n] == arrivals[i] { n += 1 }
            let arrival = max(arrivals[i], clock)
            wakeUntil(arrival)
            read = i + n - 1
            let r = e.process(state, customerID: "c-1", profile: profile, touchpoints: Array(events[i..<i + n]),
                              now: Timestamp(milliseconds: arrival), timing: .live, watermark: watermark(at: arrival))
            state = try! CustomerState(decoding: r.state.encoded())
            out += r.messages
            clock = arrival
            i += n
        }
        wakeUntil(until.milliseconds + 1)
        return out
    }
}

let gapScenarios = Gen.uint64(in: 0 ... .max).map { GapScenario(seed: $0) }

@Suite(.timeLimit(.minutes(3))) struct ReferenceModelTests {
    /// Replay in event time, live processing on a simulated clock, and the reference model agree on
    /// every message: journey, cause, channel and send time.
    @Test func replayLiveAndReferenceAgree() async {
        await propertyCheck(count: 1500, input: gapScenarios) { s in
            let expected = s.model.run(s.modelEvents, until: s.until.milliseconds).sent
            let replayed = GapScenario.sent(s.replay(chunked: false))
            let chunked = GapScenario.sent(s.replay(chunked: true))
            let live = GapScenario.sent(s.live())
            #expect(replayed == expected, "replay vs reference: \(s)\n replay: \(replayed)\n model:  \(expected)")
            #expect(chunked == expected, "chunked replay vs reference: \(s)")
            #expect(live == expected, "live vs reference: \(s)\n live:  \(live)\n model: \(expected)")
        }
    }

    /// A backlog: every event reaches the worker late (up to days), as after an outage or for a new
    /// consumer group. Nothing is sent after its due time plus expiry, inside quiet hours, or over a
    /// cap, all judged by the reference model; and nothing is sent that the model would not send.
    @Test func backlogNeverSendsStaleRudeOrOverCap() async {
        await propertyCheck(count: 800, input: gapScenarios) { s in
            var g = SplitMix(seed: s.seed ^ 0xBAC)
            let lags = s.events.map { _ in Int64(g.next() % 4 == 0 ? 0 : g.next() % (3 * 86_400_000)) }
            var arrivals: [Int64] = []
            for (i, e) in s.events.enumerated() { arrivals.append(max(e.occurredAt.milliseconds + lags[i], arrivals.last ?? .min)) }
            let messages = s.live(arrivals: arrivals)
            let due = s.model.run(s.modelEvents, until: s.until.milliseconds).due
            var slots: [ReferenceModel.Slot] = []
            for m in messages.sorted(by: { $0.sendAfter < $1.sendAfter }) {
                let journey = s.model.journeys.first { $0.name == m.journey }!
                guard let dueAt = due["\(m.journey)/\(m.causedBy)"] else {
                    Issue.record("sent \(m.journey)/\(m.causedBy), which the model never made due: \(s)"); continue
                }
                #expect(m.sendAfter.milliseconds < dueAt + journey.ttl, "stale: \(m.journey)/\(m.causedBy) due \(Timestamp(milliseconds: dueAt)) sent \(m.sendAfter): \(s)")
                #expect(!s.model.isQuiet(m.channel, transactional: m.transactional, at: m.sendAfter.milliseconds),
                        "in quiet hours: \(m.journey) \(m.channel) at \(m.sendAfter): \(s)")
                #expect(s.model.reachable.contains(m.channel), "no consent: \(s)")
                #expect(!s.model.capBlocks(slots, at: m.sendAfter.milliseconds, channel: m.channel, journey: m.journey, transactional: m.transactional),
                        "over a cap: \(m.journey) \(m.channel) at \(m.sendAfter): \(s)")
                slots.append(.init(at: m.sendAfter.milliseconds, channel: m.channel, journey: m.journey, transactional: m.transactional, id: slots.count))
            }
        }
    }
}

extension ReferenceModelTests {
    /// The generated scenarios are not vacuous: over a few hundred of them every rule decides something.
    @Test func scenariosExerciseEveryRule() {
        var reasons: [DecisionReason: Int] = [:]
        var dstNights = 0
        for seed in UInt64(1)...300 {
            let s = GapScenario(seed: seed &* 0x9E37_79B9)
            let r = s.engine.process(CustomerState(), customerID: "c-1", profile: s.profile, touchpoints: s.events, now: s.until, timing: .replay)
            for d in r.decisions { reasons[d.reason, default: 0] += 1 }
            let zone = s.model.zone
            let first = s.events.first!.occurredAt, last = s.until
            if zone.nextDaylightSavingTimeTransition(after: Date(timeIntervalSince1970: Double(first.milliseconds) / 1000))
                .map({ $0.timeIntervalSince1970 * 1000 < Double(last.milliseconds) }) == true { dstNights += 1 }
        }
        for reason in [DecisionReason.sent, .deferredQuietHours, .suppressedFrequencyCap, .suppressedNoConsent, .suppressedExpired,
                       .journeyConverted, .fallbackChannel, .deferredAwaitingProfile] {
            #expect(reasons[reason, default: 0] >= 5, "only \(reasons[reason, default: 0]) \(reason) decisions in 300 scenarios")
        }
        // A purchase while a reminder is held for quiet hours is rarer, but must occur.
        #expect(reasons[.cancelledJourneyExit, default: 0] >= 1)
        #expect(dstNights >= 50, "only \(dstNights) scenarios span a daylight-saving change")
    }
}
