import CCurl
import Foundation
import Logging
import WaymarkThreads

/// An HTTP/1.1 and HTTP/2 client over libcurl, for webhook providers.
///
/// **One owned thread, many requests.** All transfers run in one curl *multi* handle driven by an
/// ``OwnedThread`` the client owns (`curl_multi_poll` / `curl_multi_perform`). Callers suspend (no
/// cooperative thread is blocked) until their transfer finishes. One thread serves any number of
/// concurrent requests, up to ``HTTPClientConfiguration/maxConnectionsPerHost`` connections per
/// host; more wait inside curl. Connections and TLS sessions live in the multi handle's cache and are
/// reused by every later request to the same origin (keep-alive; HTTP/2 multiplexing over TLS when
/// the server offers it). Easy handles are recycled.
///
/// A pool of threads each blocking in `curl_easy_perform` was the alternative: simpler callbacks, but
/// concurrency capped by the thread count, a connection cache per thread, and idle threads that cost
/// memory. A sender doing hundreds of webhook calls per second at 50–200 ms each needs tens of
/// requests in flight; one multi thread does that at no extra cost.
///
/// **Safety defaults.** TLS peer and host verification on; only `http` and `https`; redirects not
/// followed; response bodies capped; `Expect: 100-continue` disabled (no extra round trip).
///
/// **Errors.** Any HTTP status is a response. Transport failures throw ``HTTPClientError``
/// (`timeout`, `connectFailed`, `tls`, `invalidURL`, `connectionLost`, ...). Cancelling the calling
/// task abandons the transfer at once and throws ``HTTPClientError/Kind/cancelled``.
public final class HTTPClient: Sendable {
    /// The configuration the client was created with.
    public let configuration: HTTPClientConfiguration
    private let engine: CurlEngine
    private let thread: OwnedThread

    /// Creates a client and starts its thread.
    /// - Parameters:
    ///   - configuration: TLS, timeouts and connection limits; validated first.
    ///   - logger: receives start/stop events and, at debug level, failed transfers
    ///     (metadata `http.origin`, `http.error`; never paths, queries, headers or bodies).
    /// - Throws: ``HTTPClientError`` — `invalidRequest` for a bad configuration, `other` if curl
    ///   cannot initialise.
    public init(configuration: HTTPClientConfiguration = HTTPClientConfiguration(),
                logger: Logger = Logger(label: "waymark.http.client")) throws(HTTPClientError) {
        try configuration.validate()
        try CurlGlobal.initialise()
        guard let multi = curl_multi_init() else { throw HTTPClientError(.other, "curl_multi_init failed") }
        _ = waymark_curl_multi_setopt_long(multi, CURLMOPT_MAX_HOST_CONNECTIONS, configuration.maxConnectionsPerHost)
        _ = waymark_curl_multi_setopt_long(multi, CURLMOPT_MAXCONNECTS, configuration.maxIdleConnections)
        self.configuration = configuration
        self.engine = CurlEngine(multi: multi, configuration: configuration, logger: logger)
        self.thread = OwnedThread(name: "http-client")
        let engine = self.engine
        thread.submit { engine.loop() }
    }

    deinit {
        engine.requestStop()  // the OwnedThread's deinit then waits for the loop to finish
    }

    /// Sends a `POST` with `body` and returns the response, whatever its status.
    /// - Parameters:
    ///   - url: an `http://` or `https://` URL.
    ///   - headers: request header fields. Without a `Content-Type`, `application/json` is sent.
    ///   - body: the request body, sent with `Content-Length`.
    ///   - timeout: bound on the whole request (default ``HTTPClientConfiguration/timeout``).
    ///   - connectTimeout: bound on connecting (default ``HTTPClientConfiguration/connectTimeout``).
    /// - Throws: ``HTTPClientError``.
    public func post(url: String, headers: HTTPHeaders = [:], body: [UInt8], timeout: Duration? = nil,
                     connectTimeout: Duration? = nil) async throws(HTTPClientError) -> HTTPClientResponse {
        var headers = headers
        if !headers.contains("Content-Type") { headers.add("Content-Type", "application/json") }
        return try await execute(method: "POST", url: url, headers: headers, body: body, timeout: timeout,
                                 connectTimeout: connectTimeout)
    }

    /// Sends a `GET` and returns the response, whatever its status.
    /// - Throws: ``HTTPClientError``.
    public func get(url: String, headers: HTTPHeaders = [:], timeout: Duration? = nil,
                    connectTimeout: Duration? = nil) async throws(HTTPClientError) -> HTTPClientResponse {
        try await execute(method: "GET", url: url, headers: headers, body: nil, timeout: timeout,
                          connectTimeout: connectTimeout)
    }

    /// Sends a request with any method and returns the response, whatever its status.
    /// - Parameters:
    ///   - method: an HTTP method token (`GET`, `POST`, `PUT`, `DELETE`, ...).
    ///   - body: the body to send, or `nil` for none.
    ///   - Other parameters: as in ``post(url:headers:body:timeout:connectTimeout:)`` (no default `Content-Type`).
    /// - Throws: ``HTTPClientError``.
    public func execute(method: String, url: String, headers: HTTPHeaders = [:], body: [UInt8]? = nil,
                        timeout: Duration? = nil,
                        connectTimeout: Duration? = nil) async throws(HTTPClientError) -> HTTPClientResponse {
        let origin = try CurlURL.origin(of: url)
        guard !method.isEmpty, method.utf8.allSatisfy(HTTPRequestParser.isTokenByte) else {
            throw HTTPClientError(.invalidRequest, "invalid method", origin: origin)
        }
        for (name, value) in headers {
            guard !name.isEmpty, name.utf8.allSatisfy(HTTPRequestParser.isTokenByte),
                  !value.utf8.contains(where: { $0 == 13 || $0 == 10 || $0 == 0 }) else {
                throw HTTPClientError(.invalidRequest, "invalid header field", origin: origin)
            }
        }
        let timeout = timeout ?? configuration.timeout
        let connectTimeout = connectTimeout ?? configuration.connectTimeout
        guard timeout >= .milliseconds(1), connectTimeout >= .milliseconds(1) else {
            throw HTTPClientError(.invalidRequest, "timeouts must be at least 1 ms", origin: origin)
        }
        let transfer = Transfer(method: method, url: url, origin: origin, headers: headers, body: body,
                                timeout: timeout, connectTimeout: connectTimeout,
                                maxBody: configuration.maxResponseBodyBytes)
        let engine = self.engine
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<HTTPClientResponse, HTTPClientError>, Never>) in
                transfer.continuation = continuation
                if !engine.submit(transfer) {
                    transfer.continuation = nil
                    continuation.resume(returning: .failure(HTTPClientError(.closed, "client has been shut down", origin: origin)))
                }
            }
        } onCancel: {
            engine.cancel(transfer)
        }
        return try result.get()
    }

    /// Stops the client: requests in flight fail with ``HTTPClientError/Kind/closed``, connections
    /// are closed, and the thread exits. Later calls fail with `closed`. Safe to call more than once.
    public func shutdown() async {
        engine.requestStop()
        await engine.waitUntilStopped()
        thread.shutdown()
    }
}

/// `curl_global_init`, exactly once per process.
enum CurlGlobal {
    private static let result: CURLcode = curl_global_init(Int(CURL_GLOBAL_DEFAULT))

    static func initialise() throws(HTTPClientError) {
        guard result == CURLE_OK else {
            throw HTTPClientError(.other, "curl_global_init failed", curlCode: Int(result.rawValue))
        }
    }
}

/// URL checks with curl's own parser, so what we validate is what curl will use.
enum CurlURL {
    /// `scheme://host:port` of `url`.
    /// - Throws: ``HTTPClientError/Kind/invalidURL`` if curl cannot parse it or the scheme is not http(s).
    static func origin(of url: String) throws(HTTPClientError) -> String {
        guard !url.utf8.contains(0), let handle = curl_url() else {
            throw HTTPClientError(.invalidURL, "URL cannot be parsed")
        }
        defer { curl_url_cleanup(handle) }
        let code = curl_url_set(handle, CURLUPART_URL, url, 0)
        guard code == CURLUE_OK else {
            throw HTTPClientError(.invalidURL, "URL cannot be parsed: \(String(cString: curl_url_strerror(code)))")
        }
        func part(_ which: CURLUPart, _ flags: UInt32 = 0) -> String? {
            var pointer: UnsafeMutablePointer<CChar>?
            guard curl_url_get(handle, which, &pointer, UInt32(flags)) == CURLUE_OK, let pointer else { return nil }
            defer { curl_free(pointer) }
            return String(cString: pointer)
        }
        let scheme = part(CURLUPART_SCHEME)?.lowercased() ?? ""
        let host = part(CURLUPART_HOST) ?? ""
        let port = part(CURLUPART_PORT, UInt32(CURLU_DEFAULT_PORT)) ?? ""
        guard scheme == "http" || scheme == "https" else {
            throw HTTPClientError(.invalidURL, "scheme must be http or https, got '\(scheme)'")
        }
        guard !host.isEmpty else { throw HTTPClientError(.invalidURL, "URL has no host") }
        return "\(scheme)://\(host):\(port)"
    }
}

/// One request in flight. Fields other than `continuation`/`cancelRequested` are confined to the
/// engine thread once submitted; the submit/cancel hand-over happens under the engine's lock.
final class Transfer: @unchecked Sendable {
    let method: String
    let url: String
    let origin: String
    let headers: HTTPHeaders
    let body: UnsafeMutableRawBufferPointer?
    let timeout: Duration
    let connectTimeout: Duration
    let maxBody: Int

    var continuation: CheckedContinuation<Result<HTTPClientResponse, HTTPClientError>, Never>?
    var cancelRequested = false  // guarded by the engine lock
    var easy: UnsafeMutableRawPointer?
    var headerList: UnsafeMutablePointer<curl_slist>?
    var responseHeaders = HTTPHeaders()
    var responseBody: [UInt8] = []
    var bodyTooLarge = false
    let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)

    init(method: String, url: String, origin: String, headers: HTTPHeaders, body: [UInt8]?, timeout: Duration,
         connectTimeout: Duration, maxBody: Int) {
        self.method = method
        self.url = url
        self.origin = origin
        self.headers = headers
        if let body {
            let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(body.count, 1), alignment: 1)
            body.withUnsafeBytes { copy.copyMemory(from: $0) }
            self.body = UnsafeMutableRawBufferPointer(start: copy.baseAddress, count: body.count)
        } else {
            self.body = nil
        }
        self.timeout = timeout
        self.connectTimeout = connectTimeout
        self.maxBody = maxBody
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
    }

    deinit {
        body?.deallocate()
        if let headerList { curl_slist_free_all(headerList) }
        errorBuffer.deallocate()
    }

    /// Resumes the caller exactly once.
    func complete(_ result: Result<HTTPClientResponse, HTTPClientError>) {
        guard let continuation else { return }
        self.continuation = nil
        continuation.resume(returning: result)
    }
}

/// The curl multi loop. `pending`, `cancels`, `stopping` and the stop bookkeeping are guarded by
/// `lock`; everything else is confined to the loop's thread.
final class CurlEngine: @unchecked Sendable {
    private let multi: UnsafeMutableRawPointer
    private let configuration: HTTPClientConfiguration
    private let logger: Logger
    private let lock = NSLock()
    private var pending: [Transfer] = []
    private var cancels: [Transfer] = []
    private var stopping = false
    private var stopped = false
    private var stopWaiters: [CheckedContinuation<Void, Never>] = []
    // Loop thread only:
    private var active: [UnsafeMutableRawPointer: Transfer] = [:]
    private var spareHandles: [UnsafeMutableRawPointer] = []

    init(multi: UnsafeMutableRawPointer, configuration: HTTPClientConfiguration, logger: Logger) {
        self.multi = multi
        self.configuration = configuration
        self.logger = logger
    }

    func submit(_ transfer: Transfer) -> Bool {
        lock.lock()
        guard !stopping else {
            lock.unlock()
            return false
        }
        pending.append(transfer)
        lock.unlock()
        curl_multi_wakeup(multi)
        return true
    }

    func cancel(_ transfer: Transfer) {
        lock.lock()
        transfer.cancelRequested = true
        let wake = !stopping
        if wake { cancels.append(transfer) }
        lock.unlock()
        if wake { curl_multi_wakeup(multi) }
    }

    func requestStop() {
        lock.lock()
        let first = !stopping
        stopping = true
        lock.unlock()
        if first { curl_multi_wakeup(multi) }
    }

    func waitUntilStopped() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            lock.lock()
            if stopped {
                lock.unlock()
                continuation.resume()
            } else {
                stopWaiters.append(continuation)
                lock.unlock()
            }
        }
    }

    func loop() {
        Socket.blockSIGPIPEOnCurrentThread()
        logger.debug("HTTP client started")
        while true {
            lock.lock()
            let starting = pending
            let cancelling = cancels
            let stop = stopping
            pending = []
            cancels = []
            var cancelledBeforeStart: Set<ObjectIdentifier> = []
            for transfer in starting where transfer.cancelRequested { cancelledBeforeStart.insert(ObjectIdentifier(transfer)) }
            lock.unlock()

            for transfer in starting {
                if stop {
                    transfer.complete(.failure(HTTPClientError(.closed, "client has been shut down", origin: transfer.origin)))
                } else if cancelledBeforeStart.contains(ObjectIdentifier(transfer)) {
                    transfer.complete(.failure(HTTPClientError(.cancelled, "request cancelled", origin: transfer.origin)))
                } else {
                    start(transfer)
                }
            }
            for transfer in cancelling {
                if let easy = transfer.easy, active[easy] != nil {
                    finish(easy, with: .failure(HTTPClientError(.cancelled, "request cancelled", origin: transfer.origin)))
                }
            }
            if stop { break }

            var running: Int32 = 0
            curl_multi_perform(multi, &running)
            var remaining: Int32 = 0
            while let message = curl_multi_info_read(multi, &remaining) {
                guard message.pointee.msg == CURLMSG_DONE, let easy = message.pointee.easy_handle else { continue }
                let code = message.pointee.data.result
                finish(easy, code: code)
            }
            curl_multi_poll(multi, nil, 0, 1000, nil)
        }
        for transfer in Array(active.values) {
            if let handle = transfer.easy {
                finish(handle, with: .failure(HTTPClientError(.closed, "client has been shut down", origin: transfer.origin)))
            }
        }
        for easy in spareHandles { curl_easy_cleanup(easy) }
        spareHandles = []
        curl_multi_cleanup(multi)
        logger.debug("HTTP client stopped")
        lock.lock()
        stopped = true
        let waiters = stopWaiters
        stopWaiters = []
        lock.unlock()
        for waiter in waiters { waiter.resume() }
    }

    // MARK: Transfers (loop thread)

    private func start(_ transfer: Transfer) {
        guard let easy = spareHandles.popLast() ?? curl_easy_init() else {
            transfer.complete(.failure(HTTPClientError(.other, "curl_easy_init failed", origin: transfer.origin)))
            return
        }
        transfer.easy = easy
        if let failure = configure(easy, for: transfer) {
            transfer.easy = nil
            recycle(easy)
            transfer.complete(.failure(failure))
            return
        }
        active[easy] = transfer
        let added = curl_multi_add_handle(multi, easy)
        if added != CURLM_OK {
            finish(easy, with: .failure(HTTPClientError(.other, "curl_multi_add_handle: \(String(cString: curl_multi_strerror(added)))",
                                                        origin: transfer.origin)))
        }
    }

    /// Sets every option for `transfer` on a fresh or reset handle; returns an error if curl refused one.
    private func configure(_ easy: UnsafeMutableRawPointer, for transfer: Transfer) -> HTTPClientError? {
        var failure: HTTPClientError?
        func check(_ code: CURLcode, _ what: String) {
            if code != CURLE_OK && failure == nil {
                let kind: HTTPClientError.Kind = code == CURLE_URL_MALFORMAT || code == CURLE_UNSUPPORTED_PROTOCOL
                    ? .invalidURL : .invalidRequest
                failure = HTTPClientError(kind, "\(what): \(String(cString: curl_easy_strerror(code)))",
                                          origin: transfer.origin, curlCode: Int(code.rawValue))
            }
        }
        func long(_ option: CURLoption, _ value: Int, _ what: String) {
            check(waymark_curl_easy_setopt_long(easy, option, value), what)
        }
        func string(_ option: CURLoption, _ value: String, _ what: String) {
            check(waymark_curl_easy_setopt_string(easy, option, value), what)  // curl copies strings
        }
        let unmanaged = Unmanaged.passUnretained(transfer).toOpaque()
        string(CURLOPT_URL, transfer.url, "URL")
        string(CURLOPT_PROTOCOLS_STR, "http,https", "protocols")
        string(CURLOPT_REDIR_PROTOCOLS_STR, "http,https", "redirect protocols")
        long(CURLOPT_NOSIGNAL, 1, "nosignal")
        long(CURLOPT_TIMEOUT_MS, Socket.milliseconds(transfer.timeout), "timeout")
        long(CURLOPT_CONNECTTIMEOUT_MS, Socket.milliseconds(transfer.connectTimeout), "connect timeout")
        long(CURLOPT_FOLLOWLOCATION, configuration.followRedirects ? 1 : 0, "follow redirects")
        long(CURLOPT_MAXREDIRS, 5, "max redirects")
        long(CURLOPT_SSL_VERIFYPEER, configuration.verifyTLS ? 1 : 0, "verify peer")
        long(CURLOPT_SSL_VERIFYHOST, configuration.verifyTLS ? 2 : 0, "verify host")
        if let caBundlePath = configuration.caBundlePath { string(CURLOPT_CAINFO, caBundlePath, "CA bundle") }
        long(CURLOPT_MAXAGE_CONN, Int(configuration.maxIdleTime.components.seconds), "connection max age")
        long(CURLOPT_TCP_NODELAY, 1, "nodelay")
        check(waymark_curl_easy_setopt_pointer(easy, CURLOPT_PRIVATE, unmanaged), "private")
        check(waymark_curl_easy_setopt_pointer(easy, CURLOPT_ERRORBUFFER, transfer.errorBuffer), "error buffer")
        check(waymark_curl_easy_setopt_write_callback(easy, CURLOPT_WRITEFUNCTION, curlWriteBody), "write function")
        check(waymark_curl_easy_setopt_pointer(easy, CURLOPT_WRITEDATA, unmanaged), "write data")
        check(waymark_curl_easy_setopt_write_callback(easy, CURLOPT_HEADERFUNCTION, curlWriteHeader), "header function")
        check(waymark_curl_easy_setopt_pointer(easy, CURLOPT_HEADERDATA, unmanaged), "header data")

        switch transfer.method {
        case "GET" where transfer.body == nil:
            long(CURLOPT_HTTPGET, 1, "GET")
        case "HEAD" where transfer.body == nil:
            long(CURLOPT_NOBODY, 1, "HEAD")
        case "POST":
            long(CURLOPT_POST, 1, "POST")
        default:
            string(CURLOPT_CUSTOMREQUEST, transfer.method, "method")
        }
        if let body = transfer.body {
            check(waymark_curl_easy_setopt_off_t(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count)), "body size")
            check(waymark_curl_easy_setopt_pointer(easy, CURLOPT_POSTFIELDS, body.baseAddress), "body")
        }
        var list: UnsafeMutablePointer<curl_slist>?
        func append(_ line: String) {
            if let extended = curl_slist_append(list, line) { list = extended } else { check(CURLE_OUT_OF_MEMORY, "headers") }
        }
        for (name, value) in transfer.headers {
            append(value.isEmpty ? "\(name);" : "\(name): \(value)")  // "Name;" sends an empty value
        }
        if !transfer.headers.contains("Expect") { append("Expect:") }  // no 100-continue round trip
        if !transfer.headers.contains("User-Agent") { append("User-Agent: \(configuration.userAgent)") }
        transfer.headerList = list
        check(waymark_curl_easy_setopt_slist(easy, CURLOPT_HTTPHEADER, list), "headers")
        return failure
    }

    private func finish(_ easy: UnsafeMutableRawPointer, code: CURLcode) {
        guard let transfer = active[easy] else { return }
        if code == CURLE_OK {
            var status = 0
            _ = waymark_curl_easy_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
            finish(easy, with: .success(HTTPClientResponse(status: status, headers: transfer.responseHeaders,
                                                           body: transfer.responseBody)))
            return
        }
        let detail = String(cString: transfer.errorBuffer)
        let message = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
        let kind: HTTPClientError.Kind
        switch code {
        case CURLE_OPERATION_TIMEDOUT: kind = .timeout
        case CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY, CURLE_COULDNT_CONNECT: kind = .connectFailed
        case CURLE_URL_MALFORMAT, CURLE_UNSUPPORTED_PROTOCOL: kind = .invalidURL
        case CURLE_SSL_CONNECT_ERROR, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER, CURLE_PEER_FAILED_VERIFICATION,
             CURLE_SSL_ENGINE_NOTFOUND, CURLE_SSL_ENGINE_SETFAILED, CURLE_USE_SSL_FAILED, CURLE_SSL_ENGINE_INITFAILED,
             CURLE_SSL_CACERT_BADFILE, CURLE_SSL_SHUTDOWN_FAILED, CURLE_SSL_CRL_BADFILE, CURLE_SSL_ISSUER_ERROR,
             CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS, CURLE_SSL_CLIENTCERT:
            kind = .tls
        case CURLE_GOT_NOTHING, CURLE_SEND_ERROR, CURLE_RECV_ERROR, CURLE_PARTIAL_FILE, CURLE_HTTP2, CURLE_HTTP2_STREAM:
            kind = .connectionLost
        case CURLE_WRITE_ERROR where transfer.bodyTooLarge:
            kind = .responseTooLarge
        default: kind = .other
        }
        let text = kind == .responseTooLarge ? "response body exceeds \(transfer.maxBody) bytes" : message
        let error = HTTPClientError(kind, text, origin: transfer.origin, curlCode: Int(code.rawValue))
        logger.debug("HTTP request failed", metadata: ["http.origin": "\(transfer.origin)", "http.error": "\(kind.rawValue)"])
        finish(easy, with: .failure(error))
    }

    private func finish(_ easy: UnsafeMutableRawPointer, with result: Result<HTTPClientResponse, HTTPClientError>) {
        guard let transfer = active.removeValue(forKey: easy) else { return }
        curl_multi_remove_handle(multi, easy)
        transfer.easy = nil
        recycle(easy)
        transfer.complete(result)
    }

    private func recycle(_ easy: UnsafeMutableRawPointer) {
        curl_easy_reset(easy)
        if spareHandles.count < configuration.maxIdleConnections {
            spareHandles.append(easy)
        } else {
            curl_easy_cleanup(easy)
        }
    }
}

/// CURLOPT_WRITEFUNCTION: appends to the transfer's body; returning less than given aborts it.
private let curlWriteBody: curl_write_callback = { data, size, count, context in
    guard let data, let context else { return 0 }
    let transfer = Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue()
    let length = size * count
    if transfer.responseBody.count + length > transfer.maxBody {
        transfer.bodyTooLarge = true
        return 0
    }
    data.withMemoryRebound(to: UInt8.self, capacity: length) {
        transfer.responseBody.append(contentsOf: UnsafeBufferPointer(start: $0, count: length))
    }
    return length
}

/// CURLOPT_HEADERFUNCTION: one header line per call. A status line starts a new response
/// (after `100 Continue` or a followed redirect), so it clears what was collected.
private let curlWriteHeader: curl_write_callback = { data, size, count, context in
    guard let data, let context else { return 0 }
    let transfer = Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue()
    let length = size * count
    let line = data.withMemoryRebound(to: UInt8.self, capacity: length) {
        String(decoding: UnsafeBufferPointer(start: $0, count: length), as: UTF8.self)
    }
    if line.hasPrefix("HTTP/") {
        transfer.responseHeaders = HTTPHeaders()
        transfer.responseBody = []
        return length
    }
    let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
    if let colon = trimmed.firstIndex(of: ":") {
        let name = String(trimmed[..<colon])
        let value = trimmed[trimmed.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        transfer.responseHeaders.add(name, value)
    }
    return length
}
