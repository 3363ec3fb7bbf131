import WaymarkEngine
import WaymarkState
import WaymarkWire

extension OutboundMessage {
    /// This message re-addressed to the first channel of its fallback list (not its own) that
    /// `profile` can be sent on: consent, an address, not unsubscribed, and no global opt-out for a
    /// non-transactional message; `nil` when no channel is left. The one rule for both fallbacks: a
    /// provider refusing the call (sender) and a provider reporting a failure later (receipts).
    public func fallbackCopy(profile: CustomerProfile?) -> OutboundMessage? {
        guard let profile, !(profile.optedOut && !transactional) else { return nil }
        guard let next = fallbackChannels.first(where: { ch in
            ch != channel && profile.consent[ch] == true && profile.contacts[ch] != nil && !profile.withdrawn.contains(ch)
        }) else { return nil }
        var copy = self
        copy.channel = next
        copy.fallbackChannels = Array(fallbackChannels.drop { $0 != next }.dropFirst())
        return copy
    }
}

extension Decision {
    /// A decision about `message` taken after the journey decided it (by a sender at send time, or
    /// by the receipts endpoint).
    public init(_ reason: DecisionReason, rule: String, about message: OutboundMessage, at: Timestamp, sendAfter: Timestamp? = nil,
                detail: String) {
        self.init(reason: reason, rule: rule, customerID: message.customerID, journey: message.journey,
                  journeyVersion: message.journeyVersion, stage: message.stage, step: message.step,
                  channel: message.channel, messageID: message.messageID, priority: message.priority,
                  decidedAt: at, sendAfter: sendAfter, expiresAt: message.expiresAt, causedBy: message.causedBy, detail: detail,
                  arm: message.arm.isEmpty ? nil : message.arm)
    }
}

extension WorkerEnvironment {
    /// The stored profiles of `customers` that parse, with the customers' own unsubscribes applied.
    public func profiles(_ customers: [String], from store: RedisStateStore) async throws -> [String: CustomerProfile] {
        var out: [String: CustomerProfile] = [:]
        for (customer, bytes, suppressions) in try await store.loadProfiles(customers) {
            if case .success(let p) = parser.profile(key: ArraySlice(customer.utf8), value: ArraySlice(bytes)) {
                out[customer] = p.applying(suppressions)
            }
        }
        return out
    }
}
