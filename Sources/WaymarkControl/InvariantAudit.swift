import Foundation
import WaymarkWire
import WaymarkEngine

/// Checks Waymark's promises on what it actually published, independently of how it decided:
/// no message id decided twice with different effects, caps never exceeded in any window, no send
/// time inside the recipient's quiet hours. Used by the crash test and `make crash-test`.
public struct InvariantAudit: Sendable {
    /// One distinct outbound message, as published.
    public struct Message: Sendable, Hashable {
        public var id: String
        public var customer: String
        public var channel: Channel
        public var journey: String
        public var transactional: Bool
        public var sendAfter: Timestamp
    }

    public var rules: Rules
    public var quietHours: QuietHours

    public init(engine: JourneyEngine) {
        rules = engine.rules
        quietHours = engine.quietHours
    }

    /// Parses an outbound message document; `nil` if it is not one.
    public static func message(_ bytes: some Collection<UInt8>) -> Message? {
        guard case .success(let m) = RecordParser().outbound(bytes) else { return nil }
        return Message(id: m.messageID.description, customer: m.customerID, channel: m.channel, journey: m.journey,
                       transactional: m.transactional, sendAfter: m.sendAfter)
    }

    /// Cap violations among `messages` (distinct by id), as readable lines.
    public func capViolations(_ messages: [Message]) -> [String] {
        var violations: [String] = []
        let byCustomer = Dictionary(grouping: messages, by: \.customer)
        for customer in byCustomer.keys.sorted() {
            let sent = byCustomer[customer]!.sorted { ($0.sendAfter, $0.id) < ($1.sendAfter, $1.id) }
            for cap in rules.frequencyCaps {
                let counted = sent.filter { m in
                    (cap.channel == nil || cap.channel == m.channel) && (cap.journey == nil || cap.journey == m.journey)
                        && !(m.transactional && rules.capsExemptTransactional)
                }
                // A send at t occupies [t, t + window): at no instant may more than `limit` be live.
                var start = 0
                for end in counted.indices {
                    while counted[end].sendAfter.milliseconds - counted[start].sendAfter.milliseconds >= cap.window.milliseconds { start += 1 }
                    if end - start + 1 > cap.limit {
                        violations.append("cap \(cap.name) exceeded for \(customer): \(end - start + 1) sends within \(cap.window) ending \(counted[end].sendAfter)")
                        break
                    }
                }
            }
        }
        return violations
    }

    /// Messages whose send time falls in the recipient's quiet hours.
    public func quietHourViolations(_ messages: [Message], profiles: [String: CustomerProfile]) -> [String] {
        messages.compactMap { m in
            if case .quiet(let rule, _) = quietHours.check(channel: m.channel, transactional: m.transactional,
                                                           profile: profiles[m.customer], at: m.sendAfter) {
                return "\(m.id) for \(m.customer) on \(m.channel) at \(m.sendAfter) is inside quiet hours (\(rule))"
            }
            return nil
        }
    }
}
