import Foundation
import Testing
import WaymarkKafka

@Suite("Kafka producer and consumer against a real broker")
struct ProducerConsumerTests {
    @Test("100k records produced are consumed back exactly once in a group with commits")
    func produceAndConsume100k() async throws {
        try await withBroker { client in
            try await createTopic(client, "events", partitions: 3)
            let producer = try KafkaProducer(configuration: .init(client: client))
            let sent = records(topic: "events", count: 100_000)
            var reports: [KafkaDeliveryReport] = []
            for chunk in stride(from: 0, to: sent.count, by: 20_000) {
                reports += try await producer.send(Array(sent[chunk..<min(chunk + 20_000, sent.count)]))
            }
            #expect(reports.count == 100_000)
            #expect(reports.allSatisfy { $0.error == nil && $0.offset >= 0 })

            let consumer = try KafkaConsumer(configuration: .init(client: client, groupID: "g-100k"))
            try consumer.subscribe(["events"])
            let got = try await drain(consumer, timeout: .seconds(60)) { $0.count >= 100_000 }
            #expect(got.count == 100_000)
            let values = Set(got.compactMap { $0.value.map { String(decoding: $0, as: UTF8.self) } })
            #expect(values.count == 100_000)
            // Same key → same partition; records of one partition arrive in offset order.
            var lastOffset: [Int32: Int64] = [:]
            var partitionOfKey: [String: Int32] = [:]
            for record in got {
                #expect(record.offset > lastOffset[record.partition, default: -1])
                lastOffset[record.partition] = record.offset
                let key = String(decoding: record.key ?? [], as: UTF8.self)
                #expect(partitionOfKey[key, default: record.partition] == record.partition)
                partitionOfKey[key] = record.partition
            }
            let committed = try await consumer.committed((0..<3).map { KafkaTopicPartition(topic: "events", partition: $0) })
            #expect(committed.map(\.offset).reduce(0, +) == 100_000)
            await consumer.close()
        }
    }

    @Test("keys, headers, timestamps and null values round-trip")
    func recordFields() async throws {
        try await withBroker { client in
            try await createTopic(client, "fields", partitions: 1)
            let producer = try KafkaProducer(configuration: .init(client: client))
            let record = KafkaProducerRecord(
                topic: "fields", key: Array("c-42".utf8), value: nil,
                headers: [KafkaHeader(name: "reason", string: "invalid_json"), KafkaHeader(name: "empty", value: nil)],
                timestamp: 1_700_000_000_123)
            let empty = KafkaProducerRecord(topic: "fields", key: nil, value: [], headers: [])
            try await producer.sendAll([record, empty])
            let consumer = try KafkaConsumer(configuration: .init(client: client, groupID: nil))
            try consumer.assign([KafkaTopicPartitionOffset(topic: "fields", partition: 0, offset: KafkaOffset.beginning)])
            let got = try await drain(consumer, commit: false) { $0.count >= 2 }
            #expect(got.count == 2)
            #expect(got[0].key.map(Array.init) == Array("c-42".utf8))
            #expect(got[0].value == nil)
            #expect(got[0].header("reason") == Array("invalid_json".utf8))
            #expect(got[0].headers.count == 2)
            #expect(got[0].timestamp == 1_700_000_000_123)
            #expect(got[1].key == nil)
            #expect(got[1].value.map(Array.init) == [])
            await consumer.close()
        }
    }

    @Test("a restarted consumer resumes from committed offsets: nothing lost, nothing repeated")
    func resumeFromCommitted() async throws {
        try await withBroker { client in
            try await createTopic(client, "resume", partitions: 3)
            let producer = try KafkaProducer(configuration: .init(client: client))
            try await producer.sendAll(records(topic: "resume", count: 10_000))

            let first = try KafkaConsumer(configuration: .init(client: client, groupID: "g-resume"))
            try first.subscribe(["resume"])
            let part1 = try await drain(first, maxRecords: 500) { $0.count >= 4_000 }
            await first.close()
            #expect(part1.count >= 4_000 && part1.count < 10_000)

            let second = try KafkaConsumer(configuration: .init(client: client, groupID: "g-resume"))
            try second.subscribe(["resume"])
            let part2 = try await drain(second) { part1.count + $0.count >= 10_000 }
            // Wait a little longer: nothing more may arrive (no repeats beyond the committed point).
            let extra = try await drain(second, timeout: .milliseconds(500)) { _ in false }
            await second.close()

            let all = (part1 + part2 + extra).map { "\($0.partition)/\($0.offset)" }
            #expect(all.count == 10_000)
            #expect(Set(all).count == 10_000)
        }
    }

    @Test("two consumers split partitions; one takes over all when the other leaves")
    func groupRebalance() async throws {
        try await withBroker { client in
            try await createTopic(client, "split", partitions: 4)
            let producer = try KafkaProducer(configuration: .init(client: client))
            let a = try KafkaConsumer(configuration: .init(client: client, groupID: "g-split"))
            let b = try KafkaConsumer(configuration: .init(client: client, groupID: "g-split"))
            try a.subscribe(["split"])
            try b.subscribe(["split"])
            let deadline = ContinuousClock.now + .seconds(40)
            var seen: [String: Int] = [:]  // partition/offset → times seen
            func pollBoth() async throws {
                async let ra = a.poll(maxRecords: 1000, timeout: .milliseconds(100))
                async let rb = b.poll(maxRecords: 1000, timeout: .milliseconds(100))
                let (x, y) = try await (ra, rb)
                for r in x + y { seen["\(r.partition)/\(r.offset)", default: 0] += 1 }
                try await a.commit(nextOffsets(x))
                try await b.commit(nextOffsets(y))
            }
            while ContinuousClock.now < deadline {
                try await pollBoth()
                if !a.assignment.isEmpty, !b.assignment.isEmpty, a.assignment.union(b.assignment).count == 4 { break }
            }
            #expect(a.assignment.isDisjoint(with: b.assignment))
            #expect(a.assignment.count + b.assignment.count == 4)
            #expect(!a.assignment.isEmpty && !b.assignment.isEmpty)

            try await producer.sendAll(records(topic: "split", count: 2_000))
            while seen.count < 2_000, ContinuousClock.now < deadline { try await pollBoth() }
            #expect(seen.count == 2_000)

            await b.close()
            try await producer.sendAll(records(topic: "split", count: 2_000, prefix: "later"))
            while (a.assignment.count < 4 || seen.count < 4_000), ContinuousClock.now < deadline + .seconds(20) {
                let x = try await a.poll(maxRecords: 1000, timeout: .milliseconds(100))
                for r in x { seen["\(r.partition)/\(r.offset)", default: 0] += 1 }
                try await a.commit(nextOffsets(x))
            }
            #expect(a.assignment.count == 4)
            #expect(seen.count == 4_000)
            #expect(seen.values.allSatisfy { $0 == 1 })
            await a.close()
        }
    }

    @Test("pause stops delivery from a partition until resume; seek rewinds")
    func pauseResumeSeek() async throws {
        try await withBroker { client in
            try await createTopic(client, "pause", partitions: 2)
            let producer = try KafkaProducer(configuration: .init(client: client))
            let batch = (0..<200).map { i in
                KafkaProducerRecord(topic: "pause", partition: Int32(i % 2), key: nil, value: Array("\(i)".utf8))
            }
            try await producer.sendAll(batch)
            let consumer = try KafkaConsumer(configuration: .init(client: client, groupID: nil))
            let p0 = KafkaTopicPartition(topic: "pause", partition: 0)
            try consumer.assign([0, 1].map { KafkaTopicPartitionOffset(topic: "pause", partition: $0, offset: KafkaOffset.beginning) })
            try consumer.pause([p0])
            let got = try await drain(consumer, timeout: .seconds(2), commit: false) { $0.count >= 200 }
            #expect(got.count == 100)
            #expect(got.allSatisfy { $0.partition == 1 })
            try consumer.resume([p0])
            let rest = try await drain(consumer, commit: false) { $0.count >= 100 }
            #expect(rest.count == 100 && rest.allSatisfy { $0.partition == 0 })
            try await consumer.seek([KafkaTopicPartitionOffset(topic: "pause", partition: 0, offset: 90)])
            let again = try await drain(consumer, commit: false) { $0.count >= 10 }
            #expect(again.map(\.offset) == Array(90..<100))
            #expect(consumer.cachedWatermarks(p0)?.high == 100)
            await consumer.close()
        }
    }
}
