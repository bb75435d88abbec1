#if canImport(Glibc)
public import Glibc
#endif

/// A value behind a pthread mutex, with `withLock` as `Synchronization.Mutex` has it.
///
/// Used instead of `Mutex` throughout: ThreadSanitizer intercepts pthread locks but not the futex
/// calls `Mutex` makes on Linux, so under `--sanitize=thread` every access a `Mutex` protects was
/// reported as a race, and real races would have drowned in them. Uncontended cost is the same.
public final class LockedValue<Value>: @unchecked Sendable {
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>
    @usableFromInline var value: Value

    public init(_ value: Value) {
        self.value = value
        self.mutex = .allocate(capacity: 1)
        pthread_mutex_init(self.mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(self.mutex)
        self.mutex.deallocate()
    }

    @inlinable
    public func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        pthread_mutex_lock(self.mutex)
        defer { pthread_mutex_unlock(self.mutex) }
        return try body(&self.value)
    }
}
