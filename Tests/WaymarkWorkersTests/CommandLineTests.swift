import Foundation
import Testing
import WaymarkTestSupport
import WaymarkChaos
import WaymarkLocalStack

/// Exit statuses and refusals of the `waymark` binary that operators and scripts rely on
/// (0 ok, 1 not found or not confirmed, 2 usage or configuration error, 3 runtime failure).
@Suite("waymark command line", .serialized)
struct CommandLineTests {
    @Test("--version, bad arguments and configuration mistakes give the documented exit statuses")
    func exitStatuses() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: CrashTests.waymarkBinary))
        try await TestStack.with { h in
            let config = h.local.directory.appendingPathComponent("cli.yaml")
            try LocalSettings.write(to: config, bootstrap: h.settings.kafka.bootstrapServers, redisPort: h.local.redis!.port, shards: 16)
            let version = try runWaymark(["--version"])
            #expect(version.status == 0 && !version.output.isEmpty)
            // Not found: 1.
            let missing = try runWaymark(["topics", "describe", "nosuch", "--config", config.path])
            #expect(missing.status == 1, "\(missing.output)")
            // Usage: 2, with the reason.
            let reason = try runWaymark(["dlq", "redrive", "--reason", "no_such_reason", "--yes", "--config", config.path])
            #expect(reason.status == 2 && reason.output.contains("unknown reason"), "\(reason.output)")
            let backwards = try runWaymark(["replay", "--from", "2026-11-20T00:00:00Z", "--to", "2026-11-10T00:00:00Z",
                                            "--rules", TestStack.repoRoot + "/config", "--dry-run", "--config", config.path])
            #expect(backwards.status == 2 && backwards.output.contains("--from must be before --to"), "\(backwards.output)")
            // A journey configuration error: 2, with file and line.
            let broken = h.local.directory.appendingPathComponent("broken")
            try FileManager.default.createDirectory(at: broken.appendingPathComponent("journeys"), withIntermediateDirectories: true)
            try "journey: x\nversion: 1\nentry: [{ event: a }]\nsteps:\n  - id: s\n    sned: {}\n"
                .write(to: broken.appendingPathComponent("journeys/x.yaml"), atomically: true, encoding: .utf8)
            let journey = try runWaymark(["worker", "journey", "--config", config.path, "--journeys", broken.path])
            #expect(journey.status == 2 && journey.output.contains("x.yaml"), "\(journey.output)")
        }
    }
}
