import _CryptoExtras
import Crypto
import Foundation
import Synchronization
import WaymarkWire

/// OAuth 2 access tokens for a Google service account (FCM, RCS Business Messaging).
///
/// Signs an RS256 JWT (`iss` = `client_email`, `scope`, `aud` = the token URL, one-hour `exp`) with
/// the account's private key and exchanges it at the token URL (`grant_type=
/// urn:ietf:params:oauth:grant-type:jwt-bearer`) for an access token. The token is cached and
/// refreshed 5 minutes before it expires; concurrent callers share one exchange. An API's 401 calls
/// ``invalidate(_:)`` so the next call fetches a fresh one.
///
/// Token endpoint answers: 5xx, 429 and transport failures are transient; a 400/401 (`invalid_grant`:
/// a revoked or unknown key, `invalid_client`) is permanent, since retrying will not fix credentials.
public final class GoogleServiceAccount: Sendable {
    /// An access token and when to stop using it.
    struct Token: Sendable {
        var value: String
        var refreshAt: ContinuousClock.Instant
    }

    private struct State {
        var token: Token?
        var inFlight: Task<Result<Token, ProviderFailure>, Never>?
    }

    /// `client_email`, for logs.
    public let clientEmail: String
    private let privateKey: _RSA.Signing.PrivateKey
    private let tokenURL: String
    private let scope: String
    private let provider: String
    private let http: ProviderHTTP
    private let state = Mutex(State())

    /// A service account's key file, parsed (before any client exists, so a bad file leaks nothing).
    public struct Key: Sendable {
        public var clientEmail: String
        var privateKey: _RSA.Signing.PrivateKey
        /// `token_uri`, if the file has one.
        public var tokenURI: String?

        /// - Parameters:
        ///   - json: the key file (`client_email`, `private_key` PEM, `token_uri`).
        ///   - provider: the adapter name, for errors.
        public init(json: String, provider: String) throws {
            guard let object = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] else {
                throw ProviderError(message: "\(provider) service_account is not a JSON object")
            }
            guard let email = object["client_email"] as? String, let pem = object["private_key"] as? String else {
                throw ProviderError(message: "\(provider) service_account needs client_email and private_key")
            }
            do { privateKey = try _RSA.Signing.PrivateKey(pemRepresentation: pem) } catch {
                throw ProviderError(message: "\(provider) service_account private_key is not an RSA PEM key")
            }
            clientEmail = email
            tokenURI = object["token_uri"] as? String
        }
    }

    /// - Parameters:
    ///   - key: the parsed key file.
    ///   - scope: the OAuth scope the API needs.
    ///   - tokenURL: overrides the key file's `token_uri` (tests, private endpoints).
    ///   - provider: the adapter name, for `reason`s.
    ///   - http: the adapter's client.
    public init(key: Key, scope: String, tokenURL: String? = nil, provider: String, http: ProviderHTTP) {
        clientEmail = key.clientEmail
        privateKey = key.privateKey
        self.tokenURL = tokenURL ?? key.tokenURI ?? "https://oauth2.googleapis.com/token"
        self.scope = scope
        self.provider = provider
        self.http = http
    }

    /// A signed assertion for the token request, issued at `issuedAt` (Unix seconds).
    func assertion(issuedAt: Int64) throws -> String {
        var header = JSONWriter(capacity: 64)
        header.beginObject(); header.key("alg"); header.string("RS256"); header.key("typ"); header.string("JWT"); header.endObject()
        var claims = JSONWriter(capacity: 256)
        claims.beginObject()
        claims.key("iss"); claims.string(clientEmail)
        claims.key("scope"); claims.string(scope)
        claims.key("aud"); claims.string(tokenURL)
        claims.key("iat"); claims.int(issuedAt)
        claims.key("exp"); claims.int(issuedAt + 3600)
        claims.endObject()
        let signingInput = Self.base64URL(header.bytes) + "." + Self.base64URL(claims.bytes)
        let signature = try privateKey.signature(for: SHA256.hash(data: Array(signingInput.utf8)), padding: .insecurePKCS1v1_5)
        return signingInput + "." + Self.base64URL(signature.rawRepresentation)
    }

    static func base64URL<D: DataProtocol>(_ bytes: D) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// A valid access token: the cached one, or a fresh one from the token URL.
    public func accessToken() async -> Result<String, ProviderFailure> {
        let now = ContinuousClock.now
        let task = state.withLock { s -> Task<Result<Token, ProviderFailure>, Never>? in
            if let token = s.token, now < token.refreshAt { return nil }
            if let inFlight = s.inFlight { return inFlight }
            let task = Task { await self.fetch() }
            s.inFlight = task
            return task
        }
        guard let task else {
            // Read again under the lock: the cached token was valid a moment ago.
            if let token = state.withLock({ $0.token }) { return .success(token.value) }
            return await accessToken()
        }
        let result = await task.value
        state.withLock { s in
            if s.inFlight == task { s.inFlight = nil }
            if case .success(let token) = result { s.token = token }
        }
        return result.map(\.value)
    }

    /// Forgets `token` (the API answered 401 with it), unless a newer one has replaced it.
    public func invalidate(_ token: String) {
        state.withLock { s in if s.token?.value == token { s.token = nil } }
    }

    private func fetch() async -> Result<Token, ProviderFailure> {
        let jwt: String
        do { jwt = try assertion(issuedAt: Int64(Date().timeIntervalSince1970)) } catch {
            return .failure(ProviderFailure(.permanentFailure(reason: "\(provider) oauth: cannot sign the assertion")))
        }
        let form = FormEncoding.encode([("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", jwt)])
        let started = ContinuousClock.now
        switch await http.send(.POST, tokenURL, headers: [("Content-Type", "application/x-www-form-urlencoded")], body: Array(form.utf8)) {
        case .failure(let failure):
            if case .transientFailure(let reason) = failure.result {
                return .failure(ProviderFailure(.transientFailure(reason: "\(provider) oauth: \(reason)")))
            }
            return .failure(ProviderFailure(.transientFailure(reason: "\(provider) oauth: token endpoint unreachable")))
        case .success(let response):
            let json = response.json
            if response.status == 200, let value = json["access_token"] as? String, !value.isEmpty {
                let lifetime = PlainText.int(json["expires_in"]) ?? 3600
                // Refresh 5 minutes early; a short-lived token is refreshed at half its life.
                let margin = lifetime > 600 ? 300 : lifetime / 2
                return .success(Token(value: value, refreshAt: started + .seconds(lifetime - margin)))
            }
            let error = json["error"] as? String ?? "HTTP \(response.status)"
            if response.status == 400 || response.status == 401 {
                return .failure(ProviderFailure(.permanentFailure(reason: "\(provider) oauth \(error): service account rejected")))
            }
            return .failure(ProviderFailure(.transientFailure(reason: "\(provider) oauth \(error)")))
        }
    }
}
