import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A child server process started by the local stack and stopped by its PID.
///
/// Every child is recorded in a registry directory together with the PID of the process that
/// started it. If that owner dies without stopping its children (a crashed test run, `kill -9`),
/// the next ``LocalStack`` start — or `waymark-bench reap` — kills the orphans, so nothing is left behind.
public final class ManagedProcess: @unchecked Sendable {
    /// The executable's path.
    public let executable: String
    /// Command-line arguments (without the executable).
    public let arguments: [String]
    /// Where stdout and stderr go.
    public let logFile: URL
    private let lock = NSLock()
    private var child: pid_t?  // guarded by lock

    /// Describes a child process; ``start()`` launches it.
    public init(executable: String, arguments: [String], logFile: URL) {
        self.executable = executable
        self.arguments = arguments
        self.logFile = logFile
    }

    /// The running child's PID, or `nil` when stopped.
    public var pid: pid_t? { lock.withLock { child } }

    /// Starts the child with `posix_spawn`; stdout and stderr are appended to ``logFile``.
    public func start() throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logFile.path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Own process group: a Ctrl-C aimed at the CLI does not kill servers before it can stop them.
        // Threads of the Swift runtime block signals and the mask survives exec: reset it, or the
        // server ignores SIGTERM. Also restore default dispositions (SIGPIPE is ignored here).
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGPIPE, SIGHUP, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attributes, 0)
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard rc == 0 else {
            throw LocalStackError.launchFailed(executable: executable, reason: String(cString: strerror(rc)))
        }
        lock.withLock { child = pid }
        OrphanRegistry.record(child: pid, executable: executable)
    }

    /// `true` while the child runs (reaps it if it has exited).
    public var isRunning: Bool {
        lock.withLock {
            guard let pid = child else { return false }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                OrphanRegistry.forget(child: pid)
                child = nil
                return false
            }
            return true
        }
    }

    /// Sends `signal` to the child (for example `SIGSTOP`/`SIGCONT` in fault-injection tests).
    public func send(signal: Int32) {
        if let pid { kill(pid, signal) }
    }

    /// Stops the child: SIGTERM, then SIGKILL after `grace`; returns once it has exited.
    public func stop(grace: Duration = .seconds(5)) {
        guard let pid else { return }
        kill(pid, SIGCONT)  // a stopped process cannot act on SIGTERM
        kill(pid, SIGTERM)
        let deadline = ContinuousClock.now + grace
        while isRunning {
            if ContinuousClock.now >= deadline {
                killAndReap(pid)
                return
            }
            usleep(5_000)
        }
    }

    /// Kills the child with SIGKILL (crash simulation) and waits for it.
    public func kill9() {
        if let pid { killAndReap(pid) }
    }

    /// SIGKILL, then wait for the child and forget it.
    private func killAndReap(_ pid: pid_t) {
        kill(pid, SIGKILL)
        lock.withLock {
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            child = nil
        }
        OrphanRegistry.forget(child: pid)
    }

    /// The last `bytes` of the log, for error messages.
    public func logTail(bytes: Int = 2_000) -> String {
        guard let data = try? Data(contentsOf: logFile) else { return "" }
        return String(decoding: data.suffix(bytes), as: UTF8.self)
    }
}

/// Remembers which children this process started so that orphans of dead owners can be reaped.
enum OrphanRegistry {
    static var directory: URL {
        URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("waymark-stack-registry")
    }

    static func record(child: pid_t, executable: String) {
        try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let entry = "\(getpid())\n\(URL(fileURLWithPath: executable).lastPathComponent)\n"
        try? entry.write(to: directory.appendingPathComponent("\(child)"), atomically: true, encoding: .utf8)
    }

    static func forget(child: pid_t) {
        try? FileManager.default.removeItem(at: directory.appendingPathComponent("\(child)"))
    }

    /// Kills recorded children whose owner is no longer alive. Returns the PIDs it killed.
    @discardableResult
    static func reap() -> [pid_t] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory.path) else { return [] }
        var killed: [pid_t] = []
        for name in names {
            guard let child = pid_t(name) else { continue }
            let file = directory.appendingPathComponent(name)
            guard let text = try? String(contentsOf: file, encoding: .utf8) else { continue }
            let lines = text.split(separator: "\n")
            guard lines.count >= 2, let owner = pid_t(lines[0]) else { continue }
            if isAlive(owner) && owner != getpid() { continue }
            if owner == getpid() { continue }  // our own children are stopped by their owners
            // Only kill the PID if it still runs the recorded executable (PIDs get reused).
            if isAlive(child), commandLine(of: child).contains(String(lines[1])) {
                kill(child, SIGCONT)
                kill(child, SIGKILL)
                killed.append(child)
            }
            try? FileManager.default.removeItem(at: file)
        }
        return killed
    }

    private static func isAlive(_ pid: pid_t) -> Bool {
        kill(pid, 0) == 0 || errno == EPERM
    }

    private static func commandLine(of pid: pid_t) -> String {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return "" }
        return String(decoding: data, as: UTF8.self)
    }
}
