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

@Suite("Cluster slots and routing")
struct ClusterSlotTests {
    @Test("CRC-16/XMODEM check value and the slots the Redis documentation gives")
    func knownSlots() {
        #expect(ClusterSlot.crc16(Array("123456789".utf8)[...]) == 0x31C3)
        #expect(ClusterSlot.of("foo") == 12_182)
        #expect(ClusterSlot.of("somekey") == 11_058)
        #expect(ClusterSlot.of("foo{hash_tag}") == 2_515)
    }

    @Test("hash tags: the first {…} with content decides; empty or unclosed braces hash the whole key")
    func hashTags() {
        #expect(ClusterSlot.of("{user1000}.following") == ClusterSlot.of("{user1000}.followers"))
        #expect(ClusterSlot.of("{user1000}.following") == ClusterSlot.of("user1000"))
        #expect(ClusterSlot.of("foo{}{bar}") == ClusterSlot.of(Array("foo{}{bar}".utf8)))
        #expect(ClusterSlot.of("foo{}{bar}") != ClusterSlot.of("bar"))
        #expect(ClusterSlot.of("foo{{bar}}zap") == ClusterSlot.of("{bar"))
        #expect(ClusterSlot.of("foo{bar}{zap}") == ClusterSlot.of("bar"))
        #expect(ClusterSlot.of("wm:{s0042}:st:c1") == ClusterSlot.of("wm:{s0042}:due"))
        #expect(ClusterSlot.of("unclosed{tag") == Int(ClusterSlot.crc16(Array("unclosed{tag".utf8)[...]) & 0x3FFF))
    }

    @Test("the routing key is the first key: argument 1, or the first script key; none for keyless commands")
    func routingKeys() {
        let script = RedisScript(name: "t", source: "return 1")
        func key(_ command: RedisCommand) -> String? { command.routingKey.map { String(decoding: $0, as: UTF8.self) } }
        #expect(key(RedisCommand("GET", "k1")) == "k1")
        #expect(key(RedisCommand("HSET", "wm:{s0001}:st:é", "v", "1")) == "wm:{s0001}:st:é")
        #expect(key(.evalsha(script, keys: ["a", "b"], arguments: ["x"])) == "a")
        #expect(key(.evalsha(script, keys: [], arguments: ["x"])) == nil)
        #expect(key(RedisCommand("PING")) == nil)
        #expect(key(RedisCommand("script", "LOAD", "return 1")) == nil)
        #expect(key(RedisCommand("DBSIZE")) == nil)
        let long = String(repeating: "x", count: 300)
        #expect(key(RedisCommand("SET", long, "v")) == long)
        #expect(RedisCommand("GET", "foo").slot == 12_182)
    }

    @Test("MOVED, ASK, TRYAGAIN and CLUSTERDOWN replies are recognised; other errors are not")
    func redirections() {
        #expect(ClusterDriver.redirection("MOVED 3999 127.0.0.1:6381", replyingHost: "h") == .moved(slot: 3_999, endpoint: "127.0.0.1:6381"))
        #expect(ClusterDriver.redirection("ASK 3999 10.0.0.2:7000", replyingHost: "h") == .ask(endpoint: "10.0.0.2:7000"))
        #expect(ClusterDriver.redirection("MOVED 12 :7001", replyingHost: "10.1.1.1") == .moved(slot: 12, endpoint: "10.1.1.1:7001"))
        #expect(ClusterDriver.redirection("TRYAGAIN Multiple keys request during rehashing of slot", replyingHost: "h") == .retry)
        #expect(ClusterDriver.redirection("CLUSTERDOWN The cluster is down", replyingHost: "h") == .retry)
        #expect(ClusterDriver.redirection("ERR unknown command", replyingHost: "h") == nil)
        #expect(ClusterDriver.redirection("MOVED notaslot x:1", replyingHost: "h") == nil)
        #expect(ClusterDriver.redirection("MOVED 16384 x:1", replyingHost: "h") == nil)
    }

    @Test("configuration: cluster mode needs database 0 and host:port seeds")
    func configuration() {
        #expect(throws: RedisError.self) { try RedisConfiguration(mode: .cluster, database: 1).validate() }
        #expect(throws: RedisError.self) { try RedisConfiguration(mode: .cluster, seeds: ["nohost"]).validate() }
        #expect(throws: Never.self) { try RedisConfiguration(mode: .cluster, seeds: ["10.0.0.1:7000"]).validate() }
        #expect(RedisConfiguration(mode: .cluster, seeds: ["127.0.0.1:6379", "b:1"]).seedEndpoints == ["127.0.0.1:6379", "b:1"])
    }
}
