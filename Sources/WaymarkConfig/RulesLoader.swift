import Foundation
public import WaymarkEngine

/// Loads delivery rules (`config/rules.yaml`): quiet hours, frequency caps, consent, expiry, dedup.
///
/// Every key is optional; defaults are those of ``Rules/init(defaultTimezone:quietHours:frequencyCaps:capsExemptTransactional:consent:defaultExpiry:channelOrder:dedup:maxInstancesPerCustomer:endedInstanceMemory:)``.
public enum RulesLoader {
    /// Parses a rules document.
    public static func parse(yaml: String, file: String) throws(JourneyConfigError) -> Rules {
        let root = try composeYAML(yaml, file: file)
        let f = try root.fields(allowed: ["default_timezone", "quiet_hours", "frequency_caps", "consent", "default_expiry",
                                          "channel_order", "dedup", "max_instances_per_customer", "ended_instance_memory",
                                          "experiments"])
        var r = Rules()
        if let tz = f["default_timezone"] {
            r.defaultTimezone = try tz.string()
            guard TimeZone(identifier: r.defaultTimezone) != nil else { throw tz.error("unknown IANA time zone '\(r.defaultTimezone)'") }
        }
        if let q = f["quiet_hours"] {
            let qf = try q.fields(allowed: ["default", "channels", "exempt_transactional", "spread"])
            var rules = QuietHoursRules()
            if let d = qf["default"] { rules.defaultWindow = try window(d, rule: "quiet_hours:default") }
            if let c = qf["channels"] {
                for (name, w) in try c.mapping(allowed: Channel.allCases.map(\.rawValue)) {
                    rules.channelWindows[Channel(rawValue: name)!] = try window(w, rule: "quiet_hours:\(name)")
                        ?? QuietWindow(startMinute: 0, endMinute: 0, rule: "quiet_hours:\(name)")
                }
            }
            rules.exemptTransactional = try qf["exempt_transactional"]?.bool() ?? true
            rules.spread = try qf["spread"]?.duration() ?? rules.spread
            // The spread must fit in the awake part of the day, or releases would run into the next window.
            for w in [rules.defaultWindow].compactMap({ $0 }) + rules.channelWindows.values.sorted(by: { $0.rule < $1.rule }) where !w.isEmpty {
                let awake = Int64(1440 - w.lengthMinutes) * 60_000
                if rules.spread.milliseconds >= awake - 3_600_000 {
                    throw (qf["spread"] ?? q).error("spread \(rules.spread) does not fit in the \((1440 - w.lengthMinutes) / 60) h outside \(w.rule) (keep it at least 1 h shorter)")
                }
            }
            r.quietHours = rules
        }
        if let c = f["frequency_caps"] {
            let cf = try c.fields(allowed: ["exempt_transactional", "caps"])
            r.capsExemptTransactional = try cf["exempt_transactional"]?.bool() ?? true
            for n in try cf["caps"]?.list() ?? [] {
                let x = try n.fields(allowed: ["name", "limit", "window", "channel", "journey"], required: ["name", "limit", "window"])
                let name = try x["name"]!.identifier()
                if r.frequencyCaps.contains(where: { $0.name == name }) { throw x["name"]!.error("cap '\(name)' defined twice") }
                let window = try x["window"]!.duration()
                if window.milliseconds <= 0 { throw x["window"]!.error("must be positive") }
                r.frequencyCaps.append(FrequencyCap(name: name, limit: try x["limit"]!.int(in: 1...10_000), window: window,
                                                    channel: try x["channel"]?.channel(), journey: try x["journey"]?.identifier()))
            }
        }
        if let c = f["consent"] {
            let cf = try c.fields(allowed: ["allow_without_profile", "transactional_requires_consent", "await_profile"])
            r.consent.allowWithoutProfile = try cf["allow_without_profile"]?.bool() ?? false
            r.consent.transactionalRequiresConsent = try cf["transactional_requires_consent"]?.bool() ?? true
            if let w = cf["await_profile"] {
                r.consent.profileWait = try w.duration()
                if r.consent.profileWait.milliseconds < 0 { throw w.error("must not be negative (0s decides at once)") }
            }
        }
        if let e = f["default_expiry"] {
            r.defaultExpiry = try e.duration()
            if r.defaultExpiry.milliseconds <= 0 { throw e.error("must be positive") }
        }
        if let o = f["channel_order"] {
            let s = try o.string()
            guard let v = ChannelOrder(rawValue: s) else { throw o.error("unknown channel_order '\(s)' (expected journey or customer_preference)") }
            r.channelOrder = v
        }
        if let d = f["dedup"] {
            let df = try d.fields(allowed: ["max_events", "max_age"])
            r.dedup.maxEvents = try df["max_events"]?.int(in: 1...100_000) ?? r.dedup.maxEvents
            r.dedup.maxAge = try df["max_age"]?.duration() ?? r.dedup.maxAge
        }
        r.maxInstancesPerCustomer = try f["max_instances_per_customer"]?.int(in: 1...10_000) ?? r.maxInstancesPerCustomer
        r.endedInstanceMemory = try f["ended_instance_memory"]?.duration() ?? r.endedInstanceMemory
        if let x = f["experiments"] {
            let xf = try x.fields(allowed: ["global_control"])
            if let g = xf["global_control"] {
                let gf = try g.fields(allowed: ["percent", "salt"], required: ["percent"])
                let pct = try JourneyLoader.percent(gf["percent"]!)
                if !(pct >= 0 && pct < 50) { throw gf["percent"]!.error("must be at least 0 % and below 50 %") }
                r.experiments = ExperimentRules(globalControlPercent: pct,
                                                globalControlSalt: try gf["salt"]?.string() ?? r.experiments.globalControlSalt)
            }
        }
        return r
    }

    /// Loads a rules file.
    public static func load(file path: String) throws(JourneyConfigError) -> Rules {
        try parse(yaml: try readConfigFile(path), file: path)
    }

    /// `{start: "21:00", end: "08:00"}`, or `off` for no quiet hours.
    static func window(_ n: YNode, rule: String) throws(JourneyConfigError) -> QuietWindow? {
        if case .scalar = n.node {
            let s = try n.string()
            guard s == "off" || s == "none" else { throw n.error("expected {start: HH:MM, end: HH:MM} or 'off'") }
            return nil
        }
        let f = try n.fields(allowed: ["start", "end"], required: ["start", "end"])
        let w = QuietWindow(startMinute: try f["start"]!.clockTime(), endMinute: try f["end"]!.clockTime(), rule: rule)
        if w.isEmpty { throw n.error("start and end are equal; write 'off' to disable quiet hours") }
        return w
    }
}
