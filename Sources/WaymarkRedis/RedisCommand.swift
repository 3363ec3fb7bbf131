/// A value that can be a Redis command argument (a RESP bulk string).
///
/// `String`, `Substring`, `[UInt8]`, `ArraySlice<UInt8>`, `Int`, `Int64`, `UInt64` and `Double`
/// conform. Conform your own types by appending through one of ``RedisCommand``'s `append` methods.
public protocol RedisArgument {
    /// Appends `self` to `command` as one argument.
    func append(to command: inout RedisCommand)
}

/// One Redis command, already encoded as RESP bulk strings in a single byte buffer.
///
/// Arguments are appended to one growing `[UInt8]` (`$len\r\n...\r\n` each), so building a command
/// costs one allocation however many arguments it has, and a pipeline is encoded by concatenating
/// these buffers. Only the command ``name`` is kept as text, for logs and errors.
///
/// ```swift
/// var set = RedisCommand("SET", "user:42", "value")
/// let incr = RedisCommand("INCRBY", "counter", 5)
/// var hset = RedisCommand("HSET")
/// hset.append("h"); hset.append("field"); hset.append(bytes: payload)
/// ```
public struct RedisCommand: Sendable {
    /// The command name (its first argument), used as context in logs and errors.
    public let name: String
    /// Number of arguments including the name.
    public private(set) var argumentCount: Int = 0
    /// The script this command runs with `EVALSHA`, for automatic loading on `NOSCRIPT`.
    public let script: RedisScript?
    /// RESP encoding of all arguments (without the `*N\r\n` array header).
    var body: [UInt8] = []

    /// Starts a command with `name` (for example `"HINCRBY"`) and no further arguments.
    public init(_ name: String) {
        self.init(name, script: nil)
    }

    /// A command with `name` followed by `arguments`.
    public init(_ name: String, _ arguments: any RedisArgument...) {
        self.init(name, arguments: arguments)
    }

    /// A command with `name` followed by `arguments`.
    public init(_ name: String, arguments: [any RedisArgument]) {
        self.init(name, script: nil)
        for argument in arguments { argument.append(to: &self) }
    }

    init(_ name: String, script: RedisScript?, capacity: Int = 64) {
        self.name = name
        self.script = script
        body.reserveCapacity(capacity)
        append(name)
    }

    /// `EVALSHA sha numkeys key... arg...` for `script`. In a pipeline, a `NOSCRIPT` reply makes the
    /// connection load the script and re-send the command (see ``RedisConnection/pipeline(_:)``).
    public static func evalsha(_ script: RedisScript, keys: [String] = [], arguments: [any RedisArgument] = []) -> RedisCommand {
        var command = RedisCommand("EVALSHA", script: script, capacity: 96 + keys.count * 32 + arguments.count * 16)
        command.append(script.sha1)
        command.append(keys.count)
        for key in keys { command.append(key) }
        for argument in arguments { argument.append(to: &command) }
        return command
    }

    /// Appends a UTF-8 string argument.
    public mutating func append(_ value: String) {
        var value = value
        value.withUTF8 { appendRaw(UnsafeRawBufferPointer($0)) }
    }

    /// Appends a UTF-8 string argument.
    public mutating func append(_ value: Substring) {
        var value = value
        value.withUTF8 { appendRaw(UnsafeRawBufferPointer($0)) }
    }

    /// Appends a binary argument.
    public mutating func append(bytes: some Collection<UInt8>) {
        argumentCount += 1
        body.append(UInt8(ascii: "$"))
        RESP.appendDecimal(bytes.count, to: &body)
        body.append(13); body.append(10)
        body.append(contentsOf: bytes)
        body.append(13); body.append(10)
    }

    /// Appends raw bytes as one argument (copied).
    public mutating func appendRaw(_ bytes: UnsafeRawBufferPointer) {
        append(bytes: bytes)
    }

    /// Appends an integer argument in decimal, without going through `String`.
    public mutating func append(_ value: Int) {
        argumentCount += 1
        body.append(UInt8(ascii: "$"))
        RESP.appendDecimal(RESP.decimalLength(value), to: &body)
        body.append(13); body.append(10)
        RESP.appendDecimal(value, to: &body)
        body.append(13); body.append(10)
    }

    /// Appends a floating-point argument (shortest round-trip form; `inf`/`-inf` as Redis spells them).
    public mutating func append(_ value: Double) {
        append(value.description)
    }

    /// The number of bytes this command takes on the wire.
    public var encodedSize: Int { body.count + 4 + RESP.decimalLength(argumentCount) }
}

extension String: RedisArgument {
    public func append(to command: inout RedisCommand) { command.append(self) }
}
extension Substring: RedisArgument {
    public func append(to command: inout RedisCommand) { command.append(self) }
}
extension Array: RedisArgument where Element == UInt8 {
    public func append(to command: inout RedisCommand) { command.append(bytes: self) }
}
extension ArraySlice: RedisArgument where Element == UInt8 {
    public func append(to command: inout RedisCommand) { command.append(bytes: self) }
}
extension Int: RedisArgument {
    public func append(to command: inout RedisCommand) { command.append(self) }
}
extension Int64: RedisArgument {
    public func append(to command: inout RedisCommand) { command.append(Int(self)) }
}
extension UInt64: RedisArgument {
    public func append(to command: inout RedisCommand) {
        if let small = Int(exactly: self) { command.append(small) } else { command.append(description) }
    }
}
extension Double: RedisArgument {
    public func append(to command: inout RedisCommand) { command.append(self) }
}

/// RESP encoding helpers.
enum RESP {
    /// Number of bytes of `value` in decimal, including a minus sign.
    @inline(__always)
    static func decimalLength(_ value: Int) -> Int {
        var magnitude = value.magnitude
        var length = value < 0 ? 2 : 1
        while magnitude >= 10 { magnitude /= 10; length += 1 }
        return length
    }

    /// Appends `value` in decimal ASCII.
    @inline(__always)
    static func appendDecimal(_ value: Int, to buffer: inout [UInt8]) {
        if value < 0 { buffer.append(UInt8(ascii: "-")) }
        var magnitude = value.magnitude
        let start = buffer.count
        repeat {
            buffer.append(UInt8(truncatingIfNeeded: magnitude % 10) &+ 48)
            magnitude /= 10
        } while magnitude > 0
        buffer[start...].reverse()
    }

    /// Encodes `commands` (selected by `indices`) as one contiguous RESP buffer.
    static func encode(_ commands: [RedisCommand], indices: some Collection<Int>) -> [UInt8] {
        var size = 0
        for index in indices { size += commands[index].encodedSize }
        var buffer: [UInt8] = []
        buffer.reserveCapacity(size)
        for index in indices {
            let command = commands[index]
            buffer.append(UInt8(ascii: "*"))
            appendDecimal(command.argumentCount, to: &buffer)
            buffer.append(13); buffer.append(10)
            buffer.append(contentsOf: command.body)
        }
        return buffer
    }
}
