import WaymarkEngine
import WaymarkHTTP

/// POSTs each message as JSON to a configured URL, with the message id as `Idempotency-Key`.
///
/// Body: `{"idempotency_key", "attempt", "to", "message": {…outbound message…}}`. Answers map to:
/// 2xx accepted; 408, 425, 429 and 5xx transient (retried with backoff); other 4xx permanent (fallback).
/// Timeouts, refused or dropped connections are transient; an invalid URL is permanent.
public final class WebhookProvider: MessageProvider {
    public let name = "webhook"
    private let client: HTTPClient
    private let url: String
    private let timeout: Duration

    public init(url: String, timeout: Duration, caBundlePath: String? = nil) throws {
        self.url = url
        self.timeout = timeout
        client = try HTTPClient(configuration: HTTPClientConfiguration(timeout: timeout, caBundlePath: caBundlePath))
    }

    public func deliver(_ request: ProviderRequest) async -> ProviderResult {
        var w = JSONWriter(capacity: 512)
        w.beginObject()
        w.key("idempotency_key"); w.string(request.idempotencyKey)
        w.key("attempt"); w.int(Int64(request.attempt))
        w.key("to"); w.string(request.address)
        w.key("message"); w.rawJSON(request.message.jsonBytes())
        w.endObject()
        do {
            let response = try await client.post(
                url: url, headers: ["Content-Type": "application/json", "Idempotency-Key": request.idempotencyKey],
                body: w.bytes, timeout: timeout)
            switch response.status {
            case 200..<300: return .accepted(reference: nil)
            case 408, 425, 429, 500...599: return .transientFailure(reason: "HTTP \(response.status)")
            default: return .permanentFailure(reason: "HTTP \(response.status)")
            }
        } catch {
            switch error.kind {
            case .invalidURL, .invalidRequest: return .permanentFailure(reason: "\(error.kind)")
            default: return .transientFailure(reason: "\(error.kind)")
            }
        }
    }

    public func shutdown() async { await client.shutdown() }
}
