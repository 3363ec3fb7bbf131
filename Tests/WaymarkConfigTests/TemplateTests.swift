import Foundation
import Testing
import WaymarkConfig
import WaymarkEngine

@Suite("Templates: store, locale fallback, validation, SMS segments")
struct TemplateTests {
    /// A config directory with one journey and the given template files (`name/locale.yaml` → text).
    func config(journey: String, templates: [String: String]) throws -> String {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("wm-tpl-\(UInt64.random(in: 0...UInt64.max))").path
        try FileManager.default.createDirectory(atPath: root + "/journeys", withIntermediateDirectories: true)
        try "default_timezone: Europe/Oslo\n".write(toFile: root + "/rules.yaml", atomically: true, encoding: .utf8)
        try journey.write(toFile: root + "/journeys/j.yaml", atomically: true, encoding: .utf8)
        for (path, text) in templates {
            let file = root + "/templates/" + path
            try FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: file, atomically: true, encoding: .utf8)
        }
        return root
    }

    static let journey = """
        journey: j
        version: 1
        entry:
          - event: cart_abandoned
        steps:
          - id: remind
            send:
              channels: [sms, email]
              template: reminder
              variables: [cart_id, value]
        """

    func loadError(_ root: String) -> JourneyConfigError? {
        do { _ = try JourneyLoader.loadEngine(configDirectory: root); return nil } catch { return error }
    }

    @Test("the shipped templates cover every send step of the shipped journeys, on every channel")
    func shipped() throws {
        let store = try JourneyLoader.loadTemplates(configDirectory: configRoot)
        let engine = try JourneyLoader.loadEngine(configDirectory: configRoot)
        let sends = engine.journeys.flatMap { $0.stages.flatMap(\.steps) }.compactMap { step -> SendStep? in
            if case .send(let s) = step.action { s } else { nil }
        }
        #expect(!sends.isEmpty)
        for send in sends {
            for channel in send.channels { #expect(store.content(send.template, channel: channel, locale: nil) != nil, "\(send.template) on \(channel)") }
        }
    }

    @Test("locale fallback nb-NO → nb → default; text is not HTML-escaped, html is; numbers print as the engine prints them")
    func renderAndFallback() throws {
        let root = try config(journey: Self.journey, templates: [
            "reminder/default.yaml": """
                sms: "Cart {{cart_id}} & more: {{value}} EUR"
                email: { subject: "Cart {{cart_id}}", text: "T {{value}}", html: "<p>{{cart_id}}</p>" }
                """,
            "reminder/nb.yaml": "sms: \"Handlekurv {{cart_id}}: {{value}} kr\"\n",
        ])
        let store = try JourneyLoader.loadTemplates(configDirectory: root)
        _ = try JourneyLoader.loadEngine(configDirectory: root)
        let vars: [String: AttributeValue] = ["cart_id": .string("k<1>"), "value": .number(59)]
        let nb = try #require(store.render("reminder", channel: .sms, locale: "nb-NO", customerID: "c-1", variables: vars))
        #expect(nb.body == "Handlekurv k<1>: 59 kr")
        #expect(nb.locale == "nb")
        let en = try #require(store.render("reminder", channel: .sms, locale: "en-US", customerID: "c-1", variables: vars))
        #expect(en.body == "Cart k<1> & more: 59 EUR")
        #expect(en.locale == "default")
        // nb has no e-mail: falls back to default for that channel.
        let mail = try #require(store.render("reminder", channel: .email, locale: "nb-NO", customerID: "c-1", variables: ["cart_id": .string("k<1>"), "value": .number(59.5)]))
        #expect(mail.subject == "Cart k<1>")
        #expect(mail.body == "T 59.5")
        #expect(mail.html == "<p>k&lt;1&gt;</p>")
        #expect(mail.locale == "default")
        #expect(store.render("reminder", channel: .push, locale: nil, customerID: "c-1", variables: vars) == nil)
        #expect(TemplateStore.fallbackChain("nb_NO") == ["nb-no", "nb", "default"])
    }

    @Test("a missing template, a missing channel or a variable the step does not pass is a file:line error at the step")
    func validation() throws {
        var root = try config(journey: Self.journey, templates: ["reminders/default.yaml": "sms: hi\nemail: { subject: s, text: t }\n"])
        var error = try #require(loadError(root))
        #expect(error.file.hasSuffix("journeys/j.yaml"))
        #expect(error.line == 9)
        #expect(error.message.contains("template 'reminder' is not in the templates directory (did you mean 'reminders'?)"))

        root = try config(journey: Self.journey, templates: ["reminder/default.yaml": "sms: hi\n"])
        error = try #require(loadError(root))
        #expect(error.message.contains("has nothing for email in default.yaml"))

        root = try config(journey: Self.journey, templates: [
            "reminder/default.yaml": "sms: \"{{cart_id}}\"\nemail: { subject: s, text: t }\n",
            "reminder/de.yaml": "sms: \"{{cart_id}} {{first_name}}\"\n",
        ])
        error = try #require(loadError(root))
        #expect(error.line == 9)
        #expect(error.message.contains("(de, sms) uses 'first_name', which the step does not pass"))

        root = try config(journey: Self.journey, templates: ["reminder/nb.yaml": "sms: hi\n"])
        error = try #require(loadError(root))
        #expect(error.message.contains("needs a default.yaml"))

        root = try config(journey: Self.journey, templates: ["reminder/default.yaml": "sms: hi\nemail: { text: t }\n"])
        error = try #require(loadError(root))
        #expect(error.file.hasSuffix("reminder/default.yaml"))
        #expect(error.line == 2)
        #expect(error.message.contains("email: needs a subject"))

        root = try config(journey: Self.journey, templates: ["reminder/default.yaml": "sms: \"{{#cart_id}}unclosed\"\nemail: { subject: s, text: t }\n"])
        error = try #require(loadError(root))
        #expect(error.line == 1)
        #expect(error.message.contains("not a valid Mustache template"))
    }

    @Test("SMS segments: GSM-7 160/153 septets (extension characters count twice), UCS-2 70/67")
    func segments() {
        #expect(SMSSegments.count(String(repeating: "a", count: 160)) == ("GSM-7", 160, 1))
        #expect(SMSSegments.count(String(repeating: "a", count: 161)) == ("GSM-7", 161, 2))
        #expect(SMSSegments.count(String(repeating: "a", count: 306)) == ("GSM-7", 306, 2))
        #expect(SMSSegments.count(String(repeating: "a", count: 307)) == ("GSM-7", 307, 3))
        #expect(SMSSegments.count(String(repeating: "€", count: 80)) == ("GSM-7", 160, 1))
        #expect(SMSSegments.count("Velkommen i klubben: nivå gull").encoding == "GSM-7")  // å is in the basic set
        #expect(SMSSegments.count(String(repeating: "ø", count: 70) + "😀").encoding == "UCS-2")
        #expect(SMSSegments.count(String(repeating: "ł", count: 70)) == ("UCS-2", 70, 1))
        #expect(SMSSegments.count(String(repeating: "ł", count: 71)) == ("UCS-2", 71, 2))
    }
}
