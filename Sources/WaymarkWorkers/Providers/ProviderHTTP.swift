import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL

/// The HTTP client every provider adapter shares the shape of: one AsyncHTTPClient per adapter
/// (connection pool sized to the sender's concurrency), a per-call timeout, and the mapping of
/// transport errors and HTTP classes that all providers share (timeouts, refused connections and 5xx
/// are transient; 429 is throttling with `Retry-After`). Each adapter maps its provider's own error
/// bodies on top of ``ProviderHTTP/Response``.
public final class ProviderHTTP: Sendable {
    /// A provider's answer, body collected (at most 1 MiB).
    public struct Response: Sendable {
        public var status: Int
        public var headers: HTTPHeaders
        public var body: [UInt8]

        /// The body parsed as a JSON object (`[:]` when it is not one).
        public var json: [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
        }
        public var bodyText: String { String(decoding: body, as: UTF8.self) }

        /// `Retry-After` in milliseconds (seconds or an HTTP date), if sent.
        public var retryAfterMilliseconds: Int? {
            guard let value = headers.first(name: "Retry-After")?.trimmingCharacters(in: .whitespaces) else { return nil }
            if let seconds = Double(value) { return max(0, Int(seconds * 1000)) }
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
            guard let date = formatter.date(from: value) else { return nil }
            return max(0, Int(date.timeIntervalSinceNow * 1000))
        }
    }

    private let client: HTTPClient
    private let timeout: Duration

    /// - Parameters:
    ///   - timeout: per call, connection included.
    ///   - caBundlePath: PEM file of trusted certificate authorities instead of the system's.
    ///   - maxConnections: HTTP/1.1 connections per host at once (the sender's concurrency).
    public init(timeout: Duration, caBundlePath: String? = nil, maxConnections: Int) {
        self.timeout = timeout
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: max(1, maxConnections))
        configuration.timeout = .init(connect: .nanoseconds(Self.nanoseconds(timeout)))
        if let caBundlePath {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file(caBundlePath)
            configuration.tlsConfiguration = tls
        }
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    private static func nanoseconds(_ d: Duration) -> Int64 {
        Int64(d.components.seconds) * 1_000_000_000 + d.components.attoseconds / 1_000_000_000
    }

    /// Sends one request. Transport failures come back as a ``ProviderResult`` (transient, or
    /// permanent for an invalid URL), never as a thrown error.
    public func send(_ method: HTTPMethod, _ url: String, headers: [(String, String)], body: [UInt8]?) async -> Result<Response, ProviderFailure> {
        var request = HTTPClientRequest(url: url)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        do {
            let response = try await client.execute(request, timeout: .nanoseconds(Self.nanoseconds(timeout)))
            let collected = try await response.body.collect(upTo: 1 << 20)
            return .success(Response(status: Int(response.status.code), headers: response.headers, body: Array(buffer: collected)))
        } catch let error as HTTPClientError where error == .invalidURL || error == .emptyHost || error == .emptyScheme {
            return .failure(ProviderFailure(.permanentFailure(reason: "invalid URL")))
        } catch {
            // Timeouts, refused or reset connections, TLS handshakes: the provider may be back soon.
            return .failure(ProviderFailure(.transientFailure(reason: Self.describe(error))))
        }
    }

    /// The classes every provider shares: 429 throttled, 408/425/5xx transient; `nil` for the others
    /// (2xx and 4xx, which the adapter reads).
    public static func commonOutcome(_ response: Response, provider: String, detail: String = "") -> ProviderResult? {
        let suffix = detail.isEmpty ? "" : " \(detail)"
        switch response.status {
        case 429: return .throttled(reason: "\(provider) HTTP 429\(suffix)", retryAfterMilliseconds: response.retryAfterMilliseconds)
        case 408, 425, 500...599: return .transientFailure(reason: "\(provider) HTTP \(response.status)\(suffix)")
        default: return nil
        }
    }

    /// A short reason for logs and decisions: the error's kind, never the URL's path or query.
    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError {
            switch error {
            case .deadlineExceeded, .readTimeout, .connectTimeout: return "timeout"
            case .remoteConnectionClosed: return "connection closed"
            default: return "http client error"
            }
        }
        return "connection failed (\(type(of: error)))"
    }

    public func shutdown() async { try? await client.shutdown() }
}

/// A provider call that failed before an answer could be read.
public struct ProviderFailure: Error, Sendable {
    public var result: ProviderResult
    public init(_ result: ProviderResult) { self.result = result }
}

/// `application/x-www-form-urlencoded` encoding (Twilio, OAuth token requests).
public enum FormEncoding {
    /// Characters left as they are: RFC 3986 unreserved.
    private static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    public static func encode(_ pairs: [(String, String)]) -> String {
        pairs.map { "\(escape($0.0))=\(escape($0.1))" }.joined(separator: "&")
    }

    public static func escape(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: unreserved) ?? s
    }

    /// Parses a form body (`+` is a space); repeated names keep their last value.
    public static func decode(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for pair in text.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func unescape(_ s: Substring) -> String { String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(s) }
            out[unescape(parts[0])] = parts.count > 1 ? unescape(parts[1]) : ""
        }
        return out
    }
}
