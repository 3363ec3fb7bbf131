import Foundation
import WaymarkWire
import WaymarkEngine
import WaymarkKafka

/// Builds a ``DecisionSummary`` from `journey.decisions` over a time range (by `decided_at`).
public struct FunnelReport: Sendable {
    /// Inclusive start (ms); `nil`: from the beginning.
    public var from: Int64?
    /// Exclusive end (ms); `nil`: up to the end of the topic.
    public var to: Int64?
    /// Only decisions of this journey (`nil`: all).
    public var journey: String?

    public init(from: Int64? = nil, to: Int64? = nil, journey: String? = nil) {
        self.from = from
        self.to = to
        self.journey = journey
    }

    /// Whether a decision document falls in the range and journey.
    public func includes(_ bytes: some Collection<UInt8>) -> Bool {
        guard case .success(let decision) = RecordParser().decision(bytes) else { return false }
        return includes(decision)
    }

    /// Whether a decision falls in the range and journey.
    public func includes(_ decision: Decision) -> Bool {
        if let journey, decision.journey != journey { return false }
        if let from, decision.decidedAt.milliseconds < from { return false }
        if let to, decision.decidedAt.milliseconds >= to { return false }
        return true
    }

    /// Reads the whole decisions topic and aggregates the matching decisions.
    ///
    /// Kafka keeps no index by `decided_at`, so every record is read; decisions of one customer are
    /// in order on its partition, which is what the drop-off tracking needs.
    public func run(topic: String, client: KafkaClientConfiguration, admin: KafkaAdmin,
                    progress: (@Sendable (ScanProgress) -> Void)? = nil) async throws -> DecisionSummary {
        var summary = DecisionSummary()
        try await TopicScan(client: client).scan(topic: topic, admin: admin, progress: progress) { records in
            for record in records {
                // One parse per record, by the one decision decoder.
                guard let value = record.value, case .success(let decision) = RecordParser().decision(value), includes(decision) else { continue }
                summary.add(decision)
            }
        }
        return summary
    }
}

extension DecisionSummary {
    /// A self-contained HTML page (inline CSS and SVG, no scripts, no external resources) with one
    /// bar chart per journey funnel and the decision counts by reason.
    public func html(title: String, subtitle: String) -> String {
        func esc(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
        }
        func chart(_ rows: [(label: String, value: Int, kind: String)]) -> String {
            let top = max(rows.map(\.value).max() ?? 0, 1)
            let rowHeight = 26, labelWidth = 190, barWidth = 480
            var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(labelWidth + barWidth + 80)\" height=\(rowHeight * rows.count + 8) role=\"img\">"
            for (i, row) in rows.enumerated() {
                let y = i * rowHeight + 4
                let w = Int((Double(row.value) / Double(top) * Double(barWidth)).rounded())
                svg += "<text x=\"0\" y=\"\(y + 17)\" class=\"label\">\(esc(row.label))</text>"
                svg += "<rect x=\"\(labelWidth)\" y=\"\(y)\" width=\"\(w)\" height=\"\(rowHeight - 6)\" class=\"\(row.kind)\"/>"
                svg += "<text x=\"\(labelWidth + w + 6)\" y=\"\(y + 17)\" class=\"value\">\(row.value)</text>"
            }
            return svg + "</svg>"
        }
        var body = "<h1>\(esc(title))</h1><p class=\"sub\">\(esc(subtitle)) · \(decisions) decisions · \(customers.count) customers</p>"
        for name in funnels.keys.sorted() {
            let f = funnels[name]!
            let rate = f.entered > 0 ? String(format: "%.1f%%", Double(f.converted) * 100 / Double(f.entered)) : "–"
            body += "<section><h2>\(esc(name))</h2><p>entered \(f.entered) · converted \(f.converted) (\(rate)) · exited \(f.exited) · completed \(f.completed) · open \(f.open)</p>"
            var rows: [(String, Int, String)] = [("entered", f.entered, "entered")]
            rows += f.stageOrder.map { ($0, f.stages[$0]!, "stage") }
            rows.append(("converted", f.converted, "converted"))
            body += chart(rows)
            let drops = ([Self.entryStage] + f.stageOrder).compactMap { s in f.droppedAt[s].map { ("dropped at \(s)", $0, "dropped") } }
            if !drops.isEmpty { body += "<h3>Dropped off, by last stage reached</h3>" + chart(drops) }
            body += "</section>"
        }
        if !byReason.isEmpty {
            body += "<section><h2>Decisions by reason</h2>"
            body += chart(byReason.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map { ($0.key, $0.value, "reason") })
            body += "</section>"
        }
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><title>\(esc(title))</title>
            <style>
            body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
            h1 { margin-bottom: 0; } .sub { color: #666; margin-top: .2em; }
            section { margin: 1.5em 0; } h2 { margin-bottom: .2em; } h3 { font-size: 14px; color: #555; }
            .label, .value { font: 13px system-ui, sans-serif; fill: #333; }
            .entered { fill: #4c78a8; } .stage { fill: #72b7b2; } .converted { fill: #54a24b; }
            .dropped { fill: #e45756; } .reason { fill: #9d755d; }
            </style></head>
            <body>
            \(body)
            </body></html>

            """
    }
}
