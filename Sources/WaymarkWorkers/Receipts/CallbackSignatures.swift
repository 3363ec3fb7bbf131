import Crypto
import Foundation

/// How each provider signs its callbacks, and the checks the receipts endpoint makes. Every check
/// compares in constant time; each returns `false` for a missing or malformed signature.
public enum CallbackSignatures {
    /// Twilio `X-Twilio-Signature`: base64 HMAC-SHA1 with the auth token over the full URL Twilio
    /// called (scheme, host, path and query, as configured in Twilio) followed by every POST parameter,
    /// sorted by name, as name then value with no separators.
    public static func twilio(authToken: String, url: String, parameters: [String: String]) -> String {
        var signed = url
        for name in parameters.keys.sorted() { signed += name + parameters[name]! }
        let mac = HMAC<Insecure.SHA1>.authenticationCode(for: Data(signed.utf8), using: SymmetricKey(data: Data(authToken.utf8)))
        return Data(mac).base64EncodedString()
    }

    public static func verifyTwilio(_ header: String?, authToken: String, url: String, parameters: [String: String]) -> Bool {
        guard let header else { return false }
        return constantTimeEqual(header, twilio(authToken: authToken, url: url, parameters: parameters))
    }

    /// Meta `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>`.
    public static func meta(appSecret: String, body: [UInt8]) -> String {
        "sha256=" + hex(HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Data(appSecret.utf8))))
    }

    public static func verifyMeta(_ header: String?, appSecret: String, body: [UInt8]) -> Bool {
        guard let header else { return false }
        return constantTimeEqual(header.lowercased(), meta(appSecret: appSecret, body: body))
    }

    /// SendGrid's signed event webhook: `X-Twilio-Email-Event-Webhook-Signature` is a base64 DER
    /// ECDSA P-256 signature over `X-Twilio-Email-Event-Webhook-Timestamp` followed by the raw body,
    /// checked with the verification key SendGrid shows (base64 DER public key).
    public static func verifySendGrid(signature: String?, timestamp: String?, body: [UInt8], publicKey: String) -> Bool {
        guard let signature, let timestamp, let keyData = Data(base64Encoded: publicKey),
              let signatureData = Data(base64Encoded: signature),
              let key = try? P256.Signing.PublicKey(derRepresentation: keyData),
              let ecdsa = try? P256.Signing.ECDSASignature(derRepresentation: signatureData) else { return false }
        var signed = Data(timestamp.utf8)
        signed.append(contentsOf: body)
        return key.isValidSignature(ecdsa, for: signed)
    }

    /// Viber `X-Viber-Content-Signature`: hex HMAC-SHA256 with the auth token over the raw body.
    public static func viber(authToken: String, body: [UInt8]) -> String {
        hex(HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Data(authToken.utf8))))
    }

    public static func verifyViber(_ header: String?, authToken: String, body: [UInt8]) -> Bool {
        guard let header else { return false }
        return constantTimeEqual(header.lowercased(), viber(authToken: authToken, body: body))
    }

    /// Google RBM `X-Goog-Signature`: base64 HMAC-SHA512 with the webhook's client token over the
    /// decoded `message.data` of the push body.
    public static func rbm(clientToken: String, data: [UInt8]) -> String {
        Data(HMAC<SHA512>.authenticationCode(for: data, using: SymmetricKey(data: Data(clientToken.utf8)))).base64EncodedString()
    }

    public static func verifyRBM(_ header: String?, clientToken: String, data: [UInt8]) -> Bool {
        guard let header else { return false }
        return constantTimeEqual(header, rbm(clientToken: clientToken, data: data))
    }

    /// Waymark's own signature (the webhook provider's, and the one apps use to report opens and
    /// clicks): `X-Waymark-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
    /// refused when `t` is more than `maxAge` seconds from `now`.
    public static func verifyWaymark(_ header: String?, secret: String, body: [UInt8], now: Int64, maxAge: Int64) -> Bool {
        guard let header else { return false }
        var timestamp: Int64?, provided: String?
        for part in header.split(separator: ",") {
            let pieces = part.split(separator: "=", maxSplits: 1).map(String.init)
            guard pieces.count == 2 else { continue }
            if pieces[0] == "t" { timestamp = Int64(pieces[1]) }
            if pieces[0] == "v1" { provided = pieces[1] }
        }
        guard let timestamp, let provided, abs(now - timestamp) <= maxAge else { return false }
        let expected = WebhookProvider.signature(secret: SymmetricKey(data: Data(secret.utf8)), timestamp: timestamp, body: body)
        return constantTimeEqual("t=\(timestamp),v1=\(provided.lowercased())", expected)
    }

    static func hex<D: Sequence>(_ bytes: D) -> String where D.Element == UInt8 {
        bytes.map { String(format: "%02x", $0) }.joined()
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for i in x.indices { difference |= x[i] ^ y[i] }
        return difference == 0
    }
}
