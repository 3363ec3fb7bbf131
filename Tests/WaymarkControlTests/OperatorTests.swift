import Foundation
import Logging
import Synchronization
import Testing
import WaymarkTestSupport
import WaymarkConfig
import WaymarkControl
import WaymarkEngine
import WaymarkWire
import WaymarkKafka
import WaymarkLocalStack
import WaymarkRedis
import WaymarkState
import WaymarkWorkers

/// A dead letter as the journey worker writes it (same header names), for redrive tests.
func deadLetter(topic: String, key: String, value: String, reason: String, sourceOffset: Int, at: Int64) -> KafkaProducerRecord {
    KafkaProducerRecord(topic: topic, key: Array(key.utf8), value: Array(value.utf8), headers: [
        KafkaHeader(name: "app-trace", string: "t-\(sourceOffset)"),
        KafkaHeader(name: DeadLetterHeaders.Name.reason, string: reason),
        KafkaHeader(name: DeadLetterHeaders.Name.detail, string: "test"),
        KafkaHeader(name: DeadLetterHeaders.Name.sourceTopic, string: "touchpoints"),
        KafkaHeader(name: DeadLetterHeaders.Name.sourcePartition, string: "0"),
        KafkaHeader(name: DeadLetterHeaders.Name.sourceOffset, string: String(sourceOffset)),
        KafkaHeader(name: DeadLetterHeaders.Name.deadLetteredAt, string: String(at)),
    ])
}

@Suite("Operator commands against the real local stack", .serialized)
struct OperatorTests {
    // 2026-11-26 12:00 in Oslo (11:00Z): daytime, no quiet hours.
    static let t0 = Timestamp(milliseconds: 1_796_122_800_000 - 86_400_000 * 5)

    @Test("queues: committed offsets and lag equal produced minus committed, per partition and group")
    func queueLag() async throws {
        try await TestStack.with(.operators) { s in
            let reports = try await s.produce((0..<20).map {
                KafkaProducerRecord(topic: "touchpoints", key: Array("k\($0)".utf8), value: Array("{}".utf8))
            })
            var produced: [Int32: Int64] = [:]
            for r in reports { produced[r.partition, default: 0] += 1 }
            // A group that committed 1 record less than half of each partition (independent of the code under test).
            var committed: [Int32: Int64] = [:]
            for (p, n) in produced { committed[p] = n / 2 }
            let consumer = try KafkaConsumer(configuration: .init(client: s.client, groupID: "ops-test"))
            try consumer.assign(produced.keys.map { KafkaTopicPartitionOffset(topic: "touchpoints", partition: $0, offset: KafkaOffset.beginning) })
            try await consumer.commit(committed.map { KafkaTopicPartitionOffset(topic: "touchpoints", partition: $0.key, offset: $0.value) })
            await consumer.close()

            let redis = try await RedisConnection.connect(s.redis)
            var inspector = QueueInspector(settings: s.settings, client: s.client, admin: s.admin, redis: redis)
            let snapshot = try await inspector.snapshot()
            for (p, n) in produced {
                #expect(snapshot.partitions.first { $0.topic == "touchpoints" && $0.partition == p }?.end == n)
                let row = try #require(snapshot.groups.first { $0.group == "ops-test" && $0.topic == "touchpoints" && $0.partition == p })
                #expect(row.committed == committed[p])
                #expect(row.lag == n - committed[p]!)
                // The journey group never committed: everything produced is lag.
                let journey = try #require(snapshot.groups.first { $0.group == s.settings.kafka.journeyGroup && $0.topic == "touchpoints" && $0.partition == p })
                #expect(journey.committed == nil)
                #expect(journey.lag == n)
            }
            #expect(snapshot.lagByGroup["ops-test"] == 20 - committed.values.reduce(0, +))
            #expect(snapshot.deadLettersByReason.isEmpty)
            #expect(snapshot.timers.total == 0)

            // Rates from the difference between two snapshots.
            try await s.produce((0..<6).map { _ in KafkaProducerRecord(topic: "touchpoints", partition: 0, key: nil, value: Array("{}".utf8)) })
            var second = try await inspector.snapshot(now: snapshot.takenAt + 2_000)
            second.computeRates(since: snapshot)
            #expect(second.partitions.first { $0.topic == "touchpoints" && $0.partition == 0 }?.producedPerSecond == 3)
            await redis.close()
        }
    }

    @Test("inspect customer, dead-letter counts and funnel after a scripted stream through a journey worker",
          arguments: TestStack.RedisTopology.allCases)
    func scriptedStream(redis topology: TestStack.RedisTopology) async throws {
        try await TestStack.with(.operators, redis: topology) { s in
            let clock = ManualClock(Self.t0)
            var logger = Logger(label: "test.worker")
            logger.logLevel = .warning
            let env = WorkerEnvironment(settings: s.settings, engine: s.engine, clock: { clock.now }, logger: logger)
            let worker = JourneyWorker(environment: env, client: s.client, redis: s.redis)
            let scheduler = Scheduler(environment: env, client: s.client, redis: s.redis)
            let tasks = Task { try await withThrowingTaskGroup(of: Void.self) { g in
                g.addTask { try await worker.run() }
                g.addTask { try await scheduler.run() }
                try await g.waitForAll()
            } }

            func profile(_ id: String, consent: Bool, n: Int) -> String {
                #"{"customer_id":"\#(id)","timezone":"Europe/Oslo","contacts":{"sms":"+479000000\#(n)","email":"\#(id)@example.com"},"consent":{"sms":\#(consent),"email":\#(consent)},"preferred_channels":["sms","email"]}"#
            }
            for (i, (id, consent)) in [("c-1", true), ("c-2", true), ("c-3", false)].enumerated() {
                try await s.produce("customers", key: id, json: profile(id, consent: consent, n: i + 1))
            }
            #expect(try await s.eventually { worker.stats.profiles == 3 })
            func event(_ id: String, _ customer: String, _ type: String, cart: String, at: Timestamp) -> String {
                #"{"event_id":"\#(id)","customer_id":"\#(customer)","type":"\#(type)","occurred_at":"\#(at)","source":"web","attributes":{"cart_id":"\#(cart)","value":59.9,"currency":"EUR"}}"#
            }
            for (id, customer, cart) in [("e-1", "c-1", "k-1"), ("e-2", "c-2", "k-2"), ("e-3", "c-3", "k-3")] {
                try await s.produce("touchpoints", key: customer, json: event(id, customer, "cart_abandoned", cart: cart, at: Self.t0))
            }
            // Bad input: two invalid JSON documents and one record without a key.
            try await s.produce([
                KafkaProducerRecord(topic: "touchpoints", key: Array("c-1".utf8), value: Array("{not json".utf8)),
                KafkaProducerRecord(topic: "touchpoints", key: Array("c-2".utf8), value: Array("[1,".utf8)),
                KafkaProducerRecord(topic: "touchpoints", key: nil, value: Array(event("e-9", "c-1", "page_view", cart: "-", at: Self.t0).utf8)),
            ])
            #expect(try await s.eventually { worker.stats.touchpoints >= 3 })
            clock.set(Self.t0.adding(.minutes(10)))
            try await s.produce("touchpoints", key: "c-2", json: event("e-4", "c-2", "purchase", cart: "k-2", at: Self.t0.adding(.minutes(10))))
            #expect(try await s.eventually { worker.stats.touchpoints >= 4 })
            // The 1 h wait ends: c-1 gets its reminder, c-3 (no consent) does not.
            clock.set(Self.t0.adding(.hours(1)).adding(.seconds(1)))
            var decisionCount = 0
            #expect(try await s.eventually {
                let all = try await s.read("journey.decisions")
                decisionCount = max(decisionCount, all.count)
                let reasons = all.map { jsonObject($0.value) }
                    .filter { ["c-1", "c-3"].contains($0["customer_id"] as? String ?? "")
                        && ["sent", "suppressed_no_consent"].contains($0["reason"] as? String ?? "") }
                return reasons.count >= 2
            })
            worker.stop()
            scheduler.stop()
            try await tasks.value

            let decisions = try await s.read("journey.decisions", expected: decisionCount, settle: true)
            let redis = try await RedisConnection.connect(s.redis)
            let rules = try RulesLoader.load(file: TestStack.repoRoot + "/config/rules.yaml")
            let inspector = CustomerInspector(redis: redis, keys: s.keys, rules: rules)

            // inspect customer c-1: the instance, its stage and wait, the decisions the topic holds for c-1.
            let report = try await inspector.inspect("c-1", decisions: 50, now: Self.t0.adding(.hours(2)).milliseconds)
            #expect(report.exists)
            #expect(report.timezone == "Europe/Oslo")
            let instance = try #require(report.instances.first)
            #expect(report.instances.count == 1)
            #expect(instance.journey == "abandoned_cart")
            #expect(instance.key == "k-1")
            #expect(instance.step == "await_click")
            #expect(instance.enteredAt.ms == Self.t0.milliseconds)
            // The reminder ran at the end of the 1 h wait (event time), the click wait times out 24 h later.
            #expect(instance.wakeAt?.ms == Self.t0.adding(.hours(25)).milliseconds)
            #expect(instance.enteredAt.local.hasSuffix("+01:00"))
            let onTopic = decisions.map { jsonObject($0.value) }.filter {
                $0["customer_id"] as? String == "c-1"
                    && !["journey_entered", "stage_reached", "journey_converted", "journey_exited", "journey_completed"].contains($0["reason"] as? String ?? "")
            }
            #expect(!onTopic.isEmpty)
            // Redis keeps them newest first; the topic in order.
            #expect(report.decisions.map(\.reason) == onTopic.reversed().map { $0["reason"] as! String })
            #expect(report.decisions.map(\.messageID) == onTopic.reversed().map { $0["message_id"] as? String })
            #expect(report.decisions.map(\.decidedAt.utc) == onTopic.reversed().map { $0["decided_at"] as! String })
            #expect(report.decisions.first?.reason == "sent")
            #expect(report.decisions.first?.channel == "sms")
            let sms = try #require(report.caps.first { $0.name == "sms_per_day" })
            #expect(sms.used == 1 && sms.limit == 1 && sms.freesAt != nil)
            #expect(report.nextWakeUp?.ms == instance.wakeAt?.ms)
            // Contacts masked in the text and in the default report; in full only when asked for.
            let text = report.render()
            #expect(text.contains("+47******01"))
            #expect(text.contains("c***@example.com"))
            #expect(!text.contains("+4790000001") && !text.contains("c-1@example.com"))
            #expect(text.contains("abandoned_cart") && text.contains("await_click") && text.contains("rule rules_passed"))
            #expect(try await inspector.inspect("c-1", showContacts: true).profile?.contacts["sms"] == "+4790000001")
            // c-3: why no message? The suppression and its rule.
            let c3 = try await inspector.inspect("c-3")
            #expect(c3.decisions.first?.reason == "suppressed_no_consent")
            #expect(try await !inspector.inspect("nobody").exists)

            // Dead letters by reason as the worker dead-lettered them.
            var queues = QueueInspector(settings: s.settings, client: s.client, admin: s.admin, redis: redis)
            let snapshot = try await queues.snapshot(now: Self.t0.adding(.hours(2)).milliseconds)
            #expect(snapshot.deadLettersByReason == ["invalid_json": 2, "null_key": 1])
            var waiting = 0
            for id in ["c-1", "c-2", "c-3"] where try await inspector.inspect(id).instances.contains(where: { $0.wakeAt != nil }) { waiting += 1 }
            #expect(waiting >= 1)
            #expect(snapshot.timers.total == waiting)
            #expect(snapshot.timers.next24Hours == waiting)  // await_click times out 24 h after the reminder, 23 h after "now"
            await redis.close()

            // Funnel: counts equal an independent count over the decisions produced.
            func independent(from: Int64?) -> (entered: [String: Int], stages: [String: Int], converted: [String: Int]) {
                var entered: [String: Int] = [:], stages: [String: Int] = [:], converted: [String: Int] = [:]
                for o in decisions.map({ jsonObject($0.value) }) {
                    guard let j = o["journey"] as? String, let at = o["decided_at"] as? String,
                          case .success(let t) = Timestamp.parseRFC3339(at), t.milliseconds >= from ?? .min else { continue }
                    switch o["reason"] as? String {
                    case "journey_entered": entered[j, default: 0] += 1
                    case "stage_reached": stages["\(j)/\(o["stage"] as! String)", default: 0] += 1
                    case "journey_converted": converted[j, default: 0] += 1
                    default: break
                    }
                }
                return (entered, stages, converted)
            }
            for from in [nil, Self.t0.adding(.minutes(5)).milliseconds] {
                let summary = try await FunnelReport(from: from).run(topic: "journey.decisions", client: s.client, admin: s.admin)
                let expected = independent(from: from)
                #expect(summary.funnels.mapValues(\.entered).filter { $0.value > 0 } == expected.entered)
                #expect(summary.funnels.mapValues(\.converted).filter { $0.value > 0 } == expected.converted)
                var stages: [String: Int] = [:]
                for (j, f) in summary.funnels { for (stage, n) in f.stages { stages["\(j)/\(stage)"] = n } }
                #expect(stages == expected.stages)
            }
            let all = try await FunnelReport(journey: "abandoned_cart").run(topic: "journey.decisions", client: s.client, admin: s.admin)
            #expect(all.funnels.keys.sorted() == ["abandoned_cart"])
            #expect(all.funnels["abandoned_cart"]?.entered == 3)
            #expect(all.funnels["abandoned_cart"]?.converted == 1)
            #expect(all.render().contains("Funnel abandoned_cart: entered 3, converted 1"))
            let html = all.html(title: "t", subtitle: "s")
            #expect(html.contains("<svg") && html.contains("abandoned_cart") && !html.contains("<script"))
        }
    }

    @Test("dlq redrive copies matching records back exactly once, even when run twice; --reason filters",
          arguments: TestStack.RedisTopology.allCases)
    func redriveExactlyOnce(redis topology: TestStack.RedisTopology) async throws {
        try await TestStack.with(.operators, redis: topology) { s in
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            try await s.produce([
                deadLetter(topic: "touchpoints.dlq", key: "c-1", value: #"{"n":1}"#, reason: "unknown_customer", sourceOffset: 10, at: now - 3_600_000),
                deadLetter(topic: "touchpoints.dlq", key: "c-2", value: #"{"n":2}"#, reason: "invalid_json", sourceOffset: 11, at: now - 3_600_000),
                deadLetter(topic: "touchpoints.dlq", key: "c-3", value: #"{"n":3}"#, reason: "unknown_customer", sourceOffset: 12, at: now),
            ])
            let redis = try await RedisConnection.connect(s.redis)
            let queue = DeadLetterQueue(topic: "touchpoints.dlq", client: s.client, admin: s.admin, redis: OperatorStore(connection: redis, keys: s.keys))

            let listed = try await queue.list(limit: 2)
            #expect(listed.byReason == ["unknown_customer": 2, "invalid_json": 1])
            // Newest first by dead-letter time; equal times by offset, higher first.
            #expect(listed.newest.map(\.value) == [Array(#"{"n":3}"#.utf8), Array(#"{"n":2}"#.utf8)])
            let shown = try #require(try await queue.record(partition: 0, offset: 1))
            #expect(shown.reason == "invalid_json" && shown.value == Array(#"{"n":2}"#.utf8) && shown.sourceOffset == 11)
            #expect(try await queue.record(partition: 0, offset: 99) == nil)

            // Not confirmed: nothing happens.
            #expect(try await queue.redrive(filter: RedriveFilter(reason: "unknown_customer"), confirm: { _ in false }) == nil)
            #expect(try await s.read("touchpoints").isEmpty)

            // --since filters by dead-letter time.
            let recent = try #require(try await queue.redrive(filter: RedriveFilter(reason: "unknown_customer", since: now - 60_000)))
            #expect(recent.matched == 1 && recent.redriven == 1)
            let first = try #require(try await queue.redrive(filter: RedriveFilter(reason: "unknown_customer")))
            #expect(first.matched == 2 && first.redriven == 1 && first.alreadyRedriven == 1)
            let again = try #require(try await queue.redrive(filter: RedriveFilter(reason: "unknown_customer")))
            #expect(again.redriven == 0 && again.alreadyRedriven == 2)
            var back = try await s.read("touchpoints", expected: 2, settle: true)
            #expect(back.map { String(decoding: $0.value!, as: UTF8.self) }.sorted() == [#"{"n":1}"#, #"{"n":3}"#])
            let redriven = try #require(back.first { $0.value.map(Array.init) == Array(#"{"n":1}"#.utf8) })
            #expect(redriven.key.map(Array.init) == Array("c-1".utf8))
            #expect(redriven.header(DeadLetterHeaders.Name.redrivenFrom) == Array("touchpoints.dlq:0:0".utf8))
            #expect(redriven.header("app-trace") == Array("t-10".utf8))
            #expect(redriven.header(DeadLetterHeaders.Name.reason) == nil)

            // Everything else, twice: invalid_json once, nothing repeated.
            _ = try await queue.redrive(filter: RedriveFilter())
            let last = try #require(try await queue.redrive(filter: RedriveFilter()))
            #expect(last.redriven == 0 && last.alreadyRedriven == 3)
            back = try await s.read("touchpoints", expected: 3, settle: true)
            #expect(back.map { String(decoding: $0.value!, as: UTF8.self) }.sorted() == [#"{"n":1}"#, #"{"n":2}"#, #"{"n":3}"#])

            // A redriven record that fails again comes back as a new dead letter (headers kept): later runs
            // skip it instead of re-sending it every time, unless asked to.
            var failedAgain = deadLetter(topic: "touchpoints.dlq", key: "c-2", value: #"{"n":2}"#, reason: "invalid_json", sourceOffset: 20, at: now)
            failedAgain.headers.append(KafkaHeader(name: DeadLetterHeaders.Name.redrivenFrom, string: "touchpoints.dlq:0:1"))
            try await s.produce([failedAgain])
            let skipped = try #require(try await queue.redrive(filter: RedriveFilter()))
            #expect(skipped.redriven == 0 && skipped.failedAgain == 1)
            let forced = try #require(try await queue.redrive(filter: RedriveFilter(includeFailedAgain: true)))
            #expect(forced.redriven == 1 && forced.failedAgain == 0)
            await redis.close()
        }
    }

    @Test("contact masking and time arguments")
    func presentation() {
        #expect(ContactMask.mask("+4790000001") == "+47******01")
        #expect(ContactMask.mask("anna@example.com") == "a***@example.com")
        #expect(!ContactMask.mask("fcm:abcdefghijklmnop").contains("cdefghijklmn"))
        #expect(TimeArgument.parse("2026-11-20T08:00:00Z") == 1_795_161_600_000)
        let dayAgo = TimeArgument.parse("24h", now: 100_000_000)
        #expect(dayAgo == 13_600_000)
        #expect(TimeArgument.parse("yesterday") == nil)
    }
}
