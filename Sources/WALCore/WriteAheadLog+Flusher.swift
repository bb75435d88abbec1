#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging

/// The group committer: one dedicated thread that writes what appenders queued, fdatasyncs it,
/// publishes the new sealed index and releases every waiter it covers at once.
extension WriteAheadLog {
    /// A batch taken from `pending`, with the segment sizes it brings each segment to.
    private struct Batch {
        var buffer: RecordBuffer
        var cuts: [WALState.Cut]
        var lastIndex: UInt64
        var targets: [(segment: Int, size: Int64, count: UInt64)]
        /// Bytes of `buffer` already in the files (a retry after a full disk starts here).
        var done = 0
    }

    /// The flusher's own view of the segment it writes to.
    private struct OpenSegment {
        var fd: Int32
        var number: Int
        var path: String
        var size: Int64
    }

    func startFlusher() {
        let lastSegment = self.lock.withLock { $0.segments[$0.segments.count - 1] }
        let open = OpenSegment(
            fd: self.initialFD, number: lastSegment.number, path: lastSegment.path, size: self.initialSegmentSize)
        self.flusher = DedicatedThread(name: "walrus-flusher") { [self] in self.runFlusher(open) }
    }

    private func runFlusher(_ initial: OpenSegment) {
        var segment = initial
        var writtenIndex = self.lock.withLock { $0.sealedIndex }
        // Segment sizes written but not yet fdatasync'ed, published as sealed at the next sync.
        var unsynced: [Int: (size: Int64, count: UInt64)] = [:]
        var lastSync = monotonicNanoseconds()
        var held: Batch? = nil  // a batch that hit a full disk and waits for space
        var retryAt: UInt64 = 0
        let mode = self.configuration.fsyncMode

        defer { Glibc.close(segment.fd) }
        while true {
            var batch: Batch? = nil
            var doSync = false
            var exit = false
            self.lock.withLock { state in
                while true {
                    if state.failure != nil {
                        exit = true
                        return
                    }
                    let now = monotonicNanoseconds()
                    if let retry = held {
                        // Disk full: retry once a second, and once more when closing.
                        if state.closing || now >= retryAt {
                            batch = retry
                            held = nil
                            doSync = true
                            return
                        }
                        self.lock.wait(untilMonotonicNanoseconds: retryAt)
                        continue
                    }
                    let action = GroupCommit.decide(
                        GroupCommit.Inputs(
                            mode: mode, hasPending: state.pending.count > 0, hasUnsyncedWrites: writtenIndex > state.sealedIndex,
                            syncRequested: state.syncRequested, closing: state.closing, nowNanoseconds: now,
                            lastSyncNanoseconds: lastSync))
                    switch action {
                    case .write(let sync):
                        batch = self.takePending(&state)
                        doSync = sync
                        if sync { state.syncRequested = false }
                        return
                    case .sync:
                        doSync = true
                        state.syncRequested = false
                        return
                    case .wait(let deadline):
                        self.lock.wait(untilMonotonicNanoseconds: deadline)
                    case .exit:
                        exit = true
                        return
                    }
                }
            }
            if exit { return }

            do {
                if var current = batch {
                    defer { batch = current }
                    try self.write(&current, to: &segment)
                    for target in current.targets { unsynced[target.segment] = (target.size, target.count) }
                    writtenIndex = current.lastIndex
                }
                var fsyncNanoseconds: UInt64 = 0
                if doSync {
                    let started = monotonicNanoseconds()
                    try FileIO.fdatasync(segment.fd, path: segment.path)
                    lastSync = monotonicNanoseconds()
                    fsyncNanoseconds = lastSync - started
                    if fsyncNanoseconds > UInt64(self.configuration.slowFsyncWarningMilliseconds) * 1_000_000 {
                        self.logger.warning(
                            "Slow fdatasync",
                            metadata: ["wal.segment": "\(segment.path)", "wal.fsyncMs": "\(fsyncNanoseconds / 1_000_000)"])
                    }
                }
                let published = unsynced
                if doSync { unsynced.removeAll(keepingCapacity: true) }
                let (ready, observers, sealed, recoveredFromFull) = self.lock.withLock {
                    state -> ([WALState.Waiter], [@Sendable (UInt64) -> Void], UInt64, Bool) in
                    if let current = batch {
                        current.buffer.removeAll()
                        if state.spare == nil { state.spare = current.buffer }
                        state.statistics.writeBatches += 1
                    }
                    let wasFull = state.diskFull != nil
                    state.diskFull = nil
                    guard doSync else { return ([], [], state.sealedIndex, wasFull) }
                    for (number, value) in published {
                        if let position = state.segmentPosition(number) {
                            state.segments[position].sealedSize = value.size
                            state.segments[position].sealedCount = value.count
                        }
                    }
                    state.sealedIndex = writtenIndex
                    state.statistics.fsyncCount += 1
                    state.statistics.fsyncNanosecondsTotal += fsyncNanoseconds
                    state.statistics.lastFsyncNanoseconds = fsyncNanoseconds
                    state.statistics.maxFsyncNanoseconds = max(state.statistics.maxFsyncNanoseconds, fsyncNanoseconds)
                    return (state.takeSealedWaiters(), state.sealObservers, state.sealedIndex, wasFull)
                }
                if recoveredFromFull {
                    self.logger.notice("Disk space is back; writes resume", metadata: ["wal.segment": "\(segment.path)"])
                }
                for waiter in ready { waiter.callback(nil) }
                if doSync { for observer in observers { observer(sealed) } }
            } catch let error as WALError where error.code == .diskFull {
                // Nothing of this batch stays in the file (write() cut it back), so it can be retried
                // as is. Its callers are told now that their writes are not acknowledged.
                held = batch
                retryAt = monotonicNanoseconds() + 1_000_000_000
                let waiters = self.lock.withLock { state -> [WALState.Waiter] in
                    if state.diskFull == nil {
                        state.diskFull = WALError(
                            .diskFull,
                            "The disk holding \(self.configuration.directory) is full (\(error.message)). Writes are "
                                + "refused until space is freed; reads continue. Writes already applied in memory are "
                                + "held and written when space returns, but were not acknowledged.",
                            path: error.path, errno: error.errno)
                    }
                    return state.takeAllWaiters()
                }
                if !waiters.isEmpty || held != nil {
                    self.logger.error(
                        "Disk full: writes refused until space returns",
                        metadata: ["wal.segment": "\(segment.path)", "wal.error": "\(error.message)"])
                }
                let refusal = self.lock.withLock { $0.diskFull! }
                for waiter in waiters { waiter.callback(refusal) }
                if self.lock.withLock({ $0.closing }) && held != nil {
                    // Closing with no space: the held records were never acknowledged; say so and stop.
                    self.logger.error(
                        "Closing with unwritten records because the disk is full",
                        metadata: ["wal.lastIndex": "\(held!.lastIndex)"])
                    return
                }
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
                    return state.takeAllWaiters()
                }
                self.logger.critical(
                    "Write-ahead log failed", metadata: ["wal.segment": "\(segment.path)", "wal.error": "\(error.message)"])
                for waiter in waiters { waiter.callback(failure) }
                return
            }
        }
    }

    /// Take everything pending (called with the lock held).
    private func takePending(_ state: inout WALState) -> Batch? {
        guard state.pending.count > 0 else { return nil }
        let buffer = state.pending
        state.pending = state.spare ?? RecordBuffer()
        state.spare = nil
        let cuts = state.cuts
        state.cuts.removeAll(keepingCapacity: true)
        var targets: [(segment: Int, size: Int64, count: UInt64)] = []
        for cut in cuts {
            if let position = state.segmentPosition(cut.segment) {
                targets.append((cut.segment, state.segments[position].size, state.segments[position].recordCount))
            }
        }
        state.statistics.bytesWritten += UInt64(buffer.count)
        return Batch(buffer: buffer, cuts: cuts, lastIndex: state.nextIndex - 1, targets: targets)
    }

    /// Write a batch, moving to new segments at its cuts.
    private func write(_ batch: inout Batch, to segment: inout OpenSegment) throws {
        let bytes = batch.buffer.bytes
        for (position, cut) in batch.cuts.enumerated() {
            let end = position + 1 < batch.cuts.count ? batch.cuts[position + 1].offset : bytes.count
            guard end > batch.done else { continue }
            if cut.segment != segment.number {
                try self.switchSegment(to: cut.segment, from: &segment)
            }
            let run = UnsafeRawBufferPointer(rebasing: bytes[max(cut.offset, batch.done)..<end])
            guard run.count > 0 else { continue }
            do {
                try FileIO.pwriteAll(segment.fd, run, at: segment.size, path: segment.path)
            } catch {
                // Take back a partial write so the file never holds half a record we may retry.
                try? FileIO.truncate(segment.fd, to: segment.size, path: segment.path)
                throw error
            }
            segment.size += Int64(run.count)
            batch.done = end
        }
    }

    /// Seal the current segment and start the next one.
    private func switchSegment(to number: Int, from segment: inout OpenSegment) throws {
        // The old segment must be complete on disk before a later one exists: recovery treats
        // damage anywhere but in the last segment as corruption.
        try FileIO.fdatasync(segment.fd, path: segment.path)
        let path = FileIO.join(self.configuration.directory, SegmentName.format(number))
        let fd = try FileIO.open(path, O_WRONLY | O_CREAT, mode: 0o644)
        let size = try FileIO.size(fd, path: path)
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
        Glibc.close(segment.fd)
        segment = OpenSegment(fd: fd, number: number, path: path, size: 0)
        self.logger.debug("Started a new segment", metadata: ["wal.segment": "\(path)"])
    }
}
