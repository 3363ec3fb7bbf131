import Testing
@testable import WaymarkRedis

@Suite("SHA-1")
struct SHA1Tests {
    @Test("FIPS 180 and well-known vectors", arguments: [
        ("", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
        ("abc", "a9993e364706816aba3e25717850c26c9cd0d89d"),
        ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "84983e441c3bd26ebaae4aa1f95129e5e54670f1"),
        ("The quick brown fox jumps over the lazy dog", "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"),
        (String(repeating: "a", count: 64), "0098ba824b5c16427bd7a1122a5a442a25ec644d"),
        ("return 1", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"),
    ])
    func vectors(input: String, expected: String) {
        #expect(SHA1.hex(Array(input.utf8)) == expected)
    }

    @Test("one million 'a' (multi-block)")
    func million() {
        #expect(SHA1.hex([UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)) == "34aa973cd4c4daa4f61eeb2bdbad27316534016f")
    }

    @Test("RedisScript carries the hash of its source")
    func script() {
        #expect(RedisScript(source: "return 1").sha1 == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
    }
}

@Suite("RESP encoding")
struct EncodingTests {
    private func wire(_ commands: [RedisCommand]) -> String {
        String(decoding: RESP.encode(commands, indices: commands.indices), as: UTF8.self)
    }

    @Test("strings, integers, bytes and doubles become bulk strings")
    func arguments() {
        var command = RedisCommand("SET", "k", 42)
        command.append(-7)
        command.append(0)
        command.append(bytes: [0, 13, 10])
        command.append("")
        command.append(1.5)
        #expect(command.argumentCount == 8)
        #expect(command.name == "SET")
        #expect(wire([command]) ==
            "*8\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n42\r\n$2\r\n-7\r\n$1\r\n0\r\n$3\r\n\0\r\n\r\n$0\r\n\r\n$3\r\n1.5\r\n")
        #expect(command.encodedSize >= wire([command]).utf8.count)
    }

    @Test("a pipeline is the concatenation of its commands; non-ASCII is counted in bytes")
    func pipeline() {
        let commands = [RedisCommand("PING"), RedisCommand("GET", "é"), RedisCommand("INCRBY", "c", Int.min)]
        #expect(wire(commands) ==
            "*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$2\r\né\r\n*3\r\n$6\r\nINCRBY\r\n$1\r\nc\r\n$20\r\n-9223372036854775808\r\n")
    }

    @Test("EVALSHA carries sha, key count, keys and arguments")
    func evalsha() {
        let script = RedisScript(source: "return 1")
        let command = RedisCommand.evalsha(script, keys: ["a", "b"], arguments: ["x", 3])
        #expect(command.script == script)
        #expect(wire([command]) == "*7\r\n$7\r\nEVALSHA\r\n$40\r\n\(script.sha1)\r\n$1\r\n2\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nx\r\n$1\r\n3\r\n")
    }
}

@Suite("Configuration")
struct ConfigurationTests {
    @Test("bad values are typed invalidArgument errors, not crashes", arguments: [
        RedisConfiguration(port: 0),
        RedisConfiguration(port: -1),
        RedisConfiguration(port: 70_000),
        RedisConfiguration(host: ""),
        RedisConfiguration(database: -1),
        RedisConfiguration(connectTimeout: .zero),
        RedisConfiguration(commandTimeout: .milliseconds(-5)),
        RedisConfiguration(reconnectAttempts: 0),
        RedisConfiguration(username: "u"),
    ])
    func invalid(configuration: RedisConfiguration) async {
        await #expect { try await RedisConnection.connect(configuration) } throws: { error in
            (error as? RedisError)?.kind == .invalidArgument
        }
    }

    @Test("defaults are valid")
    func defaults() throws {
        try RedisConfiguration().validate()
    }
}
