import CRdKafka
import Logging
import WaymarkThreads

/// A topic to create.
public struct KafkaTopicSpec: Sendable, Hashable {
    public var name: String
    public var partitions: Int32
    public var replicationFactor: Int32
    /// Topic configs such as `retention.ms` or `cleanup.policy`.
    public var configs: [String: String]

    public init(name: String, partitions: Int32, replicationFactor: Int32 = 1, configs: [String: String] = [:]) {
        self.name = name
        self.partitions = partitions
        self.replicationFactor = replicationFactor
        self.configs = configs
    }
}

/// A topic as the cluster describes it.
public struct KafkaTopicDescription: Sendable, Hashable {
    public struct Partition: Sendable, Hashable {
        public var id: Int32
        public var leader: Int32
        public var replicas: [Int32]
        public var inSyncReplicas: [Int32]
    }
    public var name: String
    public var partitions: [Partition]
}

/// Committed offset, end offset and lag of one partition for one group.
public struct KafkaPartitionLag: Sendable, Hashable {
    public var topic: String
    public var partition: Int32
    /// Next offset the group will read, or `nil` if it never committed.
    public var committed: Int64?
    /// The partition's end offset (high watermark).
    public var end: Int64
    /// Records not yet consumed by the group: `end - committed` (or `end - low` when never committed).
    public var lag: Int64
}

/// Topic and group administration. Each operation runs on a thread this client owns.
public final class KafkaAdmin: @unchecked Sendable {
    private let handle: OpaquePointer
    private let context: HandleContext
    private let thread = OwnedThread(name: "waymark-kafka-admin")
    private let client: KafkaClientConfiguration
    private let logger: Logger
    /// Per-request timeout.
    public var timeout: Duration

    public init(client: KafkaClientConfiguration, timeout: Duration = .seconds(15),
                logger: Logger = Logger(label: "waymark.kafka.admin")) throws {
        guard !client.bootstrapServers.isEmpty else {
            throw KafkaError(kind: .invalidArgument, message: "bootstrap servers are empty")
        }
        self.client = client
        self.timeout = timeout
        self.logger = logger
        context = HandleContext(logger: logger)
        let conf = try makeConf([client.properties, ["bootstrap.servers": client.bootstrapServers]], role: .admin)
        handle = try makeHandle(type: RD_KAFKA_PRODUCER, conf: conf, context: context)
    }

    deinit {
        thread.shutdown()
        rd_kafka_destroy(handle)
    }

    private var shared: SendableHandle { SendableHandle(pointer: handle) }

    /// Runs an admin request: `start` issues it on a temporary queue; the result event is handed to `read`.
    private func request<T: Sendable>(
        _ what: String, expecting type: rd_kafka_event_type_t,
        start: @escaping @Sendable (OpaquePointer, OpaquePointer, OpaquePointer) -> Void,
        read: @escaping @Sendable (OpaquePointer) throws -> T
    ) async throws -> T {
        let handle = shared, timeout = timeout
        return try await thread.run {
            let queue = rd_kafka_queue_new(handle.pointer)!
            defer { rd_kafka_queue_destroy(queue) }
            let options = rd_kafka_AdminOptions_new(handle.pointer, RD_KAFKA_ADMIN_OP_ANY)!
            defer { rd_kafka_AdminOptions_destroy(options) }
            var errstr = [CChar](repeating: 0, count: 256)
            rd_kafka_AdminOptions_set_request_timeout(options, timeout.milliseconds, &errstr, errstr.count)
            start(handle.pointer, options, queue)
            guard let event = rd_kafka_queue_poll(queue, timeout.milliseconds + 1000) else {
                throw KafkaError(kind: .timedOut, message: "\(what) timed out after \(timeout)")
            }
            defer { rd_kafka_event_destroy(event) }
            let err = rd_kafka_event_error(event)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR {
                let text = rd_kafka_event_error_string(event).map { String(cString: $0) } ?? ""
                throw KafkaError(kind: err == RD_KAFKA_RESP_ERR__TIMED_OUT ? .timedOut : .broker, code: err.rawValue,
                                 message: "\(what): \(String(cString: rd_kafka_err2name(err))): \(text)")
            }
            guard rd_kafka_event_type(event) == type else {
                throw KafkaError(kind: .broker, message: "\(what): unexpected event type \(rd_kafka_event_type(event))")
            }
            return try read(event)
        }
    }

    /// Creates topics. Returns, per topic, `nil` on success or the error (for example
    /// `TOPIC_ALREADY_EXISTS`, see ``KafkaError/isTopicAlreadyExists``).
    public func createTopics(_ specs: [KafkaTopicSpec]) async throws -> [String: KafkaError?] {
        for spec in specs where spec.name.isEmpty || spec.partitions < 1 || spec.replicationFactor < 1 {
            throw KafkaError(kind: .invalidArgument,
                             message: "topic '\(spec.name)': needs a name, ≥ 1 partition and replication factor ≥ 1")
        }
        return try await request("create topics", expecting: RD_KAFKA_EVENT_CREATETOPICS_RESULT, start: { rk, options, queue in
            var errstr = [CChar](repeating: 0, count: 256)
            var topics: [OpaquePointer?] = specs.map { spec in
                let topic = rd_kafka_NewTopic_new(spec.name, spec.partitions, spec.replicationFactor, &errstr, errstr.count)
                for (name, value) in spec.configs.sorted(by: { $0.key < $1.key }) {
                    rd_kafka_NewTopic_set_config(topic, name, value)
                }
                return topic
            }
            rd_kafka_CreateTopics(rk, &topics, topics.count, options, queue)
            topics.forEach { rd_kafka_NewTopic_destroy($0) }
        }, read: { event in
            Self.topicResults(rd_kafka_event_CreateTopics_result(event), counter: rd_kafka_CreateTopics_result_topics, what: "create topic")
        })
    }

    /// Deletes topics. Returns, per topic, `nil` on success or the error.
    public func deleteTopics(_ names: [String]) async throws -> [String: KafkaError?] {
        try await request("delete topics", expecting: RD_KAFKA_EVENT_DELETETOPICS_RESULT, start: { rk, options, queue in
            var topics: [OpaquePointer?] = names.map { rd_kafka_DeleteTopic_new($0) }
            rd_kafka_DeleteTopics(rk, &topics, topics.count, options, queue)
            topics.forEach { rd_kafka_DeleteTopic_destroy($0) }
        }, read: { event in
            Self.topicResults(rd_kafka_event_DeleteTopics_result(event), counter: rd_kafka_DeleteTopics_result_topics, what: "delete topic")
        })
    }

    /// Grows `topic` to `totalPartitions` partitions.
    public func createPartitions(topic: String, totalPartitions: Int32) async throws {
        let results = try await request("create partitions", expecting: RD_KAFKA_EVENT_CREATEPARTITIONS_RESULT, start: { rk, options, queue in
            var errstr = [CChar](repeating: 0, count: 256)
            var parts: [OpaquePointer?] = [rd_kafka_NewPartitions_new(topic, Int(totalPartitions), &errstr, errstr.count)]
            rd_kafka_CreatePartitions(rk, &parts, 1, options, queue)
            parts.forEach { rd_kafka_NewPartitions_destroy($0) }
        }, read: { event in
            Self.topicResults(rd_kafka_event_CreatePartitions_result(event), counter: rd_kafka_CreatePartitions_result_topics,
                              what: "create partitions")
        })
        if let error = results[topic] ?? nil { throw error }
    }

    private static func topicResults(
        _ result: OpaquePointer?, counter: (OpaquePointer?, UnsafeMutablePointer<Int>?) -> UnsafeMutablePointer<OpaquePointer?>?,
        what: String
    ) -> [String: KafkaError?] {
        var count = 0
        guard let items = counter(result, &count) else { return [:] }
        var out: [String: KafkaError?] = [:]
        for index in 0..<count {
            let item = items[index]
            let name = String(cString: rd_kafka_topic_result_name(item))
            let err = rd_kafka_topic_result_error(item)
            if err == RD_KAFKA_RESP_ERR_NO_ERROR {
                out[name] = .some(nil)
            } else {
                let text = rd_kafka_topic_result_error_string(item).map { String(cString: $0) } ?? ""
                out[name] = KafkaError(kind: .broker, code: err.rawValue,
                                       message: "\(what) '\(name)': \(String(cString: rd_kafka_err2name(err))) \(text)")
            }
        }
        return out
    }

    /// Describes topics from cluster metadata: `nil` lists every topic. Unknown topics are omitted.
    public func describeTopics(_ names: [String]? = nil) async throws -> [KafkaTopicDescription] {
        let handle = shared, timeout = timeout
        return try await thread.run {
            var metadata: UnsafePointer<rd_kafka_metadata>?
            let err = rd_kafka_metadata(handle.pointer, 1, nil, &metadata, timeout.milliseconds)
            guard err == RD_KAFKA_RESP_ERR_NO_ERROR, let metadata else { throw KafkaError.rdkafka(err, "metadata") }
            defer { rd_kafka_metadata_destroy(metadata) }
            var out: [KafkaTopicDescription] = []
            for t in 0..<Int(metadata.pointee.topic_cnt) {
                let topic = metadata.pointee.topics[t]
                let name = String(cString: topic.topic)
                if let names, !names.contains(name) { continue }
                if topic.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART { continue }
                let partitions = (0..<Int(topic.partition_cnt)).map { p in
                    let part = topic.partitions[p]
                    return KafkaTopicDescription.Partition(
                        id: part.id, leader: part.leader,
                        replicas: (0..<Int(part.replica_cnt)).map { part.replicas[$0] },
                        inSyncReplicas: (0..<Int(part.isr_cnt)).map { part.isrs[$0] })
                }.sorted { $0.id < $1.id }
                out.append(KafkaTopicDescription(name: name, partitions: partitions))
            }
            return out.sorted { $0.name < $1.name }
        }
    }

    /// The topic's configs as the broker reports them (name → value; unset values omitted).
    public func describeConfigs(topic: String) async throws -> [String: String] {
        try await request("describe configs", expecting: RD_KAFKA_EVENT_DESCRIBECONFIGS_RESULT, start: { rk, options, queue in
            var resources: [OpaquePointer?] = [rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic)]
            rd_kafka_DescribeConfigs(rk, &resources, 1, options, queue)
            resources.forEach { rd_kafka_ConfigResource_destroy($0) }
        }, read: { event in
            var count = 0
            let result = rd_kafka_event_DescribeConfigs_result(event)
            guard let resources = rd_kafka_DescribeConfigs_result_resources(result, &count), count > 0 else { return [:] }
            let resource = resources[0]
            let err = rd_kafka_ConfigResource_error(resource)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError.rdkafka(err, "describe configs '\(topic)'") }
            var entries = 0
            guard let configs = rd_kafka_ConfigResource_configs(resource, &entries) else { return [:] }
            var out: [String: String] = [:]
            for index in 0..<entries {
                guard let value = rd_kafka_ConfigEntry_value(configs[index]) else { continue }
                out[String(cString: rd_kafka_ConfigEntry_name(configs[index]))] = String(cString: value)
            }
            return out
        })
    }

    /// Sets topic configs (incremental: other configs keep their values).
    public func alterConfigs(topic: String, set configs: [String: String]) async throws {
        try await request("alter configs", expecting: RD_KAFKA_EVENT_INCREMENTALALTERCONFIGS_RESULT, start: { rk, options, queue in
            let resource = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic)
            for (name, value) in configs.sorted(by: { $0.key < $1.key }) {
                if let error = rd_kafka_ConfigResource_add_incremental_config(resource, name, RD_KAFKA_ALTER_CONFIG_OP_TYPE_SET, value) {
                    rd_kafka_error_destroy(error)
                }
            }
            var resources: [OpaquePointer?] = [resource]
            rd_kafka_IncrementalAlterConfigs(rk, &resources, 1, options, queue)
            rd_kafka_ConfigResource_destroy(resource)
        }, read: { event in
            var count = 0
            let result = rd_kafka_event_IncrementalAlterConfigs_result(event)
            if let resources = rd_kafka_IncrementalAlterConfigs_result_resources(result, &count), count > 0 {
                let err = rd_kafka_ConfigResource_error(resources[0])
                if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError.rdkafka(err, "alter configs '\(topic)'") }
            }
        })
    }

    /// Consumer groups known to the cluster. (Tansu lists only groups that have committed offsets.)
    public func listGroups() async throws -> [String] {
        try await request("list groups", expecting: RD_KAFKA_EVENT_LISTCONSUMERGROUPS_RESULT, start: { rk, options, queue in
            rd_kafka_ListConsumerGroups(rk, options, queue)
        }, read: { event in
            var count = 0
            let result = rd_kafka_event_ListConsumerGroups_result(event)
            guard let groups = rd_kafka_ListConsumerGroups_result_valid(result, &count) else { return [] }
            return (0..<count).map { String(cString: rd_kafka_ConsumerGroupListing_group_id(groups[$0])) }.sorted()
        })
    }

    /// The group's committed offsets (next offset to read), for `partitions` or, if `nil`, every
    /// partition the group has committed.
    public func committedOffsets(group: String, partitions: [KafkaTopicPartition]? = nil) async throws -> [KafkaTopicPartitionOffset] {
        guard !group.isEmpty else { throw KafkaError(kind: .invalidArgument, message: "group id is empty") }
        return try await request("list group offsets", expecting: RD_KAFKA_EVENT_LISTCONSUMERGROUPOFFSETS_RESULT, start: { rk, options, queue in
            let list = partitions.map { PartitionList($0) }
            var requests: [OpaquePointer?] = [rd_kafka_ListConsumerGroupOffsets_new(group, list?.pointer)]
            rd_kafka_ListConsumerGroupOffsets(rk, &requests, 1, options, queue)
            requests.forEach { rd_kafka_ListConsumerGroupOffsets_destroy($0) }
            withExtendedLifetime(list) {}
        }, read: { event in
            var count = 0
            let result = rd_kafka_event_ListConsumerGroupOffsets_result(event)
            guard let groups = rd_kafka_ListConsumerGroupOffsets_result_groups(result, &count), count > 0 else { return [] }
            if let error = rd_kafka_group_result_error(groups[0]) {
                let code = rd_kafka_error_code(error)
                throw KafkaError.rdkafka(code, "committed offsets of group '\(group)'")
            }
            return PartitionList.read(rd_kafka_group_result_partitions(groups[0]))
                .filter { $0.offset >= 0 }
                .sorted { ($0.topic, $0.partition) < ($1.topic, $1.partition) }
        })
    }

    /// End offsets (high watermarks) of every partition of `topics`.
    ///
    /// Read from a short-lived, group-less consumer's fetch responses rather than from ListOffsets,
    /// because the local Tansu broker answers ListOffsets with the start of the last batch + 1.
    /// The consumer starts one record before the broker's (possibly low) answer and waits until every
    /// partition has had a fetch response.
    public func endOffsets(topics: [String]) async throws -> [KafkaTopicPartition: (low: Int64, high: Int64)] {
        let descriptions = try await describeTopics(topics)
        let partitions = descriptions.flatMap { d in d.partitions.map { KafkaTopicPartition(topic: d.name, partition: $0.id) } }
        if partitions.isEmpty { return [:] }
        var properties = client.properties
        properties.merge(KafkaClientConfiguration.localTuningFetch) { current, _ in current }
        let consumer = try KafkaConsumer(
            configuration: KafkaConsumerConfiguration(
                client: KafkaClientConfiguration(bootstrapServers: client.bootstrapServers, properties: properties),
                groupID: nil),
            logger: logger)
        defer { Task { await consumer.close() } }
        var starts: [KafkaTopicPartitionOffset] = []
        for partition in partitions {
            let (_, high) = try await consumer.queryWatermarks(partition, timeout: timeout)
            starts.append(KafkaTopicPartitionOffset(topic: partition.topic, partition: partition.partition,
                                                    offset: max(high - 1, 0)))
        }
        try consumer.assign(starts)
        let deadline = ContinuousClock.now + timeout
        var result: [KafkaTopicPartition: (low: Int64, high: Int64)] = [:]
        while result.count < partitions.count {
            _ = try await consumer.poll(maxRecords: 10_000, timeout: .milliseconds(50))
            for partition in partitions where result[partition] == nil {
                if let marks = consumer.cachedWatermarks(partition) { result[partition] = marks }
            }
            if ContinuousClock.now > deadline {
                throw KafkaError(kind: .timedOut, message: "no fetch response for \(partitions.count - result.count) partitions")
            }
        }
        await consumer.close()
        return result
    }

    /// Lag of `group` on every partition of `topics`: end offset minus committed offset.
    public func lag(group: String, topics: [String]) async throws -> [KafkaPartitionLag] {
        let ends = try await endOffsets(topics: topics)
        let committed = try await committedOffsets(group: group, partitions: Array(ends.keys))
        var committedBy: [KafkaTopicPartition: Int64] = [:]
        for entry in committed { committedBy[entry.topicPartition] = entry.offset }
        return ends.keys.sorted().map { partition in
            let marks = ends[partition]!
            let done = committedBy[partition]
            return KafkaPartitionLag(topic: partition.topic, partition: partition.partition, committed: done,
                                     end: marks.high, lag: max(marks.high - (done ?? marks.low), 0))
        }
    }
}

extension KafkaClientConfiguration {
    /// Just the fetch settings of ``localTuning`` (short waits), used by short-lived readers.
    static let localTuningFetch: [String: String] = ["fetch.wait.max.ms": "10", "fetch.queue.backoff.ms": "5"]
}
