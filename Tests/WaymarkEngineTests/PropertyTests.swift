import PropertyBased
import Testing
import WaymarkEngine
import WaymarkWire

/// A random scenario: rules, journeys, a profile and an event stream, all derived from a seed.
struct Scenario: CustomStringConvertible {
    var rules: Rules
    var journeys: [JourneyDefinition]
    var profile: CustomerProfile?
    var events: [Touchpoint]
    var seed: UInt64
    var description: String { "Scenario(seed: \(seed), events: \(events.count))" }

    static let zones = ["Europe/Oslo", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC", "Not/AZone"]

    init(seed: UInt64) {
        self.seed = seed
        var g = SplitMix(seed: seed)

        func window(_ rule: String) -> QuietWindow {
            QuietWindow(startMinute: g.int(0...47) * 30, endMinute: g.int(0...47) * 30, rule: rule)
        }
        var overrides: [Channel: QuietWindow] = [:]
        for ch in [Channel.sms, .email, .push] where g.chance(0.3) { overrides[ch] = window("quiet_hours:\(ch.rawValue)") }
        var caps: [FrequencyCap] = []
        for n in 0..<g.int(0...3) {
            caps.append(FrequencyCap(name: "cap\(n)", limit: g.int(1...3), window: g.pick([.hours(1), .hours(24), .days(7), .minutes(90)]),
                                     channel: g.chance(0.5) ? g.pick([.sms, .email, .push]) : nil,
                                     journey: g.chance(0.3) ? g.pick(["a", "b", "abandoned_cart"]) : nil))
        }
        rules = Rules(defaultTimezone: g.pick(["Europe/Oslo", "America/New_York"]),
                      quietHours: QuietHoursRules(defaultWindow: g.chance(0.85) ? window("quiet_hours:default") : nil,
                                                  channelWindows: overrides, exemptTransactional: g.chance(0.5),
                                                  spread: g.pick([.zero, .minutes(10), .minutes(45)])),
                      frequencyCaps: caps, capsExemptTransactional: g.chance(0.5),
                      consent: ConsentRules(allowWithoutProfile: g.chance(0.3), transactionalRequiresConsent: g.chance(0.5)),
                      defaultExpiry: g.pick([.hours(6), .hours(14), .hours(48)]),
                      channelOrder: g.chance(0.5) ? .journey : .customerPreference)
        journeys = [
            instantJourney("a", trigger: "a", channels: [.sms, .email], priority: g.int(0...3)),
            instantJourney("b", trigger: "b", channels: [.push, .sms], priority: g.int(0...3), expires: g.chance(0.5) ? .hours(3) : nil),
            instantJourney("c", trigger: "a", channels: [.email], priority: g.int(0...3), transactional: true),
            instantJourney("d", trigger: "c", channels: [.sms, .push, .email], priority: g.int(0...3), key: "cart_id"),
            abandonedCart(wait: g.pick([.minutes(30), .hours(1), .hours(5)])),
        ]
        if g.chance(0.1) {
            profile = nil
        } else {
            let chans: [Channel] = [.sms, .email, .push].filter { _ in g.chance(0.8) }
            var p = CustomerProfile(customerID: "c-1", timezone: g.pick(Scenario.zones), locale: "en")
            for c in chans { p.contacts[c] = "addr" }
            for c in [Channel.sms, .email, .push] where g.chance(0.75) { p.consent[c] = true }
            p.preferredChannels = [Channel.email, .push, .sms].filter { _ in g.chance(0.5) }
            profile = p
        }
        var t = ts("2026-01-01T00:00:00Z").adding(.hours(Int64(g.int(0...8760))))
        events = []
        for n in 0..<g.int(1...40) {
            t = t.adding(TimeSpan(milliseconds: Int64(g.chance(0.15) ? 0 : g.chance(0.5) ? g.int(0...1800) : g.int(0...36_000)) * 1000))
            let type = g.pick(["a", "b", "c", "cart_abandoned", "purchase", "page_view"])
            var attrs: [String: AttributeValue] = [:]
            if g.chance(0.8) { attrs["cart_id"] = .string(g.pick(["k1", "k2", "k3"])) }
            attrs["value"] = .number(Double(g.int(0...300)))
            events.append(Touchpoint(eventID: "e\(n)", customerID: "c-1", type: type, occurredAt: t, attributes: attrs))
        }
    }

    var engine: JourneyEngine { WaymarkEngineTests.engine(journeys, rules) }
    var end: Timestamp { events.last!.occurredAt.adding(.days(30)) }
}

struct Outcome {
    var decisions: [Decision] = []
    var messages: [OutboundMessage] = []
    var state = CustomerState()

    /// Every decision, message and the final state as bytes.
    var text: String { String(decoding: bytes, as: UTF8.self) }

    var bytes: [UInt8] {
        var out: [UInt8] = []
        for d in decisions { out += d.jsonBytes(); out.append(10) }
        for m in messages { out += m.jsonBytes(); out.append(10) }
        out += state.encoded()
        return out
    }
}

/// Runs a stream in chunks (chunk sizes from the seed), optionally storing/loading the state in between.
func run(_ s: Scenario, events: [Touchpoint], timing: Timing, roundTrip: Bool, chunked: Bool = true) -> Outcome {
    let e = s.engine
    var o = Outcome()
    var g = SplitMix(seed: s.seed ^ 0xABCD)
    var i = 0
    while i < events.count {
        let n = chunked ? 1 + Int(g.next() % 4) : events.count
        let chunk = Array(events[i..<min(events.count, i + n)])
        i += n
        let latest = chunk.map(\.occurredAt).max()!
        let now = timing == .replay ? latest : latest.adding(.minutes(Int64(g.next() % 90)))
        let r = e.process(o.state, customerID: "c-1", profile: s.profile, touchpoints: chunk, now: now, timing: timing)
        o.decisions += r.decisions; o.messages += r.messages
        o.state = roundTrip ? (try! CustomerState(decoding: r.state.encoded())) : r.state
    }
    let r = e.wake(o.state, customerID: "c-1", profile: s.profile, now: s.end, timing: timing)
    o.decisions += r.decisions; o.messages += r.messages; o.state = r.state
    return o
}

let seeds = Gen.uint64(in: 0 ... .max).map { Scenario(seed: $0) }

@Suite struct PropertyTests {
    @Test func noSendInsideQuietHours() async {
        await propertyCheck(count: 150, input: seeds) { s in
            for timing in [Timing.replay, .live] {
                let o = run(s, events: s.events, timing: timing, roundTrip: true)
                let qh = s.engine.quietHours
                for m in o.messages {
                    #expect(qh.check(channel: m.channel, transactional: m.transactional, profile: s.profile, at: m.sendAfter) == .allowed,
                            "\(m.journey) on \(m.channel) at \(m.sendAfter) in \(s.profile?.timezone ?? "default")")
                }
                for d in o.decisions where d.reason == .sent || d.reason == .fallbackChannel {
                    let m = o.messages.first { $0.messageID == d.messageID }!
                    #expect(qh.check(channel: m.channel, transactional: m.transactional, profile: s.profile, at: d.decidedAt) == .allowed)
                }
            }
        }
    }

    @Test func noCapExceededInAnyWindow() async {
        await propertyCheck(count: 150, input: seeds) { s in
            for timing in [Timing.replay, .live] {
                let o = run(s, events: s.events, timing: timing, roundTrip: false)
                #expect(Set(o.messages.map(\.messageID)).count == o.messages.count, "a message id was published twice")
                for cap in s.rules.frequencyCaps {
                    let times = o.messages.filter { m in
                        !(m.transactional && s.rules.capsExemptTransactional)
                            && (cap.channel == nil || cap.channel == m.channel) && (cap.journey == nil || cap.journey == m.journey)
                    }.map(\.sendAfter.milliseconds).sorted()
                    for (i, t) in times.enumerated() {
                        let inWindow = times[i...].prefix { $0 < t + cap.window.milliseconds }.count
                        #expect(inWindow <= cap.limit, "cap \(cap.name) (\(cap.limit)/\(cap.window)) exceeded: \(inWindow) from \(Timestamp(milliseconds: t))")
                    }
                }
            }
        }
    }

    @Test func replayIsByteIdenticalAndStateStorageIsTransparent() async {
        await propertyCheck(count: 100, input: seeds) { s in
            for timing in [Timing.replay, .live] {
                let a = run(s, events: s.events, timing: timing, roundTrip: false)
                let b = run(s, events: s.events, timing: timing, roundTrip: true)
                let c = run(s, events: s.events, timing: timing, roundTrip: true)
                #expect(a.text == b.text)
                #expect(b.text == c.text)
            }
        }
    }

    @Test func duplicatedEventIDsEqualProcessingOnce() async {
        await propertyCheck(count: 150, input: seeds) { s in
            var g = SplitMix(seed: s.seed ^ 0x5555)
            var withDups: [Touchpoint] = []
            var pending: [(Int, Touchpoint)] = []
            for (i, e) in s.events.enumerated() {
                withDups.append(e)
                if g.next() % 3 == 0 { pending.append((i + 1 + Int(g.next() % 4), e)) }
                while let k = pending.firstIndex(where: { $0.0 <= i }) { withDups.append(pending.remove(at: k).1) }
            }
            for timing in [Timing.replay, .live] {
                let once = run(s, events: s.events, timing: timing, roundTrip: false, chunked: false)
                let dup = run(s, events: withDups, timing: timing, roundTrip: false, chunked: false)
                var filtered = dup
                filtered.decisions.removeAll { $0.reason == .suppressedDuplicate && $0.rule == "dedup:event_id" }
                #expect(dup.decisions.count - filtered.decisions.count == withDups.count - s.events.count)
                if timing == .replay { #expect(filtered.text == once.text) }
                else {
                    // Live: the wall clock is per call, so compare messages and final state.
                    #expect(filtered.messages.map { String(decoding: $0.jsonBytes(), as: UTF8.self) } == once.messages.map { String(decoding: $0.jsonBytes(), as: UTF8.self) })
                    #expect(filtered.state == once.state)
                }
            }
        }
    }

    @Test func stateEncodingRoundTrips() async {
        await propertyCheck(count: 200, input: seeds) { s in
            // States captured mid-stream (held messages, waits, caps, dedup memory) and at the end.
            let e = s.engine
            var st = CustomerState()
            for ev in s.events {
                st = e.process(st, customerID: "c-1", profile: s.profile, touchpoints: [ev], now: ev.occurredAt, timing: .replay).state
                let bytes = st.encoded()
                let back = try CustomerState(decoding: bytes)
                #expect(back == st)
                #expect(back.encoded() == bytes)
            }
            // Truncations never crash and are rejected.
            let bytes = st.encoded()
            for cut in stride(from: 0, to: bytes.count, by: max(1, bytes.count / 16)) where cut > 0 {
                #expect(throws: StateDecodingError.self) { try CustomerState(decoding: Array(bytes[..<cut])) }
            }
        }
    }
}
