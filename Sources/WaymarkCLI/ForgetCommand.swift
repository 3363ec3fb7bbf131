import ArgumentParser
import Foundation
import WaymarkWire
import WaymarkKafka
import WaymarkState

struct Forget: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Erase what Waymark stores about a person (right to erasure).",
        subcommands: [Customer.self])

    struct Customer: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Erase a customer: profile (contacts, consent, attributes), and by default journey state and sender claims.",
            discussion: """
                Does two things, in this order:
                  1. publishes a tombstone (null value) for the customer on the customers topic, so the \
                compacted topic drops the profile and every journey worker erases the customer too (also \
                one that re-reads the topic later, e.g. after a rebuild);
                  2. erases the customer in Redis at once: the profile always; the journey state, unpublished \
                outbox, recent decisions and scheduler entries unless --keep-state; the sender's claims and \
                parked messages unless --keep-sender-claims.
                Events that arrive for the customer afterwards are treated as an unknown customer: no \
                profile, so nothing is sent. What stays: anonymous aggregates, and records already on other \
                topics (journey.decisions, deliveries, outbound.*), which carry the customer id but no \
                contact details and expire with their topic's retention.

                Examples:
                  waymark forget customer c-1042            # asks for confirmation
                  waymark forget customer c-1042 --yes --json
                  waymark forget customer c-1042 --yes --keep-state
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Customer id.") var id: String
        @Flag(help: "Do not ask for confirmation.") var yes = false
        @Flag(help: "Keep the journey state (instances, caps, timers); erase the profile only.") var keepState = false
        @Flag(help: "Keep the sender's claims (which message ids were sent) and parked messages.") var keepSenderClaims = false
        @Flag(help: "Erase in Redis only; do not publish a tombstone on the customers topic.") var noTombstone = false
        @Flag(help: "Print the result as JSON.") var json = false

        struct Result: Encodable {
            var customer_id: String
            var tombstone_published: Bool
            var redis_entries_removed: Int
            var state_erased: Bool
            var sender_claims_erased: Bool
        }

        func validate() throws {
            if let problem = RecordParser.validateID("customer id", id) { throw ValidationError(problem.detail) }
        }

        func run() async throws {
            let context = try OperatorContext(global: global)
            if !yes {
                print("Erase everything Waymark stores about customer '\(id)'? Type the customer id to confirm: ", terminator: "")
                guard readLine() == id else {
                    print("Not confirmed; nothing erased.")
                    throw ExitCode(1)
                }
            }
            if !noTombstone {
                let producer = try KafkaProducer(configuration: .init(client: context.client))
                try await producer.sendAll([KafkaProducerRecord(topic: context.settings.kafka.customers.name, key: Array(id.utf8), value: nil)])
                await producer.close()
            }
            let redis = try await context.redis()
            let store = RedisStateStore(connection: redis, keys: context.keys)
            let removed = try await store.erase(id, scope: .init(state: !keepState, senderClaims: !keepSenderClaims))
            await redis.close()
            let result = Result(customer_id: id, tombstone_published: !noTombstone, redis_entries_removed: removed,
                                state_erased: !keepState, sender_claims_erased: !keepSenderClaims)
            if json { try printJSON(result); return }
            print("Erased customer \(id): \(removed) Redis keys and entries removed"
                  + (keepState ? " (journey state kept)" : "") + (keepSenderClaims ? " (sender claims kept)" : "")
                  + (noTombstone ? "; no tombstone published." : "; tombstone published on \(context.settings.kafka.customers.name)."))
        }
    }
}
