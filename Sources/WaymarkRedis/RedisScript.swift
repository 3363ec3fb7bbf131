/// A Lua script run with `EVALSHA`, identified by the SHA-1 of its source.
///
/// Create scripts once (the hash is computed in `init`) and reuse them. Build calls with
/// ``RedisCommand/evalsha(_:keys:arguments:)``; the connection loads the script on `NOSCRIPT`.
public struct RedisScript: Sendable, Hashable {
    /// A short label for logs and errors (the script's purpose), never data.
    public let name: String
    /// The Lua source.
    public let source: String
    /// Lowercase hex SHA-1 of ``source``, as `SCRIPT LOAD` returns it.
    public let sha1: String

    /// Creates a script and computes its SHA-1.
    /// - Parameters:
    ///   - name: label for logs and errors (default `"script"`).
    ///   - source: the Lua source.
    public init(name: String = "script", source: String) {
        self.name = name
        self.source = source
        self.sha1 = SHA1.hex(Array(source.utf8))
    }
}
