import CRdKafka

/// An error from the Kafka client, with the librdkafka error code, a message, and where it arose.
public struct KafkaError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What kind of failure this is.
    public enum Kind: Sendable, Equatable {
        /// librdkafka is older than 2.2 (it cannot talk to the brokers Waymark supports).
        case unsupportedLibrary
        /// A configuration property was rejected.
        case invalidConfiguration
        /// An argument was invalid (empty topic name, negative partition count…).
        case invalidArgument
        /// A librdkafka or broker error; see ``KafkaError/code``.
        case broker
        /// The operation did not finish in time.
        case timedOut
        /// The client was closed.
        case closed
        /// A fatal error: the client must be recreated.
        case fatal
    }

    /// The kind of failure.
    public var kind: Kind
    /// The librdkafka error code (`rd_kafka_resp_err_t`), 0 if none applies.
    public var code: Int32
    /// A readable message, without record contents.
    public var message: String
    /// Source location where the error was raised.
    public var file: String
    public var line: UInt

    public init(kind: Kind, code: Int32 = 0, message: String, file: String = #fileID, line: UInt = #line) {
        self.kind = kind
        self.code = code
        self.message = message
        self.file = file
        self.line = line
    }

    /// Wraps a librdkafka error code.
    static func rdkafka(_ err: rd_kafka_resp_err_t, _ context: String, file: String = #fileID, line: UInt = #line) -> KafkaError {
        let name = String(cString: rd_kafka_err2name(err))
        let text = String(cString: rd_kafka_err2str(err))
        let kind: Kind = err == RD_KAFKA_RESP_ERR__TIMED_OUT || err == RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT ? .timedOut
            : err == RD_KAFKA_RESP_ERR__FATAL ? .fatal : .broker
        return KafkaError(kind: kind, code: err.rawValue, message: "\(context): \(name): \(text)", file: file, line: line)
    }

    /// The librdkafka error name (for example `UNKNOWN_TOPIC_OR_PART`), or `nil` for non-librdkafka errors.
    public var codeName: String? {
        code == 0 ? nil : String(cString: rd_kafka_err2name(rd_kafka_resp_err_t(rawValue: code)))
    }

    /// `true` when the code is librdkafka's "topic already exists".
    public var isTopicAlreadyExists: Bool { code == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS.rawValue }

    public var description: String { "KafkaError(\(kind)): \(message) [\(file):\(line)]" }

    public static func == (lhs: KafkaError, rhs: KafkaError) -> Bool {
        lhs.kind == rhs.kind && lhs.code == rhs.code && lhs.message == rhs.message
    }
}
