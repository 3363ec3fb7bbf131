/// Limits the server enforces while reading a request.
struct HTTPParserLimits: Sendable {
    var maxHeaderBytes: Int
    var maxHeaderCount: Int
    var maxBodyBytes: Int
}

/// The request line and header fields of a request, parsed and validated.
struct HTTPRequestHead: Sendable, Equatable {
    var method: String
    var path: String
    var query: String?
    var version: String
    var headers: HTTPHeaders
    var contentLength: Int
    var keepAlive: Bool
    var expectsContinue: Bool

    static func == (lhs: HTTPRequestHead, rhs: HTTPRequestHead) -> Bool {
        lhs.method == rhs.method && lhs.path == rhs.path && lhs.query == rhs.query && lhs.version == rhs.version
            && lhs.headers == rhs.headers && lhs.contentLength == rhs.contentLength
            && lhs.keepAlive == rhs.keepAlive && lhs.expectsContinue == rhs.expectsContinue
    }
}

/// Outcome of parsing the head of a request from the start of a buffer.
enum HTTPHeadParse: Equatable {
    /// The head is not complete yet; read more bytes.
    case incomplete
    /// A complete, valid head of `length` bytes (including the blank line).
    case head(HTTPRequestHead, length: Int)
    /// The request is unacceptable: answer `status` and close the connection.
    case failure(status: Int, reason: String)
}

/// A strict, allocation-light parser for HTTP/1.x request heads (RFC 9112).
///
/// It accepts only what Waymark's clients send: origin-form targets (`/path?query`), `HTTP/1.0`
/// and `HTTP/1.1`, bodies delimited by `Content-Length`. Anything else is a failure with the
/// status to answer: 400 for malformed syntax, 413 for a body over the limit, 431 for an
/// oversized head, 501 for `Transfer-Encoding`, 505 for other HTTP versions. It never traps.
enum HTTPRequestParser {
    static let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n")

    /// Parses the head at the start of `buffer`, skipping empty lines before the request line.
    static func parseHead(_ buffer: [UInt8], limits: HTTPParserLimits) -> HTTPHeadParse {
        var start = 0
        while start + 1 < buffer.count, buffer[start] == cr, buffer[start + 1] == lf { start += 2 }
        guard let end = endOfHead(buffer, from: start) else {
            if buffer.count - start > limits.maxHeaderBytes {
                return .failure(status: 431, reason: "request head exceeds \(limits.maxHeaderBytes) bytes")
            }
            // A bare LF line ending would never complete a CRLF head: fail fast instead of waiting.
            if let lfIndex = buffer[start...].firstIndex(of: lf), lfIndex == start || buffer[lfIndex - 1] != cr {
                return .failure(status: 400, reason: "line not terminated by CRLF")
            }
            return .incomplete
        }
        if end - start > limits.maxHeaderBytes {
            return .failure(status: 431, reason: "request head exceeds \(limits.maxHeaderBytes) bytes")
        }
        // Split the head (without its final CRLFCRLF) into lines.
        var lines: [ArraySlice<UInt8>] = []
        var lineStart = start
        var index = start
        let headEnd = end - 4
        while index < headEnd {
            let byte = buffer[index]
            if byte == cr {
                guard buffer[index + 1] == lf else {
                    return .failure(status: 400, reason: "bare CR in request head")
                }
                lines.append(buffer[lineStart..<index])
                index += 2
                lineStart = index
                continue
            }
            if byte == lf { return .failure(status: 400, reason: "bare LF in request head") }
            index += 1
        }
        lines.append(buffer[lineStart..<headEnd])
        guard let requestLine = lines.first else { return .failure(status: 400, reason: "empty request") }
        if lines.count - 1 > limits.maxHeaderCount {
            return .failure(status: 431, reason: "more than \(limits.maxHeaderCount) header fields")
        }

        // Request line: method SP request-target SP HTTP-version
        let parts = requestLine.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard parts.count == 3 else { return .failure(status: 400, reason: "malformed request line") }
        let (methodBytes, target, versionBytes) = (parts[0], parts[1], parts[2])
        guard !methodBytes.isEmpty, methodBytes.allSatisfy(isTokenByte) else {
            return .failure(status: 400, reason: "malformed method")
        }
        guard target.first == UInt8(ascii: "/"), target.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            return .failure(status: 400, reason: "request target must be an origin-form path")
        }
        let version = String(decoding: versionBytes, as: UTF8.self)
        switch version {
        case "HTTP/1.1", "HTTP/1.0": break
        default:
            let looksLikeHTTP = versionBytes.count == 8 && version.hasPrefix("HTTP/")
                && versionBytes[versionBytes.startIndex + 6] == UInt8(ascii: ".")
                && isDigit(versionBytes[versionBytes.startIndex + 5]) && isDigit(versionBytes[versionBytes.startIndex + 7])
            return looksLikeHTTP ? .failure(status: 505, reason: "unsupported HTTP version")
                                 : .failure(status: 400, reason: "malformed HTTP version")
        }
        let path: String
        let query: String?
        if let question = target.firstIndex(of: UInt8(ascii: "?")) {
            path = String(decoding: target[target.startIndex..<question], as: UTF8.self)
            query = String(decoding: target[(question + 1)...], as: UTF8.self)
        } else {
            path = String(decoding: target, as: UTF8.self)
            query = nil
        }

        // Header fields: field-name ":" OWS field-value OWS
        var headers = HTTPHeaders()
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else {
                return .failure(status: 400, reason: "header line without colon")
            }
            let name = line[line.startIndex..<colon]
            guard !name.isEmpty, name.allSatisfy(isTokenByte) else {
                return .failure(status: 400, reason: "malformed header name")
            }
            var value = line[(colon + 1)...]
            while let first = value.first, first == 0x20 || first == 0x09 { value.removeFirst() }
            while let last = value.last, last == 0x20 || last == 0x09 { value.removeLast() }
            guard value.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
                return .failure(status: 400, reason: "control character in header value")
            }
            headers.add(String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self))
        }

        if headers.contains("Transfer-Encoding") {
            return .failure(status: 501, reason: "Transfer-Encoding is not supported; send Content-Length")
        }
        var contentLength = 0
        let lengths = headers.values(for: "Content-Length")
        if !lengths.isEmpty {
            // Repeated fields (or a list) must all agree.
            let values = lengths.flatMap { $0.split(separator: ",").map { $0.trimmingSpaces() } }
            guard values.allSatisfy({ $0 == values[0] }), !values[0].isEmpty,
                  values[0].utf8.allSatisfy(isDigit) else {
                return .failure(status: 400, reason: "invalid Content-Length")
            }
            guard values[0].utf8.count <= 18, let length = Int(values[0]) else {
                return .failure(status: 413, reason: "body exceeds \(limits.maxBodyBytes) bytes")
            }
            contentLength = length
        }
        if contentLength > limits.maxBodyBytes {
            return .failure(status: 413, reason: "body exceeds \(limits.maxBodyBytes) bytes")
        }
        let connectionTokens = headers.values(for: "Connection")
            .flatMap { $0.split(separator: ",") }.map { $0.trimmingSpaces().lowercased() }
        let keepAlive = version == "HTTP/1.1" ? !connectionTokens.contains("close") : false
        let expectsContinue = headers["Expect"]?.lowercased() == "100-continue" && version == "HTTP/1.1"
        let head = HTTPRequestHead(method: String(decoding: methodBytes, as: UTF8.self), path: path, query: query,
                                   version: version, headers: headers, contentLength: contentLength,
                                   keepAlive: keepAlive, expectsContinue: expectsContinue)
        return .head(head, length: end)
    }

    /// Index just past the first CRLFCRLF at or after `start`, or `nil`.
    static func endOfHead(_ buffer: [UInt8], from start: Int) -> Int? {
        var index = start
        while index + 3 < buffer.count {
            if buffer[index + 3] == lf && buffer[index + 2] == cr && buffer[index + 1] == lf && buffer[index] == cr {
                return index + 4
            }
            index += 1
        }
        return nil
    }

    static func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }

    /// RFC 9110 `tchar`.
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), 0x30...0x39: true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
             UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
             UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"): true
        default: false
        }
    }
}

extension Substring {
    func trimmingSpaces() -> String {
        var view = self[...]
        while let first = view.first, first == " " || first == "\t" { view.removeFirst() }
        while let last = view.last, last == " " || last == "\t" { view.removeLast() }
        return String(view)
    }
}
