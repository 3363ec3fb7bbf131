import WaymarkEngine
import WaymarkWire

/// Field helpers for the generator on top of the wire module's ``JSONWriter``: field order is call
/// order, so generated documents are byte-for-byte reproducible. The generator plays a shop's own
/// systems, so it writes touchpoints and profiles as they would (local UTC offsets, money with two
/// decimals, its own field order) rather than through Waymark's encoders: the parsers must accept both.
extension JSONWriter {
    mutating func field(_ name: String, _ value: String) { key(name); string(value) }
    mutating func field(_ name: String, _ value: Int) { key(name); int(Int64(value)) }
    mutating func field(_ name: String, _ value: Bool) { key(name); bool(value) }
    mutating func int(_ value: Int) { int(Int64(value)) }

    /// A decimal with exactly two fraction digits (money), written as a JSON number.
    mutating func money(cents: Int) {
        let sign = cents < 0 ? "-" : ""
        let magnitude = abs(cents)
        let fraction = magnitude % 100
        rawJSON(Array("\(sign)\(magnitude / 100).\(fraction < 10 ? "0" : "")\(fraction)".utf8))
    }
}
