import WaymarkEngine

// The one encoder of each record Waymark writes to a topic (contract §2). Field names are
// snake_case, times RFC 3339 in UTC with milliseconds, keys in sorted order so identical values
// give identical bytes. The matching decoders are the ``RecordParser`` methods.

extension OutboundMessage {
    /// The record on `outbound.<channel>`; read back by ``RecordParser/outbound(key:value:)``.
    public func jsonBytes() -> [UInt8] {
        var w = JSONWriter(capacity: 384)
        w.beginObject()
        if !arm.isEmpty { w.key("arm"); w.string(arm) }
        w.key("caused_by"); w.string(causedBy)
        w.key("channel"); w.string(channel.rawValue)
        w.key("created_at"); w.timestamp(createdAt)
        w.key("customer_id"); w.string(customerID)
        w.key("expires_at"); w.timestamp(expiresAt)
        w.key("fallback_channels"); w.beginArray(); for c in fallbackChannels { w.string(c.rawValue) }; w.endArray()
        w.key("journey"); w.string(journey)
        w.key("journey_version"); w.int(Int64(journeyVersion))
        w.key("locale"); w.optionalString(locale)
        w.key("message_id"); w.unescapedString(messageID.bytes())
        w.key("priority"); w.int(Int64(priority))
        w.key("send_after"); w.timestamp(sendAfter)
        w.key("stage"); w.string(stage)
        w.key("step"); w.string(step)
        w.key("template"); w.string(template)
        w.key("transactional"); w.bool(transactional)
        w.key("variables"); w.object(variables)
        w.endObject()
        return w.bytes
    }
}

extension Decision {
    /// The record on `journey.decisions`, every key present (null when absent); read back by
    /// ``RecordParser/decision(_:)``.
    public func jsonBytes() -> [UInt8] {
        var w = JSONWriter(capacity: 384)
        w.beginObject()
        w.key("arm"); w.optionalString(arm)
        w.key("caused_by"); w.optionalString(causedBy)
        w.key("channel"); w.optionalString(channel?.rawValue)
        w.key("customer_id"); w.string(customerID)
        w.key("decided_at"); w.timestamp(decidedAt)
        w.key("detail"); w.optionalString(detail)
        if let elapsedMilliseconds { w.key("elapsed_ms"); w.int(elapsedMilliseconds) }
        w.key("expires_at"); w.optionalTimestamp(expiresAt)
        w.key("instance_key"); w.optionalString(instanceKey)
        w.key("journey"); w.optionalString(journey)
        w.key("journey_version"); if let journeyVersion { w.int(Int64(journeyVersion)) } else { w.null() }
        w.key("message_id"); if let messageID { w.unescapedString(messageID.bytes()) } else { w.null() }
        w.key("priority"); if let priority { w.int(Int64(priority)) } else { w.null() }
        w.key("reason"); w.string(reason.rawValue)
        w.key("rule"); w.string(rule)
        w.key("send_after"); w.optionalTimestamp(sendAfter)
        w.key("skipped"); w.beginArray()
        for s in skipped {
            w.beginObject()
            w.key("channel"); w.string(s.channel.rawValue)
            w.key("reason"); w.string(s.reason.rawValue)
            w.key("rule"); w.string(s.rule)
            w.endObject()
        }
        w.endArray()
        w.key("stage"); w.optionalString(stage)
        w.key("step"); w.optionalString(step)
        w.endObject()
        return w.bytes
    }
}

extension Touchpoint {
    /// The record on `touchpoints` (and `deliveries`); read back by ``RecordParser/touchpoint(key:value:now:)``.
    public func jsonBytes() -> [UInt8] {
        var w = JSONWriter(capacity: 256)
        w.beginObject()
        w.key("attributes"); w.object(attributes)
        w.key("customer_id"); w.string(customerID)
        w.key("event_id"); w.string(eventID)
        w.key("occurred_at"); w.timestamp(occurredAt)
        if let source { w.key("source"); w.string(source) }
        w.key("type"); w.string(type)
        w.endObject()
        return w.bytes
    }
}

extension CustomerProfile {
    /// The record on `customers`; read back by ``RecordParser/profile(key:value:)``.
    public func jsonBytes() -> [UInt8] {
        var w = JSONWriter(capacity: 384)
        w.beginObject()
        w.key("attributes"); w.object(attributes)
        w.key("consent"); w.beginObject()
        for channel in consent.keys.sorted(by: { $0.rawValue < $1.rawValue }) { w.key(channel.rawValue); w.bool(consent[channel]!) }
        w.endObject()
        w.key("contacts"); w.beginObject()
        for channel in contacts.keys.sorted(by: { $0.rawValue < $1.rawValue }) { w.key(channel.rawValue); w.string(contacts[channel]!) }
        w.endObject()
        w.key("customer_id"); w.string(customerID)
        w.key("locale"); w.optionalString(locale)
        if optedOut { w.key("opt_out"); w.bool(true) }
        w.key("preferred_channels"); w.beginArray(); for c in preferredChannels { w.string(c.rawValue) }; w.endArray()
        w.key("timezone"); w.optionalString(timezone)
        w.endObject()
        return w.bytes
    }
}

/// A delivery receipt on `deliveries`: what a sender or a provider's status callback said about a
/// message, fed back to journeys as a touchpoint of the outcome's type (journeys react to those types).
public struct DeliveryReceipt: Sendable, Hashable {
    public enum Outcome: String, Sendable, Hashable, CaseIterable {
        /// Handed to the provider, which accepted it (the sender says so).
        case sent = "message_sent"
        /// The provider says it reached the device or mailbox (status callback).
        case delivered = "message_delivered"
        /// The recipient opened or read it (WhatsApp, RCS, Viber read receipts; e-mail opens).
        case read = "message_read"
        /// Not sent or not delivered: expired, no consent at send time, every channel failed
        /// permanently, or the provider reported a failure after accepting it.
        case failed = "message_failed"
        /// The recipient followed a link or tapped the notification.
        case clicked = "message_clicked"
        /// The recipient unsubscribed from the channel (an unsubscribe link, a STOP reply).
        case unsubscribed = "message_unsubscribed"
    }

    /// The source of receipts a sender publishes.
    public static let source = "waymark-sender"
    /// The source of receipts `waymark worker receipts` publishes from providers' callbacks.
    public static let receiptsSource = "waymark-receipts"

    public var outcome: Outcome
    public var messageID: String
    public var customerID: String
    public var channel: Channel
    public var journey: String
    public var step: String
    public var template: String
    public var at: Timestamp
    public var detail: String?
    /// `waymark-sender` or `waymark-receipts`.
    public var source: String = DeliveryReceipt.source
    /// The message's experiment arm (empty: none).
    public var arm: String = ""

    public init(outcome: Outcome, messageID: String, customerID: String, channel: Channel, journey: String, step: String,
                template: String, at: Timestamp, detail: String? = nil, source: String = DeliveryReceipt.source, arm: String = "") {
        self.outcome = outcome; self.messageID = messageID; self.customerID = customerID; self.channel = channel
        self.journey = journey; self.step = step; self.template = template; self.at = at; self.detail = detail
        self.source = source; self.arm = arm
    }

    /// The receipt for `message`.
    public init(_ outcome: Outcome, for message: OutboundMessage, at: Timestamp, detail: String? = nil) {
        self.init(outcome: outcome, messageID: message.messageID.description, customerID: message.customerID,
                  channel: message.channel, journey: message.journey, step: message.step, template: message.template,
                  at: at, detail: detail, arm: message.arm)
    }

    /// Deterministic per message, outcome and channel, so a receipt re-published after a crash is
    /// skipped by the journey's event-id idempotency.
    public var eventID: String { "r-\(messageID)-\(outcome.rawValue)-\(channel.rawValue)" }

    /// The receipt as the touchpoint journeys see.
    public var touchpoint: Touchpoint {
        var attributes: [String: AttributeValue] = [
            "message_id": .string(messageID), "channel": .string(channel.rawValue), "journey": .string(journey),
            "step": .string(step), "template": .string(template),
        ]
        if let detail { attributes["detail"] = .string(detail) }
        if !arm.isEmpty { attributes["arm"] = .string(arm) }
        return Touchpoint(eventID: eventID, customerID: customerID, type: outcome.rawValue, occurredAt: at,
                          source: source, attributes: attributes)
    }

    /// The receipt a touchpoint carries, `nil` when it is not one.
    public init?(_ touchpoint: Touchpoint) {
        guard touchpoint.source == Self.source || touchpoint.source == Self.receiptsSource, let outcome = Outcome(rawValue: touchpoint.type),
              case .string(let id)? = touchpoint.attributes["message_id"],
              case .string(let channelName)? = touchpoint.attributes["channel"], let channel = Channel(rawValue: channelName)
        else { return nil }
        func text(_ name: String) -> String? { if case .string(let s)? = touchpoint.attributes[name] { s } else { nil } }
        self.init(outcome: outcome, messageID: id, customerID: touchpoint.customerID, channel: channel,
                  journey: text("journey") ?? "", step: text("step") ?? "", template: text("template") ?? "",
                  at: touchpoint.occurredAt, detail: text("detail"), source: touchpoint.source ?? Self.source, arm: text("arm") ?? "")
    }

    public func jsonBytes() -> [UInt8] { touchpoint.jsonBytes() }
}
