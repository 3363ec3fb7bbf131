import Crypto
import Foundation
import WaymarkEngine
import WaymarkState

extension CustomerProfile {
    /// The profile with the customer's own unsubscribes applied: withdrawn channels and the global
    /// opt-out (the engine and the sender check both, see `Arbitration.reachability`).
    public func applying(_ suppressions: Suppressions) -> CustomerProfile {
        if suppressions.isEmpty { return self }
        var profile = self
        for name in suppressions.channels { if let channel = Channel(rawValue: name) { profile.withdrawn.insert(channel) } }
        if suppressions.optedOut { profile.optedOut = true }
        return profile
    }
}

/// An unsubscribe or re-subscribe a touchpoint carries: `message_unsubscribed` with attribute
/// `channel` (or `scope: all` for everything non-transactional), `message_resubscribed` likewise.
public struct SuppressionChange: Sendable, Hashable {
    public var customer: String
    /// A channel name or ``Suppressions/everything``.
    public var entry: String
    public var at: Int64
    public var withdraw: Bool

    public static let unsubscribed = "message_unsubscribed"
    public static let resubscribed = "message_resubscribed"

    public init(customer: String, entry: String, at: Int64, withdraw: Bool) {
        self.customer = customer; self.entry = entry; self.at = at; self.withdraw = withdraw
    }

    public init?(_ touchpoint: Touchpoint) {
        let withdraw: Bool
        switch touchpoint.type {
        case Self.unsubscribed: withdraw = true
        case Self.resubscribed: withdraw = false
        default: return nil
        }
        let entry: String
        if case .string("all")? = touchpoint.attributes["scope"] {
            entry = Suppressions.everything
        } else if case .string(let name)? = touchpoint.attributes["channel"], Channel(rawValue: name) != nil {
            entry = name
        } else {
            return nil
        }
        self.init(customer: touchpoint.customerID, entry: entry, at: touchpoint.occurredAt.milliseconds, withdraw: withdraw)
    }
}

/// The digest under which the sender remembers whose address it sent to, so an inbound STOP reply
/// (which names only the replying address) finds its customer without any address being stored.
public enum AddressDigest {
    /// Channels where recipients reply with keywords.
    public static let replyChannels: Set<Channel> = [.sms, .whatsapp, .rcs, .viber]

    /// Hex SHA-256 of `<channel>:<address>` (phone numbers as digits with a leading +), `nil` for
    /// channels without replies.
    public static func of(_ channel: Channel, _ address: String) -> String? {
        guard replyChannels.contains(channel) else { return nil }
        let normal = channel == .viber ? address : "+" + address.filter(\.isNumber)
        return CallbackSignatures.hex(SHA256.hash(data: Data("\(channel.rawValue):\(normal)".utf8)))
    }
}
