import Testing
import WaymarkRedis

/// The ``RedisError`` `body` throws; `nil`, with a recorded issue, when it succeeds or throws
/// something else.
func redisError<T>(_ body: () async throws -> T) async -> RedisError? {
    do {
        _ = try await body()
        Issue.record("expected a RedisError, got success")
    } catch let error as RedisError {
        return error
    } catch {
        Issue.record("unexpected error type: \(error)")
    }
    return nil
}
