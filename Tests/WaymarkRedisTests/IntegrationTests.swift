import Foundation
import Testing
import WaymarkLocalStack
@testable import WaymarkRedis
#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` against a fresh `redis-server` (started by the local stack on a free loopback port).
/// Needs `redis-server` on PATH or in `WAYMARK_REDIS_SERVER` (`make setup` installs it).
private func withRedis(_ body: (LocalRedis, RedisConfiguration) async throws -> Void) async throws {
    try await LocalStack.with(kafka: false) { stack in
        let redis = try #require(stack.redis)
        try await body(redis, RedisConfiguration(host: redis.host, port: redis.port))
    }
}


@Suite("Redis against a real redis-server", .serialized)
struct RedisIntegrationTests {
    @Test("SET/GET/INCR/DEL and every reply type")
    func basics() async throws {
        try await withRedis { _, config in
            let redis = try await RedisConnection.connect(config)
            #expect(try await redis.send("PING") == .status("PONG"))
            #expect(try await redis.send("SET", "greeting", "hello") == .status("OK"))
            #expect(try await redis.send("GET", "greeting").string == "hello")
            #expect(try await redis.send("GET", "missing") == .null)
            #expect(try await redis.send("INCR", "n") == .integer(1))
            #expect(try await redis.send("INCRBY", "n", 41) == .integer(42))
            #expect(try await redis.send("DEL", "greeting", "n") == .integer(2))
            #expect(try await redis.send("RPUSH", "list", "a", "b") == .integer(2))
            #expect(try await redis.send("LRANGE", "list", 0, -1) == .array([.bulk(Array("a".utf8)), .bulk(Array("b".utf8))]))
            #expect(try await redis.send("LRANGE", "nolist", 0, -1) == .array([]))
            let wrongType = try await redis.send("INCR", "list")
            #expect(wrongType.errorMessage?.hasPrefix("WRONGTYPE") == true)
            #expect(try await redis.send("NOSUCHCOMMAND").errorMessage?.hasPrefix("ERR") == true)
            let binary: [UInt8] = [0, 1, 13, 10, 255, 36, 42]
            #expect(try await redis.send("SET", "bin", binary) == .status("OK"))
            #expect(try await redis.send("GET", "bin") == .bulk(binary))
            #expect(try await redis.send("SET", "empty", "") == .status("OK"))
            #expect(try await redis.send("GET", "empty") == .bulk([]))
            await redis.close()
        }
    }

    @Test("a pipeline of 10,000 commands returns 10,000 correct replies in order")
    func bigPipeline() async throws {
        try await withRedis { _, config in
            let redis = try await RedisConnection.connect(config)
            let incrs = (0..<10_000).map { _ in RedisCommand("INCR", "counter") }
            let counted = try await redis.pipeline(incrs)
            #expect(counted.count == 10_000)
            #expect(counted == (1...10_000).map { .integer(Int64($0)) })

            var mixed: [RedisCommand] = []
            for i in 0..<5_000 {
                mixed.append(RedisCommand("SET", "key:\(i)", "value-\(i)"))
                mixed.append(RedisCommand("GET", "key:\(i)"))
            }
            let replies = try await redis.pipeline(mixed)
            #expect(replies.count == 10_000)
            for i in 0..<5_000 {
                #expect(replies[2 * i] == .status("OK"))
                #expect(replies[2 * i + 1].string == "value-\(i)", "reply \(2 * i + 1)")
            }
            // An error reply in the middle is returned in place; the rest still succeed.
            let withError = try await redis.pipeline([RedisCommand("INCR", "counter"), RedisCommand("INCR", "key:0"),
                                                      RedisCommand("INCR", "counter")])
            #expect(withError[0] == .integer(10_001))
            #expect(withError[1].errorMessage != nil)
            #expect(withError[2] == .integer(10_002))
            #expect(try await redis.pipeline([]) == [])
            await redis.close()
        }
    }

    @Test("EVALSHA with KEYS/ARGV, transparent reload after SCRIPT FLUSH, load errors as replies")
    func scripts() async throws {
        try await withRedis { _, config in
            let redis = try await RedisConnection.connect(config)
            let script = RedisScript(name: "hincr", source: """
                local n = redis.call('HINCRBY', KEYS[1], ARGV[1], tonumber(ARGV[2]))
                return {KEYS[1], ARGV[1], n}
                """)
            let call = RedisCommand.evalsha(script, keys: ["h"], arguments: ["f", 5])
            // Never loaded: the first call hits NOSCRIPT and is loaded and re-sent transparently.
            #expect(try await redis.send(call) == .array([.bulk(Array("h".utf8)), .bulk(Array("f".utf8)), .integer(5)]))
            #expect(try await redis.send("SCRIPT", "EXISTS", script.sha1) == .array([.integer(1)]))
            // Our SHA-1 agrees with the server's.
            #expect(try await redis.send("SCRIPT", "LOAD", script.source).string == script.sha1)

            #expect(try await redis.send("SCRIPT", "FLUSH") == .status("OK"))
            #expect(try await redis.send("SCRIPT", "EXISTS", script.sha1) == .array([.integer(0)]))
            let replies = try await redis.pipeline([
                RedisCommand("SET", "plain", "1"),
                call,
                RedisCommand("GET", "plain"),
                RedisCommand.evalsha(script, keys: ["h"], arguments: ["f", 10]),
            ])
            #expect(replies[0] == .status("OK"))
            #expect(replies[1].array?.last == .integer(10))
            #expect(replies[2].string == "1")
            #expect(replies[3].array?.last == .integer(20))  // original relative order of the re-sent commands kept
            #expect(try await redis.send("HGET", "h", "f").string == "20")

            let broken = RedisScript(name: "broken", source: "this is not lua")
            let brokenReply = try await redis.send(.evalsha(broken))
            #expect(brokenReply.errorMessage != nil)
            #expect(brokenReply.errorMessage?.hasPrefix("NOSCRIPT") == false)
            await #expect { try await redis.load([broken]) } throws: { ($0 as? RedisError)?.kind == .invalidArgument }
            try await redis.load([script])
            await redis.close()
        }
    }

    @Test("reconnects after the server restarts; scripts are reloaded on the new server")
    func restart() async throws {
        try await withRedis { server, config in
            let redis = try await RedisConnection.connect(config)
            let script = RedisScript(source: "return redis.call('INCR', KEYS[1])")
            #expect(try await redis.send(.evalsha(script, keys: ["c"])) == .integer(1))
            for round in 1...2 {
                try await server.restart()
                // The first call may fail with connectionLost (it must not crash or hang); the next one must work.
                do {
                    _ = try await redis.send("PING")
                } catch let error as RedisError {
                    #expect(error.kind == .connectionLost, "round \(round): \(error)")
                }
                #expect(try await redis.send("PING") == .status("PONG"))
                #expect(try await redis.send(.evalsha(script, keys: ["c"])) == .integer(1))  // AOF off: fresh data
            }
            await redis.close()
        }
    }

    @Test("a connection killed mid-call throws connectionLost, then the next call reconnects")
    func killedInFlight() async throws {
        try await withRedis { _, config in
            let victim = try await RedisConnection.connect(config)
            let killer = try await RedisConnection.connect(config)
            let id = try #require(try await victim.send("CLIENT", "ID").integer)
            let blocked = Task { await redisError { try await victim.send("BLPOP", "never", 10) }?.kind }
            try await Task.sleep(for: .milliseconds(200))
            #expect(try await killer.send("CLIENT", "KILL", "ID", Int(id)) == .integer(1))
            #expect(await blocked.value == .connectionLost)
            #expect(try await victim.send("PING") == .status("PONG"))
            #expect(try await victim.send("CLIENT", "ID").integer != id)
            await victim.close()
            await killer.close()
        }
    }

    @Test("while the server is down calls fail with typed errors; they work again when it is back")
    func serverDown() async throws {
        try await withRedis { server, base in
            var config = base
            config.reconnectAttempts = 2
            config.reconnectBackoff = .milliseconds(20)
            let redis = try await RedisConnection.connect(config)
            #expect(try await redis.send("SET", "k", "v") == .status("OK"))
            server.stop()
            for _ in 0..<3 {
                let start = ContinuousClock.now
                let failure = await redisError { try await redis.send("GET", "k") }?.kind
                #expect(failure == .connectFailed || failure == .connectionLost, "got \(String(describing: failure))")
                #expect(ContinuousClock.now - start < .seconds(2))
            }
            await #expect { try await RedisConnection.connect(config) } throws: { ($0 as? RedisError)?.kind == .connectFailed }
            try await server.restart()
            #expect(try await redis.send("PING") == .status("PONG"))
            #expect(try await redis.send("GET", "k") == .null)
            await redis.close()
        }
    }

    @Test("AUTH with the right password works; a wrong one is authFailed; none gets NOAUTH replies")
    func auth() async throws {
        let directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("waymark-redis-auth-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let server = try await LocalRedis.start(in: directory, password: "s3cret")
        defer {
            server.stop()
            try? FileManager.default.removeItem(at: directory)
        }
        let good = try await RedisConnection.connect(RedisConfiguration(host: server.host, port: server.port, password: "s3cret"))
        #expect(try await good.send("SET", "k", "v") == .status("OK"))
        await good.close()
        let acl = try await RedisConnection.connect(
            RedisConfiguration(host: server.host, port: server.port, username: "default", password: "s3cret"))
        #expect(try await acl.send("GET", "k").string == "v")
        await acl.close()

        do {
            _ = try await RedisConnection.connect(RedisConfiguration(host: server.host, port: server.port, password: "wrong"))
            Issue.record("connected with a wrong password")
        } catch let error as RedisError {
            #expect(error.kind == .authFailed)
            #expect(error.command == "AUTH")
            #expect(!error.description.contains("wrong"))  // the password never appears in errors
        }

        let anonymous = try await RedisConnection.connect(RedisConfiguration(host: server.host, port: server.port))
        #expect(try await anonymous.send("GET", "k").errorMessage?.hasPrefix("NOAUTH") == true)
        await anonymous.close()
    }

    @Test("SELECT isolates databases; an out-of-range database is a typed error")
    func selectDatabase() async throws {
        try await withRedis { _, config in
            var three = config
            three.database = 3
            let db0 = try await RedisConnection.connect(config)
            let db3 = try await RedisConnection.connect(three)
            #expect(try await db0.send("SET", "k", "zero") == .status("OK"))
            #expect(try await db3.send("GET", "k") == .null)
            #expect(try await db3.send("SET", "k", "three") == .status("OK"))
            #expect(try await db0.send("GET", "k").string == "zero")
            #expect(try await db3.send("GET", "k").string == "three")
            var bad = config
            bad.database = 999
            do {
                _ = try await RedisConnection.connect(bad)
                Issue.record("SELECT 999 accepted")
            } catch let error as RedisError {
                #expect(error.kind == .connectFailed)
                #expect(error.command == "SELECT")
            }
            await db0.close()
            await db3.close()
        }
    }

    @Test("a SIGSTOPped server gives a typed timeout; after SIGCONT the connection recovers")
    func commandTimeout() async throws {
        try await withRedis { server, base in
            var config = base
            config.commandTimeout = .milliseconds(300)
            config.reconnectAttempts = 1
            let redis = try await RedisConnection.connect(config)
            #expect(try await redis.send("SET", "k", "v") == .status("OK"))
            server.process.send(signal: SIGSTOP)
            let start = ContinuousClock.now
            let failure = await redisError { try await redis.send("GET", "k") }?.kind
            let elapsed = ContinuousClock.now - start
            // A new connection to the stopped server is accepted by the kernel but never answered.
            let again = await redisError { try await redis.send("GET", "k") }?.kind
            server.process.send(signal: SIGCONT)
            #expect(failure == .timeout)
            #expect(again == .timeout)
            #expect(elapsed >= .milliseconds(250) && elapsed < .seconds(3), "took \(elapsed)")
            #expect(try await redis.send("GET", "k").string == "v")
            await redis.close()
        }
    }

    @Test("bad arguments and misuse are typed errors")
    func badArguments() async throws {
        try await withRedis { server, config in
            let redis = try await RedisConnection.connect(config)
            #expect(await redisError { try await redis.send(RedisCommand("")) }?.kind == .invalidArgument)
            #expect(await redisError { try await redis.pipeline([RedisCommand("PING"), RedisCommand("")]) }?.kind == .invalidArgument)
            #expect(try await redis.send("PING") == .status("PONG"))  // the connection is still usable
            await redis.close()
            await redis.close()  // idempotent
            #expect(redis.isClosed)
            #expect(await redisError { try await redis.send("PING") }?.kind == .closed)

            var refused = config
            refused.reconnectAttempts = 1
            server.stop()
            #expect(await redisError { try await RedisConnection.connect(refused) }?.kind == .connectFailed)
        }
    }

    @Test("concurrent callers on one connection are serialised, not interleaved")
    func sharedConnection() async throws {
        try await withRedis { _, config in
            let redis = try await RedisConnection.connect(config)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for task in 0..<8 {
                    group.addTask {
                        for round in 0..<20 {
                            let key = "t\(task)"
                            let replies = try await redis.pipeline([RedisCommand("SET", key, round), RedisCommand("GET", key)])
                            #expect(replies == [.status("OK"), .bulk(Array("\(round)".utf8))])
                        }
                    }
                }
                try await group.waitForAll()
            }
            await redis.close()
        }
    }
}
