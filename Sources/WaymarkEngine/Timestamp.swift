/// An instant in time as milliseconds since the Unix epoch (UTC).
///
/// The engine never reads a clock: every `Timestamp` comes from an input (an event's
/// `occurred_at`, the worker's wall clock, a stored timer). Integer milliseconds keep
/// arithmetic exact and comparisons cheap on the hot path.
public struct Timestamp: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    public var milliseconds: Int64

    /// Creates a timestamp from epoch milliseconds.
    @inlinable public init(milliseconds: Int64) { self.milliseconds = milliseconds }

    /// Creates a timestamp from epoch seconds.
    @inlinable public init(seconds: Int64) { self.milliseconds = seconds &* 1000 }

    @inlinable public static func < (a: Timestamp, b: Timestamp) -> Bool { a.milliseconds < b.milliseconds }

    /// This instant moved by `span` (which may be negative).
    @inlinable public func adding(_ span: TimeSpan) -> Timestamp {
        Timestamp(milliseconds: milliseconds &+ span.milliseconds)
    }

    /// The span from `other` to `self` (`self - other`).
    @inlinable public func since(_ other: Timestamp) -> TimeSpan {
        TimeSpan(milliseconds: milliseconds &- other.milliseconds)
    }

    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-20T17:04:05.000Z`.
    public var description: String { String(decoding: rfc3339Bytes(), as: UTF8.self) }

    /// RFC 3339 in UTC with millisecond precision as UTF-8 bytes (always 24 bytes for years 0...9999).
    public func rfc3339Bytes() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(24)
        appendRFC3339(to: &out)
        return out
    }

    /// Appends the RFC 3339 UTC form (`YYYY-MM-DDTHH:MM:SS.mmmZ`) to `out`.
    public func appendRFC3339(to out: inout [UInt8]) {
        var ms = milliseconds
        var days = ms / 86_400_000
        ms -= days * 86_400_000
        if ms < 0 { ms += 86_400_000; days -= 1 }
        let (y, m, d) = CivilDate.civil(fromDays: days)
        let secOfDay = ms / 1000
        let milli = ms % 1000
        @inline(__always) func two(_ v: Int64) { out.append(UInt8(48 + v / 10)); out.append(UInt8(48 + v % 10)) }
        let yy = max(0, min(9999, y))
        out.append(UInt8(48 + yy / 1000)); out.append(UInt8(48 + (yy / 100) % 10))
        out.append(UInt8(48 + (yy / 10) % 10)); out.append(UInt8(48 + yy % 10))
        out.append(UInt8(ascii: "-")); two(m); out.append(UInt8(ascii: "-")); two(d)
        out.append(UInt8(ascii: "T")); two(secOfDay / 3600); out.append(UInt8(ascii: ":"))
        two((secOfDay / 60) % 60); out.append(UInt8(ascii: ":")); two(secOfDay % 60)
        out.append(UInt8(ascii: "."))
        out.append(UInt8(48 + milli / 100)); out.append(UInt8(48 + (milli / 10) % 10)); out.append(UInt8(48 + milli % 10))
        out.append(UInt8(ascii: "Z"))
    }
}

/// A signed length of time in milliseconds (named to avoid clashing with `Swift.Duration`).
public struct TimeSpan: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Length in milliseconds.
    public var milliseconds: Int64
    @inlinable public init(milliseconds: Int64) { self.milliseconds = milliseconds }
    @inlinable public static func < (a: TimeSpan, b: TimeSpan) -> Bool { a.milliseconds < b.milliseconds }
    /// Zero length.
    public static let zero = TimeSpan(milliseconds: 0)
    /// `n` seconds.
    @inlinable public static func seconds(_ n: Int64) -> TimeSpan { TimeSpan(milliseconds: n * 1000) }
    /// `n` minutes.
    @inlinable public static func minutes(_ n: Int64) -> TimeSpan { TimeSpan(milliseconds: n * 60_000) }
    /// `n` hours.
    @inlinable public static func hours(_ n: Int64) -> TimeSpan { TimeSpan(milliseconds: n * 3_600_000) }
    /// `n` days of exactly 24 hours (not calendar days).
    @inlinable public static func days(_ n: Int64) -> TimeSpan { TimeSpan(milliseconds: n * 86_400_000) }

    /// Parses durations such as `90s`, `15m`, `24h`, `7d`, `1h30m`, `500ms`, `2w`.
    ///
    /// Units: `ms`, `s`, `m`, `h`, `d` (24 h), `w` (7 d). Returns `nil` for anything else,
    /// including an empty string and negative numbers.
    public static func parse(_ text: String) -> TimeSpan? {
        var total: Int64 = 0
        var sawAny = false
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            var n: Int64 = 0
            var digits = 0
            while let c = bytes.first, c >= 48, c <= 57 {
                n = n &* 10 &+ Int64(c - 48); digits += 1; bytes = bytes.dropFirst()
                if digits > 12 { return nil }
            }
            if digits == 0 { return nil }
            let unit: Int64
            if bytes.starts(with: [109, 115]) { unit = 1; bytes = bytes.dropFirst(2) }  // ms
            else if let c = bytes.first {
                switch c {
                case UInt8(ascii: "s"): unit = 1000
                case UInt8(ascii: "m"): unit = 60_000
                case UInt8(ascii: "h"): unit = 3_600_000
                case UInt8(ascii: "d"): unit = 86_400_000
                case UInt8(ascii: "w"): unit = 7 * 86_400_000
                default: return nil
                }
                bytes = bytes.dropFirst()
            } else { return nil }
            total += n * unit
            sawAny = true
        }
        return sawAny ? TimeSpan(milliseconds: total) : nil
    }

    /// Compact form, e.g. `1d2h`, `30m`, `0s`.
    public var description: String {
        if milliseconds == 0 { return "0s" }
        var rest = milliseconds < 0 ? -milliseconds : milliseconds
        var s = milliseconds < 0 ? "-" : ""
        for (unit, name) in [(Int64(86_400_000), "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s"), (1, "ms")] where rest >= unit {
            s += "\(rest / unit)\(name)"; rest %= unit
        }
        return s
    }
}

/// Proleptic Gregorian calendar arithmetic on day numbers (days since 1970-01-01),
/// after Howard Hinnant's public-domain `days_from_civil` / `civil_from_days`.
public enum CivilDate {
    /// Days since 1970-01-01 for a year, month (1...12) and day (1...31).
    @inlinable public static func days(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = month > 2 ? month - 3 : month + 9
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// Year, month, day for a day number.
    @inlinable public static func civil(fromDays z0: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? yoe + era * 400 + 1 : yoe + era * 400, m, d)
    }

    /// Number of days in a month of a year.
    @inlinable public static func daysInMonth(year: Int64, month: Int64) -> Int64 {
        switch month {
        case 2: return (year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }
}

/// Why an RFC 3339 timestamp was rejected.
public struct TimestampParseError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Human-readable reason, suitable for a dead-letter header.
    public var reason: String
    /// Byte offset where parsing failed.
    public var offset: Int
    public init(reason: String, offset: Int) { self.reason = reason; self.offset = offset }
    public var description: String { "invalid timestamp at byte \(offset): \(reason)" }
}

extension Timestamp {
    /// Years accepted by the parser; anything else is "absurd" input and is rejected.
    public static let acceptedYears: ClosedRange<Int64> = 1970...2200

    /// Parses an RFC 3339 `date-time` from a String.
    public static func parseRFC3339(_ text: String) -> Result<Timestamp, TimestampParseError> {
        var copy = text
        return copy.withUTF8 { parseRFC3339(UnsafeRawBufferPointer($0)) }
    }

    /// Parses an RFC 3339 `date-time` from UTF-8 bytes without allocating.
    ///
    /// Accepts `YYYY-MM-DD(T|t| )HH:MM:SS[.fraction](Z|z|±HH:MM)`. Fractions of any length are
    /// truncated to milliseconds. Rejects: leap seconds (`:60`), invalid calendar dates,
    /// offsets beyond ±23:59, years outside ``acceptedYears``, trailing bytes.
    public static func parseRFC3339(_ b: UnsafeRawBufferPointer) -> Result<Timestamp, TimestampParseError> {
        let n = b.count
        @inline(__always) func fail(_ r: String, _ at: Int) -> Result<Timestamp, TimestampParseError> {
            .failure(TimestampParseError(reason: r, offset: at))
        }
        @inline(__always) func digits(_ at: Int, _ count: Int) -> Int64 {
            var v: Int64 = 0
            var i = at
            while i < at + count {
                let c = b[i] &- 48
                if c > 9 { return -1 }
                v = v * 10 + Int64(c); i += 1
            }
            return v
        }
        if n < 20 { return fail("too short for RFC 3339 date-time", n) }
        if n > 64 { return fail("too long for RFC 3339 date-time", 64) }
        let year = digits(0, 4)
        if year < 0 { return fail("year must be 4 digits", 0) }
        if b[4] != UInt8(ascii: "-") { return fail("expected '-' after year", 4) }
        let month = digits(5, 2)
        if month < 1 || month > 12 { return fail("month must be 01...12", 5) }
        if b[7] != UInt8(ascii: "-") { return fail("expected '-' after month", 7) }
        let day = digits(8, 2)
        if day < 1 { return fail("day must be 2 digits from 01", 8) }
        if day > CivilDate.daysInMonth(year: year, month: month) { return fail("day \(day) does not exist in \(year)-\(month)", 8) }
        let sep = b[10]
        if sep != UInt8(ascii: "T") && sep != UInt8(ascii: "t") && sep != UInt8(ascii: " ") {
            return fail("expected 'T' between date and time", 10)
        }
        let hour = digits(11, 2)
        if hour < 0 || hour > 23 { return fail("hour must be 00...23", 11) }
        if b[13] != UInt8(ascii: ":") { return fail("expected ':' after hour", 13) }
        let minute = digits(14, 2)
        if minute < 0 || minute > 59 { return fail("minute must be 00...59", 14) }
        if b[16] != UInt8(ascii: ":") { return fail("expected ':' after minute", 16) }
        let second = digits(17, 2)
        if second == 60 { return fail("leap seconds are not supported", 17) }
        if second < 0 || second > 59 { return fail("second must be 00...59", 17) }
        var i = 19
        var millis: Int64 = 0
        if b[i] == UInt8(ascii: ".") {
            i += 1
            let start = i
            var scale: Int64 = 100
            while i < n, b[i] &- 48 <= 9 {
                millis += Int64(b[i] - 48) * scale
                scale /= 10
                i += 1
            }
            if i == start { return fail("fraction needs at least one digit", i) }
        }
        if i >= n { return fail("missing time offset ('Z' or ±HH:MM)", i) }
        var offsetMinutes: Int64 = 0
        let z = b[i]
        if z == UInt8(ascii: "Z") || z == UInt8(ascii: "z") {
            i += 1
        } else if z == UInt8(ascii: "+") || z == UInt8(ascii: "-") {
            if n - i < 6 { return fail("offset must be ±HH:MM", i) }
            let oh = digits(i + 1, 2)
            if oh < 0 || oh > 23 { return fail("offset hours must be 00...23", i + 1) }
            if b[i + 3] != UInt8(ascii: ":") { return fail("offset must be ±HH:MM", i + 3) }
            let om = digits(i + 4, 2)
            if om < 0 || om > 59 { return fail("offset minutes must be 00...59", i + 4) }
            offsetMinutes = (oh * 60 + om) * (z == UInt8(ascii: "-") ? -1 : 1)
            i += 6
        } else {
            return fail("missing time offset ('Z' or ±HH:MM)", i)
        }
        if i != n { return fail("unexpected bytes after timestamp", i) }
        if !acceptedYears.contains(year) {
            return fail("year \(year) outside accepted range \(acceptedYears.lowerBound)...\(acceptedYears.upperBound)", 0)
        }
        let days = CivilDate.days(year: year, month: month, day: day)
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offsetMinutes * 60
        return .success(Timestamp(milliseconds: secs * 1000 + millis))
    }
}
