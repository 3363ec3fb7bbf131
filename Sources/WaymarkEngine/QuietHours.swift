import Foundation
import Synchronization

/// A thread-safe cache of `TimeZone` objects by IANA identifier.
///
/// `TimeZone(identifier:)` parses tz data and is far too slow to call per message. Unknown
/// identifiers are cached as unknown. The cache is bounded (profiles are untrusted input): past
/// `limit` entries new identifiers are resolved without being cached.
public final class ZoneCache: Sendable {
    /// Process-wide cache.
    public static let shared = ZoneCache()
    private let zones = Mutex<[String: TimeZone?]>([:])
    private let limit: Int

    public init(limit: Int = 4096) { self.limit = limit }

    /// Whether Foundation knows this identifier.
    public func isKnown(_ identifier: String) -> Bool { zone(identifier) != nil }

    func zone(_ identifier: String) -> TimeZone? {
        if let hit = zones.withLock({ $0[identifier] }) { return hit }
        let z = TimeZone(identifier: identifier)
        zones.withLock { if $0.count < limit { $0[identifier] = z } }
        return z
    }
}

/// The outcome of a quiet-hours check.
public enum QuietHoursVerdict: Sendable, Hashable {
    /// Not inside quiet hours (or exempt, or no window applies).
    case allowed
    /// Inside the window named `rule`; it ends (local clock leaves the window) at `endsAt`.
    case quiet(rule: String, endsAt: Timestamp)
}

/// Pure quiet-hours evaluation in the recipient's local time (IANA zones, DST-correct).
///
/// The engine uses it when deciding; sender workers must call ``check(channel:transactional:profile:at:)``
/// again right before calling the provider, because quiet hours bind at that moment.
///
/// An instant is quiet when the recipient's local wall-clock minute lies in the window. On a
/// spring-forward night a window end that does not exist locally (e.g. 02:30 when clocks jump
/// 02:00 → 03:00) ends at the jump; on a fall-back night the first occurrence ends it.
public struct QuietHours: Sendable {
    public let rules: QuietHoursRules
    /// Identifier used for missing or unknown profile time zones.
    public let defaultTimezone: String
    let zones: ZoneCache
    let fallbackZone: TimeZone

    public init(rules: QuietHoursRules, defaultTimezone: String, zones: ZoneCache = .shared) {
        self.rules = rules
        self.defaultTimezone = defaultTimezone
        self.zones = zones
        self.fallbackZone = zones.zone(defaultTimezone) ?? TimeZone(identifier: "UTC")!
    }

    /// The window that applies to a message, or `nil` if none does (exempt or no window).
    public func window(for channel: Channel, transactional: Bool) -> QuietWindow? {
        if transactional && rules.exemptTransactional { return nil }
        let w = rules.channelWindows[channel] ?? rules.defaultWindow
        guard let w, !w.isEmpty else { return nil }
        return w
    }

    func timeZone(for profile: CustomerProfile?) -> TimeZone {
        if let id = profile?.timezone, let z = zones.zone(id) { return z }
        return fallbackZone
    }

    /// The zone identifier actually used for a profile (its own if known, else the default).
    public func effectiveTimezone(for profile: CustomerProfile?) -> String { timeZone(for: profile).identifier }

    /// Checks whether a message may be handed to a provider at `instant`.
    public func check(channel: Channel, transactional: Bool, profile: CustomerProfile?, at instant: Timestamp) -> QuietHoursVerdict {
        guard let w = window(for: channel, transactional: transactional) else { return .allowed }
        let tz = timeZone(for: profile)
        guard Self.isQuiet(w, tz, instant) else { return .allowed }
        return .quiet(rule: w.rule, endsAt: Self.windowEnd(w, tz, instant))
    }

    /// Release time for a message deferred at `instant`: the end of the window plus a stable offset in
    /// `[0, spread)` derived from the message id, re-checked so it never lands inside a window.
    /// `nil` if the message is not quiet at `instant`.
    public func releaseTime(messageID: MessageID, channel: Channel, transactional: Bool,
                            profile: CustomerProfile?, at instant: Timestamp) -> (release: Timestamp, rule: String)? {
        guard let w = window(for: channel, transactional: transactional) else { return nil }
        let tz = timeZone(for: profile)
        guard Self.isQuiet(w, tz, instant) else { return nil }
        let spread = rules.spread.milliseconds
        let offset = spread > 0 ? Int64(messageID.raw % UInt64(spread)) : 0
        var end = Self.windowEnd(w, tz, instant)
        var release = end.adding(TimeSpan(milliseconds: offset))
        var tries = 0
        while Self.isQuiet(w, tz, release) && tries < 4 {
            // Spread ran into the next window (tiny awake period or a DST fold): release at the end.
            end = Self.windowEnd(w, tz, release)
            release = end
            tries += 1
        }
        return (release, w.rule)
    }

    // MARK: - Local time math

    static let dayMs: Int64 = 86_400_000

    @inline(__always) static func offsetMs(_ tz: TimeZone, _ t: Int64) -> Int64 {
        Int64(tz.secondsFromGMT(for: Date(timeIntervalSince1970: Double(t) / 1000))) * 1000
    }

    /// Local wall-clock milliseconds (as if UTC) for an instant.
    static func localMs(_ tz: TimeZone, _ t: Timestamp) -> Int64 { t.milliseconds + offsetMs(tz, t.milliseconds) }

    static func isQuiet(_ w: QuietWindow, _ tz: TimeZone, _ t: Timestamp) -> Bool {
        let local = localMs(tz, t)
        var msOfDay = local % dayMs
        if msOfDay < 0 { msOfDay += dayMs }
        return w.contains(minuteOfDay: Int(msOfDay / 60_000))
    }

    /// First instant at or after `t` (which is inside `w`) where the local clock reaches the window end.
    static func windowEnd(_ w: QuietWindow, _ tz: TimeZone, _ t: Timestamp) -> Timestamp {
        let local = localMs(tz, t)
        var day = local / dayMs
        if local < 0 && local % dayMs != 0 { day -= 1 }
        let minute = Int((local - day * dayMs) / 60_000)
        if w.startMinute > w.endMinute && minute >= w.startMinute { day += 1 }
        let localEnd = day * dayMs + Int64(w.endMinute) * 60_000
        // On a fall-back night the end's first occurrence may already be past (the clock fell back
        // into the window): then it ends at the second occurrence, or at the next day's end.
        for end in [localEnd, localEnd + dayMs] {
            if let u = utc(forLocal: end, tz, after: t.milliseconds) { return Timestamp(milliseconds: u) }
        }
        return Timestamp(milliseconds: t.milliseconds + 60_000)  // unreachable with real zones; never at or before `t`
    }

    /// The earliest UTC instant after `t` whose local reading is `local` (or, where clocks jump over
    /// it, the jump), or `nil` if there is none after `t`.
    static func utc(forLocal local: Int64, _ tz: TimeZone, after t: Int64) -> Int64? {
        let early = offsetMs(tz, local - 26 * 3_600_000)
        let late = offsetMs(tz, local + 26 * 3_600_000)
        var best: Int64? = nil
        for o in [early, late] {
            let u = local - o
            if offsetMs(tz, u) == o && u > t { best = best.map { min($0, u) } ?? u }
        }
        if let best { return best }
        let u = utc(forLocal: local, tz)
        return u > t ? u : nil
    }

    /// The earliest UTC instant whose local reading is `>= localMs` and equals it if it exists.
    static func utc(forLocal local: Int64, _ tz: TimeZone) -> Int64 {
        let early = offsetMs(tz, local - 26 * 3_600_000)
        let late = offsetMs(tz, local + 26 * 3_600_000)
        var best: Int64? = nil
        for o in [early, late] {
            let u = local - o
            if offsetMs(tz, u) == o { best = best.map { min($0, u) } ?? u }
        }
        if let best { return best }
        // Local time does not exist (clocks jumped over it): find the jump by bisection.
        var lo = local - max(early, late)  // reads before `local`
        var hi = local - min(early, late)  // reads after `local`
        if lo > hi { swap(&lo, &hi) }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2
            if mid + offsetMs(tz, mid) >= local { hi = mid } else { lo = mid }
        }
        return hi
    }
}
