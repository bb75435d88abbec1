#if canImport(Glibc)
import Glibc
#endif
import CThreadState
import Logging
import Synchronization

/// The group committer: one dedicated thread that writes what appenders queued, fdatasyncs it,
/// publishes the new sealed index and releases every waiter it covers at once. A synchronous
/// `commitBlocking()` that finds it idle does the same work on its own thread.
extension WriteAheadLog {
    private enum Step {
        case io(LogWriter.Batch?, sync: Bool)
        case spin
        case again
        case exit
    }

    func startFlusher() {
        self.flusher = DedicatedThread(name: "walrus-flusher") { [self] in self.runFlusher() }
    }

    private func runFlusher() {
        // After a batch, poll for new work this long before sleeping: the next writer usually
        // arrives within a few µs of its previous record being sealed.
        let spinNanoseconds: UInt64 = 50_000
        var lastBatchEnded: UInt64 = 0
        // Spin only while spinning pays: after a spin that found no work, the next few batches
        // sleep at once (one writer waiting for each reply, a follower fed one record per round
        // trip, would otherwise burn 50 µs per record), and every 16th tries again.
        var fruitlessSpins = 0

        while true {
            self.ioMutex.lock()
            let writer = self.writer
            let step = self.lock.withLock { state -> Step in
                if state.hasFailed {
                    self.ioMutex.unlock()
                    return .exit
                }
                let now = monotonicNanoseconds()
                if let retry = writer.held {
                    // Disk full: retry once a second, and once more when closing.
                    if state.closing || now >= writer.retryAt {
                        writer.held = nil
                        return .io(retry, sync: true)
                    }
                    self.ioMutex.unlock()
                    self.lock.wait(untilMonotonicNanoseconds: writer.retryAt)
                    return .again
                }
                let action = GroupCommit.decide(
                    GroupCommit.Inputs(
                        mode: self.fsyncMode, hasPending: state.pending.count > 0, pendingBytes: state.pending.count,
                        writeThresholdBytes: self.intervalWriteThresholdBytes,
                        hasUnsyncedWrites: writer.writtenIndex > state.sealedIndex,
                        syncRequested: state.syncRequested, closing: state.closing, nowNanoseconds: now,
                        lastSyncNanoseconds: writer.lastSync))
                switch action {
                case .write(let sync):
                    if sync { state.syncRequested = false }
                    return .io(self.takePending(&state), sync: sync)
                case .sync:
                    state.syncRequested = false
                    state.ioStartedNanoseconds = monotonicNanoseconds()
                    return .io(nil, sync: true)
                case .wait(let deadline):
                    self.ioMutex.unlock()
                    if deadline == nil && now < lastBatchEnded + spinNanoseconds && fruitlessSpins % 16 == 0 { return .spin }
                    if deadline == nil && fruitlessSpins > 0 { fruitlessSpins += 1 }
                    self.lock.wait(untilMonotonicNanoseconds: deadline)
                    return .again
                case .exit:
                    self.ioMutex.unlock()
                    return .exit
                }
            }
            switch step {
            case .exit:
                return
            case .again:
                continue
            case .spin:
                let seen = self.workSignals.load(ordering: .acquiring)
                let until = lastBatchEnded + spinNanoseconds
                while self.workSignals.load(ordering: .acquiring) == seen && monotonicNanoseconds() < until {}
                fruitlessSpins = self.workSignals.load(ordering: .acquiring) == seen ? 1 : 0
                lastBatchEnded = 0
            case .io(let batch, let sync):
                let outcome = self.performAndPublish(batch, sync: sync, writer: writer)
                self.ioMutex.unlock()
                lastBatchEnded = monotonicNanoseconds()
                switch outcome {
                case .failed: return
                case .diskFull where self.lock.withLock({ $0.closing }):
                    self.logger.error(
                        "Closing with unwritten records because the disk is full",
                        metadata: ["wal.directory": "\(self.configuration.directory)"])
                    return
                default: break
                }
            }
        }
    }

    /// Seal everything appended so far, blocking the calling thread. If the flusher is idle we
    /// do the write and fdatasync here (no thread hand-offs); otherwise we wait for its batch.
    public func commitBlocking() throws {
        if self.ioMutex.tryLock() {
            let writer = self.writer
            let taken = self.lock.withLock { state -> Result<LogWriter.Batch?, WALError>? in
                if let failure = state.failure { return .failure(failure) }
                if writer.held != nil { return nil }  // a full disk: let the flusher retry
                if state.nextIndex - 1 <= state.sealedIndex { return .success(nil) }
                state.syncRequested = false
                return .success(self.takePending(&state) ?? nil)
            }
            switch taken {
            case .failure(let error):
                self.ioMutex.unlock()
                throw error
            case .success(let batch):
                let needsSync = batch != nil || self.lock.withLock { $0.nextIndex - 1 > $0.sealedIndex }
                let outcome = needsSync ? self.performAndPublish(batch, sync: true, writer: writer) : .ok
                self.ioMutex.unlock()
                switch outcome {
                case .ok: return
                case .failed: throw self.lock.withLock { $0.failure! }
                case .diskFull: throw self.lock.withLock { $0.diskFull! }
                }
            case nil:
                self.ioMutex.unlock()
            }
        }
        let semaphore = BlockingSemaphore()
        let result = ConditionLock<WALError?>(nil)
        // (Always wakes the flusher, even inside `deferringWakes`: this thread waits for it.)
        self.commit(wakingFlusher: true) { error in
            result.withLock { $0 = error }
            semaphore.signal()
        }
        semaphore.wait()
        if let error = result.withLock({ $0 }) { throw error }
    }

    private enum Outcome {
        case ok, diskFull, failed
    }

    /// Write `batch` (if any), fdatasync if `sync`, then publish the new sealed index and release
    /// the waiters it covers. Called with `ioMutex` held.
    private func performAndPublish(_ taken: consuming LogWriter.Batch?, sync: Bool, writer: LogWriter) -> Outcome {
        var batch = consume taken
        do {
            if case .some = batch {
                try self.write(&batch!, writer: writer)
                for target in batch!.targets { writer.unsynced.replaceLast(where: { $0.segment == target.segment }, with: target) }
                writer.writtenIndex = batch!.lastIndex
            }
            var fsyncNanoseconds: UInt64 = 0
            if sync {
                let started = monotonicNanoseconds()
                try FileIO.fdatasync(writer.segment.fd, path: writer.segment.path)
                writer.lastSync = monotonicNanoseconds()
                fsyncNanoseconds = writer.lastSync - started
                if fsyncNanoseconds > UInt64(self.configuration.slowFsyncWarningMilliseconds) * 1_000_000 {
                    self.logger.warning(
                        "Slow fdatasync",
                        metadata: [
                            "wal.segment": "\(writer.segment.path)", "wal.fsyncMs": "\(fsyncNanoseconds / 1_000_000)",
                        ])
                }
            }
            let writtenIndex = writer.writtenIndex
            var sealedRecords: UInt64 = 0
            let (observers, sealed, recoveredFromFull) = self.lock.withLock {
                state -> ([@Sendable (UInt64) -> Void], UInt64, Bool) in
                if case .some = batch {
                    // The batch's buffer stays in `recent` for the cursors; one it let go of is
                    // the next pending buffer.
                    if state.spare == nil { state.spare = self.recent.takeReusable() }
                    state.statistics.writeBatches += 1
                }
                var wasFull = false
                if case .some = state.diskFull {
                    wasFull = true
                    state.diskFull = nil
                }
                state.ioStartedNanoseconds = 0
                guard sync else { return ([], state.sealedIndex, wasFull) }
                // The sizes the batches since the last fdatasync brought their segments to.
                for value in writer.unsynced {
                    if let position = state.segmentPosition(value.segment) {
                        state.segments[position].sealedSize = value.size
                        state.segments[position].sealedCount = value.count
                    }
                }
                sealedRecords = writtenIndex &- state.sealedIndex
                state.sealedIndex = writtenIndex
                state.statistics.fsyncCount += 1
                state.statistics.fsyncNanosecondsTotal += fsyncNanoseconds
                state.statistics.lastFsyncNanoseconds = fsyncNanoseconds
                state.statistics.maxFsyncNanoseconds = max(state.statistics.maxFsyncNanoseconds, fsyncNanoseconds)
                state.takeSealedWaiters(into: &writer.ready)
                return (state.sealObservers, state.sealedIndex, wasFull)
            }
            if sync {
                writer.unsynced.removeAll()
                self.metrics.fsync.recordNanoseconds(Int64(fsyncNanoseconds))
                self.metrics.groupCommit.record(Int64(sealedRecords))
            }
            if recoveredFromFull {
                self.logger.notice(
                    "Disk space is back; writes resume", metadata: ["wal.segment": "\(writer.segment.path)"])
            }
            // (Callbacks cannot seal meanwhile: this thread holds the I/O mutex.)
            while let waiter = writer.ready.popFirst() { waiter.callback(nil) }
            if sync { for observer in observers { observer(sealed) } }
            return .ok
        } catch let error as WALError where error.code == .diskFull {
            // Nothing of this batch stays in the file (write() cut it back), so it is retried as
            // is. Its callers are told now that their writes are not acknowledged.
            writer.held = batch
            writer.retryAt = monotonicNanoseconds() + 1_000_000_000
            self.lock.withLock { $0.ioStartedNanoseconds = 0 }
            let (waiters, refusal) = self.lock.withLock { state -> ([WALState.Waiter], WALError) in
                if state.diskFull == nil {
                    state.diskFull = WALError(
                        .diskFull,
                        "The disk holding \(self.configuration.directory) is full (\(error.message)) Writes are "
                            + "refused until space is freed; reads continue. Writes already applied in memory are "
                            + "held and written when space returns, but were not acknowledged.",
                        path: error.path, errno: error.errno)
                }
                // The flusher retries; make sure it is not asleep without a deadline.
                self.lock.signal()
                return (state.takeAllWaiters(), state.diskFull!)
            }
            self.logger.error(
                "Disk full: writes refused until space returns",
                metadata: ["wal.segment": "\(writer.segment.path)", "wal.error": "\(error.message)"])
            for waiter in waiters { waiter.callback(refusal) }
            return .diskFull
        } catch {
            let error = error as? WALError ?? WALError(.io, "\(error)")
            // A failed fdatasync leaves the kernel's page cache in an unknown state: retrying can
            // report success for data that never reached the disk. The log stops for good.
            let failure = WALError(
                .failed,
                "The write-ahead log stopped after a failed write or fdatasync: \(error.message) The log refuses "
                    + "all further writes because it cannot know what reached the disk. Check the disk "
                    + "(dmesg, SMART), then restart walrus: recovery reads back exactly what is durable.",
                path: error.path, errno: error.errno)
            let waiters = self.lock.withLock { state -> [WALState.Waiter] in
                state.failure = failure
                self.lock.broadcast()
                return state.takeAllWaiters()
            }
            self.logger.critical(
                "Write-ahead log failed",
                metadata: ["wal.segment": "\(writer.segment.path)", "wal.error": "\(error.message)"])
            for waiter in waiters { waiter.callback(failure) }
            return .failed
        }
    }

    /// Take everything pending (called with the lock held).
    private func takePending(_ state: inout WALState) -> LogWriter.Batch? {
        guard state.pending.count > 0 else { return nil }
        let buffer = state.pending
        state.pendingSinceNanoseconds = 0
        state.ioStartedNanoseconds = monotonicNanoseconds()
        state.pending = state.spare ?? RecordBuffer()
        state.spare = nil
        let cuts = state.cuts
        state.cuts.removeAll()
        var targets = SmallList<(segment: Int, size: Int64, count: UInt64)>()
        for cut in cuts {
            if let position = state.segmentPosition(cut.segment) {
                targets.append((cut.segment, state.segments[position].size, state.segments[position].recordCount))
            }
        }
        state.statistics.bytesWritten += UInt64(buffer.count)
        return LogWriter.Batch(buffer: buffer, cuts: cuts, lastIndex: state.nextIndex - 1, targets: targets)
    }

    /// Write a batch, moving to new segments at its cuts.
    private func write(_ batch: inout LogWriter.Batch, writer: LogWriter) throws {
        let bytes = batch.buffer.bytes
        for (position, cut) in batch.cuts.enumerated() {
            let end = position + 1 < batch.cuts.count ? batch.cuts[position + 1].offset : bytes.count
            guard end > batch.done else { continue }
            if cut.segment != writer.segment.number {
                try self.switchSegment(to: cut.segment, writer: writer)
            }
            let run = UnsafeRawBufferPointer(rebasing: bytes[max(cut.offset, batch.done)..<end])
            guard run.count > 0 else { continue }
            let offset = writer.segment.size
            do {
                if try !writer.append(run) {
                    self.logger.notice(
                        "The filesystem refused a direct write; this segment is written through the page cache",
                        metadata: ["wal.segment": "\(writer.segment.path)"])
                }
            } catch {
                // Take back a partial write so the file never holds half a record we may retry.
                try? writer.cutToRecords()
                throw error
            }
            self.recent.add(batch.buffer, start: max(cut.offset, batch.done), count: run.count, segment: cut.segment, offset: offset)
            batch.done = end
        }
        // Half way through a segment, start making the next one.
        if writer.preallocationAsked != writer.segment.number
            && writer.segment.size >= Int64(self.configuration.segmentSizeBytes / 2)
        {
            writer.preallocationAsked = writer.segment.number
            self.preallocator.prepare(number: writer.segment.number + 1)
        }
    }

    /// Seal the current segment and start the next one.
    private func switchSegment(to number: Int, writer: LogWriter) throws {
        // The old segment must be complete on disk before a later one exists: recovery treats
        // damage anywhere but in the last segment as corruption — and only the last segment may
        // end in zeros made ahead, so those are cut off first.
        if writer.segment.preallocated { try writer.cutToRecords() }
        try FileIO.fdatasync(writer.segment.fd, path: writer.segment.path)
        let path = FileIO.join(self.configuration.directory, SegmentName.format(number))
        var preallocated = false
        if let made = self.preallocator.take(number: number) {
            // link() refuses an existing name, as the emptiness check below does.
            if link(made, path) == 0 {
                preallocated = true
            } else if errno != EEXIST {
                self.logger.notice(
                    "Could not use the preallocated segment; starting an empty one",
                    metadata: ["wal.segment": "\(path)", "wal.errno": "\(errno)"])
            }
            try? FileIO.remove(made)
        }
        let (fd, direct) = try FileIO.openForAppend(path, direct: self.configuration.directIO)
        let size = preallocated ? 0 : try FileIO.size(fd, path: path)
        guard size == 0 else {
            Glibc.close(fd)
            throw WALError(
                .io,
                "Refusing to append to \(path): the log expected a new, empty segment but the file has \(size) bytes. "
                    + "Another process may be writing this directory.",
                path: path)
        }
        // The new directory entry must be durable before records in it are called sealed.
        try FileIO.fsyncDirectory(self.configuration.directory)
        writer.replaceSegment(with: LogWriter.OpenSegment(fd: fd, number: number, path: path, size: 0, preallocated: preallocated, direct: direct))
        self.logger.debug("Started a new segment", metadata: ["wal.segment": "\(path)", "wal.preallocated": "\(preallocated)"])
    }
}

/// A counting semaphore over sem_t, for blocking callers (the sem_t lives in its own allocation:
/// sem_init on a Swift property's address is not safe, the property may move).
public final class BlockingSemaphore: @unchecked Sendable {
    private let semaphore: UnsafeMutablePointer<sem_t>

    public init() {
        self.semaphore = .allocate(capacity: 1)
        sem_init(self.semaphore, 0, 0)
    }

    deinit {
        sem_destroy(self.semaphore)
        self.semaphore.deallocate()
    }

    public func signal() { sem_post(self.semaphore) }

    public func wait() {
        while sem_wait(self.semaphore) != 0 && errno == EINTR {}
    }
}

// MARK: Sealing on the appending thread (always mode)

/// An event loop that serves writes in `always` mode seals its own appends at the end of its
/// pass, as Redis fsyncs in `beforeSleep`: the requests one pass read are appended with the
/// flusher left asleep (`deferringWakes`), then one `sealInline()` writes and fdatasyncs them
/// on the loop's thread and answers their waiters there. Per batch that saves the hand-offs of
/// the flusher path — a futex wake of the flusher, its wake-up, its wake of the loop — which
/// cost more CPU than the fdatasync itself at low concurrency. The flusher stays for every
/// other appender (scripts, replication, expiry) and takes over when it is busy already.
public enum InlineSeal {
    // The thread's state (a C thread-local, `CThreadState`): 0, not deferring; 1, deferring; 3,
    // deferring and something was appended.

    /// Run `body` with this thread's appends and commits not waking the flusher; `appended`
    /// says whether any were made — then the caller must call `sealInline()` (or `commit`) on
    /// this log before it waits for anything.
    public static func deferringWakes<T>(_ body: () throws -> T) rethrows -> (result: T, appended: Bool) {
        let previous = Self.state
        Self.state = Self.deferring
        // Back to the enclosing state; an enclosing window learns of this one's appends too.
        defer { Self.state = Self.state == Self.appended && previous != Self.off ? Self.appended : previous }
        let result = try body()
        return (result, Self.state == Self.appended)
    }

    private static let off = 0, deferring = 1, appended = 3

    /// This thread's state.
    private static var state: Int {
        @inline(__always) get { walrus_inline_seal_state_get() }
        @inline(__always) set { walrus_inline_seal_state_set(newValue) }
    }

    /// Whether this thread defers its wakes now; notes that it appended.
    @inline(__always)
    static func deferredHere() -> Bool {
        let current = Self.state
        guard current != Self.off else { return false }
        if current != Self.appended { Self.state = Self.appended }
        return true
    }
}

extension WriteAheadLog {
    /// Write and fdatasync what is pending on the calling thread, releasing its waiters here —
    /// unless another thread is doing the log's I/O, which then takes what is pending (the
    /// flusher is woken to be sure of it). Never blocks for another thread's I/O.
    public func sealInline() {
        guard self.ioMutex.tryLock() else { return self.handToFlusher() }
        let writer = self.writer
        // (The batch moves into performAndPublish: each copy of it was a retain and a release
        // of every part.)
        var batch: LogWriter.Batch?
        let sealing = self.lock.withLock { state -> Bool in
            // A failed log has told its waiters; a full disk is the flusher's to retry.
            if state.hasFailed || writer.held != nil { return false }
            if state.nextIndex - 1 <= state.sealedIndex { return false }
            state.syncRequested = false
            batch = self.takePending(&state)
            return true
        }
        guard sealing else {
            self.ioMutex.unlock()
            if writer.held != nil { self.lock.withLock { _ in self.lock.signal() } }
            return
        }
        _ = self.performAndPublish(consume batch, sync: true, writer: writer)
        self.ioMutex.unlock()
    }

    /// Let the flusher seal what this thread appended while deferring its wakes (a large batch
    /// that is better written while this thread goes on receiving).
    public func handToFlusher() {
        self.lock.withLock { _ in
            self.workSignals.add(1, ordering: .releasing)
            self.lock.signal()
        }
    }
}

/// One thread's end-of-pass seal in `always` mode: what the thread appended while deferring its
/// wakes during a pass (an event loop reading its connections, a follower's link reading a
/// batch) is sealed by the thread itself once the pass is done — `enqueue` runs the seal after
/// the pass (an event loop's `execute`) — however many appends the pass made. A pass that
/// appended more than `handOverBytes` (a follower catching up) is handed to the flusher instead,
/// so the thread goes on receiving while the fdatasync runs. Not thread-safe: one per thread.
public final class PassSealer: @unchecked Sendable {
    /// `WALRUS_INLINE_SEAL=0` hands every seal to the flusher thread instead (for A/B runs).
    public static let enabled = getenv("WALRUS_INLINE_SEAL").map { String(cString: $0) } != "0"

    private let wal: WriteAheadLog
    private let handOverBytes: Int
    private let enqueue: @Sendable (@escaping @Sendable () -> Void) -> Void
    private var scheduled = false
    private var bytes = 0
    /// Run at the end of each pass, before its seal, on the sealer's thread (set once, before
    /// the first pass): where the pass's waiters register (`commitSealedByCaller`).
    public var passEnded: (() -> Void)?
    /// Asked when a pass ends, before anything is sealed: true holds the seal back (the caller
    /// expects more of the pass's writers within a moment, `LoopCommits`) until `resume()`; it
    /// is asked again then, and false seals. Set once, before the first pass.
    public var gather: (() -> Bool)?

    public init(wal: WriteAheadLog, handOverBytes: Int = .max, enqueue: @escaping @Sendable (@escaping @Sendable () -> Void) -> Void) {
        self.wal = wal
        self.handOverBytes = handOverBytes
        self.enqueue = enqueue
    }

    /// The end-of-pass task, made once: a closure made per pass was an allocation per pass
    /// (one per SET at -c 1). It holds the sealer unowned (the sealer owns it); `schedule`
    /// retains the sealer for the task by hand, so a sealer let go of with its task queued (a
    /// follower's link closing) still seals its pass. (A weak reference instead moved the
    /// sealer's reference counts to a side table: slower for every retain and release.)
    private lazy var seal: @Sendable () -> Void = { [unowned(unsafe) self] in
        // Held back: `resume` runs this again (the task's retain goes with it).
        if let gather = self.gather, gather() { return }
        defer { Unmanaged.passUnretained(self).release() }
        self.scheduled = false
        let large = self.bytes > self.handOverBytes
        self.bytes = 0
        self.passEnded?()
        if large { self.wal.handToFlusher() } else { self.wal.sealInline() }
    }

    /// Seal the pass `gather` held back, now (on the sealer's thread).
    public func resume() {
        self.seal()
    }

    /// Seal once this pass is done; `bytes` is what this append added (for the hand-over).
    public func schedule(bytes: Int = 0) {
        self.bytes += bytes
        guard !self.scheduled else { return }
        self.scheduled = true
        _ = Unmanaged.passRetained(self)
        self.enqueue(self.seal)
    }
}
