import Foundation
import Testing
import WaymarkLocalStack

@Suite("Local stack")
struct LocalStackTests {
    @Test("starts redis-server and Tansu on free loopback ports and stops them by PID")
    func startAndStop() async throws {
        let stack = try await LocalStack.start()
        let redisPID = try #require(stack.redis?.process.pid)
        let kafkaPID = try #require(stack.kafka?.process.pid)
        #expect(stack.redis!.port != stack.kafka!.port)
        #expect(kill(redisPID, 0) == 0)
        #expect(kill(kafkaPID, 0) == 0)
        stack.stop()
        #expect(kill(redisPID, 0) != 0)
        #expect(kill(kafkaPID, 0) != 0)
        #expect(!FileManager.default.fileExists(atPath: stack.directory.path))
    }

    @Test("redis restart keeps its port")
    func redisRestart() async throws {
        try await LocalStack.with(kafka: false) { stack in
            let redis = try #require(stack.redis)
            let before = redis.port
            try await redis.restart()
            #expect(redis.port == before)
            #expect(redis.process.isRunning)
        }
    }
}
