import Foundation
import Testing
import WaymarkTestSupport
import WaymarkConfig

/// `deploy/` is validated offline (no container engine or cluster here): Kubernetes manifests against
/// the API schemas, the Compose file by docker-compose itself, and every command, flag, environment
/// variable and port they name against the binary and the settings they configure.
@Suite("deploy/ manifests")
struct DeployManifestTests {
    static let root = TestStack.repoRoot
    static let kubernetes = root + "/deploy/kubernetes/waymark.yaml"
    static let compose = root + "/deploy/compose/docker-compose.yml"

    static func run(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) { try runProgram(path, arguments) }

    @Test("Kubernetes manifests pass kubernetes-validate --strict (KEDA's ScaledObject has no bundled schema)")
    func kubernetesSchemas() throws {
        let tool = Self.root + "/.venv-deploy/k8s/bin/kubernetes-validate"
        try #require(FileManager.default.isExecutableFile(atPath: tool), "run make setup (deploy/scripts/setup.sh) first")
        let result = try Self.run(tool, ["--strict", Self.kubernetes])
        #expect(result.status == 0, "\(result.output)")
        for deployment in ["waymark-journey", "waymark-scheduler", "waymark-sender", "waymark-receipts", "waymark-kpis"] {
            #expect(result.output.contains("passed for resource deployment/\(deployment)"), "\(result.output)")
        }
        #expect(!result.output.contains("ERROR") && !result.output.contains("failed"), "\(result.output)")
    }

    @Test("the Compose file passes docker-compose config")
    func composeFile() throws {
        let tool = Self.root + "/.venv-deploy/compose/bin/docker-compose"
        try #require(FileManager.default.isExecutableFile(atPath: tool), "run make setup (deploy/scripts/setup.sh) first")
        let result = try Self.run(tool, ["-f", Self.compose, "config", "--quiet"])
        #expect(result.status == 0, "\(result.output)")
    }

    /// Every `waymark …` invocation in the manifests: args arrays in Kubernetes, command arrays in Compose.
    static func invocations() throws -> [[String]] {
        var out: [[String]] = []
        for (file, key) in [(kubernetes, "args:"), (compose, "command:")] {
            for line in try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n") {
                guard let range = line.range(of: key + " ["), !line.contains("redis-server") else { continue }
                let list = line[range.upperBound...].prefix { $0 != "]" }
                out.append(list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) })
            }
        }
        return out
    }

    @Test("every subcommand and flag the manifests use exists in the binary")
    func commandsAndFlagsExist() throws {
        try #require(FileManager.default.isExecutableFile(atPath: CrashTests.waymarkBinary))
        let invocations = try Self.invocations()
        #expect(invocations.count >= 6, "\(invocations)")
        for arguments in invocations {
            let path = Array(arguments.prefix { !$0.hasPrefix("-") })
            let help = try Self.run(CrashTests.waymarkBinary, path + ["--help"])
            #expect(help.status == 0, "waymark \(path.joined(separator: " ")) --help: \(help.output)")
            for flag in arguments where flag.hasPrefix("--") {
                #expect(help.output.contains(flag), "waymark \(path.joined(separator: " ")) has no \(flag)")
            }
        }
    }

    @Test("environment variables and ports in the manifests are ones the settings read; the Kubernetes settings load")
    func environmentAndPorts() throws {
        let manifests = try String(contentsOfFile: Self.kubernetes, encoding: .utf8) + String(contentsOfFile: Self.compose, encoding: .utf8)
        let settingsSource = try String(contentsOfFile: Self.root + "/Sources/WaymarkConfig/WaymarkSettings.swift", encoding: .utf8)
            + String(contentsOfFile: Self.root + "/Sources/WaymarkConfig/ReceiptsSettings.swift", encoding: .utf8)
        let names = Set(manifests.matches(of: /WAYMARK_[A-Z_]+/).map { String($0.output) })
        #expect(names.isSuperset(of: ["WAYMARK_METRICS_HOST", "WAYMARK_METRICS_PORT", "WAYMARK_KAFKA_BOOTSTRAP"]))
        for name in names { #expect(settingsSource.contains("\"\(name)\""), "\(name) is not read by WaymarkSettings or ReceiptsSettings") }

        // The Kubernetes settings file loads (with its secret file present) and agrees with the ports.
        let secretDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("waymark-k8s-\(getpid())")
        try FileManager.default.createDirectory(at: secretDirectory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: secretDirectory) }
        try "secret\n".write(to: secretDirectory.appendingPathComponent("redis-password"), atomically: true, encoding: .utf8)
        let text = try String(contentsOfFile: Self.root + "/deploy/kubernetes/settings.yaml", encoding: .utf8)
            .replacingOccurrences(of: "/var/run/secrets/waymark", with: secretDirectory.path)
        let settings = try WaymarkSettings.parse(text, file: "deploy/kubernetes/settings.yaml")
        #expect(settings.worker.metricsHost == "0.0.0.0" && settings.redis.password == "secret")
        let ports = Set(manifests.matches(of: /containerPort: (\d+)/).map { Int($0.output.1)! })
        let portValues = Set(manifests.matches(of: /WAYMARK_METRICS_PORT, value: "(\d+)"/).map { Int($0.output.1)! })
        let receiptsPorts = Set(manifests.matches(of: /WAYMARK_RECEIPTS_PORT, value: "(\d+)"/).map { Int($0.output.1)! })
        #expect(ports == [settings.worker.metricsPort, settings.receipts.port] && portValues == [settings.worker.metricsPort])
        #expect(receiptsPorts == [settings.receipts.port])
        // Every template file shipped is projected too (workers validate and render them).
        for name in try FileManager.default.contentsOfDirectory(atPath: Self.root + "/config/templates") {
            for file in try FileManager.default.contentsOfDirectory(atPath: Self.root + "/config/templates/\(name)") {
                #expect(manifests.contains("{ key: \(name).\(file), path: templates/\(name)/\(file) }"), "config/templates/\(name)/\(file) is not projected")
            }
        }
        // Every journey file shipped is projected into the pods.
        for file in try FileManager.default.contentsOfDirectory(atPath: Self.root + "/config/journeys") {
            #expect(manifests.contains("path: journeys/\(file)"), "config/journeys/\(file) is not in the waymark-journeys items")
        }
    }
}
