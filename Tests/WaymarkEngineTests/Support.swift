import Foundation
import WaymarkEngine

/// Parses an RFC 3339 literal in tests (crashes on a typo, which is what a test wants).
func ts(_ s: String) -> Timestamp {
    switch Timestamp.parseRFC3339(s) {
    case .success(let t): return t
    case .failure(let e): fatalError("bad test timestamp \(s): \(e)")
    }
}

func tp(_ id: String, _ type: String, _ at: String, customer: String = "c-1", _ attrs: [String: AttributeValue] = [:]) -> Touchpoint {
    Touchpoint(eventID: id, customerID: customer, type: type, occurredAt: ts(at), source: "test", attributes: attrs)
}

func profile(_ tz: String? = "Europe/Oslo", channels: [Channel] = [.sms, .email, .push], consent: [Channel]? = nil,
             attributes: [String: AttributeValue] = [:]) -> CustomerProfile {
    var contacts: [Channel: String] = [:]
    var c: [Channel: Bool] = [:]
    for ch in channels { contacts[ch] = "addr-\(ch.rawValue)" }
    for ch in consent ?? channels { c[ch] = true }
    return CustomerProfile(customerID: "c-1", timezone: tz, locale: "nb-NO", contacts: contacts, consent: c,
                           preferredChannels: [], attributes: attributes)
}

let nightWindow = QuietWindow(startMinute: 21 * 60, endMinute: 8 * 60, rule: "quiet_hours:default")

func rules(quiet: QuietWindow? = nightWindow, caps: [FrequencyCap] = [], spread: TimeSpan = .minutes(30),
           allowWithoutProfile: Bool = false, channelWindows: [Channel: QuietWindow] = [:]) -> Rules {
    Rules(defaultTimezone: "Europe/Oslo",
          quietHours: QuietHoursRules(defaultWindow: quiet, channelWindows: channelWindows, exemptTransactional: true, spread: spread),
          frequencyCaps: caps, capsExemptTransactional: true,
          consent: ConsentRules(allowWithoutProfile: allowWithoutProfile), defaultExpiry: .hours(48),
          channelOrder: .journey)
}

/// A journey that sends one message immediately when `trigger` arrives.
func instantJourney(_ name: String, trigger: String = "ping", channels: [Channel] = [.sms], priority: Int = 0,
                    expires: TimeSpan? = nil, key: String? = nil, transactional: Bool = false) -> JourneyDefinition {
    JourneyDefinition(
        name: name, version: 1, key: key,
        entry: [EntryTrigger(event: EventMatcher(type: trigger))],
        stages: [Stage(name: "main", steps: [
            Step(id: "send", action: .send(SendStep(channels: channels, template: "\(name)_tpl", priority: priority,
                                                    transactional: transactional, expiresAfter: expires))),
        ])])
}

/// Abandoned cart keyed by cart: wait 1 h, remind by sms/email, exit on purchase of the same cart.
func abandonedCart(wait: TimeSpan = .hours(1)) -> JourneyDefinition {
    JourneyDefinition(
        name: "abandoned_cart", version: 2, key: "cart_id",
        entry: [EntryTrigger(event: EventMatcher(type: "cart_abandoned"))],
        stages: [Stage(name: "main", steps: [
            Step(id: "wait_1h", action: .wait(wait)),
            Step(id: "remind", action: .send(SendStep(channels: [.sms, .email], template: "cart_reminder", priority: 5))),
        ])],
        exits: [ExitGoal(on: EventMatcher(type: "purchase", sameKey: true), converted: true)])
}

func engine(_ journeys: [JourneyDefinition], _ r: Rules) -> JourneyEngine {
    do { return try JourneyEngine(journeys: journeys, rules: r) } catch { fatalError("\(error)") }
}

/// Deterministic PRNG for generated scenarios (SplitMix64).
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// One of `xs`.
    mutating func pick<T>(_ xs: [T]) -> T { xs[Int(next() % UInt64(xs.count))] }
    /// A number in `r`.
    mutating func int(_ r: ClosedRange<Int>) -> Int { r.lowerBound + Int(next() % UInt64(r.count)) }
    /// `true` with probability `p` (in thousandths).
    mutating func chance(_ p: Double) -> Bool { Double(next() % 1000) < p * 1000 }
}
