import Foundation
import Logging
import WaymarkThreads
@testable import WaymarkHTTP
#if canImport(Glibc)
import Glibc
#endif

/// A plain TCP client for sending exact (also malformed) bytes to a test server.
/// Its blocking socket calls run on an owned thread, not the cooperative pool.
final class RawClient: @unchecked Sendable {
    private let thread = OwnedThread(name: "raw-client")
    private let fd: Int32

    private init(fd: Int32) { self.fd = fd }

    deinit {
        close(fd)
    }

    static func connect(port: Int, timeout: Duration = .seconds(5)) throws -> RawClient {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        let ms = Socket.milliseconds(timeout)
        var tv = timeval(tv_sec: ms / 1000, tv_usec: (ms % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        return RawClient(fd: fd)
    }

    func send(_ text: String) async throws {
        try await send(Array(text.utf8))
    }

    func send(_ bytes: [UInt8]) async throws {
        let fd = self.fd
        let ok = try await thread.run { Socket.sendAll(fd, bytes) }
        if !ok { throw POSIXError(.EPIPE) }
    }

    /// Reads until the peer closes (or the read timeout), returning everything read.
    func readToEnd() async throws -> String {
        let fd = self.fd
        return try await thread.run {
            var result: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count <= 0 { break }
                result.append(contentsOf: buffer[0..<count])
            }
            return String(decoding: result, as: UTF8.self)
        }
    }

    /// Reads one response with a `Content-Length` body (keeps the connection usable).
    func readResponse() async throws -> (status: Int, head: String, body: String) {
        let fd = self.fd
        return try await thread.run {
            var result: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            func parse() -> (Int, String, String)? {
                guard let end = HTTPRequestParser.endOfHead(result, from: 0) else { return nil }
                let head = String(decoding: result[0..<end], as: UTF8.self)
                let length = head.split(separator: "\r\n")
                    .first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                guard result.count >= end + length else { return nil }
                let status = Int(head.split(separator: " ")[1]) ?? 0
                return (status, head, String(decoding: result[end..<(end + length)], as: UTF8.self))
            }
            while true {
                if let parsed = parse() { return parsed }
                let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count <= 0 { throw POSIXError(.ECONNRESET) }
                result.append(contentsOf: buffer[0..<count])
            }
        }
    }
}

/// Starts a server, runs `body`, and always shuts the server down.
func withServer<T>(_ configuration: HTTPServerConfiguration = HTTPServerConfiguration(),
                   router: HTTPRouter,
                   _ body: (HTTPServer) async throws -> T) async throws -> T {
    let server = try HTTPServer.start(configuration, router: router, logger: Logger(label: "test.http"))
    do {
        let result = try await body(server)
        await server.shutdown()
        return result
    } catch {
        await server.shutdown()
        throw error
    }
}

func statusLine(_ response: String) -> String {
    String(response.split(separator: "\r\n", maxSplits: 1).first ?? "")
}

/// A Python HTTPS echo server (`POST` answers `201` with the request body) with a throwaway
/// self-signed certificate for `IP:127.0.0.1`. Needs `openssl` and `python3` on PATH.
final class TLSEchoServer: @unchecked Sendable {
    let port: Int
    /// PEM file of the server's self-signed certificate (use it as the client's CA bundle).
    let certificatePath: String
    private let process: Process
    private let directory: URL

    private static let script = #"""
    import http.server, ssl, sys
    class Echo(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[1], sys.argv[2])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """#

    static var toolsAvailable: Bool {
        ["openssl", "python3"].allSatisfy { tool in
            (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").contains {
                FileManager.default.isExecutableFile(atPath: "\($0)/\(tool)")
            }
        }
    }

    init() async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("waymark-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        certificatePath = directory.appendingPathComponent("cert.pem").path
        let keyPath = directory.appendingPathComponent("key.pem").path
        let openssl = Process()
        openssl.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        openssl.arguments = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                             "-keyout", keyPath, "-out", certificatePath]
        openssl.standardOutput = FileHandle.nullDevice
        openssl.standardError = FileHandle.nullDevice
        try openssl.run()
        openssl.waitUntilExit()
        guard openssl.terminationStatus == 0 else { throw POSIXError(.EINVAL) }

        let output = Pipe()
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", Self.script, certificatePath, keyPath]
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let reader = OwnedThread(name: "tls-echo-read")
        let line = try await reader.run { () -> String in
            var bytes: [UInt8] = []
            while true {
                let chunk = output.fileHandleForReading.readData(ofLength: 1)
                if chunk.isEmpty || chunk.first == 10 { break }
                bytes.append(contentsOf: chunk)
            }
            return String(decoding: bytes, as: UTF8.self)
        }
        reader.shutdown()
        guard let port = Int(line) else {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw POSIXError(.EIO)
        }
        self.port = port
    }

    func stop() {
        // The child inherits a signal mask that blocks SIGTERM (Process spawns from a thread that
        // blocks signals), so `terminate()` would not stop it; SIGKILL cannot be blocked.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: directory)
    }
}
