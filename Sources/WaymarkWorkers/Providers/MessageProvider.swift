import Foundation
import Synchronization
import WaymarkConfig
import WaymarkEngine
import WaymarkWire

/// What a sender hands to a provider.
public struct ProviderRequest: Sendable {
    public var message: OutboundMessage
    /// The recipient's address on the message's channel (phone number, e-mail address, token).
    public var address: String
    /// The message id: providers that support idempotency keys drop a repeated call.
    public var idempotencyKey: String { message.messageID.description }
    /// 1 for the first attempt.
    public var attempt: Int
    /// The message rendered from its template for the recipient's locale (`nil` when the channel's
    /// provider renders templates itself, or no template store is configured).
    public var rendered: RenderedMessage?

    public init(message: OutboundMessage, address: String, attempt: Int, rendered: RenderedMessage? = nil) {
        self.message = message; self.address = address; self.attempt = attempt; self.rendered = rendered
    }
}

/// A provider's answer.
public enum ProviderResult: Sendable, Equatable {
    /// Accepted (handed over); `reference` is the provider's id, if any.
    case accepted(reference: String?)
    /// Worth retrying later (timeouts, 5xx).
    case transientFailure(reason: String)
    /// The provider asked us to slow down (429, or its own throttling code): retry no sooner than
    /// `retryAfterMilliseconds` (from `Retry-After` when sent).
    case throttled(reason: String, retryAfterMilliseconds: Int?)
    /// Will never succeed on this channel (4xx, invalid address, template not approved): fall back
    /// or dead-letter. `reason` carries the provider's error code.
    case permanentFailure(reason: String)
    /// The recipient opted out at the provider (Twilio 21610, Viber "not subscribed"): permanent on
    /// this channel, and the channel's consent is withdrawn for the customer.
    case recipientUnsubscribed(reason: String)
}

extension ProviderResult {
    /// The provider's reference of an accepted message.
    public var reference: String? { if case .accepted(let reference) = self { reference } else { nil } }
}

/// Delivers messages on one or more channels (SMS gateway, e-mail service, push service…).
public protocol MessageProvider: Sendable {
    /// A short name for logs, metrics and the shared rate limiter.
    var name: String { get }
    func deliver(_ request: ProviderRequest) async -> ProviderResult
    /// The provider's documented default rate (calls per second per sender identity) and burst, used
    /// when `sender.providers.<channel>` sets none; `nil` for `sender.rate_per_second`/`burst`.
    var defaultRate: (perSecond: Double, burst: Int)? { get }
    /// Closes connections (called once, when the sender stops).
    func shutdown() async
}

extension MessageProvider {
    public var defaultRate: (perSecond: Double, burst: Int)? { nil }
    public func shutdown() async {}
}

/// Writes each message as one JSON line to a file (or standard output with path `-`): for local
/// runs and tests. Like a real provider it honours idempotency keys: a repeated key (a resend after a
/// sender died between the provider call and marking the message done) is dropped, not written
/// again, and noted in `<path>.repeats`. Keys already in the file are loaded at start. Keys count per
/// channel, as each channel stands for its own provider: a message that one channel's provider
/// accepted and later reported failed is handed over again on its fallback channel.
public final class FileProvider: MessageProvider {
    public let name = "file"
    private let state: Mutex<(file: FileHandle, seen: Set<String>, repeats: FileHandle?)>

    public init(path: String) throws {
        if path == "-" {
            state = Mutex((FileHandle.standardOutput, [], nil))
            return
        }
        if !FileManager.default.fileExists(atPath: path) { FileManager.default.createFile(atPath: path, contents: nil) }
        var seen = Set<String>()
        if let data = FileManager.default.contents(atPath: path) {
            // A sender killed in the middle of a write can leave a partial last line (a kill -9 may cut
            // a write short). That call never completed, so it was not handed over: cut it off, or its
            // key would count as seen and the next line would run into it.
            let complete = data.lastIndex(of: 0x0A).map { data.index(after: $0) } ?? data.startIndex
            if complete < data.endIndex {
                guard let handle = FileHandle(forWritingAtPath: path) else { throw ProviderError(message: "cannot open \(path) for writing") }
                try handle.truncate(atOffset: UInt64(complete - data.startIndex))
                try handle.close()
            }
            for line in data[..<complete].split(separator: 0x0A) {
                if let key = ProviderHandoff.idempotencyKey(ofLine: line) { seen.insert(key + " " + Self.channel(ofLine: line)) }
            }
        }
        let repeatsPath = path + ".repeats"
        if !FileManager.default.fileExists(atPath: repeatsPath) { FileManager.default.createFile(atPath: repeatsPath, contents: nil) }
        guard let file = FileHandle(forWritingAtPath: path), let repeats = FileHandle(forWritingAtPath: repeatsPath) else {
            throw ProviderError(message: "cannot open \(path) for writing")
        }
        file.seekToEndOfFile()
        repeats.seekToEndOfFile()
        state = Mutex((file, seen, repeats))
    }

    /// The message's channel in a handoff line, found without parsing the line (start-up scans the whole file).
    static func channel(ofLine line: some Collection<UInt8>) -> String {
        let bytes = Array(line), marker = Array(#""channel":""#.utf8)
        guard bytes.count > marker.count else { return "" }
        for i in 0...(bytes.count - marker.count) where bytes[i] == marker[0] && bytes[i..<(i + marker.count)].elementsEqual(marker) {
            let start = i + marker.count
            let end = bytes[start...].firstIndex(of: UInt8(ascii: "\"")) ?? bytes.endIndex
            return String(decoding: bytes[start..<end], as: UTF8.self)
        }
        return ""
    }

    public func deliver(_ request: ProviderRequest) async -> ProviderResult {
        var line = ProviderHandoff(idempotencyKey: request.idempotencyKey, attempt: request.attempt,
                                   handedAt: WallClock.now().milliseconds, to: request.address, message: request.message,
                                   rendered: request.rendered.map { ($0.body, $0.subject, $0.locale) }).jsonBytes()
        line.append(0x0A)
        let data = Data(line)
        let key = request.idempotencyKey
        state.withLock { s in
            if s.repeats != nil, !s.seen.insert(key + " " + request.message.channel.rawValue).inserted {
                s.repeats?.write(Data((key + "\n").utf8))
                return
            }
            s.file.write(data)
        }
        return .accepted(reference: nil)
    }
}

public struct ProviderError: Error, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { "provider: \(message)" }
}
