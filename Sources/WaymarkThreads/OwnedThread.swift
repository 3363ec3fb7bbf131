import Foundation

/// A thread that Waymark owns, with a FIFO queue of jobs.
///
/// librdkafka and hiredis calls block (network I/O, `poll` with a timeout, `flush`). Running them
/// on Swift's cooperative pool would starve every other task, so each client owns one or more
/// of these threads and hops to them with ``run(_:)``. Jobs run one at a time, in submission order,
/// which also serialises access to C handles that are not thread-safe (a hiredis context).
public final class OwnedThread: @unchecked Sendable {
    // All mutable state is guarded by `condition`.
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []
    private var head = 0
    private var stopping = false
    private var finished = false
    private var thread: Thread?
    /// The thread's name, as shown by debuggers and `top -H`.
    public let name: String

    /// Starts a new thread named `name`.
    public init(name: String) {
        self.name = name
        let thread = Thread { [unowned self] in self.loop() }
        thread.name = name
        thread.stackSize = 1 << 20
        self.thread = thread
        thread.start()
    }

    deinit {
        shutdown()
    }

    /// Enqueues `job` to run on this thread. Returns `false` if the thread has been shut down.
    @discardableResult
    public func submit(_ job: @escaping @Sendable () -> Void) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !stopping else { return false }
        jobs.append(job)
        condition.signal()
        return true
    }

    /// Runs `body` on this thread and returns its result to the awaiting task.
    ///
    /// The calling task suspends (it does not block a cooperative thread) until `body` finishes.
    /// - Throws: whatever `body` throws, or ``OwnedThreadError/shutDown`` if the thread has stopped.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let accepted = submit {
                do { continuation.resume(returning: try body()) } catch { continuation.resume(throwing: error) }
            }
            if !accepted { continuation.resume(throwing: OwnedThreadError.shutDown(name: name)) }
        }
    }

    /// `true` when called from this thread.
    public var isCurrent: Bool { Thread.current === thread }

    /// Stops accepting jobs, lets queued jobs finish, and waits for the thread to exit.
    /// Safe to call more than once; must not be called from the thread itself.
    public func shutdown() {
        condition.lock()
        stopping = true
        condition.broadcast()
        if Thread.current === thread { condition.unlock(); return }
        while !finished { condition.wait() }
        condition.unlock()
    }

    private static let done: @Sendable () -> Void = {}

    private func loop() {
        while true {
            condition.lock()
            while head == jobs.count && !stopping { condition.wait() }
            if head == jobs.count {
                finished = true
                condition.broadcast()
                condition.unlock()
                return
            }
            let job = jobs[head]
            jobs[head] = Self.done  // drop the closure now: it may capture a large batch
            head += 1
            if head == jobs.count {
                jobs.removeAll(keepingCapacity: true)
                head = 0
            } else if head > 1024 && head * 2 > jobs.count {
                jobs.removeFirst(head)
                head = 0
            }
            condition.unlock()
            job()
        }
    }
}

/// Errors from ``OwnedThread``.
public enum OwnedThreadError: Error, CustomStringConvertible {
    /// The thread was shut down before the job could be queued.
    case shutDown(name: String)

    public var description: String {
        switch self {
        case .shutDown(let name): "thread '\(name)' has been shut down"
        }
    }
}
