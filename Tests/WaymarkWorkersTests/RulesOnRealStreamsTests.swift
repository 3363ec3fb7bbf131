import Foundation
import Testing
import WaymarkTestSupport
import WaymarkConfig
import WaymarkControl
import WaymarkEngine
import WaymarkWire
import WaymarkChaos
import WaymarkKafka
import WaymarkRedis
import WaymarkSample
import WaymarkState
import WaymarkWorkers

/// The rules hold on real streams (issue 8): replayed deferrals, a backlog caught up by a new
/// consumer group, profiles racing touchpoints, erasure. Everything runs on a real redis-server and
/// broker; expectations are computed in the test from the produced data and the contract.
@Suite("Rules on real streams", .serialized)
struct RulesOnRealStreamsTests {
    /// Waits until the scheduler has completed a few more ticks (so everything due has been released).
    func settle(_ h: TestStack, _ scheduler: Scheduler, ticks: Int = 4) async throws {
        let start = scheduler.stats.ticks
        #expect(try await h.eventually { scheduler.stats.ticks >= start + ticks })
    }

    /// A copy of config/ with `spread: 0s` and a non-transactional post-purchase SMS ("thanks").
    func replayRules(_ h: TestStack) throws -> String {
        let dir = h.local.directory.appendingPathComponent("replay-rules")
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("journeys"), withIntermediateDirectories: true)
        let rules = try String(contentsOfFile: TestStack.repoRoot + "/config/rules.yaml", encoding: .utf8)
        let noSpread = rules.replacingOccurrences(of: "spread: 30m", with: "spread: 0s")
        #expect(noSpread != rules)
        try noSpread.write(to: dir.appendingPathComponent("rules.yaml"), atomically: true, encoding: .utf8)
        for file in try FileManager.default.contentsOfDirectory(atPath: TestStack.repoRoot + "/config/journeys") {
            try FileManager.default.copyItem(atPath: TestStack.repoRoot + "/config/journeys/" + file,
                                             toPath: dir.appendingPathComponent("journeys/" + file).path)
        }
        try """
            journey: thanks
            version: 1
            entry:
              - event: pos_purchase
            steps:
              - id: thank_you
                send: { channels: [sms], template: store_thanks, priority: 2 }
            """.write(to: dir.appendingPathComponent("journeys/thanks.yaml"), atomically: true, encoding: .utf8)
        return dir.path
    }

    // MARK: Replay

    @Test("replay releases a quiet-hour deferral at 08:00 local whether or not the customer has another event (cases A, B, C)")
    func replayReleasesDeferrals() async throws {
        try await TestStack.with { h in
            let rules = try JourneyLoader.loadEngine(configDirectory: try replayRules(h))
            // Three customers in Los Angeles with SMS consent; a store purchase at 22:17 local each.
            // A: next event six days later; B: another event that night; C: nothing after.
            let cases: [(customer: String, later: [String])] = [
                ("c-a", ["2026-03-16T12:00:00-07:00"]), ("c-b", ["2026-03-10T22:30:00-07:00"]), ("c-c", []),
            ]
            var touchpoints: [(key: String?, value: [UInt8])] = []
            for (customer, later) in cases {
                try await h.produce("customers", key: customer, json: #"{"customer_id":"\#(customer)","timezone":"America/Los_Angeles","contacts":{"sms":"+15550000001"},"consent":{"sms":true},"preferred_channels":["sms"]}"#)
                touchpoints.append((customer, Array(#"{"event_id":"\#(customer)-buy","customer_id":"\#(customer)","type":"pos_purchase","occurred_at":"2026-03-10T22:17:00-07:00","attributes":{"store_id":"st-1","value":20}}"#.utf8)))
                for (i, t) in later.enumerated() {
                    touchpoints.append((customer, Array(#"{"event_id":"\#(customer)-v\#(i)","customer_id":"\#(customer)","type":"page_view","occurred_at":"\#(t)"}"#.utf8)))
                }
            }
            try await h.produce("touchpoints", touchpoints)
            let admin = try KafkaAdmin(client: h.client)
            let history = try await ReplayDryRun.readHistory(
                client: h.client, admin: admin, touchpointTopics: ["touchpoints", "deliveries"], customersTopic: "customers",
                outboundTopics: h.settings.kafka.channels.map { "outbound.\($0)" })
            #expect(history.events.count == touchpoints.count && history.profiles.count == 3)
            var dryRun = ReplayDryRun(current: rules, proposed: rules, from: ts("2026-03-01T00:00:00Z"), to: ts("2026-03-31T00:00:00Z"))
            dryRun.baseline = .replay
            let report = dryRun.run(events: history.events, profiles: history.profiles, published: [])
            let replayed = try #require(report.replayedMessages as Int?)
            #expect(replayed >= 3)
            // The thank-you SMS per customer, independently expected at 08:00 the next morning in Los Angeles.
            let morning = ts("2026-03-11T08:00:00-07:00").milliseconds
            let proposedOnly = ReplayDryRun(current: try JourneyLoader.loadEngine(configDirectory: TestStack.repoRoot + "/config"),
                                            proposed: rules, from: dryRun.from, to: dryRun.to)
            var diff = proposedOnly
            diff.baseline = .replay
            let added = diff.run(events: history.events, profiles: history.profiles, published: []).changes.filter { $0.kind == .added }
            for (customer, _) in cases {
                let thanks = added.filter { $0.customer == customer && $0.journey == "thanks" }
                #expect(thanks.count == 1, "\(customer): \(thanks)")
                #expect(thanks.first?.after?.sendAfter == morning, "\(customer)")
                #expect(thanks.first?.after?.channel == "sms")
            }
        }
    }

    // MARK: Catch-up

    /// How long after its causing event a step can become due at most, and how long it stays
    /// relevant: read off config/journeys by hand (the causing event is the last one merged into the
    /// instance: entry, transition or awaited event).
    static let relevance: [String: (maxDelay: TimeSpan, ttl: TimeSpan)] = [
        "abandoned_cart/first_reminder": (.hours(1), .hours(12)),
        "abandoned_cart/second_reminder": (.hours(25), .hours(48)),
        "abandoned_cart/vip_reminder": (.hours(25), .hours(48)),
        "post_purchase/confirmation": (.zero, .hours(2)),
        "post_purchase/review_request": (.days(2), .hours(48)),
        "post_purchase/coupon_offer": (.days(9), .hours(48)),
        "lifecycle/welcome": (.days(1), .hours(48)),
        "lifecycle/product_tips": (.hours(6), .hours(48)),
        "lifecycle/thanks": (.zero, .hours(48)),
        "lifecycle/onboarding": (.days(3), .hours(48)),
        "lifecycle/loyalty_welcome": (.zero, .hours(48)),
        "support_case_follow_up/acknowledge": (.zero, .hours(48)),
        "support_case_follow_up/still_working": (.days(3), .hours(48)),
        "support_case_follow_up/satisfaction_survey": (.days(1), .days(3)),
    ]

    /// Local minute of day in an IANA zone, by Foundation's calendar (not Waymark's zone math).
    static func localMinute(_ ms: Int64, zone: String) -> Int {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: zone)!
        let c = calendar.dateComponents([.hour, .minute], from: Date(timeIntervalSince1970: Double(ms) / 1000))
        return c.hour! * 60 + c.minute!
    }

    /// The shipped rules.yaml quiet hours: 21:00–08:00, push 22:00–07:00, e-mail none; transactional exempt.
    static func inQuietHours(_ ms: Int64, channel: String, zone: String) -> Bool {
        let m = localMinute(ms, zone: zone)
        switch channel {
        case "email": return false
        case "push": return m >= 22 * 60 || m < 7 * 60
        default: return m >= 21 * 60 || m < 8 * 60
        }
    }

    @Test("a new consumer group catching up on five days of backlog sends nothing stale, nothing in quiet hours, nothing over a cap (on a cluster: while every shard's slot is resharded)",
          arguments: TestStack.RedisTopology.allCases)
    func backlogCatchUp(redis topology: TestStack.RedisTopology) async throws {
        // Small batches: a cart abandoned in one batch and bought in a later one is the case to get right.
        try await TestStack.with(extraYAML: "  max_batch: 200\n", redis: topology) { h in
            // Five generated retail days (one history), all produced before any worker runs.
            let customers = 150
            let firstDay: Int64 = 1_795_651_200_000 - 5 * 86_400_000  // 2026-11-21T00:00Z
            var profiles: [SampleRecord] = []
            var events: [SampleRecord] = []
            for day in 0..<5 {
                var generator = RetailDay(seed: 7 + UInt64(day), customers: customers, dayStart: firstDay + Int64(day) * 86_400_000)
                generator.idPrefix = "d\(day)-"
                let records = generator.generate()
                if day == 0 { profiles = records.filter { $0.kind == .profile } }
                events += records.filter { $0.kind == .touchpoint }
            }
            try await h.produce("customers", profiles.map { ($0.key, $0.value) })
            try await h.produce("touchpoints", events.map { ($0.key, $0.value) })
            let now = Timestamp(milliseconds: firstDay + 5 * 86_400_000 + 9 * 3_600_000)  // the morning after, 09:00Z
            let clock = TestClock(now)
            try await h.withWorkers(clock: clock) { worker, scheduler in
                // On a cluster, move every shard's slot (with its keys) to the next master while the
                // backlog drains: the workers meet ASK during each migration and MOVED after it.
                let resharding = Task { () throws -> (slots: Int, keys: Int, readBefore: Int, readAfter: Int) in
                    guard let cluster = h.local.cluster else { return (0, 0, 0, 0) }
                    while worker.stats.touchpoints == 0 { try await Task.sleep(for: .milliseconds(2)) }
                    let before = worker.stats.touchpoints
                    let masters = Array(cluster.nodes.prefix(cluster.masterCount))
                    var slots = 0, keys = 0
                    for shard in 0..<h.settings.redis.shards {
                        let slot = ClusterSlot.of(h.keys.tag(shard))
                        let owner = try await cluster.owner(of: slot)
                        let next = masters[(masters.firstIndex { $0.port == owner.port }! + 1) % masters.count]
                        keys += try await cluster.moveSlot(slot, to: next)
                        slots += 1
                    }
                    return (slots, keys, before, worker.stats.touchpoints)
                }
                #expect(try await h.eventually(timeout: .seconds(90)) { worker.stats.touchpoints == events.count })
                let moved = try await resharding.value
                if h.local.cluster != nil {
                    print("resharding under load: \(moved.slots) slots, \(moved.keys) keys moved while the worker read touchpoints \(moved.readBefore)...\(moved.readAfter) of \(events.count)")
                    #expect(moved.slots == h.settings.redis.shards)
                    #expect(moved.keys > 0)
                    #expect(moved.readBefore < events.count)
                }
                try await settle(h, scheduler)
                // Let held messages come due: a simulated day in 30-minute steps.
                for step in 1...48 {
                    clock.set(now.adding(.minutes(Int64(30 * step))))
                    try await settle(h, scheduler, ticks: 2)
                }
            }

            // Independent audit of everything published.
            var byEvent: [String: [String: Any]] = [:]
            var purchases: [String: [(cart: String, at: Int64)]] = [:]
            for e in events {
                let o = jsonObject(ArraySlice(e.value))
                byEvent[o["event_id"] as! String] = o
                if o["type"] as? String == "purchase", let cart = (o["attributes"] as? [String: Any])?["cart_id"] as? String {
                    purchases[e.key, default: []].append((cart, e.timestamp))
                }
            }
            var zone: [String: String] = [:]
            for p in profiles { zone[p.key] = jsonObject(ArraySlice(p.value))["timezone"] as? String }
            var published: [[String: Any]] = []
            for channel in h.settings.kafka.channels {
                published += try await h.read("outbound.\(channel)", timeout: .seconds(3)).map { jsonObject($0.value) }
            }
            var seen = Set<String>()
            published = published.filter { seen.insert($0["message_id"] as! String).inserted }  // recovery copies count once
            var stale = 0, quiet = 0, overCap = 0, afterPurchase = 0
            var perCustomer: [String: [(at: Int64, channel: String, journey: String)]] = [:]
            for m in published {
                let customer = m["customer_id"] as! String, journey = m["journey"] as! String, step = m["step"] as! String
                let channel = m["channel"] as! String, transactional = m["transactional"] as! Bool
                let sendAfter = ts(m["send_after"] as! String).milliseconds
                let cause = try #require(byEvent[m["caused_by"] as! String], "unknown cause \(m["caused_by"]!)")
                let occurred = ts(cause["occurred_at"] as! String).milliseconds
                let rule = try #require(Self.relevance["\(journey)/\(step)"], "no relevance rule for \(journey)/\(step)")
                let relevantUntil = occurred + rule.maxDelay.milliseconds + rule.ttl.milliseconds
                if sendAfter >= relevantUntil || ts(m["expires_at"] as! String).milliseconds > relevantUntil { stale += 1 }
                if !transactional && Self.inQuietHours(sendAfter, channel: channel, zone: zone[customer] ?? "Europe/Oslo") { quiet += 1 }
                // A cart reminder is due exactly its delay after the abandonment: none for a cart bought before.
                if journey == "abandoned_cart", let cart = (m["variables"] as? [String: Any])?["cart_id"] as? String ?? (cause["attributes"] as? [String: Any])?["cart_id"] as? String,
                   purchases[customer, default: []].contains(where: { $0.cart == cart && $0.at < occurred + rule.maxDelay.milliseconds }) {
                    afterPurchase += 1
                }
                if !transactional { perCustomer[customer, default: []].append((sendAfter, channel, journey)) }
            }
            // Caps of the shipped rules.yaml, counted over every window.
            let caps: [(limit: Int, window: Int64, channel: String?, journey: String?)] = [
                (1, 86_400_000, "sms", nil), (2, 86_400_000, "push", nil), (3, 7 * 86_400_000, nil, nil),
                (2, 7 * 86_400_000, nil, "abandoned_cart"),
            ]
            for (_, sends) in perCustomer {
                for cap in caps {
                    let times = sends.filter { (cap.channel == nil || $0.channel == cap.channel) && (cap.journey == nil || $0.journey == cap.journey) }
                        .map(\.at).sorted()
                    for t in times where times.filter({ $0 >= t && $0 < t + cap.window }).count > cap.limit { overCap += 1 }
                }
            }
            // Consistency with event time: every message the catch-up sends is one a replay of the same
            // history in event time also decides (sent, or suppressed by a cap that earlier sends filled:
            // those expired during the catch-up). One the replay never decides, or cancels because the
            // customer left the journey, was decided before the event that stopped it had been read.
            let parser = RecordParser(limits: IngestLimits(maxAge: .zero))
            var replayIDs = Set<String>()
            var history: [String: [Touchpoint]] = [:]
            for e in events { history[e.key, default: []].append(try parser.touchpoint(key: ArraySlice(e.key.utf8), value: ArraySlice(e.value), now: now).get()) }
            var profileOf: [String: CustomerProfile] = [:]
            for p in profiles { profileOf[p.key] = try parser.profile(key: ArraySlice(p.key.utf8), value: ArraySlice(p.value)).get() }
            for (customer, touchpoints) in history {
                let sorted = touchpoints.enumerated().sorted { ($0.element.occurredAt, $0.offset) < ($1.element.occurredAt, $1.offset) }.map(\.element)
                let r = h.engine.process(CustomerState(), customerID: customer, profile: profileOf[customer], touchpoints: sorted,
                                         now: now.adding(.days(2)), timing: .replay)
                for d in r.decisions where d.reason != .cancelledJourneyExit { if let id = d.messageID { replayIDs.insert(id.description) } }
            }
            let unexplained = published.filter { !replayIDs.contains($0["message_id"] as! String) }
            print("catch-up: \(events.count) events over 5 days, \(published.count) messages published; "
                  + "stale \(stale), in quiet hours \(quiet), over a cap \(overCap), reminders after purchase \(afterPurchase), "
                  + "not sent by an event-time replay \(unexplained.count) \(unexplained.prefix(5).map { "\($0["journey"]!)/\($0["step"]!)" })")
            #expect(unexplained.isEmpty)
            #expect(published.count > 20, "too few messages to judge: \(published.count)")
            #expect(stale == 0)
            #expect(quiet == 0)
            #expect(overCap == 0)
            #expect(afterPurchase == 0)
        }
    }

    // MARK: Profiles and touchpoints racing

    func profileJSON(_ customer: String) -> String {
        #"{"customer_id":"\#(customer)","timezone":"Europe/Oslo","contacts":{"email":"\#(customer)@example.com","sms":"+4790000001"},"consent":{"email":true,"sms":true},"preferred_channels":["email"]}"#
    }

    /// A purchase for each customer: the transactional order confirmation goes out at once by e-mail.
    func purchases(_ customers: [String], at t: Timestamp) -> [(key: String?, value: [UInt8])] {
        customers.map { c in
            (c, Array(#"{"event_id":"\#(c)-buy","customer_id":"\#(c)","type":"purchase","occurred_at":"\#(t)","attributes":{"cart_id":"k-\#(c)","order_id":"o-\#(c)","value":30,"currency":"EUR"}}"#.utf8))
        }
    }

    @Test("profiles in Kafka before the touchpoints: every consented customer gets its message, whatever order the worker reads them in")
    func profilesFirst() async throws {
        try await TestStack.with { h in
            let customers = (1...200).map { "c-\($0)" }
            try await h.produce("customers", customers.map { ($0, Array(profileJSON($0).utf8)) })
            let t0 = JourneyWorkerTests.t0
            try await h.produce("touchpoints", purchases(customers, at: t0))
            try await h.withWorkers(clock: TestClock(t0.adding(.seconds(5)))) { worker, scheduler in
                #expect(try await h.eventually(timeout: .seconds(30)) { worker.stats.touchpoints == customers.count && worker.stats.profiles == customers.count })
                try await settle(h, scheduler)
            }
            let confirmations = try await h.read("outbound.email", expected: customers.count).map { jsonObject($0.value) }
                .filter { $0["template"] as? String == "order_confirmation" }
            #expect(Set(confirmations.map { $0["customer_id"] as! String }) == Set(customers))
            let decisions = try await h.read("journey.decisions").map { jsonObject($0.value) }
            #expect(!decisions.contains { $0["reason"] as? String == "suppressed_no_consent" })
        }
    }

    @Test("a profile that really arrives late: the send is held, then decided and sent; without a profile it is suppressed after the wait")
    func lateProfile() async throws {
        try await TestStack.with { h in
            let t0 = JourneyWorkerTests.t0
            let clock = TestClock(t0.adding(.seconds(5)))
            let customers = ["c-late-1", "c-late-2", "c-never"]
            try await h.withWorkers(clock: clock) { worker, scheduler in
                try await h.produce("touchpoints", purchases(customers, at: t0))
                #expect(try await h.eventually { worker.stats.touchpoints == 3 })
                try await settle(h, scheduler)
                #expect(try await h.read("outbound.email", timeout: .milliseconds(800)).isEmpty)
                // An operator sees what the send waits for.
                let redis = try await RedisConnection.connect(h.redis)
                let inspector = CustomerInspector(redis: redis, keys: KeySpace(prefix: h.settings.redis.keyPrefix, shards: h.settings.redis.shards),
                                                  rules: h.engine.rules)
                let held = try await inspector.inspect("c-late-1", decisions: 10)
                await redis.close()
                #expect(held.deferred.map(\.hold) == ["awaiting_profile"] && held.deferred.first?.rule == "consent:awaiting_profile")
                #expect(held.render().contains("for the profile until"))
                // Ten minutes later two profiles arrive: their confirmations go out then.
                clock.set(t0.adding(.minutes(10)))
                try await h.produce("customers", customers.prefix(2).map { ($0, Array(profileJSON($0).utf8)) })
                #expect(try await h.eventually { worker.stats.profiles == 2 })
                let sent = try await h.read("outbound.email", expected: 2).map { jsonObject($0.value) }
                #expect(Set(sent.map { $0["customer_id"] as! String }) == Set(customers.prefix(2)))
                #expect(sent.allSatisfy { $0["send_after"] as? String == "\(t0.adding(.minutes(10)))" })
                // The third never gets one: decided when the 15-minute wait is over.
                clock.set(t0.adding(.minutes(16)))
                try await settle(h, scheduler)
            }
            let decisions = try await h.read("journey.decisions").map { jsonObject($0.value) }.filter { $0["template"] == nil }
            func reasons(_ c: String) -> [String] {
                decisions.filter { $0["customer_id"] as? String == c && $0["step"] as? String == "confirmation" }.compactMap { $0["reason"] as? String }
            }
            #expect(reasons("c-late-1") == ["deferred_awaiting_profile", "sent"])
            #expect(reasons("c-never") == ["deferred_awaiting_profile", "suppressed_no_consent"])
            let final = decisions.first { $0["customer_id"] as? String == "c-never" && $0["reason"] as? String == "suppressed_no_consent" }
            #expect(final?["rule"] as? String == "consent:no_profile" && final?["detail"] as? String == "no profile arrived within 15m")
        }
    }

    // MARK: Erasure

    /// Every key and value in Redis, as text, to search for personal data.
    func redisDump(_ h: TestStack) async throws -> String {
        let redis = try await RedisConnection.connect(h.redis)
        var text = ""
        // KEYS answers per node: ask every master (the one server in standalone mode).
        for key in try await redis.sendToEveryMaster("KEYS", "*").flatMap({ $0.reply.array?.compactMap(\.string) ?? [] }) {
            text += key + "\n"
            let type = try await redis.send(RedisCommand("TYPE", key)).string ?? ""
            let reply: RedisReply
            switch type {
            case "hash": reply = try await redis.send(RedisCommand("HGETALL", key))
            case "list": reply = try await redis.send(RedisCommand("LRANGE", key, 0, -1))
            case "zset": reply = try await redis.send(RedisCommand("ZRANGE", key, 0, -1))
            case "set": reply = try await redis.send(RedisCommand("SMEMBERS", key))
            default: reply = try await redis.send(RedisCommand("GET", key))
            }
            for element in reply.array ?? [reply] { text += String(decoding: element.bytes ?? [], as: UTF8.self) + "\n" }
        }
        await redis.close()
        return text
    }

    @Test("a tombstone and `forget customer` erase profile, contacts and state; later events are an unknown customer's",
          arguments: TestStack.RedisTopology.allCases)
    func erasure(redis topology: TestStack.RedisTopology) async throws {
        try await TestStack.with(redis: topology) { h in
            let t0 = JourneyWorkerTests.t0
            let clock = TestClock(t0.adding(.seconds(5)))
            let customers = ["c-tomb", "c-cli", "c-keep"]
            let phone: [String: String] = ["c-tomb": "+4791111111", "c-cli": "+4792222222", "c-keep": "+4793333333"]
            let email: [String: String] = ["c-tomb": "tomb@example.com", "c-cli": "cli@example.com", "c-keep": "keep@example.com"]
            try await h.withWorkers(clock: clock) { worker, scheduler in
                try await h.produce("customers", customers.map { c in
                    (c, Array(#"{"customer_id":"\#(c)","timezone":"Europe/Oslo","contacts":{"email":"\#(email[c]!)","sms":"\#(phone[c]!)"},"consent":{"email":true,"sms":true},"preferred_channels":["email"]}"#.utf8))
                })
                try await h.produce("touchpoints", purchases(customers, at: t0))
                #expect(try await h.eventually { worker.stats.touchpoints == 3 && worker.stats.profiles == 3 })
                try await settle(h, scheduler)
                let before = try await redisDump(h)
                for c in customers { #expect(before.contains(phone[c]!) && before.contains(email[c]!)) }

                // A tombstone on the compacted topic…
                let producer = try KafkaProducer(configuration: .init(client: h.client))
                try await producer.sendAll([KafkaProducerRecord(topic: "customers", key: Array("c-tomb".utf8), value: nil)])
                #expect(try await h.eventually { worker.stats.erasures == 1 })
                // …and the operator command.
                let settingsFile = h.local.directory.appendingPathComponent("forget.yaml")
                try LocalSettings.write(
                    to: settingsFile, bootstrap: h.settings.kafka.bootstrapServers, redisPort: h.settings.redis.port, shards: h.settings.redis.shards,
                    topics: ["touchpoints: { partitions: 3 }", "customers: { partitions: 3 }", "deliveries: { partitions: 3 }",
                             "outbound: { partitions: 2 }", "decisions: { partitions: 2 }"],
                    clusterSeeds: h.settings.redis.mode == "cluster" ? h.settings.redis.seeds : [],
                    tls: h.local.redisCertificates)
                // `--json` output follows the topics' conventions: snake_case names, RFC 3339 UTC times.
                let inspect = try runWaymark(["inspect", "customer", "c-keep", "--json", "--config", settingsFile.path])
                #expect(inspect.status == 0, "\(inspect.output)")
                let report = try #require(try JSONSerialization.jsonObject(with: Data(inspect.output.utf8)) as? [String: Any])
                #expect(report["state_version"] as? Int ?? 0 > 0 && report["timezone"] as? String == "Europe/Oslo")
                let decided = try #require((report["decisions"] as? [[String: Any]])?.first)
                #expect(decided["message_id"] as? String != nil && decided["messageId"] == nil && decided["messageID"] == nil)
                let decidedAt = try #require(decided["decided_at"] as? String)
                #expect(decidedAt.hasSuffix("Z") && (try? Timestamp.parseRFC3339(decidedAt).get()) != nil, "\(decidedAt)")
                let instances = try #require(report["instances"] as? [[String: Any]])
                #expect(instances.allSatisfy { ($0["entered_at"] as? String).map { (try? Timestamp.parseRFC3339($0).get()) != nil } == true })
                let queues = try runWaymark(["queues", "--json", "--config", settingsFile.path])
                #expect(queues.status == 0, "\(queues.output)")
                let snapshot = try #require(try JSONSerialization.jsonObject(with: Data(queues.output.utf8)) as? [String: Any])
                #expect((snapshot["taken_at"] as? String).map { (try? Timestamp.parseRFC3339($0).get()) != nil } == true)
                #expect(snapshot["outbox_pending_customers"] as? Int == 0 && snapshot["dead_letters_by_reason"] != nil)

                let forget = try runWaymark(["forget", "customer", "c-cli", "--yes", "--json", "--config", settingsFile.path])
                #expect(forget.status == 0, "\(forget.output)")
                #expect(forget.output.contains("\"tombstone_published\" : true"))
                #expect(try await h.eventually { worker.stats.erasures == 2 })  // its tombstone reaches the worker too

                let after = try await redisDump(h)
                for c in ["c-tomb", "c-cli"] {
                    #expect(!after.contains(phone[c]!) && !after.contains(email[c]!), "contacts of \(c) left in Redis")
                    #expect(!after.contains("st:\(c)"), "journey state of \(c) left in Redis")
                }
                #expect(after.contains(phone["c-keep"]!) && after.contains(email["c-keep"]!))

                // A later event of an erased customer is an unknown customer's: held for a profile.
                try await h.produce("touchpoints", [("c-tomb", Array(#"{"event_id":"c-tomb-again","customer_id":"c-tomb","type":"purchase","occurred_at":"\#(t0)","attributes":{"order_id":"o-2","value":5}}"#.utf8))])
                #expect(try await h.eventually { worker.stats.touchpoints == 4 })
            }
            let decisions = try await h.read("journey.decisions").map { jsonObject($0.value) }
            #expect(decisions.contains { $0["caused_by"] as? String == "c-tomb-again" && $0["reason"] as? String == "deferred_awaiting_profile" })
            // The compacted topic holds the tombstones (the profile disappears with compaction).
            let tombstones = try await h.read("customers").filter { $0.value == nil }.compactMap { $0.key.map { String(decoding: $0, as: UTF8.self) } }
            #expect(Set(tombstones) == ["c-tomb", "c-cli"])
        }
    }

    // MARK: Strict input

    @Test("bad profiles and the new classes of bad touchpoints go to the dead-letter topic with their reasons")
    func strictInputToDeadLetters() async throws {
        try await TestStack.with { h in
            let t0 = JourneyWorkerTests.t0
            let worker = JourneyWorker(environment: h.environment(clock: TestClock(t0)), client: h.client, redis: h.redis)
            let task = Task { try await worker.run() }
            let badProfiles: [(key: String?, value: String, reason: String)] = [
                ("c-1", #"{"customer_id":"c-1","timezone":"Mars/Olympus"}"#, "invalid_timezone"),
                ("c-1", #"{"customer_id":"c-1","contacts":{"sms":"not-a-phone"}}"#, "invalid_contact"),
                ("c-1", #"{"customer_id":"c-1","contacts":{"email":"nope"}}"#, "invalid_contact"),
                ("c-1", #"{"customer_id":"c-1","contacts":{"carrier_pigeon":"coo"}}"#, "unknown_channel"),
                ("c-1", #"{"customer_id":"c-1","customer_id":"c-1"}"#, "duplicate_key"),
                ("  ", #"{"customer_id":"  "}"#, "invalid_id"),
            ]
            let badEvents: [(key: String?, value: String, reason: String)] = [
                ("c-1", #"{"event_id":"e","customer_id":"c-1","type":"x","type":"y","occurred_at":"\#(t0)"}"#, "duplicate_key"),
                ("c-1", #"{"event_id":"e","customer_id":"c-1","type":"x","occurred_at":"\#(t0)","attributes":{"v":1e400}}"#, "number_out_of_range"),
                ("c-1", #"{"event_id":"  ","customer_id":"c-1","type":"x","occurred_at":"\#(t0)"}"#, "invalid_id"),
                ("c-1", #"{"event_id":"e\u0000","customer_id":"c-1","type":"x","occurred_at":"\#(t0)"}"#, "invalid_id"),
                (String(repeating: "c", count: 10_000), #"{"event_id":"e","customer_id":"\#(String(repeating: "c", count: 10_000))","type":"x","occurred_at":"\#(t0)"}"#, "invalid_id"),
                ("c-1", #"{"event_id":"e-old","customer_id":"c-1","type":"x","occurred_at":"2012-01-01T00:00:00Z"}"#, "absurd_timestamp"),
            ]
            try await h.produce("customers", badProfiles.map { ($0.key, Array($0.value.utf8)) })
            try await h.produce("touchpoints", badEvents.map { ($0.key, Array($0.value.utf8)) })
            let dlq = try await h.read("touchpoints.dlq", expected: badProfiles.count + badEvents.count)
            let reasons = dlq.map { String(decoding: $0.header(DeadLetterHeaders.Name.reason) ?? [], as: UTF8.self) }
            #expect(reasons.sorted() == (badProfiles + badEvents).map(\.reason).sorted())
            let old = dlq.first { $0.header(DeadLetterHeaders.Name.reason) == Array("absurd_timestamp".utf8) }
            let detail = String(decoding: old?.header(DeadLetterHeaders.Name.detail) ?? [], as: UTF8.self)
            #expect(detail.contains("max_event_age_days"), "\(detail)")
            // No profile was stored from the rejected ones.
            let redis = try await RedisConnection.connect(h.redis)
            #expect(try await redis.send(RedisCommand("KEYS", "*:pf:*")).array?.isEmpty == true)
            await redis.close()
            worker.stop()
            try await task.value
        }
    }
}

/// Parses an RFC 3339 literal (crashes on a typo, which is what a test wants).
private func ts(_ text: String) -> Timestamp {
    guard case .success(let t) = Timestamp.parseRFC3339(text) else { fatalError("bad timestamp \(text)") }
    return t
}

/// Runs the `waymark` binary to completion; its exit status and combined output.
func runWaymark(_ arguments: [String]) throws -> (status: Int32, output: String) {
    try runProgram(CrashTests.waymarkBinary, arguments)
}
