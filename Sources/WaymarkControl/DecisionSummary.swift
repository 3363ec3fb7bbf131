import Foundation
import WaymarkEngine
import WaymarkWire

/// Aggregates `journey.decisions` records: outcomes by reason and channel, and per-journey funnels.
public struct DecisionSummary: Sendable, Codable {
    /// Journey funnel: instances entered, per stage reached, converted, exited, completed.
    public struct Funnel: Sendable, Codable {
        public var journey: String
        public var entered = 0
        /// Stage name → instances that reached it, in first-seen order in ``stageOrder``.
        public var stages: [String: Int] = [:]
        public var stageOrder: [String] = []
        public var converted = 0
        public var exited = 0
        public var completed = 0
        /// Instances that exited without converting or completed without reaching the goal, by the
        /// last stage they reached (`(entry)` if none was seen): where the journey loses people.
        public var droppedAt: [String: Int] = [:]
        /// Instances still running at the end of the read, by current stage.
        public var openAt: [String: Int] = [:]
        /// Instances neither converted, exited nor completed (still running or dropped off).
        public var open: Int { max(entered - converted - exited - completed, 0) }
        /// Instances that ended without converting.
        public var droppedOff: Int { exited + completed }
    }

    public var decisions = 0
    public var byReason: [String: Int] = [:]
    /// Messages decided for sending (sent + fallback_channel + released deferrals) per channel.
    public var sentByChannel: [String: Int] = [:]
    public var funnels: [String: Funnel] = [:]
    public var customers = Set<String>()
    /// Current stage per instance (`customer|journey|instance key`), for drop-off by stage.
    private var instanceStage: [String: String] = [:]

    private enum CodingKeys: String, CodingKey { case decisions, byReason, sentByChannel, funnels, customers }

    public init() {}

    /// Adds one decision document (as published on `journey.decisions`); anything else is ignored.
    public mutating func add(_ bytes: some Collection<UInt8>) {
        guard case .success(let decision) = RecordParser().decision(bytes) else { return }
        add(decision)
    }

    /// Adds one decision.
    public mutating func add(_ decision: Decision) {
        let reason = decision.reason.rawValue
        decisions += 1
        byReason[reason, default: 0] += 1
        customers.insert(decision.customerID)
        if decision.reason == .sent || decision.reason == .fallbackChannel, let channel = decision.channel {
            sentByChannel[channel.rawValue, default: 0] += 1
        }
        guard let journey = decision.journey else { return }
        var funnel = funnels[journey] ?? Funnel(journey: journey)
        let instance = "\(decision.customerID)|\(journey)|\(decision.instanceKey ?? "")"
        func leave() -> String {
            let stage = instanceStage.removeValue(forKey: instance) ?? Self.entryStage
            if let n = funnel.openAt[stage] { funnel.openAt[stage] = n > 1 ? n - 1 : nil }
            return stage
        }
        switch reason {
        case "journey_entered":
            funnel.entered += 1
            _ = leave()
            instanceStage[instance] = Self.entryStage
            funnel.openAt[Self.entryStage, default: 0] += 1
        case "stage_reached":
            if let stage = decision.stage {
                if funnel.stages[stage] == nil { funnel.stageOrder.append(stage) }
                funnel.stages[stage, default: 0] += 1
                if instanceStage[instance] != nil { _ = leave() }
                instanceStage[instance] = stage
                funnel.openAt[stage, default: 0] += 1
            }
        case "journey_converted":
            funnel.converted += 1
            _ = leave()
        case "journey_exited":
            funnel.exited += 1
            funnel.droppedAt[leave(), default: 0] += 1
        case "journey_completed":
            funnel.completed += 1
            funnel.droppedAt[leave(), default: 0] += 1
        default: break
        }
        funnels[journey] = funnel
    }

    /// Stage name used for instances seen entering but not (yet) in a named stage.
    public static let entryStage = "(entry)"

    /// A readable report with bar charts.
    public func render(width: Int = 40) -> String {
        var lines: [String] = []
        func bar(_ value: Int, _ max: Int) -> String {
            guard max > 0 else { return "" }
            return String(repeating: "█", count: Int((Double(value) / Double(max) * Double(width)).rounded()))
        }
        lines.append("Messages decided for sending, by channel:")
        let channelMax = sentByChannel.values.max() ?? 0
        for (channel, count) in sentByChannel.sorted(by: { ($0.value, $1.key) > ($1.value, $0.key) }) {
            lines.append("  \(channel.padding(toLength: 10, withPad: " ", startingAt: 0)) \(String(count).leftAligned(7)) \(bar(count, channelMax))")
        }
        lines.append("")
        lines.append("Decisions by reason (\(decisions) decisions, \(customers.count) customers):")
        let reasonMax = byReason.values.max() ?? 0
        for (reason, count) in byReason.sorted(by: { ($0.value, $1.key) > ($1.value, $0.key) }) {
            lines.append("  \(reason.padding(toLength: 26, withPad: " ", startingAt: 0)) \(String(count).leftAligned(7)) \(bar(count, reasonMax))")
        }
        for journey in funnels.keys.sorted() {
            let f = funnels[journey]!
            lines.append("")
            let rate = f.entered > 0 ? String(format: "%.1f%%", Double(f.converted) * 100 / Double(f.entered)) : "-"
            lines.append("Funnel \(journey): entered \(f.entered), converted \(f.converted) (\(rate)), exited \(f.exited), completed \(f.completed), open \(f.open)")
            let top = max(f.entered, f.stages.values.max() ?? 0)
            lines.append("  \("entered".padding(toLength: 16, withPad: " ", startingAt: 0)) \(String(f.entered).leftAligned(7)) \(bar(f.entered, top))")
            for stage in f.stageOrder {
                let n = f.stages[stage]!
                lines.append("  \(stage.padding(toLength: 16, withPad: " ", startingAt: 0)) \(String(n).leftAligned(7)) \(bar(n, top))")
            }
            lines.append("  \("converted".padding(toLength: 16, withPad: " ", startingAt: 0)) \(String(f.converted).leftAligned(7)) \(bar(f.converted, top))")
            if !f.droppedAt.isEmpty {
                lines.append("  dropped off (exited or completed without converting), by last stage:")
                for stage in ([Self.entryStage] + f.stageOrder) where f.droppedAt[stage] != nil {
                    let n = f.droppedAt[stage]!
                    lines.append("    \(stage.padding(toLength: 14, withPad: " ", startingAt: 0)) \(String(n).leftAligned(7)) \(bar(n, top))")
                }
            }
        }
        return lines.joined(separator: "\n")
    }
}

extension String {
    func leftAligned(_ width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
}
