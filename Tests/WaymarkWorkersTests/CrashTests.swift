import Foundation
import Testing
import WaymarkTestSupport
import WaymarkChaos

@Suite("Crash test (CI size; `make crash-test` runs the full size)", .serialized)
struct CrashTests {
    /// The `waymark` executable built next to this test bundle.
    static var waymarkBinary: String {
        if let path = ProcessInfo.processInfo.environment["WAYMARK_BIN"] { return path }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("waymark").path
    }

    /// The CI size: 20k events produced at 2k/s through the built binary and the shipped journeys.
    static func ciSize() throws -> CrashTestConfiguration {
        try #require(FileManager.default.isExecutableFile(atPath: waymarkBinary), "build the waymark executable first (swift build)")
        var config = CrashTestConfiguration(waymarkBinary: waymarkBinary, journeysDirectory: TestStack.repoRoot + "/config")
        config.events = 20_000
        config.produceRate = 2_000
        return config
    }

    @Test("kill -9 journey workers and senders 5 times each, pause Redis and the broker: no loss, no doubles, rules hold")
    func killAndPause() async throws {
        var config = try Self.ciSize()
        config.journeyKills = 5
        config.senderKills = 5
        config.pauseRedis = .seconds(5)
        config.pauseBroker = .seconds(5)
        let report = try await CrashTest.run(config)
        print(report.render())
        #expect(report.kills == 5)
        #expect(report.senderKills == 5)
        #expect(report.handedToProvider > 100, "too few provider calls for the audit to mean anything")
        #expect(report.violations.isEmpty, "\(report.violations.prefix(10))")
        #expect(report.eventsMissingFromState == 0)
        #expect(report.distinctMessages > 100, "too few messages for the audit to mean anything")
    }

    @Test("on a Redis Cluster with replicas: kill -9 journey workers, senders and a Redis master: no loss, no doubles, rules hold")
    func killOnCluster() async throws {
        var config = try Self.ciSize()
        config.journeyKills = 3
        config.senderKills = 3
        config.redisCluster = true
        config.pauseBroker = nil
        let report = try await CrashTest.run(config)
        print(report.render())
        #expect(report.kills == 3)
        #expect(report.pauses.contains { $0.hasPrefix("redis master kill -9") })
        #expect(report.handedToProvider > 100, "too few provider calls for the audit to mean anything")
        #expect(report.violations.isEmpty, "\(report.violations.prefix(10))")
        #expect(report.eventsMissingFromState == 0)
    }
}
