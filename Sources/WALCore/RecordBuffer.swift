#if canImport(Glibc)
import Glibc
#endif

/// A growable byte buffer that records are framed into, with no copy-on-write checks.
///
/// The group-commit path appends every record here under the log's lock, so it is a plain
/// malloc'd region: appending is a bounds check, a memcpy and, rarely, a realloc.
/// - Important: not thread-safe; the owner serialises access.
public final class RecordBuffer: @unchecked Sendable {
    // The owner serialises access, so the per-access dynamic exclusivity checks that class
    // properties get (a runtime call each, several per append) are turned off here.
    /// Start of the bytes.
    @exclusivity(unchecked) public private(set) var base: UnsafeMutableRawPointer
    /// Bytes in use.
    @exclusivity(unchecked) public private(set) var count: Int = 0
    /// Bytes allocated.
    @exclusivity(unchecked) public private(set) var capacity: Int

    /// A buffer with room for `capacity` bytes before it grows.
    public init(capacity: Int = 64 * 1024) {
        self.capacity = max(capacity, 64)
        self.base = UnsafeMutableRawPointer.allocate(byteCount: self.capacity, alignment: 16)
    }

    deinit { self.base.deallocate() }

    /// The bytes in use.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: self.base, count: self.count) }

    /// Forget the contents, keeping the allocation unless it grew past `maxRetainedCapacity`.
    public func removeAll(maxRetainedCapacity: Int = 8 << 20) {
        self.count = 0
        if self.capacity > maxRetainedCapacity {
            self.base.deallocate()
            self.capacity = 64 * 1024
            self.base = UnsafeMutableRawPointer.allocate(byteCount: self.capacity, alignment: 16)
        }
    }

    /// Make room for `extra` more bytes and return where they start.
    @inline(__always)
    public func reserve(_ extra: Int) -> UnsafeMutableRawPointer {
        let needed = self.count + extra
        if needed > self.capacity { self.grow(to: needed) }
        return self.base + self.count
    }

    /// Mark `extra` bytes written after a `reserve`.
    @inline(__always)
    public func commit(_ extra: Int) { self.count += extra }

    /// Append raw bytes.
    public func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        let destination = self.reserve(bytes.count)
        destination.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        self.count += bytes.count
    }

    /// Drop the last bytes from `newCount` on.
    public func truncate(to newCount: Int) {
        precondition(newCount >= 0 && newCount <= self.count, "truncate past the end of a RecordBuffer")
        self.count = newCount
    }

    private func grow(to needed: Int) {
        var newCapacity = self.capacity
        while newCapacity < needed { newCapacity *= 2 }
        let newBase = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
        newBase.copyMemory(from: self.base, byteCount: self.count)
        self.base.deallocate()
        self.base = newBase
        self.capacity = newCapacity
    }
}
