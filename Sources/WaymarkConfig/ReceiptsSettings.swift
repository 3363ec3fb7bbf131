import Foundation
import Yams

/// `waymark worker receipts` (`receipts:` in `config/waymark.yaml`): where providers' status
/// callbacks arrive and the secrets that check their signatures. A provider without its secret
/// has no route (404): nothing unsigned is ever accepted.
public struct ReceiptsSettings: Sendable {
    /// Address the callback server binds (behind a TLS-terminating ingress in production).
    public var host = "127.0.0.1"
    public var port = 8088
    /// The public base URL providers call (`https://receipts.example.com`). Twilio signs the exact URL
    /// it called, so the signature check rebuilds it from this, not from the Host header a proxy rewrote.
    public var publicURL = ""
    /// Signed requests with a timestamp (SendGrid, Waymark's own signature) older than this are refused
    /// as replays.
    public var maxAgeSeconds = 600
    /// Secrets, by provider: `twilio` (auth token), `whatsapp_cloud` (app secret), `whatsapp_verify`
    /// (the verify token of the GET handshake), `sendgrid` (verification key, base64 DER), `viber`
    /// (auth token), `rbm` (client token), `webhook` (signing secret).
    public var secrets: [String: String] = [:]

    public init() {}

    static let secretNames: [(key: String, settings: String, what: String)] = [
        ("twilio", "twilio_auth_token", "Twilio auth token"),
        ("whatsapp_cloud", "whatsapp_app_secret", "Meta app secret"),
        ("whatsapp_verify", "whatsapp_verify_token", "WhatsApp webhook verify token"),
        ("sendgrid", "sendgrid_verification_key", "SendGrid event webhook verification key"),
        ("viber", "viber_auth_token", "Viber auth token"),
        ("rbm", "rbm_client_token", "RBM webhook client token"),
        ("webhook", "webhook_signing_secret", "Waymark webhook signing secret"),
    ]

    static func parse(_ node: Node, reader: ConfigReader, environment: [String: String],
                      secret: (Node.Mapping, String, String, String) throws -> String?) throws -> ReceiptsSettings {
        var allowed: Set<String> = ["host", "port", "public_url", "max_age_s"]
        for s in secretNames { allowed.insert(s.settings + "_env"); allowed.insert(s.settings + "_file") }
        let mapping = try reader.mapping(node, "receipts", allowed: allowed)
        var settings = ReceiptsSettings()
        settings.host = try reader.string(mapping, "host", "receipts", default: "127.0.0.1")
        settings.port = try reader.int(mapping, "port", "receipts", default: 8088, range: 1...65_535)
        settings.publicURL = try reader.string(mapping, "public_url", "receipts", default: "")
        while settings.publicURL.hasSuffix("/") { settings.publicURL.removeLast() }
        if !settings.publicURL.isEmpty, !(settings.publicURL.hasPrefix("https://") || settings.publicURL.hasPrefix("http://")) {
            throw reader.fail(mapping["public_url"], "receipts.public_url", "expected an http(s) URL such as https://receipts.example.com")
        }
        settings.maxAgeSeconds = try reader.int(mapping, "max_age_s", "receipts", default: 600, range: 10...86_400)
        for s in secretNames {
            if let value = try secret(mapping, s.settings, "receipts", s.what) { settings.secrets[s.key] = value }
        }
        if settings.secrets["twilio"] != nil, settings.publicURL.isEmpty {
            throw reader.fail(mapping["twilio_auth_token_env"] ?? mapping["twilio_auth_token_file"], "receipts.public_url",
                              "Twilio signs the URL it calls: set public_url to the address Twilio is given")
        }
        if let port = environment["WAYMARK_RECEIPTS_PORT"] {
            guard let value = Int(port), (1...65_535).contains(value) else {
                throw ConfigError(file: "environment", line: 0, path: "WAYMARK_RECEIPTS_PORT", problem: "'\(port)' is not a port")
            }
            settings.port = value
        }
        if let host = environment["WAYMARK_RECEIPTS_HOST"], !host.isEmpty { settings.host = host }
        return settings
    }
}
