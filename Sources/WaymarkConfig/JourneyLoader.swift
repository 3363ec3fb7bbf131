import Foundation
public import WaymarkEngine

/// Loads journey definitions from YAML (`config/journeys/*.yaml`).
///
/// Every problem is reported as ``JourneyConfigError`` with file, line, column and what is wrong;
/// unknown keys are errors (they are usually typos). See the README for the format.
public enum JourneyLoader {
    static let journeyKeys = ["journey", "version", "description", "key", "reentry_cooldown", "entry", "stages", "steps",
                              "channels", "transitions", "exit", "experiment", "goal"]

    /// Parses one journey document.
    public static func parse(yaml: String, file: String) throws(JourneyConfigError) -> JourneyDefinition {
        let root = try composeYAML(yaml, file: file)
        let f = try root.fields(allowed: journeyKeys, required: ["journey", "version", "entry"])
        let name = try f["journey"]!.identifier()
        let version = try f["version"]!.int(in: 1...Int(Int32.max))
        let description = try f["description"]?.string() ?? ""
        let key = try f["key"]?.identifier()
        var cooldown: TimeSpan? = .zero
        if let c = f["reentry_cooldown"] {
            cooldown = try c.string() == "never" ? nil : try c.duration()
        }
        let keyed = key != nil
        let experiment = try f["experiment"].map { n throws(JourneyConfigError) in try self.experiment(n, journey: name) }
        var goal: ConversionGoal? = nil
        if let g = f["goal"] {
            let gf = try g.fields(allowed: ["event", "where", "same_key", "within"], required: ["event", "within"])
            let window = try gf["within"]!.duration()
            if window.milliseconds <= 0 { throw gf["within"]!.error("must be positive") }
            goal = ConversionGoal(event: try matcher(gf, typeKey: "event", keyed: keyed), window: window)
        }
        let armNames = experiment?.arms.map(\.name) ?? []

        var entry: [EntryTrigger] = []
        for n in try f["entry"]!.listOrSingle() {
            let ef = try n.fields(allowed: ["event", "where", "profile"], required: ["event"])
            entry.append(EntryTrigger(event: EventMatcher(type: try ef["event"]!.identifier(),
                                                          filter: try ef["where"].map { n throws(JourneyConfigError) in try condition(n, scope: .event) } ?? .always,
                                                          sameKey: false),
                                      profile: try ef["profile"].map { n throws(JourneyConfigError) in try condition(n, scope: .profile) } ?? .always))
        }
        if entry.isEmpty { throw f["entry"]!.error("needs at least one entry trigger") }

        // Stages: either `stages:` or top-level `steps:` (one implicit stage named "main").
        var stages: [Stage] = []
        var stageNodes: [YNode] = []
        if let s = f["stages"] {
            if let steps = f["steps"] { throw steps.error("use either top-level 'steps' or 'stages', not both") }
            for n in try s.list() {
                let sf = try n.fields(allowed: ["name", "channels", "steps"], required: ["name"])
                let stageName = try sf["name"]!.identifier()
                let duplicate = stages.contains { $0.name == stageName }
                if duplicate { throw sf["name"]!.error("stage '\(stageName)' defined twice") }
                var channels = try sf["channels"]?.channels()
                if channels == nil { channels = try f["channels"]?.channels() }
                let steps = try sf["steps"].map { n throws(JourneyConfigError) in try self.steps(n, defaultChannels: channels, keyed: keyed, arms: armNames) } ?? []
                stages.append(Stage(name: stageName, steps: steps))
                stageNodes.append(n)
            }
            if stages.isEmpty { throw s.error("needs at least one stage") }
        } else if let s = f["steps"] {
            stages = [Stage(name: "main", steps: try steps(s, defaultChannels: try f["channels"]?.channels(), keyed: keyed, arms: armNames))]
            stageNodes = [s]
        } else {
            throw root.error("journey '\(name)' needs 'steps' or 'stages'")
        }

        var transitions: [Transition] = []
        if let t = f["transitions"] {
            for n in try t.list() {
                let tf = try n.fields(allowed: ["on", "where", "same_key", "from", "to"], required: ["on", "to"])
                let to = try tf["to"]!.identifier()
                guard stages.contains(where: { $0.name == to }) else { throw tf["to"]!.error("unknown stage '\(to)'") }
                var from: [String] = []
                if let fr = tf["from"] {
                    for x in try fr.listOrSingle() {
                        let s = try x.identifier()
                        guard stages.contains(where: { $0.name == s }) else { throw x.error("unknown stage '\(s)'") }
                        from.append(s)
                    }
                }
                transitions.append(Transition(on: try matcher(tf, typeKey: "on", keyed: keyed), from: from, to: to))
            }
        }

        var exits: [ExitGoal] = []
        if let x = f["exit"] {
            for n in try x.listOrSingle() {
                let xf = try n.fields(allowed: ["event", "where", "same_key", "outcome"], required: ["event"])
                var converted = true
                if let o = xf["outcome"] {
                    switch try o.string() {
                    case "converted": converted = true
                    case "exited": converted = false
                    case let other: throw o.error("unknown outcome '\(other)' (expected converted or exited)")
                    }
                }
                exits.append(ExitGoal(on: try matcher(xf, typeKey: "event", keyed: keyed), converted: converted))
            }
        }

        // Cross-references with line numbers: unique step ids and step targets.
        var stepNodes: [[YNode]] = []
        for (si, n) in stageNodes.enumerated() {
            if f["stages"] != nil { stepNodes.append(try n.fields(allowed: [])["steps"]?.list() ?? []) }
            else { stepNodes.append(try n.list()) }
            _ = si
        }
        var stepIDs: [String: Int] = [:]
        for (si, stage) in stages.enumerated() {
            for (i, st) in stage.steps.enumerated() {
                if stepIDs[st.id] != nil { throw stepNodes[si][i].error("step id '\(st.id)' is used twice in journey '\(name)'") }
                stepIDs[st.id] = si
            }
        }
        for (si, stage) in stages.enumerated() {
            for (i, st) in stage.steps.enumerated() {
                let where_ = stepNodes[si][i]
                var targets: [StepTarget] = []
                switch st.action {
                case .waitForEvent(let w): targets = [w.onEvent, w.onTimeout]
                case .branch(let cases, let otherwise): targets = cases.map(\.target) + [otherwise]
                default: break
                }
                for t in targets {
                    switch t {
                    case .step(let id):
                        guard let s = stepIDs[id] else { throw where_.error("step '\(st.id)' goes to unknown step '\(id)'") }
                        if s != si { throw where_.error("step '\(st.id)' goes to step '\(id)' in another stage; use 'stage:\(stages[s].name)'") }
                    case .stage(let sn):
                        if !stages.contains(where: { $0.name == sn }) { throw where_.error("step '\(st.id)' goes to unknown stage '\(sn)'") }
                    case .next, .end: break
                    }
                }
            }
        }

        let def = JourneyDefinition(name: name, version: version, description: description, key: key, entry: entry,
                                    stages: stages, transitions: transitions, exits: exits, reentryCooldown: cooldown,
                                    experiment: experiment, goal: goal)
        do throws(EngineConfigError) {
            _ = try JourneyEngine(journeys: [def], rules: Rules())
        } catch {
            throw root.error(error.message)
        }
        return def
    }

    /// Loads one journey file.
    public static func load(file path: String) throws(JourneyConfigError) -> JourneyDefinition {
        try parse(yaml: try readConfigFile(path), file: path)
    }

    /// Loads every `*.yaml` / `*.yml` file in a directory, in file-name order; journey names must be unique.
    public static func load(directory: String) throws(JourneyConfigError) -> [JourneyDefinition] {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: directory) } catch {
            throw JourneyConfigError(file: directory, line: 0, column: 0, message: "cannot list directory: \(error.localizedDescription)")
        }
        var out: [JourneyDefinition] = []
        var files: [String: String] = [:]
        for n in names.sorted() where n.hasSuffix(".yaml") || n.hasSuffix(".yml") {
            let path = (directory as NSString).appendingPathComponent(n)
            let j = try load(file: path)
            if let other = files[j.name] {
                throw JourneyConfigError(file: path, line: 1, column: 1, message: "journey '\(j.name)' is also defined in \(other)")
            }
            files[j.name] = path
            out.append(j)
        }
        return out
    }

    /// Loads `<root>/journeys/*.yaml` and `<root>/rules.yaml` and builds the engine.
    /// When `<root>/templates` exists, every send step's template is checked against it too.
    public static func loadEngine(configDirectory root: String) throws(JourneyConfigError) -> JourneyEngine {
        try loadConfiguration(configDirectory: root).engine
    }

    /// The engine and the template store of `<root>`, the templates validated against the journeys
    /// (what a worker needs at start-up, each file read once).
    public static func loadConfiguration(configDirectory root: String) throws(JourneyConfigError) -> (engine: JourneyEngine, templates: TemplateStore) {
        let journeysDirectory = (root as NSString).appendingPathComponent("journeys")
        let journeys = try load(directory: journeysDirectory)
        let templates = try loadTemplates(configDirectory: root)
        if !templates.templates.isEmpty { try templates.validate(journeys, journeysDirectory: journeysDirectory) }
        let rulesPath = (root as NSString).appendingPathComponent("rules.yaml")
        let rules = try RulesLoader.load(file: rulesPath)
        do throws(EngineConfigError) { return (try JourneyEngine(journeys: journeys, rules: rules), templates) } catch {
            throw JourneyConfigError(file: rulesPath, line: 0, column: 0, message: error.description)
        }
    }

    /// `<root>/templates` (an empty store when the directory does not exist).
    public static func loadTemplates(configDirectory root: String) throws(JourneyConfigError) -> TemplateStore {
        try TemplateStore.load(directory: (root as NSString).appendingPathComponent("templates"))
    }

    // MARK: - Pieces

    static func matcher(_ f: Fields, typeKey: String, keyed: Bool) throws(JourneyConfigError) -> EventMatcher {
        EventMatcher(type: try f[typeKey]!.identifier(),
                     filter: try f["where"].map { n throws(JourneyConfigError) in try condition(n, scope: .event) } ?? .always,
                     sameKey: try f["same_key"]?.bool() ?? keyed)
    }

    /// `experiment: {name, salt, holdout, arms: [{name, weight}]}`.
    static func experiment(_ n: YNode, journey: String) throws(JourneyConfigError) -> Experiment {
        let f = try n.fields(allowed: ["name", "salt", "holdout", "arms"], required: ["arms"])
        let name = try f["name"]?.identifier() ?? journey
        var arms: [ExperimentArm] = []
        for a in try f["arms"]!.list() {
            let af = try a.fields(allowed: ["name", "weight"], required: ["name"])
            let armName = try af["name"]!.identifier()
            if armName == Experiment.holdoutArm || armName == Experiment.globalControlArm {
                throw af["name"]!.error("'\(armName)' is reserved; set the holdout with 'holdout:'")
            }
            if arms.contains(where: { $0.name == armName }) { throw af["name"]!.error("arm '\(armName)' defined twice") }
            let weight = try af["weight"]?.number() ?? 1
            if !(weight > 0) || !weight.isFinite { throw (af["weight"] ?? a).error("weight must be a positive number") }
            arms.append(ExperimentArm(name: armName, weight: weight))
        }
        if arms.count < 2 { throw f["arms"]!.error("an experiment needs at least two arms (the first is the control)") }
        var holdout = 0.0
        if let h = f["holdout"] {
            holdout = try percent(h)
            if !(holdout >= 0 && holdout < 50) { throw h.error("holdout must be at least 0 % and below 50 %") }
        }
        return Experiment(name: name, salt: try f["salt"]?.string(), arms: arms, holdoutPercent: holdout)
    }

    /// `5%`, `5 %` or `5` (percent).
    static func percent(_ n: YNode) throws(JourneyConfigError) -> Double {
        if let d = try? n.number() { return d }
        let s = try n.string().trimmingCharacters(in: .whitespaces)
        guard s.hasSuffix("%"), let d = Double(s.dropLast().trimmingCharacters(in: .whitespaces)) else {
            throw n.error("expected a percentage such as 5% (got '\(s)')")
        }
        return d
    }

    /// `variants: {B: {template, channels, priority, duration, skip}}` on a step.
    static func variants(_ n: YNode, kind: String, arms: [String]) throws(JourneyConfigError) -> [String: StepVariant] {
        if arms.isEmpty { throw n.error("'variants' needs an 'experiment' on the journey") }
        var out: [String: StepVariant] = [:]
        let allowed: [String]
        switch kind {
        case "send": allowed = ["template", "channels", "priority", "skip"]
        case "wait", "wait_for": allowed = ["duration", "skip"]
        default: allowed = ["skip"]
        }
        for (arm, v) in try n.mapping(allowed: []) {
            guard arms.contains(arm) else {
                throw v.error("unknown arm '\(arm)' (the experiment's arms: \(arms.joined(separator: ", ")))")
            }
            let vf = try v.fields(allowed: allowed)
            let duration = try vf["duration"]?.duration()
            if let d = duration, d.milliseconds < 0 || (kind == "wait_for" && d.milliseconds == 0) { throw vf["duration"]!.error("must be positive") }
            out[arm] = StepVariant(template: try vf["template"]?.identifier(), channels: try vf["channels"]?.channels(),
                                   priority: try vf["priority"]?.int(in: -1000...1000), duration: duration,
                                   skip: try vf["skip"]?.bool() ?? false)
        }
        return out
    }

    static func steps(_ node: YNode, defaultChannels: [Channel]?, keyed: Bool, arms: [String] = []) throws(JourneyConfigError) -> [Step] {
        var out: [Step] = []
        for (i, n) in try node.list().enumerated() {
            let kinds = ["send", "wait", "wait_for", "branch"]
            let sf = try n.fields(allowed: ["id", "variants"] + kinds)
            let present = kinds.filter { sf.has($0) }
            guard present.count == 1 else {
                throw n.error(present.isEmpty ? "a step needs one of: send, wait, wait_for, branch"
                                              : "a step has exactly one action, found \(present.joined(separator: " and "))")
            }
            let id = try sf["id"]?.identifier() ?? "step\(i + 1)"
            let body = sf[present[0]]!
            let action: StepAction
            switch present[0] {
            case "send":
                let f = try body.fields(allowed: ["channels", "template", "priority", "transactional", "expires_after", "variables"],
                                        required: ["template"])
                guard let channels = try f["channels"]?.channels() ?? defaultChannels else {
                    throw body.error("send needs 'channels' (or a stage/journey default)")
                }
                var vars: [String]? = nil
                if let v = f["variables"] { vars = []; for x in try v.listOrSingle() { vars!.append(try x.identifier()) } }
                let expires = try f["expires_after"]?.duration()
                if let e = expires, e.milliseconds <= 0 { throw f["expires_after"]!.error("must be positive") }
                action = .send(SendStep(channels: channels, template: try f["template"]!.identifier(),
                                        priority: try f["priority"]?.int(in: -1000...1000) ?? 0,
                                        transactional: try f["transactional"]?.bool() ?? false,
                                        expiresAfter: expires, variables: vars))
            case "wait":
                action = .wait(try body.duration())
            case "wait_for":
                let f = try body.fields(allowed: ["event", "where", "same_key", "timeout", "on_event", "on_timeout"],
                                        required: ["event", "timeout"])
                let timeout = try f["timeout"]!.duration()
                if timeout.milliseconds <= 0 { throw f["timeout"]!.error("must be positive") }
                action = .waitForEvent(WaitForEvent(event: try matcher(f, typeKey: "event", keyed: keyed), timeout: timeout,
                                                    onEvent: try f["on_event"].map(target) ?? .next,
                                                    onTimeout: try f["on_timeout"].map(target) ?? .next))
            default:
                var cases: [BranchCase] = []
                var otherwise: StepTarget = .next
                let items = try body.list()
                for (ci, c) in items.enumerated() {
                    let cf = try c.fields(allowed: ["if", "goto", "else"])
                    if let e = cf["else"] {
                        guard ci == items.count - 1, !cf.has("if"), !cf.has("goto") else { throw c.error("'else' must be the last case, alone") }
                        otherwise = try target(e)
                    } else {
                        guard let cond = cf["if"], let g = cf["goto"] else { throw c.error("a branch case needs 'if' and 'goto' (or a final 'else')") }
                        cases.append(BranchCase(condition: try condition(cond, scope: .prefixed), target: try target(g)))
                    }
                }
                action = .branch(cases: cases, otherwise: otherwise)
            }
            let variants = try sf["variants"].map { v throws(JourneyConfigError) in try self.variants(v, kind: present[0], arms: arms) } ?? [:]
            out.append(Step(id: id, action: action, variants: variants))
        }
        return out
    }

    static func target(_ n: YNode) throws(JourneyConfigError) -> StepTarget {
        let s = try n.string()
        switch s {
        case "next": return .next
        case "end": return .end
        default:
            if s.hasPrefix("stage:") { return .stage(String(s.dropFirst(6))) }
            return .step(try n.identifier())
        }
    }

    enum Scope { case event, profile, prefixed }

    /// `{field: value}` or `{field: {op: value}}`; all clauses must hold.
    static func condition(_ n: YNode, scope: Scope) throws(JourneyConfigError) -> Condition {
        var clauses: [Clause] = []
        for (name, v) in try n.mapping(allowed: []) {
            let field: Field
            switch scope {
            case .event: field = .event(name)
            case .profile: field = .profile(name)
            case .prefixed:
                if name.hasPrefix("event.") { field = .event(String(name.dropFirst(6))) }
                else if name.hasPrefix("profile.") { field = .profile(String(name.dropFirst(8))) }
                else if name == "journey.arm" { field = .journey("arm") }
                else { throw v.error("condition fields must start with 'event.' or 'profile.', or be 'journey.arm' (got '\(name)')") }
            }
            if case .mapping = v.node {
                for (op, arg) in try v.mapping(allowed: ["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists"]) {
                    let p: FieldMatch
                    switch op {
                    case "eq": p = .equals(try arg.value())
                    case "ne": p = .notEquals(try arg.value())
                    case "in", "not_in":
                        var xs: [AttributeValue] = []
                        for x in try arg.list() { xs.append(try x.value()) }
                        p = op == "in" ? .oneOf(xs) : .noneOf(xs)
                    case "gt": p = .greaterThan(try arg.number())
                    case "gte": p = .atLeast(try arg.number())
                    case "lt": p = .lessThan(try arg.number())
                    case "lte": p = .atMost(try arg.number())
                    default: p = .exists(try arg.bool())
                    }
                    clauses.append(Clause(field, p))
                }
            } else if case .sequence = v.node {
                var xs: [AttributeValue] = []
                for x in try v.list() { xs.append(try x.value()) }
                clauses.append(Clause(field, .oneOf(xs)))
            } else {
                clauses.append(Clause(field, .equals(try v.value())))
            }
        }
        return Condition(clauses)
    }
}
