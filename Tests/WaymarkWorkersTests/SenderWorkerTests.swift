import Foundation
import Synchronization
import Testing
import WaymarkTestSupport
import WaymarkEngine
import WaymarkWire
import WaymarkHTTPTesting
import WaymarkKafka
import WaymarkWorkers
import WaymarkRedis
import WaymarkState

/// A provider that records calls (with the test clock's time) and fails as told.
final class ScriptedProvider: MessageProvider {
    let name = "scripted"
    struct Call: Sendable { var id: String; var channel: Channel; var attempt: Int; var at: Timestamp; var wall: ContinuousClock.Instant }
    private let state = Mutex<(calls: [Call], transientLeft: [String: Int], permanent: Set<Channel>)>(([], [:], []))
    let clock: TestClock

    init(clock: TestClock) { self.clock = clock }
    var calls: [Call] { state.withLock { $0.calls } }
    func failTransiently(_ id: String, times: Int) { state.withLock { $0.transientLeft[id] = times } }
    func failPermanently(on channel: Channel) { state.withLock { _ = $0.permanent.insert(channel) } }

    func deliver(_ request: ProviderRequest) async -> ProviderResult {
        let id = request.idempotencyKey, channel = request.message.channel
        return state.withLock { s in
            s.calls.append(Call(id: id, channel: channel, attempt: request.attempt, at: clock.now, wall: .now))
            if s.permanent.contains(channel) { return .permanentFailure(reason: "invalid address") }
            if let left = s.transientLeft[id], left > 0 { s.transientLeft[id] = left - 1; return .transientFailure(reason: "503") }
            return .accepted(reference: nil)
        }
    }
}

/// A provider that takes 100 ms per call and records how many calls overlap.
final class SlowProvider: MessageProvider {
    let name = "slow"
    struct Call: Sendable { var id: String; var cause: String; var started: ContinuousClock.Instant; var ended: ContinuousClock.Instant? }
    private let state = Mutex<(inFlight: Int, maxInFlight: Int, calls: [Call])>((0, 0, []))
    var maxInFlight: Int { state.withLock { $0.maxInFlight } }
    var calls: [Call] { state.withLock { $0.calls } }

    func deliver(_ request: ProviderRequest) async -> ProviderResult {
        let index = state.withLock { s in
            s.inFlight += 1
            s.maxInFlight = max(s.maxInFlight, s.inFlight)
            s.calls.append(Call(id: request.idempotencyKey, cause: request.message.causedBy, started: .now, ended: nil))
            return s.calls.count - 1
        }
        // Long enough that the test's second wave (produced just after the first call starts) is
        // polled while the first wave runs, also on a loaded CI box (100 ms lost that race once).
        try? await Task.sleep(for: .milliseconds(500))
        state.withLock { s in
            s.inFlight -= 1
            s.calls[index].ended = .now
        }
        return .accepted(reference: nil)
    }
}

@Suite("Sender workers on the real stack", .serialized)
struct SenderWorkerTests {
    // 2026-11-21 12:00 Oslo (11:00Z), daytime.
    static let noon = Timestamp(milliseconds: 1_795_690_800_000)
    static let profile = #"{"customer_id":"c-1","timezone":"Europe/Oslo","contacts":{"sms":"+4790000001","email":"c1@example.com"},"consent":{"sms":true,"email":true},"preferred_channels":["sms","email"]}"#

    static func message(_ n: Int, channel: Channel = .sms, at t: Timestamp = noon, expires: TimeSpan = .hours(12)) -> OutboundMessage {
        OutboundMessage(messageID: MessageID(journey: "j", version: 1, customerID: "c-1", step: "s", causedBy: "e-\(n)", instanceKey: "", sequence: 0),
                        customerID: "c-1", channel: channel, journey: "j", journeyVersion: 1, stage: "main", step: "s",
                        template: "t", priority: 1, transactional: false, createdAt: t, sendAfter: t, expiresAt: t.adding(expires),
                        causedBy: "e-\(n)", locale: nil, variables: [:], fallbackChannels: channel == .sms ? [.email] : [])
    }

    /// Runs a sender and a scheduler with a scripted provider; `body` gets the provider and clock.
    func withSender(yaml: String = "", provider custom: (any MessageProvider)? = nil, redis topology: TestStack.RedisTopology = .standalone,
                    _ body: (TestStack, ScriptedProvider, TestClock, SenderWorker) async throws -> Void) async throws {
        try await TestStack.with(extraYAML: yaml, redis: topology) { h in
            let clock = TestClock(Self.noon)
            let scripted = ScriptedProvider(clock: clock)
            let provider: any MessageProvider = custom ?? scripted
            let env = h.environment(clock: clock)
            // The journey worker stores profiles (the sender reads them from Redis).
            let journey = JourneyWorker(environment: env, client: h.client, redis: h.redis)
            let sender = SenderWorker(environment: env, channels: [.sms, .email], provider: provider, client: h.client, redis: h.redis)
            let scheduler = Scheduler(environment: env, client: h.client, redis: h.redis)
            let services = Task { try await withThrowingTaskGroup(of: Void.self) { g in
                g.addTask { try await journey.run() }
                g.addTask { try await sender.run() }
                g.addTask { try await scheduler.run() }
                try await g.waitForAll()
            } }
            try await h.produce("customers", key: "c-1", json: Self.profile)
            #expect(try await h.eventually { journey.stats.profiles == 1 })
            try await body(h, scripted, clock, sender)
            journey.stop(); sender.stop(); scheduler.stop()
            try await services.value
        }
    }

    func publish(_ h: TestStack, _ messages: [OutboundMessage]) async throws {
        for m in messages { try await h.produce("outbound.\(m.channel.rawValue)", key: "c-1", json: String(decoding: m.jsonBytes(), as: UTF8.self)) }
    }

    @Test("each message reaches the provider once, even when redelivered; receipts go to deliveries", arguments: TestStack.RedisTopology.allCases)
    func exactlyOnce(redis topology: TestStack.RedisTopology) async throws {
        try await withSender(redis: topology) { h, provider, _, sender in
            let messages = (1...5).map { Self.message($0) }
            try await publish(h, messages)
            try await publish(h, [messages[0], messages[3]])  // the same ids again (an outbox re-publish)
            #expect(try await h.eventually { sender.stats.delivered == 5 && sender.stats.duplicatesSkipped == 2 })
            #expect(provider.calls.count == 5)
            #expect(Set(provider.calls.map(\.id)) == Set(messages.map { $0.messageID.description }))
            let receipts = try await h.read("deliveries", expected: 5)
            #expect(receipts.count == 5)
            #expect(receipts.allSatisfy { jsonObject($0.value)["type"] as? String == "message_sent" })
        }
    }

    @Test("quiet hours are checked again at the moment of sending; the message is released after them", arguments: TestStack.RedisTopology.allCases)
    func sendTimeQuietHours(redis topology: TestStack.RedisTopology) async throws {
        try await withSender(redis: topology) { h, provider, clock, sender in
            // Decided at noon, but the sender only sees it at 23:00 Oslo: quiet hours.
            let late = Self.noon.adding(.hours(11))
            clock.set(late)
            let m = Self.message(1, at: Self.noon, expires: .hours(48))
            try await publish(h, [m])
            #expect(try await h.eventually { sender.stats.parked == 1 })
            let decisions = try await h.read("journey.decisions", expected: 1)
            #expect(jsonObject(decisions.first?.value)["reason"] as? String == "deferred_quiet_hours")
            #expect(provider.calls.isEmpty)
            // 08:31 the next morning (window 21:00–08:00, spread 30 min): released and sent.
            clock.set(Self.noon.adding(.hours(20)).adding(.minutes(31)))
            #expect(try await h.eventually { sender.stats.delivered == 1 })
            let call = try #require(provider.calls.first)
            if case .quiet = h.engine.quietHours.check(channel: .sms, transactional: false, profile: nil, at: call.at) {
                Issue.record("provider called inside quiet hours at \(call.at)")
            }
        }
    }

    @Test("transient failures are retried with backoff; a permanent failure falls back to the next channel")
    func retryAndFallback() async throws {
        try await withSender(yaml: "sender:\n  retry_backoff_ms: 100\n  max_attempts: 4\n") { h, provider, clock, sender in
            let flaky = Self.message(1)
            provider.failTransiently(flaky.messageID.description, times: 2)
            try await publish(h, [flaky])
            // Retries are parked on the (test) clock: let it run 250 ms per poll.
            #expect(try await h.eventually { clock.set(clock.now.adding(TimeSpan(milliseconds: 250))); return sender.stats.delivered == 1 })
            #expect(provider.calls.map(\.attempt) == [1, 2, 3])

            provider.failPermanently(on: .sms)
            let doomed = Self.message(2)
            try await publish(h, [doomed])
            #expect(try await h.eventually { sender.stats.fallbacks == 1 && sender.stats.delivered == 2 })
            let last = provider.calls.filter { $0.id == doomed.messageID.description }
            #expect(last.map(\.channel) == [.sms, .email])
            let decisions = try await h.read("journey.decisions", expected: 1)
            #expect(decisions.contains { jsonObject($0.value)["reason"] as? String == "fallback_channel" })
        }
    }

    @Test("a channel the customer unsubscribed from gets nothing at send time, with the reason; a provider's opt-out withdraws it too")
    func unsubscribedAtSendTime() async throws {
        try await withSender { h, provider, _, sender in
            let connection = try await RedisConnection.connect(h.redis)
            let state = RedisStateStore(connection: connection, keys: h.keys)
            // The profile still says consent: true; the customer's STOP (recorded by the receipts worker) wins.
            try await state.suppress("c-1", "sms", at: Self.noon.milliseconds)
            try await publish(h, [Self.message(1)])
            #expect(try await h.eventually { sender.stats.noConsent == 1 })
            #expect(provider.calls.isEmpty)
            let decisions = try await h.read("journey.decisions", expected: 1)
            #expect(decisions.map { jsonObject($0.value)["rule"] as? String } == ["send_time:consent:sms:unsubscribed"])
            // Re-subscribed (START): the next one goes out.
            try await state.suppress("c-1", "sms", at: Self.noon.milliseconds, withdraw: false)
            try await publish(h, [Self.message(2)])
            #expect(try await h.eventually { sender.stats.delivered == 1 })
            // A global opt-out stops non-transactional messages on every channel.
            try await state.suppress("c-1", Suppressions.everything, at: Self.noon.milliseconds)
            try await publish(h, [Self.message(3, channel: .email)])
            #expect(try await h.eventually { sender.stats.noConsent == 2 })
            #expect(provider.calls.count == 1)
            await connection.close()
        }
    }

    @Test("expired messages are not sent")
    func expired() async throws {
        try await withSender { h, provider, clock, sender in
            clock.set(Self.noon.adding(.hours(13)))
            try await publish(h, [Self.message(1, expires: .hours(12))])
            #expect(try await h.eventually { sender.stats.expired == 1 })
            #expect(provider.calls.isEmpty)
        }
    }

    @Test("the rate limit holds across the calls of a burst")
    func rateLimit() async throws {
        try await withSender(yaml: "sender:\n  rate_per_second: 20\n  burst: 5\n") { h, provider, _, sender in
            // All in one produce call, so they arrive in one poll batch (the case a per-batch token grab gets wrong).
            try await h.produce("outbound.sms", (1...40).map { (key: "c-1", value: Self.message($0).jsonBytes()) })
            #expect(try await h.eventually(timeout: .seconds(30)) { sender.stats.delivered == 40 })
            let times = provider.calls.map(\.wall).sorted()
            // In any window of one second, at most rate + burst calls.
            for (i, start) in times.enumerated() {
                let inWindow = times[i...].prefix { $0 - start < .seconds(1) }.count
                #expect(inWindow <= 25, "\(inWindow) calls within one second")
            }
        }
    }

    @Test("batches overlap while a slow provider answers, yet never more than sender.concurrency calls run at once")
    func overlappingBatches() async throws {
        let slow = SlowProvider()
        try await withSender(yaml: "sender:\n  concurrency: 4\n  rate_per_second: 100000\n  burst: 100000\n", provider: slow) { h, _, _, sender in
            try await h.produce("outbound.sms", (1...12).map { (key: "c-1", value: Self.message($0).jsonBytes()) })
            // The second wave arrives while the first batch's calls (3 rounds of 500 ms) are running.
            #expect(try await h.eventually { !slow.calls.isEmpty })
            try await Task.sleep(for: .milliseconds(30))
            try await h.produce("outbound.sms", (101...112).map { (key: "c-1", value: Self.message($0).jsonBytes()) })
            #expect(try await h.eventually(timeout: .seconds(30)) { sender.stats.delivered == 24 })
            #expect(slow.maxInFlight == 4, "at most sender.concurrency calls at once, and all of them used: \(slow.maxInFlight)")
            #expect(Set(slow.calls.map(\.id)).count == 24 && slow.calls.count == 24)  // each message once
            // Overlap: a second-wave call started before the first wave's last call ended (one batch at a
            // time would start the second wave only after every first-wave call had returned).
            let firstWave = slow.calls.filter { Int($0.cause.dropFirst(2))! < 100 }
            let secondWave = slow.calls.filter { Int($0.cause.dropFirst(2))! > 100 }
            let lastFirstEnded = try #require(firstWave.compactMap(\.ended).max())
            let firstSecondStarted = try #require(secondWave.map(\.started).min())
            #expect(firstSecondStarted < lastFirstEnded, "the second batch waited for the whole first batch")
        }
    }

    @Test("webhook provider: JSON POST with Idempotency-Key; 503 retried, 400 falls back to the next channel")
    func webhook() async throws {
        let fake = try await FakeProvider.start()
        let webhook = try WebhookProvider(url: fake.url, timeout: .seconds(2), signingSecret: "hook-secret")
        try await withSender(yaml: "sender:\n  retry_backoff_ms: 100\n", provider: webhook) { h, _, clock, sender in
            fake.failNext(2, status: 503)
            let m = Self.message(1)
            try await publish(h, [m])
            #expect(try await h.eventually { clock.set(clock.now.adding(TimeSpan(milliseconds: 250))); return sender.stats.delivered == 1 })
            #expect(fake.requests.map(\.status) == [503, 503, 200])
            #expect(fake.requests.allSatisfy { $0.idempotencyKey == m.messageID.description })
            let body = try JSONSerialization.jsonObject(with: Data(fake.requests.last!.body)) as? [String: Any]
            #expect(body?["to"] as? String == "+4790000001")
            #expect((body?["message"] as? [String: Any])?["message_id"] as? String == m.messageID.description)
            // Signed: t=<seconds>,v1=hex HMAC-SHA256(secret, "<t>.<body>"), which the receipts side accepts.
            let signature = try #require(fake.requests.last?.headers["x-waymark-signature"])
            #expect(signature.hasPrefix("t=") && signature.contains(",v1="))
            #expect(CallbackSignatures.verifyWaymark(signature, secret: "hook-secret", body: fake.requests.last!.body,
                                                     now: Int64(Date().timeIntervalSince1970), maxAge: 600))

            fake.failAll(status: 400)
            try await publish(h, [Self.message(2)])
            #expect(try await h.eventually { sender.stats.fallbacks == 1 })
            #expect(sender.stats.delivered == 1)  // the email fallback also got 400: failed, no more channels
            #expect(try await h.eventually { sender.stats.failed == 1 })
            let dlq = try await h.read("touchpoints.dlq", expected: 1)
            #expect(dlq.map { String(decoding: $0.header("x-waymark-reason") ?? [], as: UTF8.self) } == ["delivery_failed"])
        }
        await webhook.shutdown()
        await fake.shutdown()
    }

    @Test("webhook provider outcomes: 2xx accepted, 429/5xx and timeouts and refused connections transient, 4xx permanent, bad URLs refused")
    func webhookOutcomes() async throws {
        let fake = try await FakeProvider.start()
        let webhook = try WebhookProvider(url: fake.url, timeout: .milliseconds(500))
        let request = ProviderRequest(message: Self.message(7), address: "+4790000001", attempt: 1)
        func outcome() async -> String {
            switch await webhook.deliver(request) {
            case .accepted: "accepted"
            case .transientFailure(let reason): "transient: \(reason)"
            case .throttled(let reason, _): "throttled: \(reason)"
            case .permanentFailure(let reason), .recipientUnsubscribed(let reason): "permanent: \(reason)"
            }
        }
        #expect(await outcome() == "accepted")
        for (status, expected) in [(429, "throttled: webhook HTTP 429"), (503, "transient: webhook HTTP 503"), (400, "permanent: webhook HTTP 400"), (404, "permanent: webhook HTTP 404")] {
            fake.failNext(1, status: status)
            #expect(await outcome() == expected)
        }
        fake.delay(.seconds(2))
        #expect(await outcome() == "transient: timeout")
        fake.delay(.zero)
        await fake.shutdown()
        #expect(await outcome().hasPrefix("transient:"))  // nothing listens any more
        await webhook.shutdown()
        #expect(throws: ProviderError.self) { _ = try WebhookProvider(url: "ftp://example.invalid/x", timeout: .seconds(1)) }
        #expect(throws: ProviderError.self) { _ = try WebhookProvider(url: "not a url", timeout: .seconds(1)) }
    }

    @Test("file provider: a line cut short by a kill is not a handover (cut off, key not seen, next line intact)")
    func fileProviderDropsPartialLine() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wm-fp-\(UInt64.random(in: 0...UInt64.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("p.jsonl").path
        let first = Self.message(1), cut = Self.message(2), next = Self.message(3)
        func line(_ m: OutboundMessage) -> [UInt8] {
            ProviderHandoff(idempotencyKey: m.messageID.description, attempt: 1, handedAt: 1, to: "+4790000001", message: m).jsonBytes() + [0x0A]
        }
        // One complete line, then the start of one a kill -9 interrupted (key complete, body not).
        let partial = Array(line(cut).prefix(80))
        FileManager.default.createFile(atPath: path, contents: Data(line(first) + partial))
        let provider = try FileProvider(path: path)
        #expect(await provider.deliver(ProviderRequest(message: first, address: "+4790000001", attempt: 2)) == .accepted(reference: nil))
        #expect(await provider.deliver(ProviderRequest(message: cut, address: "+4790000001", attempt: 2)) == .accepted(reference: nil))
        #expect(await provider.deliver(ProviderRequest(message: next, address: "+4790000001", attempt: 1)) == .accepted(reference: nil))
        let lines = try #require(FileManager.default.contents(atPath: path)).split(separator: 0x0A, omittingEmptySubsequences: false)
        let keys = lines.dropLast().map { line -> String? in
            guard case .success(let handoff) = ProviderHandoff.decode(line) else { return nil }
            return handoff.idempotencyKey
        }
        // The repeated first message is dropped (idempotency), the cut one is handed over again, every line decodes.
        #expect(keys == [first, cut, next].map { $0.messageID.description })
        #expect(lines.last?.isEmpty == true)
        let repeats = String(decoding: try #require(FileManager.default.contents(atPath: path + ".repeats")), as: UTF8.self)
        #expect(repeats == first.messageID.description + "\n")
    }
}
