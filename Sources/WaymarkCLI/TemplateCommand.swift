import ArgumentParser
import Foundation
import WaymarkConfig
import WaymarkEngine
import WaymarkState
import WaymarkWire
import WaymarkWorkers

struct Template: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Message templates (config/templates/): list them, preview one for a real customer.",
        subcommands: [Render.self, List.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List templates with their locales and channels (validated against the journeys).",
            discussion: "Examples:\n  waymark template list\n  waymark template list --json")
        @Option(help: "Directory with rules.yaml, journeys/ and templates/.") var journeys = "config"
        @Flag(help: "Print the result as JSON.") var json = false

        struct Entry: Encodable { var name: String; var locales: [String: [String]] }

        func run() throws {
            let store = try JourneyLoader.loadConfiguration(configDirectory: journeys).templates  // validated against the journeys
            let entries = store.templates.keys.sorted().map { name in
                Entry(name: name, locales: store.templates[name]!.mapValues { $0.keys.map(\.rawValue).sorted() })
            }
            if json { try printJSON(entries); return }
            for e in entries {
                print("\(e.name)")
                for locale in e.locales.keys.sorted() { print("  \(locale): \(e.locales[locale]!.joined(separator: ", "))") }
            }
        }
    }

    struct Render: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Render a template as a customer would get it: their locale (with fallback), each channel, SMS segments.",
            discussion: """
                The customer's profile (locale, attributes, what they unsubscribed from) is read from Redis. \
                Variables a journey would pass come from --var; profile attributes fill the rest (profile.tier \
                → tier). A variable the template uses but nobody gave is listed, not guessed.

                Examples:
                  waymark template render cart_reminder_1 --customer c-1042 --var cart_id=k-77 --var value=59.90 --var currency=EUR
                  waymark template render order_confirmation --locale nb-NO --channel sms --var order_id=o-1
                  waymark template render loyalty_welcome --customer c-7 --json
                """)
        @OptionGroup var global: GlobalOptions
        @Option(help: "Directory with rules.yaml, journeys/ and templates/.") var journeys = "config"
        @Argument(help: "Template name (a directory under templates/).") var name: String
        @Option(help: "Customer whose profile to use (read from Redis).") var customer: String?
        @Option(help: "Locale instead of the profile's (nb-NO, en).") var locale: String?
        @Option(name: .customLong("channel"), help: "Only this channel (repeatable).") var channels: [String] = []
        @Option(name: .customLong("var"), help: "A variable, name=value (repeatable); numbers are read as numbers.") var variables: [String] = []
        @Flag(help: "Print the result as JSON.") var json = false

        struct Output: Encodable {
            var template: String
            var customer_id: String
            var requested_locale: String?
            var channels: [ChannelOutput]
            var unsubscribed: [String]
        }
        struct ChannelOutput: Encodable {
            var channel: String
            var locale: String
            var subject: String?
            var body: String
            var html: String?
            var provider_template: String?
            var provider_parameters: [String]?
            var sms_encoding: String?
            var sms_segments: Int?
            var missing_variables: [String]
        }

        func validate() throws {
            for c in channels where Channel(rawValue: c) == nil { throw ValidationError("unknown channel '\(c)'") }
            for v in variables where !v.contains("=") { throw ValidationError("--var takes name=value, got '\(v)'") }
        }

        func run() async throws {
            let store = try JourneyLoader.loadTemplates(configDirectory: journeys)
            guard let locales = store.templates[name] else {
                throw ValidationError("no template '\(name)' in \(journeys)/templates (known: \(store.templates.keys.sorted().joined(separator: ", ")))")
            }
            var vars: [String: AttributeValue] = [:]
            var profile: CustomerProfile?
            if let customer {
                let context = try OperatorContext(global: global)
                let redis = try await context.redis()
                let state = RedisStateStore(connection: redis, keys: context.keys)
                let loaded = try await state.loadProfiles([customer])
                await redis.close()
                guard let (_, bytes, suppressions) = loaded.first else { throw ValidationError("customer '\(customer)' has no profile in Redis") }
                guard case .success(let p) = RecordParser().profile(key: ArraySlice(customer.utf8), value: ArraySlice(bytes)) else {
                    throw ValidationError("the stored profile of '\(customer)' does not parse")
                }
                profile = p.applying(suppressions)
                for (key, value) in p.attributes { vars[key] = value }
            }
            for pair in variables {
                let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
                vars[parts[0]] = Double(parts[1]).map { .number($0) } ?? .string(parts[1])
            }
            let wanted = channels.isEmpty ? Set(locales.values.flatMap(\.keys)) : Set(channels.compactMap(Channel.init(rawValue:)))
            let requested = locale ?? profile?.locale
            var out: [ChannelOutput] = []
            for channel in wanted.sorted(by: { $0.rawValue < $1.rawValue }) {
                guard let (_, content) = store.content(name, channel: channel, locale: requested),
                      let rendered = store.render(name, channel: channel, locale: requested, customerID: customer ?? "c-preview", variables: vars) else { continue }
                let segments = [.sms, .rcs, .viber].contains(channel) && rendered.providerTemplate == nil ? SMSSegments.count(rendered.body) : nil
                out.append(ChannelOutput(channel: channel.rawValue, locale: rendered.locale, subject: rendered.subject, body: rendered.body,
                                         html: rendered.html, provider_template: rendered.providerTemplate.map { "\($0.name) (\($0.language))" },
                                         provider_parameters: rendered.providerTemplate?.parameters, sms_encoding: segments?.encoding,
                                         sms_segments: segments?.segments,
                                         missing_variables: content.variables.subtracting(vars.keys).subtracting(["customer_id"]).sorted()))
            }
            let result = Output(template: name, customer_id: customer ?? "c-preview", requested_locale: requested, channels: out,
                                unsubscribed: (profile?.withdrawn.map(\.rawValue).sorted() ?? []) + (profile?.optedOut == true ? ["* (opted out)"] : []))
            if json { try printJSON(result); return }
            print("template \(name) for \(result.customer_id), locale \(requested ?? "(none)")")
            if !result.unsubscribed.isEmpty { print("  unsubscribed from: \(result.unsubscribed.joined(separator: ", ")) (nothing would be sent there)") }
            for c in out {
                print("\n[\(c.channel)] locale \(c.locale)" + (c.sms_segments.map { ", \(c.sms_encoding!) \($0) segment\($0 == 1 ? "" : "s")" } ?? ""))
                if let t = c.provider_template { print("  provider template \(t), parameters \(c.provider_parameters ?? [])") }
                if let s = c.subject { print("  subject: \(s)") }
                if !c.body.isEmpty { print("  body:    \(c.body)") }
                if let h = c.html { print("  html:    \(h)") }
                if !c.missing_variables.isEmpty { print("  missing variables (rendered empty): \(c.missing_variables.joined(separator: ", "))") }
            }
        }
    }
}
