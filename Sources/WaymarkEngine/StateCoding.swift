/// Binary encoding of ``CustomerState`` (one Redis value per customer).
///
/// Layout (format version 3; versions 1 (without the `hold` byte) and 2 (without arms and
/// conversion windows) are still read), all integers LEB128 varints unless noted, signed ones zigzag-encoded:
/// ```
/// "WM" 0x03                      magic + format version
/// clock                          zigzag ms since epoch
/// instances:   count, then per instance: journey, version, key, enteredAt, stage, stageEnteredAt,
///              visits(count, stage, at)*, step, wakeAt?(flag + ts), causedBy, sendSequence, context(count, name, value)*, arm
/// ended:       count, (journey, key, endedAt)*
/// recentEvents: count, (fingerprint u64 LE, at)*
/// capHistory:  count, (at, channel u8, journey, flags u8, messageID u64 LE)*
/// deferred:    count, (message, instanceKey, rule, hold u8)*
/// counters:    count, (journey, stage, kind u8, count)*
/// arms:        count, (experiment, key, arm, at)*
/// conversions: count, (journey, version, key, arm, enteredAt, closesAt, lastMessage?(flag + u64 LE), lastStep,
///              lastChannel u8 (0 none, else code + 1))*
/// ```
/// A message is `messageID u64 LE, customer, channel u8, journey, version, stage, step, template,
/// priority, transactional u8, createdAt, sendAfter, expiresAt, causedBy, locale?(flag + string),
/// variables, fallback(count, channel u8)*, arm`.
/// Strings are `count` + UTF-8 bytes. Every timestamp after `clock` is a zigzag delta from `clock`
/// (small numbers, 1–5 bytes). Attribute values are tagged (0 null, 1 false, 2 true, 3 double u64 LE,
/// 4 string, 5 array, 6 object with keys sorted by UTF-8 bytes), so equal states encode to equal bytes.
/// Decoding rejects unknown versions, truncation, trailing bytes and nesting deeper than 32.
extension CustomerState {
    /// Current binary format version.
    public static let formatVersion: UInt8 = 3

    /// Compact binary form for storage.
    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 64 + instances.count * 96 + recentEvents.count * 12 + capHistory.count * 24 + deferred.count * 192)
        w.u8(0x57); w.u8(0x4D); w.u8(Self.formatVersion)
        w.zigzag(clock.milliseconds)
        let base = clock.milliseconds
        w.varint(UInt64(instances.count))
        for i in instances {
            w.string(i.journey); w.zigzag(Int64(i.version)); w.string(i.key)
            w.time(i.enteredAt, base); w.string(i.stage); w.time(i.stageEnteredAt, base)
            w.varint(UInt64(i.stagesReached.count))
            for v in i.stagesReached { w.string(v.stage); w.time(v.at, base) }
            w.string(i.step)
            if let t = i.wakeAt { w.u8(1); w.time(t, base) } else { w.u8(0) }
            w.string(i.causedBy); w.varint(UInt64(i.sendSequence))
            w.varint(UInt64(i.context.count))
            for f in i.context { w.string(f.name); w.value(f.value, depth: 0) }
            w.string(i.arm)
        }
        w.varint(UInt64(ended.count))
        for e in ended { w.string(e.journey); w.string(e.key); w.time(e.endedAt, base) }
        w.varint(UInt64(recentEvents.count))
        for e in recentEvents { w.u64(e.fingerprint); w.time(e.at, base) }
        w.varint(UInt64(capHistory.count))
        for c in capHistory {
            w.time(c.at, base); w.u8(c.channel.code); w.string(c.journey); w.u8(c.transactional ? 1 : 0); w.u64(c.messageID.raw)
        }
        w.varint(UInt64(deferred.count))
        for d in deferred { w.message(d.message, base); w.string(d.instanceKey); w.string(d.rule); w.u8(d.hold.rawValue) }
        w.varint(UInt64(counters.count))
        for c in counters { w.string(c.journey); w.string(c.stage); w.u8(c.kind.rawValue); w.varint(UInt64(c.count)) }
        w.varint(UInt64(arms.count))
        for a in arms { w.string(a.experiment); w.string(a.key); w.string(a.arm); w.time(a.at, base) }
        w.varint(UInt64(conversions.count))
        for c in conversions {
            w.string(c.journey); w.zigzag(Int64(c.version)); w.string(c.key); w.string(c.arm)
            w.time(c.enteredAt, base); w.time(c.closesAt, base)
            if let m = c.lastMessage { w.u8(1); w.u64(m.raw) } else { w.u8(0) }
            w.string(c.lastStep); w.u8(c.lastChannel.map { $0.code &+ 1 } ?? 0)
        }
        return w.bytes
    }

    /// Decodes bytes produced by ``encoded()``. An empty input decodes to an empty state.
    public init(decoding bytes: [UInt8]) throws(StateDecodingError) {
        if bytes.isEmpty { self.init(); return }
        let result: Result<CustomerState, StateDecodingError> = bytes.withUnsafeBufferPointer { buf in
            var r = ByteReader(buf)
            do throws(StateDecodingError) { return .success(try r.state()) } catch { return .failure(error) }
        }
        self = try result.get()
    }
}

/// Why stored customer state could not be decoded.
public struct StateDecodingError: Error, Sendable, Hashable, CustomStringConvertible {
    public var reason: String
    public var offset: Int
    public init(reason: String, offset: Int) { self.reason = reason; self.offset = offset }
    public var description: String { "customer state decoding failed at byte \(offset): \(reason)" }
}

struct ByteWriter {
    var bytes: [UInt8]
    init(capacity: Int) { bytes = []; bytes.reserveCapacity(capacity) }
    @inline(__always) mutating func u8(_ v: UInt8) { bytes.append(v) }
    @inline(__always) mutating func varint(_ v: UInt64) {
        var x = v
        while x >= 0x80 { bytes.append(UInt8(truncatingIfNeeded: x) | 0x80); x >>= 7 }
        bytes.append(UInt8(x))
    }
    @inline(__always) mutating func zigzag(_ v: Int64) { varint(UInt64(bitPattern: (v << 1) ^ (v >> 63))) }
    @inline(__always) mutating func time(_ t: Timestamp, _ base: Int64) { zigzag(t.milliseconds &- base) }
    @inline(__always) mutating func u64(_ v: UInt64) {
        var x = v
        for _ in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: x)); x >>= 8 }
    }
    @inline(__always) mutating func string(_ s: String) {
        var s = s
        s.withUTF8 { u in varint(UInt64(u.count)); bytes.append(contentsOf: u) }
    }
    mutating func value(_ v: AttributeValue, depth: Int) {
        switch v {
        case .null: u8(0)
        case .bool(let b): u8(b ? 2 : 1)
        case .number(let d): u8(3); u64(d.bitPattern)
        case .string(let s): u8(4); string(s)
        case .array(let a): u8(5); varint(UInt64(a.count)); for e in a { value(e, depth: depth + 1) }
        case .object(let o): u8(6); object(o, depth: depth + 1)
        }
    }
    mutating func object(_ o: [String: AttributeValue], depth: Int) {
        varint(UInt64(o.count))
        for k in o.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) { string(k); value(o[k]!, depth: depth) }
    }
    mutating func message(_ m: OutboundMessage, _ base: Int64) {
        u64(m.messageID.raw); string(m.customerID); u8(m.channel.code); string(m.journey); zigzag(Int64(m.journeyVersion))
        string(m.stage); string(m.step); string(m.template); zigzag(Int64(m.priority)); u8(m.transactional ? 1 : 0)
        time(m.createdAt, base); time(m.sendAfter, base); time(m.expiresAt, base); string(m.causedBy)
        if let l = m.locale { u8(1); string(l) } else { u8(0) }
        object(m.variables, depth: 0)
        varint(UInt64(m.fallbackChannels.count)); for c in m.fallbackChannels { u8(c.code) }
        string(m.arm)
    }
}

struct ByteReader {
    let buf: UnsafeBufferPointer<UInt8>
    var pos = 0
    var base: Int64 = 0
    /// Format version being read.
    var version: UInt8 = CustomerState.formatVersion
    init(_ buf: UnsafeBufferPointer<UInt8>) { self.buf = buf }

    func fail(_ reason: String) -> StateDecodingError { StateDecodingError(reason: reason, offset: pos) }

    @inline(__always) mutating func u8() throws(StateDecodingError) -> UInt8 {
        guard pos < buf.count else { throw fail("truncated") }
        defer { pos += 1 }
        return buf[pos]
    }
    @inline(__always) mutating func varint() throws(StateDecodingError) -> UInt64 {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard pos < buf.count else { throw fail("truncated varint") }
            let b = buf[pos]; pos += 1
            if shift == 63 && b > 1 { throw fail("varint overflow") }
            v |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return v }
            shift += 7
            if shift > 63 { throw fail("varint overflow") }
        }
    }
    @inline(__always) mutating func zigzag() throws(StateDecodingError) -> Int64 {
        let u = try varint()
        return Int64(bitPattern: u >> 1) ^ -Int64(bitPattern: u & 1)
    }
    @inline(__always) mutating func count(_ what: String) throws(StateDecodingError) -> Int {
        let n = try varint()
        guard n <= UInt64(buf.count - pos) else { throw fail("\(what) count \(n) exceeds remaining bytes") }
        return Int(n)
    }
    @inline(__always) mutating func int() throws(StateDecodingError) -> Int {
        let v = try zigzag()
        guard let i = Int(exactly: v) else { throw fail("integer out of range") }
        return i
    }
    @inline(__always) mutating func time() throws(StateDecodingError) -> Timestamp {
        Timestamp(milliseconds: base &+ (try zigzag()))
    }
    @inline(__always) mutating func u64() throws(StateDecodingError) -> UInt64 {
        guard buf.count - pos >= 8 else { throw fail("truncated u64") }
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(buf[pos + i]) << (8 * UInt64(i)) }
        pos += 8
        return v
    }
    @inline(__always) mutating func string() throws(StateDecodingError) -> String {
        let n = try count("string")
        let s = String(decoding: UnsafeBufferPointer(rebasing: buf[pos..<pos + n]), as: UTF8.self)
        pos += n
        return s
    }
    mutating func channel() throws(StateDecodingError) -> Channel {
        let c = try u8()
        guard let ch = Channel(code: c) else { throw fail("unknown channel code \(c)") }
        return ch
    }
    mutating func value(depth: Int) throws(StateDecodingError) -> AttributeValue {
        guard depth < 32 else { throw fail("attribute nesting deeper than 32") }
        switch try u8() {
        case 0: return .null
        case 1: return .bool(false)
        case 2: return .bool(true)
        case 3: return .number(Double(bitPattern: try u64()))
        case 4: return .string(try string())
        case 5:
            let n = try count("array")
            var a: [AttributeValue] = []
            a.reserveCapacity(n)
            for _ in 0..<n { a.append(try value(depth: depth + 1)) }
            return .array(a)
        case 6: return .object(try object(depth: depth + 1))
        case let t: throw fail("unknown value tag \(t)")
        }
    }
    mutating func object(depth: Int) throws(StateDecodingError) -> [String: AttributeValue] {
        let n = try count("object")
        var o: [String: AttributeValue] = [:]
        o.reserveCapacity(n)
        for _ in 0..<n { let k = try string(); o[k] = try value(depth: depth) }
        return o
    }
    mutating func message() throws(StateDecodingError) -> OutboundMessage {
        let id = MessageID(raw: try u64())
        let customer = try string(); let ch = try channel(); let journey = try string(); let version = try int()
        let stage = try string(); let step = try string(); let template = try string(); let priority = try int()
        let transactional = try u8() != 0
        let created = try time(); let after = try time(); let expires = try time(); let cause = try string()
        let locale: String? = try u8() != 0 ? try string() : nil
        let vars = try object(depth: 0)
        let nf = try count("fallback")
        var fallback: [Channel] = []
        for _ in 0..<nf { fallback.append(try channel()) }
        let arm = self.version >= 3 ? try string() : ""
        return OutboundMessage(messageID: id, customerID: customer, channel: ch, journey: journey, journeyVersion: version,
                               stage: stage, step: step, template: template, priority: priority, transactional: transactional,
                               createdAt: created, sendAfter: after, expiresAt: expires, causedBy: cause, locale: locale,
                               variables: vars, fallbackChannels: fallback, arm: arm)
    }

    mutating func state() throws(StateDecodingError) -> CustomerState {
        guard buf.count >= 3, buf[0] == 0x57, buf[1] == 0x4D else { throw fail("not a Waymark customer state (bad magic)") }
        pos = 2
        let version = try u8()
        guard version >= 1 && version <= CustomerState.formatVersion else { throw fail("unsupported state format version \(version)") }
        self.version = version
        var s = CustomerState()
        s.clock = Timestamp(milliseconds: try zigzag())
        base = s.clock.milliseconds
        let ni = try count("instances")
        s.instances.reserveCapacity(ni)
        for _ in 0..<ni {
            let journey = try string(); let version = try int(); let key = try string()
            let entered = try time(); let stage = try string(); let stageAt = try time()
            let nv = try count("visits")
            var visits: [StageVisit] = []
            visits.reserveCapacity(nv)
            for _ in 0..<nv { visits.append(StageVisit(stage: try string(), at: try time())) }
            let step = try string()
            let wake: Timestamp? = try u8() != 0 ? try time() : nil
            let cause = try string()
            let seqRaw = try varint()
            guard seqRaw <= UInt64(Int.max) else { throw fail("sequence out of range") }
            let nc = try count("context")
            var ctx: [ContextField] = []
            ctx.reserveCapacity(nc)
            for _ in 0..<nc { ctx.append(ContextField(name: try string(), value: try value(depth: 0))) }
            let arm = self.version >= 3 ? try string() : ""
            s.instances.append(JourneyInstance(journey: journey, version: version, key: key, enteredAt: entered, stage: stage,
                                               stageEnteredAt: stageAt, stagesReached: visits, step: step, wakeAt: wake,
                                               causedBy: cause, sendSequence: Int(seqRaw), context: ctx, arm: arm))
        }
        let ne = try count("ended")
        for _ in 0..<ne { s.ended.append(EndedInstance(journey: try string(), key: try string(), endedAt: try time())) }
        let nr = try count("recent events")
        s.recentEvents.reserveCapacity(nr)
        for _ in 0..<nr { s.recentEvents.append(ProcessedEvent(fingerprint: try u64(), at: try time())) }
        let nh = try count("cap history")
        s.capHistory.reserveCapacity(nh)
        for _ in 0..<nh {
            let at = try time(); let ch = try channel(); let journey = try string(); let flags = try u8()
            s.capHistory.append(CapEntry(at: at, channel: ch, journey: journey, transactional: flags & 1 != 0,
                                         messageID: MessageID(raw: try u64())))
        }
        let nd = try count("deferred")
        for _ in 0..<nd {
            let m = try message(), key = try string(), rule = try string()
            var hold = DeferredMessage.Hold.quietHours
            if version >= 2 {
                let raw = try u8()
                guard let h = DeferredMessage.Hold(rawValue: raw) else { throw fail("unknown hold kind \(raw)") }
                hold = h
            }
            s.deferred.append(DeferredMessage(message: m, instanceKey: key, rule: rule, hold: hold))
        }
        let nk = try count("counters")
        for _ in 0..<nk {
            let journey = try string(); let stage = try string(); let k = try u8()
            guard let kind = FunnelCounter.Kind(rawValue: k) else { throw fail("unknown counter kind \(k)") }
            let c = try varint()
            guard c <= UInt64(UInt32.max) else { throw fail("counter out of range") }
            s.counters.append(FunnelCounter(journey: journey, stage: stage, kind: kind, count: UInt32(c)))
        }
        if version >= 3 {
            let na = try count("arms")
            for _ in 0..<na {
                s.arms.append(ArmRecord(experiment: try string(), key: try string(), arm: try string(), at: try time()))
            }
            let nw = try count("conversions")
            for _ in 0..<nw {
                let journey = try string(); let v = try int(); let key = try string(); let arm = try string()
                let entered = try time(); let closes = try time()
                let last: MessageID? = try u8() != 0 ? MessageID(raw: try u64()) : nil
                let step = try string()
                let code = try u8()
                var channel: Channel? = nil
                if code != 0 {
                    guard let c = Channel(code: code &- 1) else { throw fail("unknown channel code \(code &- 1)") }
                    channel = c
                }
                s.conversions.append(OpenConversion(journey: journey, version: v, key: key, arm: arm, enteredAt: entered,
                                                    closesAt: closes, lastMessage: last, lastStep: step, lastChannel: channel))
            }
        }
        guard pos == buf.count else { throw fail("\(buf.count - pos) trailing bytes") }
        return s
    }
}
