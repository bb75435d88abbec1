import DequeModule
import Synchronization
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
        /// The file is longer than `size`: zeros made ahead (`SegmentPreallocator`), or a direct
        /// write's padding to a whole block; cut off when the segment is finished.
        var preallocated = false
        /// Opened with O_DIRECT: written in whole blocks (`append`).
        var direct = false
    }

    /// A batch taken from `pending`, with the segment sizes it brings each segment to.
    struct Batch {
        var buffer: RecordBuffer
        var cuts: SmallList<WALState.Cut>
        var lastIndex: UInt64
        var targets: SmallList<(segment: Int, size: Int64, count: UInt64)>
        /// Bytes of `buffer` already in the files (a retry after a full disk starts here).
        var done = 0
    }

    var segment: OpenSegment
    /// Every record up to here is in the files (maybe not yet durable).
    var writtenIndex: UInt64
    /// Segment sizes written but not yet fdatasync'ed, published as sealed at the next sync.
    /// (Segments are written in order, so an update is always to the last one listed.)
    var unsynced = SmallList<(segment: Int, size: Int64, count: UInt64)>()
    /// When the last fdatasync finished (monotonic ns).
    var lastSync: UInt64
    /// A batch that hit a full disk, retried at `retryAt`.
    var held: Batch?
    /// The waiters a seal releases, gathered under the state lock and called after it (kept
    /// for the next seal: an array per seal was an allocation).
    var ready = Deque<WALState.Waiter>()
    var retryAt: UInt64 = 0
    /// The segment number whose successor was asked of the preallocator.
    var preallocationAsked = 0

    /// Direct writes go out in whole blocks of this many bytes, from memory aligned to it (a
    /// multiple of every logical block size Linux filesystems use).
    static let blockSize = 4096
    /// Direct writes: an aligned buffer whose first bytes are the records already in the last,
    /// partly filled block of the segment (`staged` says which), so a write never reads it back.
    private var staging: UnsafeMutableRawPointer?
    private var stagingCapacity = 0
    /// The segment number and block offset whose records head `staging` (nil: none).
    private var staged: (segment: Int, block: Int64)?
    /// `staging` holds only zeros from here on (so a write zeroes just what an earlier one left).
    private var stagingZeroFrom = 0

    /// `segment.direct`, readable without the I/O mutex (status and INFO must not wait behind an
    /// fdatasync, least of all a stuck one).
    let writesDirectly: Atomic<Bool>

    init(segment: OpenSegment, writtenIndex: UInt64) {
        self.segment = segment
        self.writtenIndex = writtenIndex
        self.lastSync = monotonicNanoseconds()
        self.writesDirectly = Atomic(segment.direct)
    }

    /// Close the open segment and go on in `next`.
    func replaceSegment(with next: OpenSegment) {
        close(self.segment.fd)
        self.segment = next
        self.staged = nil
        self.writesDirectly.store(next.direct, ordering: .relaxed)
    }

    /// Cut the open segment back to its records (the zeros made ahead, or a partial write).
    func cutToRecords() throws {
        try FileIO.truncate(self.segment.fd, to: self.segment.size, path: self.segment.path)
        self.segment.preallocated = false
    }

    /// Write `run` after the open segment's records and count it in `segment.size`. Returns
    /// false if the filesystem refused a direct write and this segment now writes through the
    /// page cache (the caller says so once).
    @discardableResult
    func append(_ run: UnsafeRawBufferPointer) throws -> Bool {
        guard run.count > 0 else { return true }
        if self.segment.direct {
            do {
                try self.appendDirect(run)
                return true
            } catch let error as WALError where error.errno == EINVAL {
                // O_DIRECT was accepted at open but not for this I/O (an alignment this
                // filesystem or device does not take): write through the page cache from now on.
                let flags = fcntl(self.segment.fd, F_GETFL)
                _ = fcntl(self.segment.fd, F_SETFL, flags & ~FileIO.directFlag)
                self.segment.direct = false
                self.writesDirectly.store(false, ordering: .relaxed)
                self.staged = nil
                try FileIO.pwriteAll(self.segment.fd, run, at: self.segment.size, path: self.segment.path)
                self.segment.size += Int64(run.count)
                return false
            }
        }
        try FileIO.pwriteAll(self.segment.fd, run, at: self.segment.size, path: self.segment.path)
        self.segment.size += Int64(run.count)
        return true
    }

    /// One direct write: the block the records end in is written whole again — its records,
    /// then `run`, then zeros to the block's end (zeros past the last record are the end of the
    /// log, as in a segment made ahead). The records before `run` are rewritten byte for byte,
    /// so a write torn anywhere leaves them as they were.
    private func appendDirect(_ run: UnsafeRawBufferPointer) throws {
        let block = Self.blockSize
        let size = self.segment.size
        let blockStart = size & ~Int64(block - 1)
        let head = Int(size - blockStart)
        let total = head + run.count
        let padded = (total + block - 1) & ~(block - 1)
        let valid = self.staged.map { $0.segment == self.segment.number && $0.block == blockStart } ?? false
        self.reserveStaging(padded, keeping: valid ? head : 0)
        let staging = self.staging!
        self.staged = nil  // again once the write succeeded
        if head > 0 && !valid {
            // After an open or a cut: read the block's records back once.
            let n = try FileIO.preadOnce(self.segment.fd, into: staging, count: block, at: blockStart, path: self.segment.path)
            guard n >= head else {
                throw WALError(
                    .io, "Read \(n) bytes of the last block at \(blockStart) of \(self.segment.path), which holds \(head) bytes of records.",
                    path: self.segment.path, offset: blockStart)
            }
            self.stagingZeroFrom = max(self.stagingZeroFrom, n)
        }
        (staging + head).copyMemory(from: run.baseAddress!, byteCount: run.count)
        // Zeros from the run's end to the block's: clear only what an earlier write left there
        // (all of it, also past this block, so that it is cleared once).
        if self.stagingZeroFrom > total {
            (staging + total).initializeMemory(as: UInt8.self, repeating: 0, count: self.stagingZeroFrom - total)
        }
        self.stagingZeroFrom = total
        try FileIO.pwriteBlocks(self.segment.fd, staging, count: padded, at: blockStart, block: block, path: self.segment.path)
        let end = size + Int64(run.count)
        let lastBlock = end & ~Int64(block - 1)
        let kept = Int(end - lastBlock)
        if kept > 0 && lastBlock != blockStart { staging.copyMemory(from: staging + Int(lastBlock - blockStart), byteCount: kept) }
        // (The bytes the move copied from stay where they were, before `stagingZeroFrom`.)
        self.staged = (self.segment.number, lastBlock)
        self.segment.size = end
        if blockStart + Int64(padded) > end { self.segment.preallocated = true }
    }

    /// Room for `count` bytes in `staging`, keeping its first `keeping`.
    private func reserveStaging(_ count: Int, keeping: Int) {
        guard count > self.stagingCapacity else { return }
        let capacity = max(count, 64 * 1024)
        let fresh = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: Self.blockSize)
        fresh.initializeMemory(as: UInt8.self, repeating: 0, count: capacity)
        self.stagingZeroFrom = keeping
        if let old = self.staging {
            if keeping > 0 { fresh.copyMemory(from: old, byteCount: keeping) }
            old.deallocate()
        }
        self.staging = fresh
        self.stagingCapacity = capacity
    }

    deinit {
        close(self.segment.fd)
        self.staging?.deallocate()
    }
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
