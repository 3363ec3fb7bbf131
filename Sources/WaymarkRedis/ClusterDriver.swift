import CoreMetrics
import Foundation
import Logging
import Synchronization

/// Counts of what a cluster connection had to do beyond sending commands (for tests and metrics).
public struct ClusterStatistics: Sendable, Equatable {
    /// `MOVED` replies followed (the slot had moved for good; the slot map was updated).
    public var moved = 0
    /// `ASK` replies followed (the slot was being migrated; the command was re-sent with `ASKING`).
    public var asked = 0
    /// Pauses for `TRYAGAIN`/`CLUSTERDOWN` replies or repeated redirections.
    public var retried = 0
    /// Times the slot map was read with `CLUSTER SLOTS`.
    public var refreshes = 0
}

/// The statistics of one cluster connection, shared between its thread and its readers.
final class ClusterStatisticsRecorder: Sendable {
    let value = Mutex(ClusterStatistics())
}

/// Routes commands over a Redis Cluster: one hiredis context per master, the slot map from
/// `CLUSTER SLOTS`, `MOVED`/`ASK`/`TRYAGAIN`/`CLUSTERDOWN` and `NOSCRIPT` handled per node.
///
/// Like ``RedisDriver`` it runs on the connection's ``OwnedThread`` only, which makes the
/// `@unchecked Sendable` sound. A pipeline is split by node, written to **every** node before any
/// reply is read (the nodes work in parallel), and the replies are put back in the caller's order.
///
/// Guarantees are those of a standalone connection per node: a command redirected by `MOVED` or
/// `ASK` was not executed by the node that redirected it, so re-sending it is safe; a transport
/// failure on any node throws (after the other nodes' replies were read) and may leave the pipeline
/// partly applied; nothing that may have been applied is re-sent.
final class ClusterDriver: @unchecked Sendable {
    let configuration: RedisConfiguration
    private let logger: Logger
    /// Driver per node, by `host:port`.
    private var nodes: [String: RedisDriver] = [:]
    /// Master endpoint per slot (`nil`: not covered in the last map).
    private var slotOwner = [String?](repeating: nil, count: ClusterSlot.count)
    /// Masters of the last map, in slot order (keyless commands go to the first).
    private var masters: [String] = []
    /// The slot map must be read again before the next call (start, redirect to an unknown node,
    /// node failure, CLUSTERDOWN).
    private var stale = true
    private let statistics: ClusterStatisticsRecorder

    /// Redirections followed for one command before the call gives up (a slot moving repeatedly).
    static let maxRedirects = 16
    /// How long a call waits out `TRYAGAIN`/`CLUSTERDOWN` before it throws `clusterUnavailable` and
    /// leaves the retry to the caller (whose loop honours shutdown).
    static let retryWindow = Duration.seconds(1)

    private let movedCounter = Counter(label: "waymark_redis_cluster_redirects_total", dimensions: [("kind", "moved")])
    private let askCounter = Counter(label: "waymark_redis_cluster_redirects_total", dimensions: [("kind", "ask")])
    private let retryCounter = Counter(label: "waymark_redis_cluster_retries_total")
    private let refreshCounter = Counter(label: "waymark_redis_cluster_slot_map_refreshes_total")

    init(configuration: RedisConfiguration, logger: Logger, statistics: ClusterStatisticsRecorder) {
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "redis.mode"] = "cluster"
        self.logger = logger
        self.statistics = statistics
    }

    func disconnect() {
        for driver in nodes.values { driver.disconnect() }
    }

    /// Reads the slot map if it is stale (used at connect time).
    func ensureConnected(for command: String) throws(RedisError) {
        if stale { try refresh() }
    }

    /// The masters of the current slot map (read first if stale).
    func masterEndpoints() throws(RedisError) -> [String] {
        if stale { try refresh() }
        return masters
    }

    /// Runs `command` on every master, for node-local commands (`DBSIZE`, `INFO`, `SCAN`, `FLUSHDB`).
    func executeOnEveryMaster(_ command: RedisCommand) throws(RedisError) -> [(endpoint: String, reply: RedisReply)] {
        if stale { try refresh() }
        var results: [(endpoint: String, reply: RedisReply)] = []
        for master in masters {
            let driver = node(master)
            do {
                try driver.ensureConnected(for: command.name)
                results.append((master, try driver.roundTrip([command], indices: 0..<1)[0]))
            } catch {
                stale = true
                throw error
            }
        }
        return results
    }

    // MARK: Commands

    private struct Item {
        let index: Int
        let node: String
        let asking: Bool
    }

    func execute(_ commands: [RedisCommand]) throws(RedisError) -> [RedisReply] {
        guard !commands.isEmpty else { return [] }
        for command in commands where command.name.isEmpty || command.argumentCount == 0 {
            throw RedisError(.invalidArgument, "empty command name", endpoint: configuration.endpoint)
        }
        if stale { try refresh() }
        var replies = [RedisReply?](repeating: nil, count: commands.count)
        var redirects = [Int](repeating: 0, count: commands.count)
        var work = try commands.indices.map { index throws(RedisError) in
            Item(index: index, node: try owner(of: commands[index]), asking: false)
        }
        let started = ContinuousClock.now
        var pause = Duration.milliseconds(20)

        while !work.isEmpty {
            let groups = Self.group(work)
            // Phase 1: write every node's share; phase 2: read every reply. A node that fails is
            // remembered and thrown once every other node's replies have been read.
            var failure: RedisError?
            var written: [(node: String, items: [Item], sent: [RedisCommand], acknowledged: Bool)] = []
            for (endpoint, items) in groups {
                var sent: [RedisCommand] = []
                sent.reserveCapacity(items.count)
                for item in items {
                    if item.asking { sent.append(RedisCommand("ASKING")) }
                    sent.append(commands[item.index])
                }
                let driver = node(endpoint)
                let wait = driver.acknowledgement(for: sent, indices: sent.indices)
                if let wait { sent.append(wait) }
                do {
                    try driver.ensureConnected(for: sent[0].name)
                    try driver.write(sent, indices: sent.indices)
                    written.append((endpoint, items, sent, wait != nil))
                } catch {
                    failure = failure ?? error
                }
            }
            var next: [Item] = []
            var wait = false
            for (endpoint, items, sent, acknowledged) in written {
                let driver = node(endpoint)
                let raw: [RedisReply]
                do { raw = try driver.read(sent, indices: sent.indices) } catch { failure = failure ?? error; continue }
                if acknowledged {
                    do { try driver.checkAcknowledged(raw[raw.count - 1], command: sent[0].name) } catch { failure = failure ?? error }
                }
                var position = 0
                var missingScripts: [RedisScript] = []
                var reloaded: [Item] = []
                for item in items {
                    if item.asking { position += 1 }  // the ASKING reply
                    let reply = raw[position]
                    position += 1
                    guard case .error(let message) = reply else { replies[item.index] = reply; continue }
                    switch Self.redirection(message, replyingHost: driver.configuration.host) {
                    case .moved(let slot, let target)?:
                        slotOwner[slot] = target
                        if !masters.contains(target) { stale = true }
                        count(\.moved, movedCounter)
                        redirects[item.index] += 1
                        next.append(Item(index: item.index, node: target, asking: false))
                    case .ask(let target)?:
                        count(\.asked, askCounter)
                        redirects[item.index] += 1
                        next.append(Item(index: item.index, node: target, asking: true))
                    case .retry?:
                        // Routed again from the map (not with ASKING): a migration may have ended meanwhile.
                        if message.hasPrefix("CLUSTERDOWN") { stale = true }
                        wait = true
                        next.append(Item(index: item.index, node: commands[item.index].slot.flatMap { slotOwner[$0] } ?? endpoint, asking: false))
                    case nil:
                        if message.hasPrefix("NOSCRIPT"), let script = commands[item.index].script {
                            if !missingScripts.contains(script) { missingScripts.append(script) }
                            reloaded.append(item)
                        } else {
                            replies[item.index] = reply
                        }
                    }
                }
                if !missingScripts.isEmpty {
                    // Scripts are cached per node: load them on this one and re-send the commands there.
                    do {
                        let failed = try driver.loadScripts(missingScripts)
                        for item in reloaded {
                            if let error = failed[commands[item.index].script!.sha1] { replies[item.index] = error } else { next.append(item) }
                        }
                    } catch { failure = failure ?? error }
                }
            }
            if let failure {
                stale = true
                throw failure
            }
            guard !next.isEmpty else { break }
            if let worst = next.first(where: { redirects[$0.index] > Self.maxRedirects }) {
                stale = true
                throw RedisError(.clusterUnavailable, "redirected more than \(Self.maxRedirects) times (slot migrating?)",
                                 endpoint: worst.node, command: commands[worst.index].name)
            }
            // Nodes disagreeing for a moment (a slot assigned on one master, not yet on another)
            // bounce a command back and forth: from its third redirect on, pause between tries.
            if next.contains(where: { redirects[$0.index] >= 2 }) { wait = true }
            if wait {
                count(\.retried, retryCounter)
                if ContinuousClock.now - started > Self.retryWindow {
                    throw RedisError(.clusterUnavailable, "cluster answered TRYAGAIN/CLUSTERDOWN or kept redirecting for \(Self.retryWindow)",
                                     endpoint: next[0].node, command: commands[next[0].index].name)
                }
                Thread.sleep(forTimeInterval: pause.seconds)
                pause = min(pause * 2, .milliseconds(200))
            }
            if stale {
                try refresh()
                // Re-route from the new map, except ASK redirections (one-off, not in the map).
                work = try next.map { item throws(RedisError) in
                    item.asking ? item : Item(index: item.index, node: try owner(of: commands[item.index]), asking: false)
                }
            } else {
                work = next
            }
        }
        return replies.map { $0 ?? .error("ERR no reply") }
    }

    /// `SCRIPT LOAD`s `scripts` on every master; returns the error reply of each that failed.
    func loadScripts(_ scripts: [RedisScript]) throws(RedisError) -> [String: RedisReply] {
        if stale { try refresh() }
        var failures: [String: RedisReply] = [:]
        for master in masters {
            let driver = node(master)
            do {
                try driver.ensureConnected(for: "SCRIPT")
                failures.merge(try driver.loadScripts(scripts)) { first, _ in first }
            } catch {
                stale = true
                throw error
            }
        }
        return failures
    }

    // MARK: Slot map

    private func owner(of command: RedisCommand) throws(RedisError) -> String {
        let slot = command.slot
        func lookup() -> String? { if let slot { slotOwner[slot] } else { masters.first } }
        if let owner = lookup() { return owner }
        // A slot the last map did not cover: read it again once, then give up on this call.
        try refresh()
        if let owner = lookup() { return owner }
        throw RedisError(.clusterUnavailable, "slot \(slot ?? -1) is not served by any master",
                         endpoint: configuration.endpoint, command: command.name)
    }

    private func node(_ endpoint: String) -> RedisDriver {
        if let driver = nodes[endpoint] { return driver }
        var nodeConfiguration = configuration
        if let (host, port) = RedisConfiguration.parseEndpoint(endpoint) {
            nodeConfiguration.host = host
            nodeConfiguration.port = port
        }
        let driver = RedisDriver(configuration: nodeConfiguration, logger: logger)
        nodes[endpoint] = driver
        return driver
    }

    /// Reads the slot map with `CLUSTER SLOTS` from the first node that answers: known masters
    /// first, then the configured seeds.
    func refresh() throws(RedisError) {
        var candidates = masters
        for seed in configuration.seedEndpoints where !candidates.contains(seed) { candidates.append(seed) }
        for endpoint in nodes.keys.sorted() where !candidates.contains(endpoint) { candidates.append(endpoint) }
        var lastError = RedisError(.connectFailed, "no cluster node to ask", endpoint: configuration.endpoint, command: "CLUSTER")
        for endpoint in candidates {
            let driver = node(endpoint)
            let reply: RedisReply
            do {
                try driver.ensureConnected(for: "CLUSTER")
                reply = try driver.roundTrip([RedisCommand("CLUSTER", "SLOTS")], indices: 0..<1)[0]
            } catch {
                lastError = error
                continue
            }
            if let message = reply.errorMessage {
                lastError = RedisError(.invalidArgument, "CLUSTER SLOTS refused (is this node in cluster mode?): \(message)",
                                       endpoint: endpoint, command: "CLUSTER")
                if message.contains("cluster support disabled") { throw lastError }
                continue
            }
            guard let ranges = reply.array, !ranges.isEmpty else {
                lastError = RedisError(.clusterUnavailable, "CLUSTER SLOTS returned no slots", endpoint: endpoint, command: "CLUSTER")
                continue
            }
            apply(ranges, askedHost: driver.configuration.host)
            stale = false
            count(\.refreshes, refreshCounter)
            logger.debug("slot map read", metadata: ["redis.masters": "\(masters)", "redis.asked": "\(endpoint)"])
            return
        }
        throw RedisError(lastError.kind, "cannot read the cluster's slot map: \(lastError.message) (tried \(candidates.count) node\(candidates.count == 1 ? "" : "s"))",
                         endpoint: lastError.endpoint, command: "CLUSTER")
    }

    /// `CLUSTER SLOTS`: `[[start, end, [host, port, id, ...], replica...], ...]`.
    private func apply(_ ranges: [RedisReply], askedHost: String) {
        var owner = [String?](repeating: nil, count: ClusterSlot.count)
        var seen: [String] = []
        for range in ranges {
            guard let fields = range.array, fields.count >= 3,
                  let start = fields[0].integer, let end = fields[1].integer,
                  let master = fields[2].array, master.count >= 2, let port = master[1].integer else { continue }
            var host = master[0].string ?? ""
            if host.isEmpty || host == "?" { host = askedHost }  // "unknown endpoint": same host as the node asked
            let endpoint = "\(host):\(port)"
            for slot in Int(max(0, start))...Int(min(Int64(ClusterSlot.count - 1), end)) { owner[slot] = endpoint }
            if !seen.contains(endpoint) { seen.append(endpoint) }
        }
        slotOwner = owner
        masters = seen
        // Drop connections to nodes that are no longer masters (a failed-over master, a removed node).
        for (endpoint, driver) in nodes where !seen.contains(endpoint) {
            driver.disconnect()
            nodes[endpoint] = nil
        }
    }

    // MARK: Replies

    enum Redirection: Equatable {
        case moved(slot: Int, endpoint: String)
        case ask(endpoint: String)
        case retry
    }

    /// Parses `MOVED 3999 127.0.0.1:6381`, `ASK 3999 127.0.0.1:6381`, `TRYAGAIN …`, `CLUSTERDOWN …`.
    /// An endpoint without a host (`:6381`) means the host of the node that replied.
    static func redirection(_ message: String, replyingHost: String) -> Redirection? {
        if message.hasPrefix("TRYAGAIN") || message.hasPrefix("CLUSTERDOWN") { return .retry }
        let isMoved = message.hasPrefix("MOVED "), isAsk = message.hasPrefix("ASK ")
        guard isMoved || isAsk else { return nil }
        let parts = message.split(separator: " ")
        guard parts.count >= 3, let slot = Int(parts[1]), (0..<ClusterSlot.count).contains(slot) else { return nil }
        var endpoint = String(parts[2])
        if endpoint.hasPrefix(":") { endpoint = replyingHost + endpoint }
        return isMoved ? .moved(slot: slot, endpoint: endpoint) : .ask(endpoint: endpoint)
    }

    private static func group(_ items: [Item]) -> [(String, [Item])] {
        var order: [String] = []
        var byNode: [String: [Item]] = [:]
        for item in items {
            if byNode[item.node] == nil { order.append(item.node) }
            byNode[item.node, default: []].append(item)
        }
        return order.map { ($0, byNode[$0]!) }
    }

    private func count(_ field: WritableKeyPath<ClusterStatistics, Int>, _ counter: Counter) {
        statistics.value.withLock { $0[keyPath: field] += 1 }
        counter.increment()
    }
}
