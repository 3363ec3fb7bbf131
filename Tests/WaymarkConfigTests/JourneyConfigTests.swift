import Foundation
import Testing
import WaymarkConfig
import WaymarkEngine

/// `<repo>/config`, found from this file's location.
let configRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.appendingPathComponent("config").path
}()

func expectError(_ yaml: String, line: Int, contains text: String, rules: Bool = false,
                 sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        if rules { _ = try RulesLoader.parse(yaml: yaml, file: "bad.yaml") } else { _ = try JourneyLoader.parse(yaml: yaml, file: "bad.yaml") }
        Issue.record("accepted invalid config", sourceLocation: sourceLocation)
    } catch {
        #expect(error.file == "bad.yaml", sourceLocation: sourceLocation)
        #expect(error.line == line, "\(error)", sourceLocation: sourceLocation)
        #expect(error.message.contains(text), "\(error)", sourceLocation: sourceLocation)
        #expect(error.description.hasPrefix("bad.yaml:\(line):"), sourceLocation: sourceLocation)
    }
}

let minimal = """
journey: j
version: 1
entry:
  - event: ping
steps:
  - id: hello
    send: { channels: [sms], template: hello }

"""

@Suite struct JourneyConfigTests {
    @Test func shippedExamplesLoadAndRun() throws {
        let engine = try JourneyLoader.loadEngine(configDirectory: configRoot)
        #expect(engine.journeys.map(\.name) == ["abandoned_cart", "lifecycle", "post_purchase", "support_case_follow_up"])
        let cart = engine.journeys[0]
        #expect(cart.key == "cart_id" && cart.version == 3 && cart.exits.count == 2)
        let life = engine.journeys[1]
        #expect(life.stages.map(\.name) == ["awareness", "consideration", "purchase", "post_purchase", "loyalty"])
        // Stage channel defaults were applied to send steps.
        if case .send(let s) = life.stages[4].steps[0].action { #expect(s.channels == [.whatsapp, .sms, .email]) } else { Issue.record("not a send") }
        #expect(engine.rules.frequencyCaps.map(\.name) == ["sms_per_day", "push_per_day", "messages_per_week", "abandoned_cart_per_week"])
        #expect(engine.rules.quietHours.defaultWindow == QuietWindow(startMinute: 21 * 60, endMinute: 8 * 60, rule: "quiet_hours:default"))
        #expect(engine.rules.quietHours.channelWindows[.email]?.isEmpty == true)

        // A cart abandoned in the afternoon gets a reminder an hour later.
        var p = CustomerProfile(customerID: "c-42", timezone: "Europe/Oslo", locale: "nb-NO")
        p.contacts = [.sms: "+4790000000", .email: "a@example.com"]
        p.consent = [.sms: true, .email: true]
        let t0 = try Timestamp.parseRFC3339("2026-11-20T14:04:05+01:00").get()
        let e = Touchpoint(eventID: "e-1", customerID: "c-42", type: "cart_abandoned", occurredAt: t0,
                           attributes: ["cart_id": .string("k-77"), "value": .number(59.9), "currency": .string("EUR")])
        let r = engine.process(CustomerState(), customerID: "c-42", profile: p, touchpoints: [e], now: t0)
        #expect(r.nextWakeUp == t0.adding(.hours(1)))
        let r2 = engine.wake(r.state, customerID: "c-42", profile: p, now: t0.adding(.hours(1)))
        #expect(r2.messages.map(\.template) == ["cart_reminder_1"])
        #expect(r2.messages.first?.channel == .email)  // push first, but no consent/contact
        #expect(r2.messages.first?.variables == ["cart_id": .string("k-77"), "value": .number(59.9), "currency": .string("EUR")])
    }

    @Test func minimalJourneyParses() throws {
        let j = try JourneyLoader.parse(yaml: minimal, file: "min.yaml")
        #expect(j.stages == [Stage(name: "main", steps: [Step(id: "hello", action: .send(SendStep(channels: [.sms], template: "hello")))])])
    }

    @Test func conditionsParse() throws {
        let j = try JourneyLoader.parse(yaml: """
            journey: j
            version: 2
            key: cart_id
            entry:
              - event: cart_abandoned
                where: { value: { gte: 10, lt: 500 }, currency: [EUR, NOK], source: web }
                profile: { tier: { exists: true } }
            steps:
              - id: b
                branch:
                  - if: { event.value: { gt: 100 }, profile.persona: vip }
                    goto: s
                  - else: end
              - id: s
                send: { channels: [sms], template: t, priority: 3, transactional: true, expires_after: 1h30m }
            """, file: "c.yaml")
        #expect(j.entry[0].event.filter.clauses == [
            Clause(.event("value"), .atLeast(10)), Clause(.event("value"), .lessThan(500)),
            Clause(.event("currency"), .oneOf([.string("EUR"), .string("NOK")])), Clause(.event("source"), .equals(.string("web"))),
        ])
        #expect(j.entry[0].profile.clauses == [Clause(.profile("tier"), .exists(true))])
        guard case .branch(let cases, let otherwise) = j.stages[0].steps[0].action else { Issue.record("no branch"); return }
        #expect(cases == [BranchCase(condition: Condition([Clause(.event("value"), .greaterThan(100)), Clause(.profile("persona"), .equals(.string("vip")))]), target: .step("s"))])
        #expect(otherwise == .end)
        #expect(j.stages[0].steps[1].action == .send(SendStep(channels: [.sms], template: "t", priority: 3, transactional: true, expiresAfter: .minutes(90))))
    }

    @Test func errorsNameFileLineAndProblem() {
        expectError(minimal.replacingOccurrences(of: "[sms]", with: "[sms, fax]"), line: 7, contains: "unknown channel 'fax'")
        expectError(minimal.replacingOccurrences(of: "version: 1", with: "version: one"), line: 2, contains: "expected an integer")
        expectError(minimal.replacingOccurrences(of: "template: hello", with: "tempalte: hello"), line: 7, contains: "unknown key 'tempalte'")
        expectError(minimal.replacingOccurrences(of: "  - event: ping", with: "  - event: ping\n    wait: 1h"), line: 5, contains: "unknown key 'wait'")
        expectError(minimal + "  - id: w\n    wait: 2 hours\n", line: 9, contains: "'2 hours' is not a duration")
        expectError(minimal + "  - id: b\n    branch:\n      - if: { event.x: 1 }\n        goto: nowhere\n", line: 8, contains: "unknown step 'nowhere'")
        expectError(minimal + "  - id: hello\n    wait: 1h\n", line: 8, contains: "'hello' is used twice")
        expectError(minimal + "  - id: x\n    wait: 1h\n    send: { channels: [sms], template: t }\n", line: 8, contains: "exactly one action")
        expectError(minimal.replacingOccurrences(of: "journey: j\n", with: ""), line: 1, contains: "missing required key 'journey'")
        expectError("journey: j\nversion: 1\nentry: [ {event: x}\nsteps: []\n", line: 4, contains: "invalid YAML")
        expectError(minimal + "transitions:\n  - on: x\n    to: elsewhere\n", line: 10, contains: "unknown stage 'elsewhere'")
        expectError(minimal + "  - id: b\n    branch:\n      - if: { value: 1 }\n        goto: hello\n", line: 10, contains: "must start with 'event.' or 'profile.'")
    }

    @Test func rulesParseAndValidate() throws {
        let r = try RulesLoader.load(file: configRoot + "/rules.yaml")
        #expect(r.defaultTimezone == "Europe/Oslo" && r.quietHours.spread == .minutes(30))
        #expect(r.frequencyCaps.first == FrequencyCap(name: "sms_per_day", limit: 1, window: .hours(24), channel: .sms))
        #expect(r.frequencyCaps.last?.journey == "abandoned_cart")
        #expect(r.consent.allowWithoutProfile == false && r.channelOrder == .customerPreference)
        expectError("default_timezone: Europe/Atlantis\n", line: 1, contains: "unknown IANA time zone", rules: true)
        expectError("quiet_hours:\n  default: { start: \"25:00\", end: \"08:00\" }\n", line: 2, contains: "not a local time", rules: true)
        expectError("quiet_hours:\n  channels:\n    fax: off\n", line: 3, contains: "unknown key 'fax'", rules: true)
        expectError("quiet_hours:\n  default: { start: \"21:00\", end: \"08:00\" }\n  spread: 12h\n", line: 3, contains: "does not fit", rules: true)
        expectError("frequency_caps:\n  caps:\n    - { name: a, limit: 0, window: 1d }\n", line: 3, contains: "outside 1...", rules: true)
        expectError("frequency_caps:\n  caps:\n    - { name: a, limit: 1 }\n", line: 3, contains: "missing required key 'window'", rules: true)
    }

    @Test func duplicateJourneyNamesAcrossFilesAreRejected() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("waymark-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try minimal.write(to: dir.appendingPathComponent("a.yaml"), atomically: true, encoding: .utf8)
        try minimal.write(to: dir.appendingPathComponent("b.yaml"), atomically: true, encoding: .utf8)
        #expect(throws: JourneyConfigError.self) { try JourneyLoader.load(directory: dir.path) }
        do { _ = try JourneyLoader.load(directory: dir.path) } catch {
            #expect(error.file.hasSuffix("b.yaml") && error.message.contains("also defined in"))
        }
    }
}
