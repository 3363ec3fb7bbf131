import AsyncHTTPClient
import Foundation
import NIOCore
import NIOSSL
import WaymarkEngine
import WaymarkWire

/// POSTs each message as JSON to a configured URL, with the message id as `Idempotency-Key`, over
/// AsyncHTTPClient (connection pooling, TLS with system trust or a CA bundle).
///
/// Body: `{"idempotency_key", "attempt", "to", "message": {…outbound message…}}`. Answers map to:
/// 2xx accepted; 408, 425, 429 and 5xx transient (retried with backoff); other 4xx permanent (fallback).
/// Timeouts, refused or dropped connections are transient; an invalid URL is permanent.
public final class WebhookProvider: MessageProvider {
    public let name = "webhook"
    private let client: HTTPClient
    private let url: String
    private let timeout: Duration

    /// - Parameters:
    ///   - url: `http(s)://…` endpoint.
    ///   - timeout: per call, connection included.
    ///   - caBundlePath: PEM file of trusted certificate authorities instead of the system's.
    ///   - maxConnections: HTTP/1.1 connections to the host at once; set it to the sender's
    ///     concurrency (AsyncHTTPClient's default of 8 capped a 64-wide sender at 8 calls in flight:
    ///     143 messages/s against a provider answering in 50 ms, `waymark-bench pipeline`).
    public init(url: String, timeout: Duration, caBundlePath: String? = nil, maxConnections: Int = 8) throws {
        guard let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme ?? ""), parsed.host != nil else {
            throw ProviderError(message: "webhook URL must be http(s)://host/…")
        }
        self.url = url
        self.timeout = timeout
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: max(1, maxConnections))
        configuration.timeout = .init(connect: .milliseconds(Int64(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)))
        if let caBundlePath {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file(caBundlePath)
            configuration.tlsConfiguration = tls
        }
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    public func deliver(_ request: ProviderRequest) async -> ProviderResult {
        var w = JSONWriter(capacity: 512)
        w.beginObject()
        w.key("idempotency_key"); w.string(request.idempotencyKey)
        w.key("attempt"); w.int(Int64(request.attempt))
        w.key("to"); w.string(request.address)
        w.key("message"); w.rawJSON(request.message.jsonBytes())
        w.endObject()
        var post = HTTPClientRequest(url: url)
        post.method = .POST
        post.headers.add(name: "Content-Type", value: "application/json")
        post.headers.add(name: "Idempotency-Key", value: request.idempotencyKey)
        post.body = .bytes(ByteBuffer(bytes: w.bytes))
        do {
            let response = try await client.execute(post, timeout: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000
                                                                                 + timeout.components.attoseconds / 1_000_000_000))
            _ = try? await response.body.collect(upTo: 64 * 1024)  // drain, so the connection can be reused
            switch response.status.code {
            case 200..<300: return .accepted(reference: nil)
            case 408, 425, 429, 500...599: return .transientFailure(reason: "HTTP \(response.status.code)")
            default: return .permanentFailure(reason: "HTTP \(response.status.code)")
            }
        } catch let error as HTTPClientError where error == .invalidURL || error == .emptyHost || error == .emptyScheme {
            return .permanentFailure(reason: "invalid URL")
        } catch {
            // Timeouts, refused or reset connections, TLS handshakes: the provider may be back soon.
            return .transientFailure(reason: Self.describe(error))
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
