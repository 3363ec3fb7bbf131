import Foundation
import Synchronization
import WaymarkEngine

/// What a sender hands to a provider.
public struct ProviderRequest: Sendable {
    public var message: OutboundMessage
    /// The recipient's address on the message's channel (phone number, e-mail address, token).
    public var address: String
    /// The message id: providers that support idempotency keys drop a repeated call.
    public var idempotencyKey: String { message.messageID.description }
    /// 1 for the first attempt.
    public var attempt: Int
}

/// A provider's answer.
public enum ProviderResult: Sendable, Equatable {
    /// Accepted (handed over); `reference` is the provider's id, if any.
    case accepted(reference: String?)
    /// Worth retrying later (timeouts, 5xx, 429).
    case transientFailure(reason: String)
    /// Will never succeed on this channel (4xx, invalid address): fall back or dead-letter.
    case permanentFailure(reason: String)
}

/// Delivers messages on one or more channels (SMS gateway, e-mail service, push service…).
public protocol MessageProvider: Sendable {
    /// A short name for logs, metrics and the shared rate limiter.
    var name: String { get }
    func deliver(_ request: ProviderRequest) async -> ProviderResult
}

/// Writes each message as one JSON line to a file (or standard output with path `-`): for local
/// runs and tests. Appends are serialised; the file is opened in append mode.
public final class FileProvider: MessageProvider {
    public let name = "file"
    private let handle: Mutex<FileHandle>

    public init(path: String) throws {
        if path == "-" {
            handle = Mutex(FileHandle.standardOutput)
        } else {
            if !FileManager.default.fileExists(atPath: path) { FileManager.default.createFile(atPath: path, contents: nil) }
            guard let file = FileHandle(forWritingAtPath: path) else {
                throw ProviderError(message: "cannot open \(path) for writing")
            }
            file.seekToEndOfFile()
            handle = Mutex(file)
        }
    }

    public func deliver(_ request: ProviderRequest) async -> ProviderResult {
        var w = JSONWriter(capacity: 512)
        w.beginObject()
        w.key("idempotency_key"); w.string(request.idempotencyKey)
        w.key("attempt"); w.int(Int64(request.attempt))
        w.key("to"); w.string(request.address)
        w.key("message"); w.raw(request.message.jsonBytes())
        w.endObject()
        var line = w.bytes
        line.append(0x0A)
        let data = Data(line)
        handle.withLock { $0.write(data) }
        return .accepted(reference: nil)
    }
}

public struct ProviderError: Error, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { "provider: \(message)" }
}
