import Foundation
import Testing
import WaymarkConfig
import WaymarkControl
import WaymarkKafka
import WaymarkLocalStack

@Suite("topics apply against a real broker")
struct TopicSetupTests {
    @Test("apply creates every declared topic; a second apply changes nothing")
    func applyIsIdempotent() async throws {
        try await LocalStack.with(redis: false) { stack in
            let yaml = """
                kafka:
                  channels: [sms, email]
                  topics:
                    touchpoints: { partitions: 4, configs: { retention.ms: "86400000" } }
                    outbound: { prefix: out, partitions: 2 }
                """
            let settings = try WaymarkSettings.parse(yaml, file: "test.yaml",
                                                     environment: ["WAYMARK_KAFKA_BOOTSTRAP": stack.kafka!.bootstrapServers])
            let admin = try KafkaAdmin(client: .init(bootstrapServers: settings.kafka.bootstrapServers))
            let setup = TopicSetup(settings: settings.kafka)

            let first = try await setup.apply(admin: admin)
            #expect(first.filter { $0.action == .created }.map(\.topic).sorted() ==
                    ["customers", "deliveries", "journey.decisions", "out.email", "out.sms", "touchpoints", "touchpoints.dlq"])
            #expect(!first.contains { $0.action == .failed })
            let described = try await admin.describeTopics(["touchpoints", "out.sms"])
            #expect(described.map(\.partitions.count) == [2, 4])
            #expect(try await admin.describeConfigs(topic: "touchpoints")["retention.ms"] == "86400000")
            #expect(try await admin.describeConfigs(topic: "customers")["cleanup.policy"] == "compact")

            let second = try await setup.apply(admin: admin)
            #expect(second.isEmpty, "second apply changed: \(second)")

            // A changed config is applied, and only that.
            var changed = settings.kafka
            changed.touchpoints.configs["retention.ms"] = "172800000"
            let third = try await TopicSetup(settings: changed).apply(admin: admin)
            #expect(third == [TopicChange(topic: "touchpoints", action: .updatedConfigs, detail: "retention.ms=172800000")])
        }
    }
}
