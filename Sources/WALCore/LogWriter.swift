#if canImport(Glibc)
import Glibc
#endif

/// The I/O side of the log: the open segment, what was written but not yet fdatasync'ed, and a
/// batch held back by a full disk.
///
/// - Important: only the holder of `WriteAheadLog.ioMutex` touches it — normally the flusher
///   thread, or a synchronous committer that found the flusher idle and does the write itself
///   (leader/follower group commit: it saves two thread wake-ups, tens of µs each on a VM).
final class LogWriter: @unchecked Sendable {
    /// The segment appends go to.
    struct OpenSegment {
        var fd: Int32
        var number: Int
        var path: String
        var size: Int64
        /// The file is longer than `size`: zeros made ahead (`SegmentPreallocator`), cut off
        /// when the segment is finished.
        var preallocated = false
    }

    /// A batch taken from `pending`, with the segment sizes it brings each segment to.
    struct Batch {
        var buffer: RecordBuffer
        var cuts: [WALState.Cut]
        var lastIndex: UInt64
        var targets: [(segment: Int, size: Int64, count: UInt64)]
        /// Bytes of `buffer` already in the files (a retry after a full disk starts here).
        var done = 0
    }

    var segment: OpenSegment
    /// Every record up to here is in the files (maybe not yet durable).
    var writtenIndex: UInt64
    /// Segment sizes written but not yet fdatasync'ed, published as sealed at the next sync.
    var unsynced: [Int: (size: Int64, count: UInt64)] = [:]
    /// When the last fdatasync finished (monotonic ns).
    var lastSync: UInt64
    /// A batch that hit a full disk, retried at `retryAt`.
    var held: Batch?
    var retryAt: UInt64 = 0
    /// The segment number whose successor was asked of the preallocator.
    var preallocationAsked = 0

    init(segment: OpenSegment, writtenIndex: UInt64) {
        self.segment = segment
        self.writtenIndex = writtenIndex
        self.lastSync = monotonicNanoseconds()
    }

    /// Cut the open segment back to its records (the zeros made ahead, or a partial write).
    func cutToRecords() throws {
        try FileIO.truncate(self.segment.fd, to: self.segment.size, path: self.segment.path)
        self.segment.preallocated = false
    }

    deinit { close(self.segment.fd) }
}

/// A plain mutex with `tryLock` (Synchronization's Mutex has none).
final class PlainMutex: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        self.mutex = .allocate(capacity: 1)
        pthread_mutex_init(self.mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(self.mutex)
        self.mutex.deallocate()
    }

    func lock() { pthread_mutex_lock(self.mutex) }
    func tryLock() -> Bool { pthread_mutex_trylock(self.mutex) == 0 }
    func unlock() { pthread_mutex_unlock(self.mutex) }
}
