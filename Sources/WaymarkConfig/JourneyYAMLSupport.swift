import Foundation
public import WaymarkEngine
import Yams

/// A journey or rules file that could not be loaded: which file, where, and what is wrong.
public struct JourneyConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    public var file: String
    /// 1-based line, 0 when unknown.
    public var line: Int
    /// 1-based column, 0 when unknown.
    public var column: Int
    public var message: String
    public init(file: String, line: Int, column: Int, message: String) {
        self.file = file; self.line = line; self.column = column; self.message = message
    }
    /// `file:line:column: message`, the form editors and CI logs link to.
    public var description: String { "\(file):\(line):\(column): \(message)" }
}

/// A YAML node plus where it came from, with typed accessors that fail with readable errors.
struct YNode {
    let node: Node
    let file: String
    /// Dotted path for messages, e.g. `steps[2].send.channels`.
    let path: String

    var line: Int { node.mark?.line ?? 0 }
    var column: Int { node.mark?.column ?? 0 }

    func error(_ message: String) -> JourneyConfigError {
        JourneyConfigError(file: file, line: line, column: column, message: path.isEmpty ? message : "\(path): \(message)")
    }

    var kind: String {
        switch node {
        case .scalar: "a scalar"
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .alias: "an alias"
        }
    }

    /// Mapping entries in file order; rejects keys outside `allowed` (typos) and duplicate keys.
    func mapping(allowed: [String]) throws(JourneyConfigError) -> [(key: String, value: YNode)] {
        guard case .mapping(let m) = node else { throw error("expected a mapping, found \(kind)") }
        var out: [(key: String, value: YNode)] = []
        for (k, v) in m {
            guard case .scalar(let ks) = k else { throw YNode(node: k, file: file, path: path).error("keys must be plain strings") }
            let key = ks.string
            let child = YNode(node: v, file: file, path: path.isEmpty ? key : "\(path).\(key)")
            if !allowed.isEmpty && !allowed.contains(key) {
                throw YNode(node: k, file: file, path: path).error("unknown key '\(key)' (expected one of: \(allowed.joined(separator: ", ")))")
            }
            if out.contains(where: { $0.key == key }) { throw YNode(node: k, file: file, path: path).error("duplicate key '\(key)'") }
            out.append((key, child))
        }
        return out
    }

    /// Like ``mapping(allowed:)`` but as a lookup, and checks required keys.
    func fields(allowed: [String], required: [String] = []) throws(JourneyConfigError) -> Fields {
        let entries = try mapping(allowed: allowed)
        for r in required where !entries.contains(where: { $0.key == r }) { throw error("missing required key '\(r)'") }
        return Fields(owner: self, entries: entries)
    }

    func list() throws(JourneyConfigError) -> [YNode] {
        guard case .sequence(let s) = node else { throw error("expected a list, found \(kind)") }
        return s.enumerated().map { YNode(node: $1, file: file, path: "\(path)[\($0)]") }
    }

    /// A list, or a single item treated as a one-element list.
    func listOrSingle() throws(JourneyConfigError) -> [YNode] {
        if case .sequence = node { return try list() }
        return [self]
    }

    func string() throws(JourneyConfigError) -> String {
        guard case .scalar(let s) = node else { throw error("expected a string, found \(kind)") }
        return s.string
    }

    func identifier() throws(JourneyConfigError) -> String {
        let s = try string()
        let ok = !s.isEmpty && s.unicodeScalars.allSatisfy { ($0.properties.isAlphabetic && $0.isASCII) || ("0"..."9").contains($0) || $0 == "_" || $0 == "-" || $0 == "." }
        guard ok else { throw error("'\(s)' is not a valid name (use letters, digits, '_', '-', '.')") }
        return s
    }

    func int(in range: ClosedRange<Int> = Int.min...Int.max) throws(JourneyConfigError) -> Int {
        guard let v = node.int else { throw error("expected an integer, found '\((try? string()) ?? kind)'") }
        guard range.contains(v) else { throw error("\(v) is outside \(range.lowerBound)...\(range.upperBound)") }
        return v
    }

    func bool() throws(JourneyConfigError) -> Bool {
        guard case .scalar = node, let b = node.bool else { throw error("expected true or false") }
        return b
    }

    func duration() throws(JourneyConfigError) -> TimeSpan {
        let s = try string()
        guard let d = TimeSpan.parse(s) else {
            throw error("'\(s)' is not a duration (examples: 90s, 15m, 24h, 7d, 1h30m)")
        }
        return d
    }

    func channel() throws(JourneyConfigError) -> Channel {
        let s = try string()
        guard let c = Channel(rawValue: s) else {
            throw error("unknown channel '\(s)' (expected one of: \(Channel.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return c
    }

    func channels() throws(JourneyConfigError) -> [Channel] {
        var out: [Channel] = []
        for n in try listOrSingle() {
            let c = try n.channel()
            if out.contains(c) { throw n.error("channel '\(c.rawValue)' listed twice") }
            out.append(c)
        }
        if out.isEmpty { throw error("needs at least one channel") }
        return out
    }

    /// `HH:MM` → minutes after midnight.
    func clockTime() throws(JourneyConfigError) -> Int {
        let s = try string()
        let parts = s.split(separator: ":")
        guard parts.count == 2, let h = Int(parts[0]), let m = Int(parts[1]), parts[1].count == 2,
              (0...24).contains(h), (0...59).contains(m), h * 60 + m <= 1440 else {
            throw error("'\(s)' is not a local time (expected HH:MM, e.g. 21:00)")
        }
        return (h * 60 + m) % 1440
    }

    /// A JSON-like scalar value for conditions.
    func value() throws(JourneyConfigError) -> AttributeValue {
        switch node {
        case .scalar(let s):
            if s.style == .plain {
                if node.null != nil { return .null }
                if let b = node.bool { return .bool(b) }
                if let i = node.int { return .number(Double(i)) }
                if let d = node.float { return .number(d) }
            }
            return .string(s.string)
        case .sequence:
            var out: [AttributeValue] = []
            for n in try list() { out.append(try n.value()) }
            return .array(out)
        default:
            throw error("expected a value, found \(kind)")
        }
    }

    func number() throws(JourneyConfigError) -> Double {
        guard case .number(let d) = try value() else { throw error("expected a number") }
        return d
    }
}

/// Mapping entries with typed lookup.
struct Fields {
    let owner: YNode
    let entries: [(key: String, value: YNode)]
    subscript(_ key: String) -> YNode? { entries.first { $0.key == key }?.value }
    func has(_ key: String) -> Bool { self[key] != nil }
}

/// Parses YAML text into a root node, translating parser errors into ``JourneyConfigError``.
func composeYAML(_ text: String, file: String) throws(JourneyConfigError) -> YNode {
    do {
        guard let root = try Yams.compose(yaml: text) else {
            throw JourneyConfigError(file: file, line: 1, column: 1, message: "file is empty")
        }
        return YNode(node: root, file: file, path: "")
    } catch let e as JourneyConfigError {
        throw e
    } catch let e as YamlError {
        switch e {
        case .scanner(let ctx, let problem, let mark, _), .parser(let ctx, let problem, let mark, _),
             .composer(let ctx, let problem, let mark, _):
            let context = ctx.map { " (\($0.text))" } ?? ""
            throw JourneyConfigError(file: file, line: mark.line, column: mark.column, message: "invalid YAML: \(problem)\(context)")
        case .duplicatedKeysInMapping(let dups, let ctx):
            throw JourneyConfigError(file: file, line: ctx.mark.line, column: ctx.mark.column,
                                     message: "duplicate keys: \(dups.joined(separator: ", "))")
        default:
            throw JourneyConfigError(file: file, line: 0, column: 0, message: "invalid YAML: \(e)")
        }
    } catch {
        throw JourneyConfigError(file: file, line: 0, column: 0, message: "invalid YAML: \(error)")
    }
}

/// Reads a UTF-8 file, reporting failures as ``JourneyConfigError``.
func readConfigFile(_ path: String) throws(JourneyConfigError) -> String {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw JourneyConfigError(file: path, line: 0, column: 0, message: "cannot read file")
    }
    guard let text = String(data: data, encoding: .utf8) else {
        throw JourneyConfigError(file: path, line: 0, column: 0, message: "file is not valid UTF-8")
    }
    return text
}
