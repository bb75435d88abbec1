import DequeModule
/// Everything the appenders and the flusher share, guarded by the log's `ConditionLock`.
struct WALState {
    /// A caller waiting for its record to be sealed.
    struct Waiter {
        var index: UInt64
        var callback: WriteAheadLog.SealCallback
    }

    /// Where in `pending` a segment's bytes start.
    struct Cut {
        var offset: Int
        var segment: Int
    }

    /// The index the next append gets.
    var nextIndex: UInt64
    /// Every record up to here is durable.
    var sealedIndex: UInt64
    /// Appended bytes the flusher has not taken yet.
    var pending: RecordBuffer
    /// The flusher's returned buffer, reused to avoid allocations.
    var spare: RecordBuffer?
    /// Which segment each run of `pending` belongs to (first entry at offset 0).
    var cuts = SmallList<Cut>()
    /// What is known of each segment, oldest first; numbers are consecutive.
    var segments: [SegmentInfo]
    /// Callers waiting for a seal, in index order.
    var waiters = Deque<Waiter>()
    /// A commit() asked for an fdatasync before the interval is up.
    var syncRequested = false
    /// Set once a write or fdatasync failed for good: every later call throws it.
    var failure: WALError?
    /// Set while the disk is full: appends are refused, the flusher retries.
    var diskFull: WALError?
    /// close() was called.
    var closing = false
    /// When the running write/fdatasync started (0: none running), for the watchdog.
    var ioStartedNanoseconds: UInt64 = 0
    /// When the oldest record still waiting in `pending` was appended (0: nothing pending).
    var pendingSinceNanoseconds: UInt64 = 0
    /// Callbacks told the new sealed index after each fdatasync.
    var sealObservers: [@Sendable (UInt64) -> Void] = []
    /// Counters for status and benchmarks.
    var statistics = WALStatistics()

    /// Move the waiters whose records are sealed into `ready`.
    mutating func takeSealedWaiters(into ready: inout Deque<Waiter>) {
        while let first = self.waiters.first, first.index <= self.sealedIndex { ready.append(self.waiters.removeFirst()) }
    }

    /// Whether the log has failed for good (a test of the case, not a copy of the error).
    var hasFailed: Bool {
        if case .some = self.failure { return true }
        return false
    }

    /// Remove and return every waiter (the log failed).
    mutating func takeAllWaiters() -> [Waiter] {
        defer { self.waiters.removeAll(keepingCapacity: true) }
        return Array(self.waiters)
    }

    /// The position in `segments` of segment `number`.
    func segmentPosition(_ number: Int) -> Int? {
        guard let first = self.segments.first?.number else { return nil }
        let position = number - first
        return position >= 0 && position < self.segments.count ? position : nil
    }
}

/// Counters the log keeps for `status`, INFO and benchmarks.
public struct WALStatistics: Sendable, Equatable {
    /// fdatasync calls made by the group committer.
    public var fsyncCount: UInt64 = 0
    /// Their total duration.
    public var fsyncNanosecondsTotal: UInt64 = 0
    /// The last one's duration.
    public var lastFsyncNanoseconds: UInt64 = 0
    /// The slowest one.
    public var maxFsyncNanoseconds: UInt64 = 0
    /// Bytes written to segments since open.
    public var bytesWritten: UInt64 = 0
    /// Records appended since open.
    public var recordsAppended: UInt64 = 0
    /// write(2) batches issued by the group committer.
    public var writeBatches: UInt64 = 0
    /// Appends refused because the disk was full.
    public var diskFullRefusals: UInt64 = 0
    public init() {}
}
