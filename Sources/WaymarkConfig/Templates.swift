import Foundation
import Mustache
import WaymarkEngine
import Yams

/// Text a template produced for one message (the fields its channel uses; the others are `nil`).
public struct RenderedMessage: Sendable, Hashable {
    /// SMS, RCS, Viber, WhatsApp session text, e-mail plain-text part, push body.
    public var body: String
    /// E-mail subject, push title.
    public var subject: String?
    /// E-mail HTML part.
    public var html: String?
    /// The template locale actually used after fallback (`nb-NO` → `nb` → `default`).
    public var locale: String
    /// A template the provider renders (WhatsApp, RCS, Viber): its id there and the parameters in order.
    public var providerTemplate: ProviderTemplate?

    public init(body: String, subject: String? = nil, html: String? = nil, locale: String, providerTemplate: ProviderTemplate? = nil) {
        self.body = body; self.subject = subject; self.html = html; self.locale = locale; self.providerTemplate = providerTemplate
    }
}

/// A template registered with (and approved by) the provider, filled with parameters.
public struct ProviderTemplate: Sendable, Hashable {
    /// The provider's template name or id.
    public var name: String
    /// The provider's language code (`en_US`, `nb`).
    public var language: String
    /// Body parameters, in order.
    public var parameters: [String]

    public init(name: String, language: String, parameters: [String]) {
        self.name = name; self.language = language; self.parameters = parameters
    }
}

/// The message templates in `config/templates/`: one directory per template, one file per locale
/// (`cart_reminder_1/default.yaml`, `cart_reminder_1/nb.yaml`, `cart_reminder_1/nb-NO.yaml`), each with
/// the channels it can be sent on:
///
/// ```yaml
/// sms: "Hi! Your cart {{cart_id}} is waiting: {{value}} {{currency}}."   # also rcs, viber
/// email: { subject: "Your cart", text: "…", html: "<p>…</p>" }
/// push: { title: "Still thinking?", body: "…" }
/// whatsapp: { template: cart_reminder, language: nb, parameters: [cart_id, value] }  # rendered by Meta
/// ```
///
/// Text is Mustache (`{{name}}` with the message's variables and `customer_id`); only `html` is
/// HTML-escaped. A customer's locale falls back `nb-NO` → `nb` → `default`.
public struct TemplateStore: Sendable {
    /// What one template file says for one channel.
    public struct Content: Sendable {
        public var body: MustacheTemplate?
        public var subject: MustacheTemplate?
        public var html: MustacheTemplate?
        public var providerTemplate: (name: String, language: String, parameters: [String])?
        /// Every variable name the parts refer to.
        public var variables: Set<String>
        /// The body's source (for segment counts of fixed text).
        public var bodySource: String
    }

    /// Template name → locale (lowercased, `default` for the fallback) → channel → content.
    public var templates: [String: [String: [Channel: Content]]]
    /// Where each template file was read from: name → locale → path.
    public var files: [String: [String: String]]

    public init(templates: [String: [String: [Channel: Content]]] = [:], files: [String: [String: String]] = [:]) {
        self.templates = templates; self.files = files
    }

    /// Loads `directory` (absent: an empty store). Every error names the file and line.
    public static func load(directory: String) throws(JourneyConfigError) -> TemplateStore {
        var store = TemplateStore()
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else { return store }
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
        for name in names {
            let folder = (directory as NSString).appendingPathComponent(name)
            var folderIsDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: folder, isDirectory: &folderIsDirectory), folderIsDirectory.boolValue else { continue }
            for file in ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted() where file.hasSuffix(".yaml") {
                let path = (folder as NSString).appendingPathComponent(file)
                let locale = String(file.dropLast(5)).lowercased()
                store.templates[name, default: [:]][locale] = try parse(file: path)
                store.files[name, default: [:]][locale] = path
            }
            if store.templates[name] != nil, store.templates[name]?["default"] == nil {
                throw JourneyConfigError(file: folder, line: 0, column: 0, message: "template '\(name)' needs a default.yaml (the locale fallback of last resort)")
            }
        }
        return store
    }

    static let allowedParts: [Channel: Set<String>] = [
        .email: ["subject", "text", "html"], .push: ["title", "body"],
        .whatsapp: ["text", "template", "language", "parameters"], .rcs: ["text", "template", "language", "parameters"],
        .viber: ["text", "template", "language", "parameters"], .sms: ["text"],
    ]

    static func parse(file path: String) throws(JourneyConfigError) -> [Channel: Content] {
        func fail(_ node: Node?, _ message: String) -> JourneyConfigError {
            JourneyConfigError(file: path, line: (node?.mark?.line ?? 0), column: node?.mark?.column ?? 0, message: message)
        }
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw JourneyConfigError(file: path, line: 0, column: 0, message: "cannot read the file")
        }
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch { throw JourneyConfigError(file: path, line: 0, column: 0, message: "not valid YAML: \(error)") }
        guard let mapping = root?.mapping else { throw fail(root, "a template file is a mapping of channel: content") }
        var out: [Channel: Content] = [:]
        for (key, value) in mapping {
            guard let name = key.string, let channel = Channel(rawValue: name) else {
                throw fail(key, "unknown channel '\(key.string ?? "?")'; known: \(Channel.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            func mustache(_ node: Node, html: Bool = false) throws(JourneyConfigError) -> (MustacheTemplate, Set<String>, String) {
                guard let source = node.scalar?.string else { throw fail(node, "\(name): expected text") }
                do {
                    let template = try MustacheTemplate(string: html ? source : "{{% CONTENT_TYPE: TEXT}}" + source)
                    return (template, variableNames(in: source), source)
                } catch {
                    throw fail(node, "\(name): not a valid Mustache template (\(error))")
                }
            }
            var content = Content(variables: [], bodySource: "")
            if value.scalar != nil {
                let (t, v, s) = try mustache(value)
                content.body = t; content.variables = v; content.bodySource = s
            } else if let parts = value.mapping {
                let allowed = allowedParts[channel] ?? []
                for (partKey, partValue) in parts {
                    let part = partKey.string ?? ""
                    guard allowed.contains(part) else {
                        throw fail(partKey, "\(name).\(part): unknown part; \(name) takes \(allowed.sorted().joined(separator: ", "))")
                    }
                    switch part {
                    case "text", "body":
                        let (t, v, s) = try mustache(partValue); content.body = t; content.variables.formUnion(v); content.bodySource = s
                    case "subject", "title":
                        let (t, v, _) = try mustache(partValue); content.subject = t; content.variables.formUnion(v)
                    case "html":
                        let (t, v, _) = try mustache(partValue, html: true); content.html = t; content.variables.formUnion(v)
                    default: break
                    }
                }
                if let templateName = parts["template"]?.scalar?.string {
                    let parameters = parts["parameters"]?.sequence?.compactMap { $0.scalar?.string } ?? []
                    let language = parts["language"]?.scalar?.string
                    guard let language else { throw fail(value, "\(name): a provider template needs its language code") }
                    content.providerTemplate = (templateName, language, parameters)
                    content.variables.formUnion(parameters)
                }
                if content.body == nil && content.providerTemplate == nil {
                    throw fail(value, "\(name): needs \(channel == .email ? "text" : channel == .push ? "body" : "text or a provider template")")
                }
                if channel == .email, content.subject == nil { throw fail(value, "email: needs a subject") }
            } else {
                throw fail(value, "\(name): expected text or a mapping of parts")
            }
            out[channel] = content
        }
        return out
    }

    /// The variable names `{{name}}`, `{{{name}}}`, `{{#name}}`, `{{^name}}`, `{{&name}}` refer to (dotted paths by their first part).
    static func variableNames(in source: String) -> Set<String> {
        var names = Set<String>()
        var rest = Substring(source)
        while let open = rest.range(of: "{{") {
            rest = rest[open.upperBound...]
            guard let close = rest.range(of: "}}") else { break }
            var tag = rest[..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            rest = rest[close.upperBound...]
            if tag.hasPrefix("{") { tag.removeFirst() }
            guard let first = tag.first, !"!%/>=".contains(first) else { continue }
            if "#^&".contains(first) { tag.removeFirst() }
            let name = tag.trimmingCharacters(in: .whitespaces).split(separator: ".").first.map(String.init) ?? ""
            if !name.isEmpty { names.insert(name) }
        }
        return names
    }

    /// The locales tried for `locale`, most specific first: `nb-NO` → `nb-no`, `nb`, `default`.
    public static func fallbackChain(_ locale: String?) -> [String] {
        var chain: [String] = []
        if var tag = locale?.lowercased().replacingOccurrences(of: "_", with: "-"), !tag.isEmpty {
            while true {
                chain.append(tag)
                guard let dash = tag.lastIndex(of: "-") else { break }
                tag = String(tag[..<dash])
            }
        }
        chain.append("default")
        return chain
    }

    /// The content for `name` on `channel` in the first locale of the fallback chain that has it.
    public func content(_ name: String, channel: Channel, locale: String?) -> (locale: String, content: Content)? {
        guard let locales = templates[name] else { return nil }
        for tag in Self.fallbackChain(locale) {
            if let content = locales[tag]?[channel] { return (tag, content) }
        }
        return nil
    }

    /// Renders `name` for `channel` with `variables` (`customer_id` is always there); `nil` when the
    /// template has nothing for the channel.
    public func render(_ name: String, channel: Channel, locale: String?, customerID: String,
                       variables: [String: AttributeValue]) -> RenderedMessage? {
        guard let (used, content) = content(name, channel: channel, locale: locale) else { return nil }
        var context: [String: Any] = ["customer_id": customerID]
        for (key, value) in variables { context[key] = Self.mustacheValue(value) }
        let parameters = content.providerTemplate?.parameters.map { p in variables[p].map(Self.text) ?? "" } ?? []
        return RenderedMessage(
            body: content.body?.render(context) ?? "", subject: content.subject?.render(context), html: content.html?.render(context),
            locale: used,
            providerTemplate: content.providerTemplate.map { ProviderTemplate(name: $0.name, language: $0.language, parameters: parameters) })
    }

    static func mustacheValue(_ value: AttributeValue) -> Any {
        switch value {
        case .string(let s): return s
        case .bool(let b): return b
        case .number: return text(value)
        case .object(let o): return o.mapValues(mustacheValue)
        case .array(let a): return a.map(mustacheValue)
        case .null: return ""
        }
    }

    /// A variable as parameter text: numbers without a trailing `.0` (the engine's own formatting).
    static func text(_ value: AttributeValue) -> String { value.keyString ?? "" }

    /// Checks every send step of `journeys` against the store: its template exists, has content for
    /// each of the step's channels in `default`, and refers only to variables the step passes (when the
    /// step lists them). Errors point at the step's `template:` line in its journey file.
    public func validate(_ journeys: [JourneyDefinition], journeysDirectory: String) throws(JourneyConfigError) {
        let positions = Self.templatePositions(journeysDirectory)
        for journey in journeys {
            for stage in journey.stages {
                for step in stage.steps {
                    guard case .send(let written) = step.action else { continue }
                    // The step as written, and as each experiment arm runs it.
                    var forms = [written]
                    for arm in step.variants.keys.sorted() {
                        let v = step.variants[arm]!
                        if v.skip { continue }
                        var s = written
                        if let t = v.template { s.template = t }
                        if let c = v.channels { s.channels = c }
                        if s != written { forms.append(s) }
                    }
                    for send in forms {
                        let (file, line) = positions["\(journey.name)/\(step.id)"] ?? ((journeysDirectory as NSString).appendingPathComponent(journey.name + ".yaml"), 0)
                        func fail(_ message: String) -> JourneyConfigError {
                            JourneyConfigError(file: file, line: line, column: 0, message: "journey '\(journey.name)' step '\(step.id)': \(message)")
                        }
                        guard let locales = templates[send.template] else {
                            let known = templates.keys.sorted()
                            let hint = known.min { editDistance($0, send.template) < editDistance($1, send.template) }.map { " (did you mean '\($0)'?)" } ?? ""
                            throw fail("template '\(send.template)' is not in the templates directory\(hint)")
                        }
                        for channel in send.channels where locales["default"]?[channel] == nil {
                            throw fail("template '\(send.template)' has nothing for \(channel.rawValue) in default.yaml")
                        }
                        guard let passed = send.variables else { continue }
                        let available = Set(passed.map { name in
                            name.hasPrefix("profile.") ? String(name.dropFirst(8)) : name.hasPrefix("event.") ? String(name.dropFirst(6)) : name
                        }).union(["customer_id"])
                        for (locale, channels) in locales.sorted(by: { $0.key < $1.key }) {
                            for (channel, content) in channels where send.channels.contains(channel) {
                                if let missing = content.variables.subtracting(available).sorted().first {
                                    throw fail("template '\(send.template)' (\(locale), \(channel.rawValue)) uses '\(missing)', which the step does not pass (variables: \(passed.joined(separator: ", ")))")
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `journey/step` → (file, line of the step's `template:`), read from the journey files.
    static func templatePositions(_ directory: String) -> [String: (String, Int)] {
        var out: [String: (String, Int)] = [:]
        for file in ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted() where file.hasSuffix(".yaml") || file.hasSuffix(".yml") {
            let path = (directory as NSString).appendingPathComponent(file)
            guard let text = try? String(contentsOfFile: path, encoding: .utf8), let root = try? Yams.compose(yaml: text),
                  let journey = root.mapping?["journey"]?.string else { continue }
            func walk(_ node: Node) {
                if let mapping = node.mapping {
                    if let id = mapping["id"]?.string, let template = mapping["send"]?.mapping?["template"] {
                        out["\(journey)/\(id)"] = (path, template.mark?.line ?? 0)
                    }
                    for (_, value) in mapping { walk(value) }
                } else if let sequence = node.sequence {
                    for item in sequence { walk(item) }
                }
            }
            walk(root)
        }
        return out
    }
}

/// SMS length: GSM 03.38 text (7-bit, extension characters count twice) or UCS-2.
public enum SMSSegments {
    static let basic = Set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
    static let extended = Set("^{}\\[~]|€\u{0C}")

    /// The encoding a carrier uses for `text` and the number of segments it takes (160/153 GSM-7
    /// septets, 70/67 UCS-2 code units per single/concatenated segment).
    public static func count(_ text: String) -> (encoding: String, units: Int, segments: Int) {
        var septets = 0
        var gsm = true
        for character in text {
            if basic.contains(character) { septets += 1 } else if extended.contains(character) { septets += 2 } else { gsm = false; break }
        }
        if gsm { return ("GSM-7", septets, septets <= 160 ? 1 : (septets + 152) / 153) }
        let units = text.utf16.count
        return ("UCS-2", units, units <= 70 ? 1 : (units + 66) / 67)
    }
}
