import Foundation
import WaymarkEngine
import WaymarkWire

/// A deterministic pseudo-random generator (SplitMix64): the same seed gives the same day.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// One record of the sample stream: a touchpoint or a customer profile, as producers send them.
public struct SampleRecord: Sendable {
    public enum Kind: Sendable { case touchpoint, profile }
    public var kind: Kind
    /// The Kafka key (`customer_id`).
    public var key: String
    /// The JSON document, exactly as a producer would send it.
    public var value: [UInt8]
    /// Event time in milliseconds since the epoch (profiles: when they were published).
    public var timestamp: Int64
    /// The touchpoint type, or "profile".
    public var type: String
}

/// Generates a realistic day of a retailer: customers with profiles in several time zones, web
/// sessions with product views and carts (some abandoned, some bought), store purchases, support
/// cases, loyalty activity and coupon use. A share of customers has no profile (unknown customers).
///
/// Everything is derived from `seed`, so runs, tests and benchmarks are reproducible.
public struct RetailDay: Sendable {
    public var seed: UInt64
    public var customers: Int
    /// Start of the generated day (UTC midnight), in milliseconds since the epoch.
    public var dayStart: Int64
    /// Share of customers that never get a profile.
    public var unknownCustomerShare: Double = 0.04
    /// Prefix of event, cart, order and case ids, so several generated days can form one history.
    public var idPrefix = ""
    /// Index of the first generated customer, so another day can bring new customers (`c-…` ids after these).
    public var firstCustomer = 0

    public static let timezones = [
        "Europe/Oslo", "Europe/London", "Europe/Berlin", "America/New_York", "America/Los_Angeles",
        "America/Sao_Paulo", "Asia/Tokyo", "Asia/Kolkata", "Australia/Sydney",
    ]
    static let locales = ["nb-NO", "en-GB", "de-DE", "en-US", "en-US", "pt-BR", "ja-JP", "en-IN", "en-AU"]
    static let personas = ["bargain_hunter", "loyal_regular", "window_shopper", "gift_buyer", "new_visitor"]
    static let tiers = ["none", "silver", "gold", "platinum"]
    static let categories = ["shoes", "jackets", "electronics", "home", "beauty", "toys"]

    public init(seed: UInt64 = 42, customers: Int = 3_000, dayStart: Int64 = 1_795_651_200_000 /* 2026-11-26T00:00Z */) {
        self.seed = seed
        self.customers = customers
        self.dayStart = dayStart
    }

    /// 00:00 UTC of yesterday: the day the live runs (crash test, benchmarks) generate, so processing
    /// on the wall clock sees recent history (relevance counts from the events' time; an older day
    /// would mostly have expired).
    public static var startOfYesterdayUTC: Int64 {
        let dayMs: Int64 = 86_400_000
        return Int64(Date().timeIntervalSince1970 * 1000) / dayMs * dayMs - dayMs
    }

    public static func customerID(_ index: Int) -> String { "c-\(String(index + 1).leftPadded(to: 6))" }

    /// Profiles first (as a compacted `customers` topic would hold them), then the day's touchpoints in time order.
    public func generate() -> [SampleRecord] {
        var rng = SeededRandom(seed: seed)
        var profiles: [SampleRecord] = []
        var events: [SampleRecord] = []
        var eventSeq = 0
        for index in firstCustomer..<(firstCustomer + customers) {
            let id = Self.customerID(index)
            let zoneIndex = Int(rng.next() % UInt64(Self.timezones.count))
            let zone = TimeZone(identifier: Self.timezones[zoneIndex])!
            if Double(rng.next() % 10_000) / 10_000 >= unknownCustomerShare {
                profiles.append(profile(id: id, index: index, zone: Self.timezones[zoneIndex],
                                        locale: Self.locales[zoneIndex], rng: &rng))
            }
            let persona = Self.personas[Int(rng.next() % UInt64(Self.personas.count))]
            var emitter = Emitter(customer: id, zone: zone, rng: rng, seq: eventSeq, dayStart: dayStart, idPrefix: idPrefix)
            emitter.day(persona: persona)
            rng = emitter.rng
            eventSeq = emitter.seq
            events += emitter.records
        }
        events.sort { ($0.timestamp, $0.key) < ($1.timestamp, $1.key) }
        return profiles + events
    }

    private func profile(id: String, index: Int, zone: String, locale: String, rng: inout SeededRandom) -> SampleRecord {
        var w = JSONWriter()
        w.beginObject()
        w.field("customer_id", id)
        w.field("timezone", zone)
        w.field("locale", locale)
        let phone = "+4790\(String(index).leftPadded(to: 6))"
        let consentSMS = rng.next() % 10 < 8, consentEmail = rng.next() % 10 < 9, consentWA = rng.next() % 10 < 5
        let hasPush = rng.next() % 10 < 4
        w.key("contacts"); w.beginObject()
        w.field("sms", phone); w.field("email", "\(id)@example.com"); w.field("whatsapp", phone)
        if hasPush { w.field("push", "device-\(id)") }
        w.endObject()
        w.key("consent"); w.beginObject()
        w.field("sms", consentSMS); w.field("email", consentEmail); w.field("whatsapp", consentWA)
        if hasPush { w.field("push", true) }
        w.endObject()
        var preferred = ["whatsapp", "sms", "email"]
        if rng.next() % 3 == 0 { preferred = ["email", "sms"] }
        if hasPush { preferred.insert("push", at: 0) }
        w.key("preferred_channels"); w.beginArray(); preferred.forEach { w.string($0) }; w.endArray()
        w.key("attributes"); w.beginObject()
        w.field("persona", Self.personas[Int(rng.next() % UInt64(Self.personas.count))])
        w.field("tier", Self.tiers[Int(rng.next() % UInt64(Self.tiers.count))])
        w.endObject()
        w.endObject()
        return SampleRecord(kind: .profile, key: id, value: w.bytes, timestamp: dayStart - 3_600_000, type: "profile")
    }
}

/// Emits one customer's touchpoints for the day.
private struct Emitter {
    let customer: String
    let zone: TimeZone
    var rng: SeededRandom
    var seq: Int
    let dayStart: Int64
    var records: [SampleRecord] = []
    var cartSeq = 0

    let idPrefix: String

    init(customer: String, zone: TimeZone, rng: SeededRandom, seq: Int, dayStart: Int64, idPrefix: String) {
        self.idPrefix = idPrefix
        self.customer = customer
        self.zone = zone
        self.rng = rng
        self.seq = seq
        self.dayStart = dayStart
    }

    mutating func chance(_ percent: UInt64) -> Bool { rng.next() % 100 < percent }
    mutating func pick<T>(_ items: [T]) -> T { items[Int(rng.next() % UInt64(items.count))] }
    mutating func minutes(_ range: ClosedRange<Int>) -> Int64 {
        Int64(range.lowerBound + Int(rng.next() % UInt64(range.count))) * 60_000
    }

    mutating func day(persona: String) {
        let sessions = persona == "window_shopper" ? 3 : persona == "new_visitor" ? 1 : Int(rng.next() % 3) + 1
        for _ in 0..<sessions {
            // Local daytime is busier: pick a local hour weighted towards 8-23.
            let localHour = chance(85) ? 8 + Int(rng.next() % 15) : Int(rng.next() % 24)
            let offset = Int64(zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(dayStart) / 1000))) * 1000
            var t = dayStart + Int64(localHour) * 3_600_000 - offset + minutes(0...59)
            t = min(max(t, dayStart), dayStart + 86_399_000)
            session(at: &t, persona: persona)
        }
        if chance(6) {
            var t = dayStart + minutes(420...1200)
            let caseID = "\(idPrefix)s-\(customer.dropFirst(2))-\(seq)"
            emit("support_case_opened", at: t, source: "crm", attrs: [("case_id", .s(caseID)), ("topic", .s(pick(["delivery", "refund", "sizing"])))])
            if chance(70) {
                t += minutes(30...600)
                emit("support_case_resolved", at: t, source: "crm", attrs: [("case_id", .s(caseID))])
            }
        }
        if chance(8) {
            let t = dayStart + minutes(540...1260)
            let cents = 1_500 + Int(rng.next() % 20_000)
            emit("pos_purchase", at: t, source: "pos", attrs: [("store_id", .s("st-\(rng.next() % 40)")), ("value", .money(cents)), ("currency", .s("EUR"))])
            emit("loyalty_points_earned", at: t + 1_000, source: "loyalty", attrs: [("points", .i(cents / 100))])
        }
        if chance(3) {
            emit("campaign_received", at: dayStart + minutes(360...720), source: "esp", attrs: [("campaign", .s("black-friday"))])
        }
    }

    mutating func session(at t: inout Int64, persona: String) {
        emit("page_view", at: t, source: "web", attrs: [("path", .s("/"))])
        let views = 1 + Int(rng.next() % 4)
        var viewed: [String] = []
        for _ in 0..<views {
            t += minutes(0...3) + 5_000
            let product = "p-\(rng.next() % 500)"
            viewed.append(product)
            emit("product_view", at: t, source: "web", attrs: [("product_id", .s(product)), ("category", .s(pick(RetailDay.categories)))])
        }
        let addsToCart = persona == "window_shopper" ? chance(15) : chance(45)
        guard addsToCart else { return }
        cartSeq += 1
        let cart = "\(idPrefix)k-\(customer.dropFirst(2))-\(cartSeq)"
        let cents = 1_990 + Int(rng.next() % 25_000)
        t += minutes(1...5)
        emit("cart_add", at: t, source: "web", attrs: [("cart_id", .s(cart)), ("product_id", .s(viewed.last!)), ("value", .money(cents)), ("currency", .s("EUR"))])
        if chance(45) {
            t += minutes(20...40)
            emit("cart_abandoned", at: t, source: "web", attrs: [("cart_id", .s(cart)), ("value", .money(cents)), ("currency", .s("EUR"))])
            if chance(30) {  // comes back later and buys
                t += minutes(60...600)
                emit("checkout_started", at: t, source: "web", attrs: [("cart_id", .s(cart))])
                purchase(at: &t, cart: cart, cents: cents)
            }
        } else {
            t += minutes(2...10)
            emit("checkout_started", at: t, source: "web", attrs: [("cart_id", .s(cart))])
            if chance(85) { purchase(at: &t, cart: cart, cents: cents) }
        }
    }

    mutating func purchase(at t: inout Int64, cart: String, cents: Int) {
        t += minutes(1...4)
        let order = "\(idPrefix)o-\(customer.dropFirst(2))-\(cartSeq)"
        if chance(15) { emit("coupon_redeemed", at: t, source: "web", attrs: [("cart_id", .s(cart)), ("coupon", .s("WELCOME10"))]) }
        emit("purchase", at: t + 500, source: "web", attrs: [("cart_id", .s(cart)), ("order_id", .s(order)), ("value", .money(cents)), ("currency", .s("EUR"))])
        emit("loyalty_points_earned", at: t + 1_500, source: "loyalty", attrs: [("points", .i(cents / 100)), ("order_id", .s(order))])
    }

    enum Value { case s(String), i(Int), money(Int) }

    mutating func emit(_ type: String, at t: Int64, source: String, attrs: [(String, Value)]) {
        let clamped = min(t, dayStart + 86_399_999)
        seq += 1
        var w = JSONWriter()
        w.beginObject()
        w.field("event_id", "\(idPrefix)e-\(String(seq, radix: 16).leftPadded(to: 8))")
        w.field("customer_id", customer)
        w.field("type", type)
        w.field("occurred_at", rfc3339(clamped))
        w.field("source", source)
        w.key("attributes"); w.beginObject()
        for (name, value) in attrs {
            w.key(name)
            switch value {
            case .s(let text): w.string(text)
            case .i(let number): w.int(number)
            case .money(let cents): w.money(cents: cents)
            }
        }
        w.endObject()
        w.endObject()
        records.append(SampleRecord(kind: .touchpoint, key: customer, value: w.bytes, timestamp: clamped, type: type))
    }

    /// RFC 3339 in the customer's local offset (as a shop's web tier would send it), millisecond precision.
    func rfc3339(_ millis: Int64) -> String {
        let offset = zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(millis) / 1000))
        let local = millis + Int64(offset) * 1000
        let days = floorDiv(local, 86_400_000)
        let msOfDay = Int(local - days * 86_400_000)
        let civil = CivilDate.civil(fromDays: days)
        let (y, m, d) = (Int(civil.year), Int(civil.month), Int(civil.day))
        let hh = msOfDay / 3_600_000, mm = msOfDay / 60_000 % 60, ss = msOfDay / 1000 % 60, ms = msOfDay % 1000
        let sign = offset < 0 ? "-" : "+"
        let oh = abs(offset) / 3600, om = abs(offset) / 60 % 60
        func p(_ v: Int, _ n: Int = 2) -> String { String(v).leftPadded(to: n) }
        let fraction = ms == 0 ? "" : ".\(p(ms, 3))"
        return "\(p(y, 4))-\(p(m))-\(p(d))T\(p(hh)):\(p(mm)):\(p(ss))\(fraction)\(sign)\(p(oh)):\(p(om))"
    }
}

func floorDiv(_ a: Int64, _ b: Int64) -> Int64 { a >= 0 ? a / b : -((-a + b - 1) / b) }

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
