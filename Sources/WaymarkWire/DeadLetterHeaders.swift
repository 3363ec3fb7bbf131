/// The headers Waymark puts on a dead-letter record, next to the original key and value bytes:
/// the one encoder (``encoded``) and decoder (``init(headers:)``) of that format.
public struct DeadLetterHeaders: Sendable, Hashable {
    /// Header names.
    public enum Name {
        /// A ``RejectionReason`` raw value (or a sender reason such as `provider_permanent`).
        public static let reason = "x-waymark-reason"
        /// Human-readable context (field names, positions; never values).
        public static let detail = "x-waymark-detail"
        public static let sourceTopic = "x-waymark-source-topic"
        public static let sourcePartition = "x-waymark-source-partition"
        public static let sourceOffset = "x-waymark-source-offset"
        /// Milliseconds since the epoch when the record was dead-lettered.
        public static let deadLetteredAt = "x-waymark-dead-lettered-at"
        /// On a redriven record: `topic:partition:offset` of the dead-letter record it was copied from.
        public static let redrivenFrom = "x-waymark-redriven-from"
        /// What dead-lettering adds (dropped again when a record is redriven).
        public static let added: Set<String> = [reason, detail, sourceTopic, sourcePartition, sourceOffset, deadLetteredAt]
    }

    public var reason: String
    public var detail: String
    public var sourceTopic: String?
    public var sourcePartition: Int32?
    public var sourceOffset: Int64?
    /// Milliseconds since the epoch.
    public var deadLetteredAt: Int64?
    public var redrivenFrom: String?

    public init(reason: String, detail: String, sourceTopic: String?, sourcePartition: Int32?, sourceOffset: Int64?,
                deadLetteredAt: Int64?, redrivenFrom: String? = nil) {
        self.reason = reason; self.detail = detail; self.sourceTopic = sourceTopic; self.sourcePartition = sourcePartition
        self.sourceOffset = sourceOffset; self.deadLetteredAt = deadLetteredAt; self.redrivenFrom = redrivenFrom
    }

    /// Reads the headers of a dead-letter record. The last occurrence of a name wins: a record
    /// dead-lettered twice carries its latest reason last.
    public init(headers: [(name: String, value: [UInt8]?)]) {
        func text(_ name: String) -> String? {
            headers.last { $0.name == name }?.value.map { String(decoding: $0, as: UTF8.self) }
        }
        self.init(reason: text(Name.reason) ?? "unknown", detail: text(Name.detail) ?? "",
                  sourceTopic: text(Name.sourceTopic), sourcePartition: text(Name.sourcePartition).flatMap { Int32($0) },
                  sourceOffset: text(Name.sourceOffset).flatMap { Int64($0) },
                  deadLetteredAt: text(Name.deadLetteredAt).flatMap { Int64($0) }, redrivenFrom: text(Name.redrivenFrom))
    }

    /// The headers to append to the original record's own (``redrivenFrom`` is not written here:
    /// a redrive sets it on the copy it sends back, not on a dead letter).
    public var encoded: [(name: String, value: String)] {
        var out: [(name: String, value: String)] = [(Name.reason, reason), (Name.detail, detail)]
        if let sourceTopic { out.append((Name.sourceTopic, sourceTopic)) }
        if let sourcePartition { out.append((Name.sourcePartition, String(sourcePartition))) }
        if let sourceOffset { out.append((Name.sourceOffset, String(sourceOffset))) }
        if let deadLetteredAt { out.append((Name.deadLetteredAt, String(deadLetteredAt))) }
        return out
    }
}
