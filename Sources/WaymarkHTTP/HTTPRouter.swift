/// Handles one request. Runs on one of the server's own threads, so it may block (briefly: while it
/// runs, that worker thread serves nobody else). A thrown error becomes a `500` response.
public typealias HTTPHandler = @Sendable (HTTPRequest) throws -> HTTPResponse

/// Routes requests by method and exact path to handlers.
///
/// Matching is on the percent-encoded path without the query. A path registered for other methods
/// answers `405` with an `Allow` field; an unknown path answers `404` unless a ``fallback`` is set.
/// `HEAD` is answered by the `GET` handler (without the body) unless `HEAD` has its own route.
public struct HTTPRouter: Sendable {
    private var routes: [String: [String: HTTPHandler]] = [:]  // path -> method -> handler
    /// Handles requests no route matches (any method, any path); `nil` answers `404`.
    public var fallback: HTTPHandler?

    /// Creates an empty router.
    public init() {}

    /// Routes `method` requests for `path` (exact match, for example `/metrics`) to `handler`.
    /// A later registration for the same method and path replaces the earlier one.
    public mutating func on(_ method: String, _ path: String, _ handler: @escaping HTTPHandler) {
        routes[path, default: [:]][method] = handler
    }

    /// Routes `GET` (and so `HEAD`) requests for `path` to `handler`.
    public mutating func get(_ path: String, _ handler: @escaping HTTPHandler) {
        on("GET", path, handler)
    }

    /// Routes `POST` requests for `path` to `handler`.
    public mutating func post(_ path: String, _ handler: @escaping HTTPHandler) {
        on("POST", path, handler)
    }

    /// Finds the handler for `request`; the returned response is `404`/`405` when none matches.
    /// Errors thrown by the handler propagate.
    public func respond(to request: HTTPRequest) throws -> HTTPResponse {
        guard let byMethod = routes[request.path] else {
            if let fallback { return try fallback(request) }
            return .text("not found\n", status: 404)
        }
        if let handler = byMethod[request.method] { return try handler(request) }
        if request.method == "HEAD", let handler = byMethod["GET"] { return try handler(request) }
        if let fallback { return try fallback(request) }
        var allowed = byMethod.keys.sorted()
        if allowed.contains("GET") && !allowed.contains("HEAD") { allowed.append("HEAD") }
        var response = HTTPResponse.text("method not allowed\n", status: 405)
        response.headers.add("Allow", allowed.joined(separator: ", "))
        return response
    }
}
