import Foundation
import WaymarkWire

/// Renders rows as an aligned text table (first row is the header).
func table(_ rows: [[String]]) -> String {
    guard let header = rows.first else { return "" }
    var widths = header.map(\.count)
    for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
    return rows.enumerated().map { index, row in
        let line = row.enumerated().map { i, cell in
            i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
        }.joined(separator: "  ")
        return index == 0 ? line + "\n" + widths.map { String(repeating: "─", count: $0) }.joined(separator: "  ") : line
    }.joined(separator: "\n")
}

/// Prints `value` to stdout in the `--json` conventions (``OperatorJSON``: snake_case, RFC 3339).
func printJSON(_ value: some Encodable) throws {
    print(String(decoding: try OperatorJSON.encoder().encode(value), as: UTF8.self))
}

/// "1.2M", "350k", "999".
func human(_ value: Double) -> String {
    switch value {
    case 1_000_000...: String(format: "%.2fM", value / 1_000_000)
    case 10_000...: String(format: "%.0fk", value / 1_000)
    case 1_000...: String(format: "%.1fk", value / 1_000)
    default: String(format: "%.0f", value)
    }
}


/// Prints a progress dot immediately (stdout is line-buffered when not a terminal).
func printProgressDot() {
    print(".", terminator: "")
    fflush(nil)  // all streams: `stdout` itself is not concurrency-safe to name in Swift 6
}
