import Foundation
import Testing
import WaymarkLocalStack
@testable import WaymarkRedis
#if canImport(Glibc)
import Glibc
#endif

/// A TLS-only `redis-server` (client certificate required, password set) with a throw-away
/// authority made by `openssl`, and a configuration that trusts it and presents the client certificate.
private func withTLSRedis(password: String? = "s3cret", requireClientCertificate: Bool = true,
                          _ body: (LocalRedis, LocalCertificates, RedisConfiguration, URL) async throws -> Void) async throws {
    let directory = URL(fileURLWithPath: NSTemporaryDirectory())
        .appendingPathComponent("waymark-redis-tls-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let certificates = try LocalCertificates.make(in: directory.appendingPathComponent("tls"))
    let server = try await LocalRedis.start(in: directory, password: password, tls: certificates,
                                            requireClientCertificate: requireClientCertificate)
    defer { server.stop() }
    let configuration = RedisConfiguration(
        host: server.host, port: server.port, password: password, connectTimeout: .seconds(2), commandTimeout: .seconds(2),
        reconnectAttempts: 2, reconnectBackoff: .milliseconds(20),
        tls: .init(caFile: certificates.caFile, certificateFile: certificates.clientCertificate, keyFile: certificates.clientKey))
    try await body(server, certificates, configuration, directory)
}

@Suite("Redis over TLS against a real TLS-only redis-server", .serialized)
struct TLSTests {
    @Test("a trusted authority and client certificate: commands, pipelines, scripts, AUTH, idle and restart")
    func trusted() async throws {
        try await withTLSRedis { server, _, configuration, _ in
            let redis = try await RedisConnection.connect(configuration)
            #expect(try await redis.send("SET", "k", "v") == .status("OK"))
            let pipeline = (0..<2_000).map { RedisCommand("INCR", "n\($0 % 7)") }
            let replies = try await redis.pipeline(pipeline)
            #expect(replies.count == 2_000 && replies.compactMap(\.integer).reduce(0, max) == 286)  // 2,000 INCRs over 7 keys: 286 at most
            let script = RedisScript(name: "double", source: "return tonumber(ARGV[1]) * 2")
            #expect(try await redis.send(.evalsha(script, arguments: ["21"])).integer == 42)

            // An idle TLS connection stays the same connection (session tickets do not look like a hang-up).
            let id = try await redis.send("CLIENT", "ID").integer
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await redis.send("CLIENT", "ID").integer == id)
            #expect(try await redis.send("CLIENT", "INFO").string?.contains("flags=N") == true)

            // A restarted server (no persistence: its data is gone): the next call reconnects, over TLS again.
            try await server.restart()
            _ = try? await redis.send("PING")  // may see the dropped connection
            #expect(try await redis.send("GET", "k") == .null)
            #expect(try await redis.send("SET", "k", "v") == .status("OK"))
            await redis.close()

            // Reached by name: the certificate's DNS name is checked (and sent as SNI) instead of the IP.
            var byName = configuration
            byName.host = "localhost"
            let named = try await RedisConnection.connect(byName)
            #expect(try await named.send("GET", "k").string == "v")
            await named.close()
        }
    }

    @Test("an untrusted authority, a certificate for another name and a missing client certificate are refused clearly")
    func refused() async throws {
        try await withTLSRedis { _, certificates, configuration, directory in
            let other = try LocalCertificates.make(in: directory.appendingPathComponent("other"), authority: "Somebody else's CA")
            var untrusted = configuration
            untrusted.tls?.caFile = other.caFile
            let notTrusted = await redisError { try await RedisConnection.connect(untrusted) }
            #expect(notTrusted?.kind == .tlsFailed, "\(String(describing: notTrusted))")
            #expect(notTrusted?.message.contains("server certificate refused") == true, "\(String(describing: notTrusted))")
            #expect(notTrusted?.message.contains(other.caFile) == true)

            var misnamed = configuration
            misnamed.tls?.serverName = "redis.example.com"
            let wrongName = await redisError { try await RedisConnection.connect(misnamed) }
            #expect(wrongName?.kind == .tlsFailed)
            #expect(wrongName?.message.contains("hostname mismatch") == true, "\(String(describing: wrongName))")

            // A certificate from the right authority but for another address.
            let elsewhere = try certificates.issue("elsewhere", subjectAltNames: ["IP:10.9.8.7", "DNS:elsewhere.example"])
            let wrongAddressServer = try await LocalRedis.start(
                in: directory, tls: certificates.servingWith(certificate: elsewhere.certificate, key: elsewhere.key),
                requireClientCertificate: false)
            defer { wrongAddressServer.stop() }
            var wrongAddress = configuration
            wrongAddress.port = wrongAddressServer.port
            wrongAddress.password = nil
            let ipMismatch = await redisError { try await RedisConnection.connect(wrongAddress) }
            #expect(ipMismatch?.kind == .tlsFailed)
            #expect(ipMismatch?.message.contains("IP address mismatch") == true, "\(String(describing: ipMismatch))")

            // The server requires a client certificate: without one the handshake is refused, promptly.
            var anonymous = configuration
            anonymous.tls?.certificateFile = nil
            anonymous.tls?.keyFile = nil
            let started = ContinuousClock.now
            let noCertificate = await redisError { try await RedisConnection.connect(anonymous) }
            #expect(noCertificate?.kind == .connectFailed, "\(String(describing: noCertificate))")
            #expect(noCertificate?.message.contains("client certificate") == true, "\(String(describing: noCertificate))")
            #expect(ContinuousClock.now - started < .seconds(10))

            // Plain TCP against the TLS port: an error, not a hang.
            var plain = configuration
            plain.tls = nil
            let plainStarted = ContinuousClock.now
            let plainError = await redisError { try await RedisConnection.connect(plain) }
            #expect(plainError != nil)
            #expect(ContinuousClock.now - plainStarted < .seconds(15))

            // Files that are not there are caught before any connection is made.
            var missing = configuration
            missing.tls?.caFile = directory.appendingPathComponent("nope.crt").path
            #expect(await redisError { try await RedisConnection.connect(missing) }?.kind == .invalidArgument)
            var half = configuration
            half.tls?.keyFile = nil
            #expect(await redisError { try await RedisConnection.connect(half) }?.kind == .invalidArgument)
        }
    }

    @Test("a TLS client against a plain-TCP server fails with the handshake's reason")
    func tlsAgainstPlain() async throws {
        try await LocalStack.with(kafka: false, redisTLS: false) { stack in
            let redis = try #require(stack.redis)
            let certificates = try LocalCertificates.make(in: stack.directory.appendingPathComponent("tls"))
            let configuration = RedisConfiguration(host: redis.host, port: redis.port, connectTimeout: .seconds(1),
                                                   reconnectAttempts: 1, tls: .init(caFile: certificates.caFile))
            let error = await redisError { try await RedisConnection.connect(configuration) }
            #expect(error?.kind == .connectFailed, "\(String(describing: error))")
            #expect(error?.message.contains("TLS handshake failed") == true, "\(String(describing: error))")
        }
    }

    @Test("a TLS-only cluster: routed pipelines and MOVED over TLS; nodes checked by address, or by a name; a wrong name refused")
    func cluster() async throws {
        try await LocalStack.with(kafka: false, cluster: .init(masters: 3), redisTLS: true) { stack in
            let cluster = try #require(stack.cluster)
            let certificates = try #require(cluster.certificates)
            let tls = RedisConfiguration.TLS(caFile: certificates.caFile, certificateFile: certificates.clientCertificate,
                                             keyFile: certificates.clientKey)
            let config = RedisConfiguration(mode: .cluster, host: "127.0.0.1", port: cluster.nodes[0].port, tls: tls)
            let redis = try await RedisConnection.connect(config)
            let keys = (0..<1_000).map { "tls:\($0)" }
            #expect(try await redis.pipeline(keys.map { RedisCommand("SET", $0, $0) }).allSatisfy { $0 == .status("OK") })
            #expect(try await redis.pipeline(keys.map { RedisCommand("GET", $0) }) == keys.map { .bulk(Array($0.utf8)) })
            let sizes = try await redis.sendToEveryMaster("DBSIZE")
            #expect(sizes.count == 3 && sizes.allSatisfy { ($0.reply.integer ?? 0) > 200 })

            // A slot moved behind the client's back (MIGRATE between TLS nodes): MOVED, followed over TLS.
            let slot = ClusterSlot.of("tls:7")
            let owner = try await cluster.owner(of: slot)
            let target = try #require(cluster.nodes.first { $0.port != owner.port })
            #expect(try await cluster.moveSlot(slot, to: target) > 0)
            #expect(try await redis.send("GET", "tls:7").string == "tls:7")
            #expect(redis.clusterStatistics.moved >= 1)
            await redis.close()

            // The node certificates carry DNS:localhost as well: checked by that name instead of each address.
            var byName = config
            byName.tls?.serverName = "localhost"
            let named = try await RedisConnection.connect(byName)
            #expect(try await named.send("GET", "tls:1").string == "tls:1")
            await named.close()
            var wrong = config
            wrong.tls?.serverName = "redis.example.com"
            let refused = await redisError { try await RedisConnection.connect(wrong) }
            #expect(refused?.kind == .tlsFailed && refused?.message.contains("hostname mismatch") == true, "\(String(describing: refused))")
        }
    }
}
