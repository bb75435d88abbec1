#if canImport(Glibc)
import Glibc
#endif
public import Logging
import Synchronization

/// What recovery found when the log was opened.
public struct RecoveryReport: Sendable {
    /// Segments read.
    public var segments: Int = 0
    /// Records read (all of them, also those below the caller's snapshot).
    public var records: UInt64 = 0
    /// Records handed to the caller's replay closure.
    public var replayed: UInt64 = 0
    /// Bytes read.
    public var bytes: Int64 = 0
    /// Time spent, in nanoseconds.
    public var nanoseconds: UInt64 = 0
    /// The `.broken` file a torn tail was moved into, if one was cut.
    public var brokenCopy: String?
    /// Why the torn tail was cut.
    public var tornTailReason: String?
    /// Leftover segments below the log start (an interrupted retention pass) that were removed.
    public var removedLeftovers: [String] = []

    public init() {}
}

/// Recovery progress, for logs and the service manager's status line.
public struct RecoveryProgress: Sendable {
    /// Bytes read so far.
    public var bytesRead: Int64
    /// Bytes to read in all.
    public var bytesTotal: Int64
    /// Percent done, 0…100.
    public var percent: Int { self.bytesTotal == 0 ? 100 : Int(self.bytesRead * 100 / self.bytesTotal) }
}

/// The write-ahead log: segments of framed records, appended under one order, sealed by one
/// group-committing flusher thread, read back from any index.
///
/// - Important: the order in which `append` is called is the order of indexes in the log. A store
///   that applies records in memory must call `append` inside the same critical section as the
///   apply (see `KeyValueStore`), so that recovery replays in the order the writes were applied.
public final class WriteAheadLog: @unchecked Sendable {
    /// Called once the record (or commit) it was registered for is sealed, or with the error that
    /// prevents it. Runs on the flusher thread: keep it short (resume a continuation, hop to an
    /// event loop).
    public typealias SealCallback = @Sendable (WALError?) -> Void

    /// How the log was opened.
    public let configuration: WALConfiguration
    let alwaysMode: Bool
    /// What recovery found.
    public let recoveryReport: RecoveryReport
    let logger: Logger
    let metrics = WALMetrics()
    let lock: ConditionLock<WALState>
    let directoryLock: DirectoryLock
    private let metaLock = ConditionLock<MetaFile>(MetaFile())
    /// `meta.currentEpoch`, kept beside it for readers that want only the epoch: every STREAM
    /// frame says it, and a lock pair per frame is a lock pair per replicated SET at -c 1.
    private let epochMirror = Atomic<UInt64>(1)
    var flusher: DedicatedThread?
    /// Held by whoever does I/O on `writer` (the flusher, or a synchronous committer).
    let ioMutex = PlainMutex()
    /// The segment being written and the unsynced bookkeeping; see `LogWriter`.
    let writer: LogWriter
    /// Makes the next segment ahead (zero-filled) so fdatasyncs need no journal commit.
    let preallocator: SegmentPreallocator
    /// The newest written bytes, in memory for the cursors that tail the log.
    let recent = RecentWrites()
    /// The interval of `.interval` mode, changeable while running (reload); 0 in `.always` mode.
    private let intervalMilliseconds: Atomic<Int>

    /// The fsync mode in force (the interval can change while running; the mode cannot).
    public var fsyncMode: FsyncMode {
        self.alwaysMode ? .always : .interval(milliseconds: self.intervalMilliseconds.load(ordering: .relaxed))
    }

    /// Change the interval of `.interval` mode; takes effect at the flusher's next decision.
    /// Returns false (and changes nothing) in `.always` mode.
    @discardableResult
    public func setFsyncInterval(milliseconds: Int) -> Bool {
        guard !self.alwaysMode, milliseconds > 0 else { return false }
        self.intervalMilliseconds.store(milliseconds, ordering: .relaxed)
        self.lock.withLock { _ in self.lock.signal() }
        return true
    }

    /// In interval mode, pending bytes past this are written (not yet synced) early (1 MiB).
    let intervalWriteThresholdBytes = 1 << 20
    /// Bumped whenever an appender or committer hands the flusher new work, so the flusher can
    /// spin on it briefly instead of sleeping (a futex wake-up costs tens of µs on a VM).
    let workSignals = Atomic<UInt64>(0)
    // The flusher's open segment, handed over at open.

    private init(
        configuration: WALConfiguration, logger: Logger, directoryLock: DirectoryLock, state: WALState,
        meta: MetaFile, report: RecoveryReport, fd: Int32, segmentSize: Int64, preallocated: Bool, direct: Bool
    ) {
        self.configuration = configuration
        self.alwaysMode = configuration.fsyncMode == .always
        if case .interval(let ms) = configuration.fsyncMode {
            self.intervalMilliseconds = Atomic(ms)
        } else {
            self.intervalMilliseconds = Atomic(0)
        }
        self.logger = logger
        self.directoryLock = directoryLock
        self.lock = ConditionLock(state)
        self.recoveryReport = report
        let last = state.segments[state.segments.count - 1]
        self.writer = LogWriter(
            segment: LogWriter.OpenSegment(
                fd: fd, number: last.number, path: last.path, size: segmentSize, preallocated: preallocated, direct: direct),
            writtenIndex: state.sealedIndex)
        self.preallocator = SegmentPreallocator(
            directory: configuration.directory, size: configuration.segmentSizeBytes, logger: logger)
        self.metaLock.withLock { $0 = meta }
        self.epochMirror.store(meta.currentEpoch, ordering: .releasing)
    }

    /// Open (or create) the log in `configuration.directory` and recover it.
    ///
    /// Pass `directoryLock` if the caller took the directory's LOCK already (to read snapshots
    /// under it first); otherwise the log takes it.
    ///
    /// Every record is checked; each one with an index greater than `replayAfter` is passed to
    /// `replay` in index order (a store passes its snapshot's index); `upcoming`, if given, is shown
    /// the keys of the records a few ahead of the one `replay` gets, unchecked (a store prefetches
    /// their table slots). A torn final record is cut
    /// and kept in a `.broken` file; any other damage throws `.corruptRecord` with the file, the
    /// offset and the fix.
    public static func open(
        _ configuration: WALConfiguration,
        logger: Logger,
        directoryLock: DirectoryLock? = nil,
        replayAfter: UInt64 = 0,
        replay: (UInt64, RecordView) throws -> Void = { _, _ in },
        upcoming: ((UnsafeRawBufferPointer) -> Void)? = nil,
        progress: ((RecoveryProgress) -> Void)? = nil
    ) throws -> WriteAheadLog {
        let started = monotonicNanoseconds()
        let directory = configuration.directory
        try FileIO.makeDirectories(directory)
        let directoryLock = try directoryLock ?? DirectoryLock(directory: directory)
        let meta = try MetaFile.load(directory: directory) ?? MetaFile()

        var report = RecoveryReport()
        var numbers: [Int] = []
        for name in try FileIO.listDirectory(directory) {
            if let number = SegmentName.parse(name) { numbers.append(number) }
            // A segment made ahead and never used: zeros, nothing to keep.
            if SegmentPreallocator.isPreallocated(name) { try FileIO.remove(FileIO.join(directory, name)) }
        }
        numbers.sort()

        // Segments below the log start are leftovers of a retention pass that updated `meta` and
        // was interrupted before it unlinked them; `meta` is written first, so they are covered.
        while let first = numbers.first, first < meta.logStartSegment {
            let path = FileIO.join(directory, SegmentName.format(first))
            try FileIO.remove(path)
            report.removedLeftovers.append(path)
            numbers.removeFirst()
        }
        if !report.removedLeftovers.isEmpty { try FileIO.fsyncDirectory(directory) }

        if let first = numbers.first, first != meta.logStartSegment {
            throw WALError(
                .segmentGap,
                "The log in \(directory) should start at \(SegmentName.format(meta.logStartSegment)) (see its meta "
                    + "file) but the oldest segment is \(SegmentName.format(first)). Segments are missing: restore "
                    + "them from a backup, or rebuild this node from a follower or a snapshot.",
                path: FileIO.join(directory, SegmentName.format(meta.logStartSegment)))
        }
        for (previous, next) in zip(numbers, numbers.dropFirst()) where next != previous + 1 {
            throw WALError(
                .segmentGap,
                "Segment \(SegmentName.format(previous + 1)) is missing from \(directory) (found "
                    + "\(SegmentName.format(previous)) and then \(SegmentName.format(next))). Records in it are lost "
                    + "to this node: restore the file from a backup, or rebuild this node from a follower.",
                path: FileIO.join(directory, SegmentName.format(previous + 1)))
        }

        var totalBytes: Int64 = 0
        for number in numbers {
            totalBytes += FileIO.fileStatus(FileIO.join(directory, SegmentName.format(number)))?.size ?? 0
        }

        let scanner = SegmentScanner(configuration: configuration)
        let buffer = SegmentScanner.Buffer(capacity: min(max(Int(totalBytes), 64 * 1024), 8 * 1024 * 1024))
        var segments: [SegmentInfo] = []
        var index = meta.logStartIndex
        var bytesBefore: Int64 = 0
        var lastReported = monotonicNanoseconds()
        for (position, number) in numbers.enumerated() {
            let path = FileIO.join(directory, SegmentName.format(number))
            let isLast = position == numbers.count - 1
            let outcome = try scanner.scan(
                number: number, path: path, firstIndex: index, isLast: isLast, buffer: buffer,
                onRecord: { recordIndex, record in
                    if recordIndex > replayAfter {
                        try replay(recordIndex, record)
                        report.replayed += 1
                    }
                },
                onUpcoming: upcoming,
                onBytes: { done in
                    guard let progress else { return }
                    let now = monotonicNanoseconds()
                    if now - lastReported > 250_000_000 {
                        lastReported = now
                        progress(RecoveryProgress(bytesRead: bytesBefore + done, bytesTotal: totalBytes))
                    }
                })
            if let torn = outcome.tornTail {
                let broken = try TailRepair.cut(path: path, directory: directory, tail: torn)
                report.brokenCopy = broken
                report.tornTailReason = torn.reason
                logger.notice(
                    "Cut a torn write off the end of the log",
                    metadata: [
                        "wal.segment": "\(path)", "wal.offset": "\(torn.offset)", "wal.bytes": "\(torn.length)",
                        "wal.reason": "\(torn.reason)", "wal.brokenCopy": "\(broken)",
                    ])
            }
            segments.append(outcome.info)
            index += outcome.info.recordCount
            bytesBefore += outcome.info.size
            report.records += outcome.info.recordCount
            report.segments += 1
        }
        report.bytes = bytesBefore
        progress?(RecoveryProgress(bytesRead: totalBytes, bytesTotal: totalBytes))

        if replayAfter > index - 1 && index - 1 >= meta.logStartIndex {
            // The caller's snapshot is newer than the whole log: the log lost sealed records.
            throw WALError(
                .segmentGap,
                "The snapshot at index \(replayAfter) is newer than the log in \(directory), which ends at index "
                    + "\(index - 1). Segments are missing or were cut: restore them from a backup, or rebuild this "
                    + "node from a follower.",
                path: directory)
        }
        if replayAfter + 1 < meta.logStartIndex {
            throw WALError(
                .segmentGap,
                "The log in \(directory) starts at index \(meta.logStartIndex) but the newest usable snapshot ends at "
                    + "index \(replayAfter): records \(replayAfter + 1)…\(meta.logStartIndex - 1) are in neither. "
                    + "Restore the missing snapshot from a backup, or rebuild this node from a follower.",
                path: directory)
        }

        // Appends go to the last segment (the original reopened wal-0001.log, so a restart after a
        // rotation replayed records out of order). A fresh directory starts wal-<logStartSegment>.
        if segments.isEmpty {
            let number = meta.logStartSegment
            segments.append(
                SegmentInfo(number: number, path: FileIO.join(directory, SegmentName.format(number)), firstIndex: index))
        }
        let last = segments[segments.count - 1]
        if numbers.isEmpty {
            // A new log: its first segment is made as zeros now, as later ones are made ahead
            // (etcd and PostgreSQL do the same); if that fails it simply grows.
            do {
                try SegmentPreallocator.fill(path: last.path, directory: directory, size: configuration.segmentSizeBytes)
            } catch {
                try? FileIO.remove(last.path)
                logger.notice(
                    "Could not preallocate the first segment; it will grow as it is written",
                    metadata: ["wal.segment": "\(last.path)", "wal.error": "\(error)"])
            }
        }
        let (fd, direct) = try FileIO.openForAppend(last.path, direct: configuration.directIO)
        let preallocated = try FileIO.size(fd, path: last.path) > last.size
        if numbers.isEmpty {
            // A new segment's directory entry must be durable before records in it can be sealed.
            try FileIO.fsyncDirectory(directory)
        }

        report.nanoseconds = monotonicNanoseconds() - started
        let state = WALState(
            nextIndex: index, sealedIndex: index - 1, pending: RecordBuffer(), spare: RecordBuffer(),
            segments: segments)
        let wal = WriteAheadLog(
            configuration: configuration, logger: logger, directoryLock: directoryLock, state: state, meta: meta,
            report: report, fd: fd, segmentSize: last.size, preallocated: preallocated, direct: direct)
        wal.startFlusher()
        logger.info(
            "Write-ahead log opened",
            metadata: [
                "wal.directory": "\(directory)", "wal.segments": "\(report.segments)",
                "wal.records": "\(report.records)", "wal.replayed": "\(report.replayed)",
                "wal.lastIndex": "\(index - 1)", "wal.fsync": "\(configuration.fsyncMode)", "wal.directIO": "\(direct)",
                "wal.recoveryMs": "\(report.nanoseconds / 1_000_000)",
            ])
        return wal
    }

    // MARK: Appending

    /// Append one record; returns its index.
    ///
    /// In `always` mode pass `onSealed` to learn when it is durable (it is called exactly once).
    /// In `interval` mode the record is durable within one period or at the next `commit`.
    @discardableResult
    public func append(
        op: RecordOp,
        key: UnsafeRawBufferPointer,
        value: UnsafeRawBufferPointer,
        onSealed: SealCallback? = nil
    ) throws -> UInt64 {
        let dataCount = RecordEncoder.dataSize(keyCount: key.count, valueCount: value.count)
        guard dataCount <= self.configuration.maxRecordBytes else {
            throw WALError(
                .recordTooLarge,
                "A record of \(dataCount) bytes is larger than the configured maximum of "
                    + "\(self.configuration.maxRecordBytes) bytes (max-record-bytes). Split the value or raise the limit.")
        }
        return try self.appendRecord(size: RecordFormat.headerSize + dataCount, onSealed: onSealed) { pending in
            RecordEncoder.append(op: op, key: key, value: value, to: pending)
        }
    }

    /// Append one record whose `Data` (op, lengths, key, value) is already encoded — what a store
    /// transaction builds while it runs; returns its index. `data` must be a well-formed `Data`
    /// encoding (the caller built it with `RecordEncoder.writeData`).
    @discardableResult
    public func append(data: UnsafeRawBufferPointer, onSealed: SealCallback? = nil) throws -> UInt64 {
        precondition(data.count >= RecordFormat.dataHeaderSize, "a record's data holds at least its op and lengths")
        guard data.count <= self.configuration.maxRecordBytes else {
            throw WALError(
                .recordTooLarge,
                "A record of \(data.count) bytes is larger than the configured maximum of "
                    + "\(self.configuration.maxRecordBytes) bytes (max-record-bytes). Split the transaction or raise the limit.")
        }
        nonisolated(unsafe) let data = data
        return try self.appendRecord(size: RecordFormat.headerSize + data.count, onSealed: onSealed) { pending in
            RecordEncoder.append(data: data, to: pending)
        }
    }

    @inline(__always)
    private func appendRecord(size frameSize: Int, onSealed: SealCallback?, encode: (RecordBuffer) -> Void) throws -> UInt64 {
        let segmentLimit = Int64(self.configuration.segmentSizeBytes)
        let stride = Int64(self.configuration.sparseIndexStrideBytes)
        return try self.lock.withLock { (state) throws -> UInt64 in
            try Self.refuseUnlessWritable(&state)
            let index = state.nextIndex
            let wasIdle = state.pending.count == 0
            if wasIdle { state.pendingSinceNanoseconds = monotonicNanoseconds() }
            self.place(&state, frameSize: frameSize, segmentLimit: segmentLimit, stride: stride)
            encode(state.pending)
            if let onSealed { state.waiters.append(WALState.Waiter(index: index, callback: onSealed)) }
            // Wake the flusher when it has something to do: in always mode every new batch; in
            // interval mode only once a megabyte is pending (otherwise its periodic wake-up,
            // which it always sleeps with in that mode, comes soon enough).
            if self.alwaysMode && InlineSeal.deferredHere() {
                // This thread seals its appends itself (an event loop's pass).
            } else if wasIdle && self.alwaysMode {
                self.workSignals.add(1, ordering: .releasing)
                self.lock.signal()
            } else if state.pending.count >= self.intervalWriteThresholdBytes
                && state.pending.count - frameSize < self.intervalWriteThresholdBytes
            {
                self.lock.signal()
            }
            return index
        }
    }

    /// Throw why the log takes no appends now (failed, closing, disk full), if it does not.
    @inline(__always)
    private static func refuseUnlessWritable(_ state: inout WALState) throws {
        if let failure = state.failure { throw failure }
        if state.closing { throw WALError(.closed, "The write-ahead log is closed.") }
        if let full = state.diskFull {
            state.statistics.diskFullRefusals += 1
            throw full
        }
    }

    /// Account for one record of `frameSize` bytes about to be appended to `pending` at
    /// `state.nextIndex`: start the next segment if it does not fit, mark where a new segment's
    /// bytes begin, keep the sparse index, and move the sizes and the next index on.
    @inline(__always)
    private func place(_ state: inout WALState, frameSize: Int, segmentLimit: Int64, stride: Int64) {
        let index = state.nextIndex
        var last = state.segments.count - 1
        if state.segments[last].size > 0 && state.segments[last].size + Int64(frameSize) > segmentLimit {
            // Rotate: the record starts the next segment. The flusher creates the file.
            let number = state.segments[last].number + 1
            state.segments.append(
                SegmentInfo(
                    number: number, path: FileIO.join(self.configuration.directory, SegmentName.format(number)),
                    firstIndex: index))
            state.cuts.append(WALState.Cut(offset: state.pending.count, segment: number))
            last += 1
        } else if state.pending.count == 0 {
            state.cuts.append(WALState.Cut(offset: 0, segment: state.segments[last].number))
        }
        let offset = state.segments[last].size
        if state.segments[last].sparse.isEmpty
            || offset - state.segments[last].sparse[state.segments[last].sparse.count - 1].offset >= stride
        {
            state.segments[last].sparse.append(SparseEntry(index: index, offset: offset))
        }
        state.segments[last].size += Int64(frameSize)
        state.segments[last].recordCount += 1
        state.nextIndex = index + 1
        state.statistics.recordsAppended += 1
    }

    /// Append a run of frames that are already encoded and checked, the first at `firstIndex`
    /// (which must be the next index), under one lock acquisition: a follower appends each batch
    /// from its primary this way. `frameSizes` are the frames' lengths in order. Returns the last
    /// index.
    @discardableResult
    public func appendFrames(_ frames: UnsafeRawBufferPointer, frameSizes: [Int], firstIndex: UInt64) throws -> UInt64 {
        guard !frameSizes.isEmpty else { return firstIndex - 1 }
        nonisolated(unsafe) let frames = frames
        let segmentLimit = Int64(self.configuration.segmentSizeBytes)
        let stride = Int64(self.configuration.sparseIndexStrideBytes)
        return try self.lock.withLock { (state) throws -> UInt64 in
            try Self.refuseUnlessWritable(&state)
            guard firstIndex == state.nextIndex else {
                throw WALError(
                    .invalidArgument,
                    "Record \(firstIndex) cannot be appended: the log's next index is \(state.nextIndex) (records must arrive in order, without gaps).")
            }
            let wasIdle = state.pending.count == 0
            if wasIdle { state.pendingSinceNanoseconds = monotonicNanoseconds() }
            let before = state.pending.count
            var position = 0
            for size in frameSizes {
                self.place(&state, frameSize: size, segmentLimit: segmentLimit, stride: stride)
                state.pending.append(UnsafeRawBufferPointer(rebasing: frames[position..<(position + size)]))
                position += size
            }
            if self.alwaysMode && InlineSeal.deferredHere() {
                // This thread seals its appends itself (a follower's replication loop).
            } else if wasIdle && self.alwaysMode {
                self.workSignals.add(1, ordering: .releasing)
                self.lock.signal()
            } else if state.pending.count >= self.intervalWriteThresholdBytes && before < self.intervalWriteThresholdBytes {
                self.lock.signal()
            }
            return state.nextIndex - 1
        }
    }

    /// Append one record from byte arrays; returns its index.
    @discardableResult
    public func append(op: RecordOp, key: [UInt8], value: [UInt8], onSealed: SealCallback? = nil) throws
        -> UInt64
    {
        try key.withUnsafeBytes { (k) throws -> UInt64 in
            try value.withUnsafeBytes { (v) throws -> UInt64 in
                try self.append(op: op, key: k, value: v, onSealed: onSealed)
            }
        }
    }

    /// Seal everything appended so far; `onSealed` runs once it is durable (at once if it already is).
    public func commit(onSealed: @escaping SealCallback) {
        self.commit(wakingFlusher: false, onSealed: onSealed)
    }

    /// `commit(onSealed:)` for a thread that seals (or hands to the flusher) right after, as a
    /// `PassSealer`'s end-of-pass hook does: the flusher is not woken for it.
    public func commitSealedByCaller(onSealed: @escaping SealCallback) {
        self.commit(wakingFlusher: false, sealedByCaller: true, onSealed: onSealed)
    }

    func commit(wakingFlusher: Bool, sealedByCaller: Bool = false, onSealed: @escaping SealCallback) {
        let immediate: WALError?? = self.lock.withLock { state -> WALError?? in
            if let failure = state.failure { return .some(failure) }
            let target = state.nextIndex - 1
            if target <= state.sealedIndex { return .some(nil) }
            state.waiters.append(WALState.Waiter(index: target, callback: onSealed))
            state.syncRequested = true
            // Inside an event loop's pass (always mode) the loop seals at the pass's end.
            if !sealedByCaller && (wakingFlusher || !self.alwaysMode || !InlineSeal.deferredHere()) {
                self.workSignals.add(1, ordering: .releasing)
                self.lock.signal()
            }
            return .none
        }
        if let immediate { onSealed(immediate) }
    }

    /// Seal everything appended so far and wait for it.
    public func commit() async throws {
        let error: WALError? = await withUnsafeContinuation { continuation in
            self.commit { continuation.resume(returning: $0) }
        }
        if let error { throw error }
    }

    // MARK: Positions and status

    /// The index of the last appended record (0 when the log is empty).
    public var lastIndex: UInt64 { self.lock.withLock { $0.nextIndex - 1 } }
    /// The index of the last durable record.
    public var sealedIndex: UInt64 { self.lock.withLock { $0.sealedIndex } }
    /// Whether the open segment is written with direct I/O (see `WALConfiguration.directIO`).
    public var writesDirectly: Bool { self.writer.writesDirectly.load(ordering: .relaxed) }
    /// The index of the oldest record still in the segments.
    public var firstIndex: UInt64 { self.lock.withLock { $0.segments.first?.firstIndex ?? 1 } }
    /// Counters since open.
    public var statistics: WALStatistics { self.lock.withLock { $0.statistics } }
    /// The failure that stopped the log, if one did.
    public var failure: WALError? { self.lock.withLock { $0.failure } }
    /// Set while the disk is full.
    public var diskFull: WALError? { self.lock.withLock { $0.diskFull } }

    /// How long the log has been stuck, in nanoseconds: the age of a write or fdatasync still
    /// running, or of records waiting to be written (beyond what the interval mode allows).
    /// 0 when healthy. The daemon's watchdog stops pinging systemd when this grows.
    public var stallNanoseconds: UInt64 {
        let now = monotonicNanoseconds()
        let grace: UInt64
        switch self.fsyncMode {
        case .always: grace = 0
        case .interval(let ms): grace = UInt64(max(ms, 0)) * 1_000_000
        }
        return self.lock.withLock { state in
            let io = state.ioStartedNanoseconds == 0 ? 0 : now &- state.ioStartedNanoseconds
            let waiting = state.pendingSinceNanoseconds == 0 ? 0 : (now &- state.pendingSinceNanoseconds) &- min(grace, now &- state.pendingSinceNanoseconds)
            return max(io, waiting)
        }
    }

    /// Segment numbers, sizes and index ranges, oldest first.
    public var segmentSummaries: [SegmentSummary] {
        self.lock.withLock { state in
            state.segments.map {
                SegmentSummary(
                    name: SegmentName.format($0.number), firstIndex: $0.firstIndex, lastIndex: $0.lastIndex,
                    bytes: $0.size, sealedBytes: $0.sealedSize)
            }
        }
    }

    /// Call `observer` with the new sealed index after every fdatasync (on the flusher thread).
    public func addSealObserver(_ observer: @escaping @Sendable (UInt64) -> Void) {
        self.lock.withLock { $0.sealObservers.append(observer) }
    }

    /// The `meta` file as last written.
    public var meta: MetaFile { self.metaLock.withLock { $0 } }
    /// `meta.currentEpoch`, without copying the whole of `meta` (every replication frame says it).
    public var currentEpoch: UInt64 { self.epochMirror.load(ordering: .acquiring) }

    /// Change `meta` and write it atomically before returning.
    public func updateMeta(_ body: (inout MetaFile) -> Void) throws {
        try self.metaLock.withLock { (meta) throws in
            var copy = meta
            body(&copy)
            try copy.store(directory: self.configuration.directory)
            meta = copy
            self.epochMirror.store(copy.currentEpoch, ordering: .releasing)
        }
    }

    // MARK: Closing

    /// Seal everything, stop the flusher and release the directory. Appends after this throw `.closed`.
    public func close() {
        let alreadyClosing = self.lock.withLock { state -> Bool in
            let was = state.closing
            state.closing = true
            self.lock.signal()
            return was
        }
        guard !alreadyClosing else { return }
        self.flusher?.join()
        self.flusher = nil
        self.preallocator.close()
        // A clean stop leaves the segment as long as its records: only a crash leaves zeros
        // after them (a later segment copied in by a tool then finds this one whole).
        self.ioMutex.lock()
        if self.writer.segment.preallocated {
            do {
                try self.writer.cutToRecords()
                try FileIO.fdatasync(self.writer.segment.fd, path: self.writer.segment.path)
            } catch {
                self.logger.warning(
                    "Could not cut the preallocated zeros off the last segment; the next start reads them as its end",
                    metadata: ["wal.segment": "\(self.writer.segment.path)", "wal.error": "\(error)"])
            }
        }
        self.ioMutex.unlock()
        self.directoryLock.release()
    }

    deinit {
        if self.flusher != nil { self.close() }
    }
}

/// One segment, for status displays.
public struct SegmentSummary: Sendable, Equatable {
    /// `wal-0007.log`.
    public var name: String
    /// Its first record's index.
    public var firstIndex: UInt64
    /// Its last record's index (firstIndex - 1 when empty).
    public var lastIndex: UInt64
    /// Bytes appended.
    public var bytes: Int64
    /// Bytes sealed.
    public var sealedBytes: Int64
}
