import Foundation
import Yams

/// One channel's provider (`sender.providers.<channel>` in `config/waymark.yaml`): its type, its
/// options and its secrets, validated at start-up against the type's schema (``ProviderSettings/schemas``).
///
/// Secrets never sit in the file: a secret option `auth_token` is given as `auth_token_env` (the name of
/// an environment variable) or `auth_token_file` (a mounted secret), and arrives here in ``secrets``.
public struct ProviderSettings: Sendable, Hashable {
    /// `twilio`, `whatsapp_cloud`, `sendgrid`, `fcm`, `rbm`, `viber`, `webhook` or `file`.
    public var type: String
    /// Plain options (`account_sid`, `from`, `status_callback_url`, `base_url`, …), as strings.
    public var options: [String: String]
    /// Secret options, read from the environment or a file (`auth_token`, `api_key`, `signing_secret`, …).
    public var secrets: [String: String]
    /// Overrides of the provider's documented default rate (calls per second, shared by all senders) and burst.
    public var ratePerSecond: Double?
    public var burst: Int?

    public init(type: String, options: [String: String] = [:], secrets: [String: String] = [:],
                ratePerSecond: Double? = nil, burst: Int? = nil) {
        self.type = type; self.options = options; self.secrets = secrets; self.ratePerSecond = ratePerSecond; self.burst = burst
    }

    /// A required option (validated at load: present whenever the schema says so).
    public func option(_ name: String) -> String { options[name] ?? "" }

    /// What each provider type takes. `required`/`optional` are plain options; `secrets` are given as
    /// `<name>_env` or `<name>_file` (a secret in `requiredSecrets` must be given one way or the other).
    public struct Schema: Sendable {
        public var required: Set<String>
        public var optional: Set<String>
        public var requiredSecrets: Set<String>
        public var optionalSecrets: Set<String>
        /// Channels this type can serve.
        public var channels: Set<String>
    }

    /// The schema of every provider type (the one owner of which options exist).
    public static let schemas: [String: Schema] = [
        "file": Schema(required: [], optional: ["path"], requiredSecrets: [], optionalSecrets: [],
                       channels: WaymarkSettings.knownChannels),
        "webhook": Schema(required: ["url"], optional: ["ca_file"], requiredSecrets: [], optionalSecrets: ["signing_secret"],
                          channels: WaymarkSettings.knownChannels),
        // Twilio Programmable Messaging: SMS, and WhatsApp through Twilio (`whatsapp:` addresses).
        "twilio": Schema(required: ["account_sid"], optional: ["from", "messaging_service_sid", "status_callback_url", "base_url"],
                         requiredSecrets: ["auth_token"], optionalSecrets: [], channels: ["sms", "whatsapp"]),
        // Meta WhatsApp Cloud API (Graph API).
        "whatsapp_cloud": Schema(required: ["phone_number_id"], optional: ["api_version", "base_url"],
                                 requiredSecrets: ["access_token"], optionalSecrets: [], channels: ["whatsapp"]),
        // SendGrid v3 mail send.
        "sendgrid": Schema(required: ["from"], optional: ["from_name", "base_url"], requiredSecrets: ["api_key"],
                           optionalSecrets: [], channels: ["email"]),
        // Firebase Cloud Messaging HTTP v1 (OAuth 2 with a service account).
        "fcm": Schema(required: ["project_id"], optional: ["base_url", "token_url"], requiredSecrets: ["service_account"],
                      optionalSecrets: [], channels: ["push"]),
        // Google RCS Business Messaging (OAuth 2 with a service account).
        "rbm": Schema(required: ["agent_id"], optional: ["base_url", "token_url"], requiredSecrets: ["service_account"],
                      optionalSecrets: [], channels: ["rcs"]),
        // Viber REST API (send_message; callbacks signed with the same token).
        "viber": Schema(required: ["sender_name"], optional: ["sender_avatar", "base_url"], requiredSecrets: ["auth_token"],
                        optionalSecrets: [], channels: ["viber"]),
    ]

    /// Parses and validates one `sender.providers.<channel>` mapping.
    static func parse(_ node: Node, channel: String, reader: ConfigReader,
                      secret: (Node.Mapping, String, String, String) throws -> String?) throws -> ProviderSettings {
        let path = "sender.providers.\(channel)"
        let mapping = try reader.mapping(node, path, allowed: nil)
        let type = try reader.string(mapping, "type", path)
        guard let schema = schemas[type] else {
            throw reader.fail(mapping["type"], "\(path).type", "unknown provider '\(type)'; known: \(schemas.keys.sorted().joined(separator: ", "))")
        }
        guard schema.channels.contains(channel) else {
            throw reader.fail(mapping["type"], "\(path).type", "\(type) does not serve \(channel) (it serves \(schema.channels.sorted().joined(separator: ", ")))")
        }
        let secretKeys = schema.requiredSecrets.union(schema.optionalSecrets)
        var allowed: Set<String> = ["type", "rate_per_second", "burst"]
        allowed.formUnion(schema.required)
        allowed.formUnion(schema.optional)
        for name in secretKeys { allowed.insert(name + "_env"); allowed.insert(name + "_file") }
        _ = try reader.mapping(node, path, allowed: allowed)
        var settings = ProviderSettings(type: type)
        for name in schema.required.union(schema.optional) {
            if let value = try reader.optionalString(mapping, name, path) {
                settings.options[name] = value
            } else if schema.required.contains(name) {
                throw reader.fail(mapping["type"], "\(path).\(name)", "required for \(type)")
            }
        }
        for name in secretKeys {
            if let value = try secret(mapping, name, path, "\(type) \(name.replacingOccurrences(of: "_", with: " "))") {
                settings.secrets[name] = value
            } else if schema.requiredSecrets.contains(name) {
                throw reader.fail(mapping["type"], "\(path).\(name)_env", "\(type) needs \(name)_env or \(name)_file (secrets never go in this file)")
            }
        }
        if type == "twilio", settings.options["from"] == nil, settings.options["messaging_service_sid"] == nil {
            throw reader.fail(mapping["type"], "\(path).from", "twilio needs from or messaging_service_sid")
        }
        for name in ["url", "status_callback_url", "base_url", "token_url"] {
            if let url = settings.options[name], !(url.hasPrefix("https://") || url.hasPrefix("http://")) || URL(string: url)?.host == nil {
                throw reader.fail(mapping[name], "\(path).\(name)", "expected an http(s) URL, got '\(url)'")
            }
        }
        if mapping["rate_per_second"] != nil {
            settings.ratePerSecond = Double(try reader.int(mapping, "rate_per_second", path, range: 1...1_000_000))
        }
        if mapping["burst"] != nil { settings.burst = try reader.int(mapping, "burst", path, range: 1...1_000_000) }
        return settings
    }
}
