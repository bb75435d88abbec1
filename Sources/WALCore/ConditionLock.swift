#if canImport(Glibc)
import Glibc
#endif

/// A mutex and a condition variable guarding a value: the one place the group committer sleeps.
///
/// `Synchronization.Mutex` has no condition variable, and the flusher must sleep until appenders
/// hand it work, so this wraps pthreads directly (as swift-nio's `ConditionLock` does).
public final class ConditionLock<State>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var state: State

    public init(_ state: State) {
        self.state = state
        self.mutex = .allocate(capacity: 1)
        self.condition = .allocate(capacity: 1)
        pthread_mutex_init(self.mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        // Timed waits measure monotonic time, so a clock change cannot stall the flusher.
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(self.condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(self.condition)
        pthread_mutex_destroy(self.mutex)
        self.mutex.deallocate()
        self.condition.deallocate()
    }

    /// Run `body` with the lock held.
    @inline(__always)
    public func withLock<R, E: Error>(_ body: (inout State) throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(self.mutex)
        defer { pthread_mutex_unlock(self.mutex) }
        return try body(&self.state)
    }

    /// Wake the waiter (there is one: the flusher).
    @inline(__always)
    public func signal() { pthread_cond_signal(self.condition) }

    /// Wake every waiter.
    public func broadcast() { pthread_cond_broadcast(self.condition) }

    /// Take the lock and sleep while `keepWaiting` holds for the state, or until `deadline`
    /// (CLOCK_MONOTONIC) passes; the state is read afresh after every wake-up.
    ///
    /// Prefer this to looping on `wait` inside `withLock`: there the state is an `inout`
    /// argument, which the compiler may keep in a register across the wait (it is exclusively
    /// ours for the call), so a loop can miss what another thread wrote.
    public func wait(while keepWaiting: (State) -> Bool, untilMonotonicNanoseconds deadline: UInt64?) {
        pthread_mutex_lock(self.mutex)
        defer { pthread_mutex_unlock(self.mutex) }
        while keepWaiting(self.state) {
            if let deadline {
                if monotonicNanoseconds() >= deadline { return }
                var time = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
                pthread_cond_timedwait(self.condition, self.mutex, &time)
            } else {
                pthread_cond_wait(self.condition, self.mutex)
            }
        }
    }

    /// With the lock held, sleep until woken or until `deadlineNanoseconds` (CLOCK_MONOTONIC) passes.
    /// Must be called from inside `withLock`, which must then return (not loop on the state).
    public func wait(untilMonotonicNanoseconds deadline: UInt64?) {
        if let deadline {
            var time = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
            pthread_cond_timedwait(self.condition, self.mutex, &time)
        } else {
            pthread_cond_wait(self.condition, self.mutex)
        }
    }
}

/// Monotonic nanoseconds, the clock every timing decision of the log uses.
@inline(__always)
public func monotonicNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

/// The wall clock in milliseconds since the Unix epoch: the unit of every deadline (EXPIRE, SET PX).
@inline(__always)
public func wallClockMilliseconds() -> Int64 {
    var time = timespec()
    clock_gettime(CLOCK_REALTIME, &time)
    return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
}

/// A dedicated OS thread (the flusher blocks in fdatasync and must not hold a cooperative-pool thread).
public final class DedicatedThread {
    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    private var thread = pthread_t()

    /// Start `body` on a new thread. A `detached` thread is never joined: its resources go back
    /// when it ends (per-connection threads; otherwise each would leak until the process exits).
    public init(name: String, detached: Bool = false, _ body: @escaping () -> Void) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        let result = pthread_create(&self.thread, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        precondition(result == 0, "pthread_create failed: \(result)")
        if detached { pthread_detach(self.thread) }
    }

    /// Wait for the thread to finish.
    public func join() { pthread_join(self.thread, nil) }
}
