import Foundation
import WaymarkEngine

/// Text helpers the provider adapters share.
enum PlainText {
    /// The text of a message sent without a rendered template: the template name, then the
    /// variables as `name=value` in name order (`cart_reminder_1 cart_id=k-77 value=59.9`). Enough for
    /// a test or a provider-side template to work with; real deployments configure a template store.
    static func fallback(_ request: ProviderRequest) -> String {
        var parts = [request.message.template]
        for (name, value) in request.message.variables.sorted(by: { $0.key < $1.key }) {
            parts.append("\(name)=\(describe(value))")
        }
        return parts.joined(separator: " ")
    }

    /// The body to send: the rendered body, else ``fallback(_:)``.
    static func body(_ request: ProviderRequest) -> String {
        request.rendered?.body ?? fallback(request)
    }

    private static func describe(_ value: AttributeValue) -> String {
        if let scalar = value.keyString { return scalar }
        switch value {
        case .array(let items): return "[" + items.map(describe).joined(separator: ",") + "]"
        case .object(let fields): return "{" + fields.sorted(by: { $0.key < $1.key }).map { "\($0.key)=\(describe($0.value))" }.joined(separator: ",") + "}"
        default: return "null"
        }
    }

    /// A provider's error message made safe for a `reason` (which reaches logs, metrics labels and
    /// the decisions topic): providers quote the recipient back (Twilio: "The 'To' number +4791234567
    /// is not a valid phone number"), so runs of 5+ digits and e-mail addresses are masked, and the
    /// text is cut to 160 characters.
    static func redacted(_ message: String) -> String {
        var out = ""
        var digits = ""
        func flush() {
            if digits.filter(\.isNumber).count >= 5 { out += "<number>" } else { out += digits }
            digits = ""
        }
        for ch in message {
            if ch.isASCII && (ch.isNumber || (ch == "+" && digits.isEmpty)) { digits.append(ch) } else { flush(); out.append(ch) }
        }
        flush()
        // user@host → <email>
        let words = out.split(separator: " ", omittingEmptySubsequences: false).map { word -> String in
            word.contains("@") && word.contains(".") ? "<email>" : String(word)
        }
        out = words.joined(separator: " ")
        return out.count > 160 ? String(out.prefix(160)) + "…" : out
    }

    /// The digits of a phone number (`+47 912 34 567`, `whatsapp:+4791234567` → `4791234567`).
    static func digits(_ address: String) -> String {
        String(address.filter { $0.isASCII && $0.isNumber })
    }

    /// A configured `base_url` (or the provider's) without a trailing slash.
    static func baseURL(_ configured: String?, default: String) -> String {
        var url = configured ?? `default`
        while url.hasSuffix("/") { url.removeLast() }
        return url
    }

    /// A JSON number (or numeric string) as an integer.
    static func int(_ value: Any?) -> Int? {
        switch value {
        case let i as Int: return i
        case let n as NSNumber: return n.intValue
        case let s as String: return Int(s)
        default: return nil
        }
    }
}
