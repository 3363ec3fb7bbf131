import Foundation
import Yams

/// A configuration problem, located in its file.
public struct ConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The file (as given to the loader).
    public var file: String
    /// 1-based line, or 0 when unknown.
    public var line: Int
    /// Dotted path to the setting, for example `kafka.topics.touchpoints.partitions`.
    public var path: String
    /// What is wrong, in words an operator can act on.
    public var problem: String

    public init(file: String, line: Int, path: String, problem: String) {
        self.file = file
        self.line = line
        self.path = path
        self.problem = problem
    }

    public var description: String {
        let location = line > 0 ? "\(file):\(line)" : file
        return path.isEmpty ? "\(location): \(problem)" : "\(location): \(path): \(problem)"
    }
}

/// Reads a YAML document node by node, so every error names file, line and setting, and
/// misspelt keys are rejected instead of silently ignored.
public struct ConfigReader: Sendable {
    public let file: String

    public init(file: String) { self.file = file }

    /// Parses `text`; an empty document is an empty mapping.
    public func parse(_ text: String) throws -> Node {
        do {
            return try Yams.compose(yaml: text) ?? Node.mapping(Node.Mapping([]))
        } catch let error as YamlError {
            throw ConfigError(file: file, line: Self.line(of: error), path: "", problem: "invalid YAML: \(error)")
        }
    }

    private static func line(of error: YamlError) -> Int {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): mark.line
        default: 0
        }
    }

    public func fail(_ node: Node?, _ path: String, _ problem: String) -> ConfigError {
        ConfigError(file: file, line: node?.mark?.line ?? 0, path: path, problem: problem)
    }

    /// The node as a mapping whose keys are all in `allowed` (`nil` allows any key).
    public func mapping(_ node: Node, _ path: String, allowed: Set<String>?) throws -> Node.Mapping {
        guard let mapping = node.mapping else { throw fail(node, path, "expected a mapping of key: value") }
        if let allowed {
            for key in mapping.keys {
                guard let name = key.string else { throw fail(key, path, "keys must be strings") }
                if !allowed.contains(name) {
                    let suggestion = allowed.min { editDistance($0, name) < editDistance($1, name) }
                    let hint = suggestion.map { " (did you mean '\($0)'?)" } ?? ""
                    throw fail(key, join(path, name), "unknown setting\(hint); allowed: \(allowed.sorted().joined(separator: ", "))")
                }
            }
        }
        return mapping
    }

    public func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    public func string(_ mapping: Node.Mapping, _ key: String, _ path: String, default value: String? = nil) throws -> String {
        guard let node = mapping[key], !isNull(node) else {
            if let value { return value }
            throw fail(mapping.first?.key, join(path, key), "required setting is missing")
        }
        guard let scalar = node.scalar else { throw fail(node, join(path, key), "expected a string") }
        return scalar.string
    }

    public func optionalString(_ mapping: Node.Mapping, _ key: String, _ path: String) throws -> String? {
        guard let node = mapping[key], !isNull(node) else { return nil }
        guard let scalar = node.scalar else { throw fail(node, join(path, key), "expected a string") }
        return scalar.string
    }

    public func int(_ mapping: Node.Mapping, _ key: String, _ path: String, default value: Int? = nil,
                    range: ClosedRange<Int>? = nil) throws -> Int {
        guard let node = mapping[key], !isNull(node) else {
            if let value { return value }
            throw fail(mapping.first?.key, join(path, key), "required setting is missing")
        }
        guard let number = node.int else { throw fail(node, join(path, key), "expected an integer, got '\(node.string ?? "?")'") }
        if let range, !range.contains(number) {
            throw fail(node, join(path, key), "\(number) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return number
    }

    public func bool(_ mapping: Node.Mapping, _ key: String, _ path: String, default value: Bool) throws -> Bool {
        guard let node = mapping[key], !isNull(node) else { return value }
        guard let flag = node.bool else { throw fail(node, join(path, key), "expected true or false") }
        return flag
    }

    /// A mapping of string to scalar, with values as strings (`retention.ms: 604800000` → "604800000").
    public func stringMap(_ mapping: Node.Mapping, _ key: String, _ path: String) throws -> [String: String] {
        guard let node = mapping[key], !isNull(node) else { return [:] }
        var out: [String: String] = [:]
        for (k, v) in try self.mapping(node, join(path, key), allowed: nil) {
            guard let name = k.string, let value = v.scalar?.string else {
                throw fail(v, join(path, key), "expected name: value pairs of scalars")
            }
            out[name] = value
        }
        return out
    }

    public func stringList(_ mapping: Node.Mapping, _ key: String, _ path: String, default value: [String]) throws -> [String] {
        guard let node = mapping[key], !isNull(node) else { return value }
        guard let sequence = node.sequence else { throw fail(node, join(path, key), "expected a list") }
        return try sequence.map { item in
            guard let text = item.scalar?.string else { throw fail(item, join(path, key), "expected a list of strings") }
            return text
        }
    }

    public func isNull(_ node: Node) -> Bool { node.null != nil && node.scalar?.style == .plain }
}

/// Levenshtein distance, for "did you mean" hints on misspelt keys.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var previous = Array(0...b.count)
    for i in 1...a.count {
        var current = [i] + Array(repeating: 0, count: b.count)
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return previous[b.count]
}
