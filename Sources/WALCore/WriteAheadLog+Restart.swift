#if canImport(Glibc)
import Glibc
#endif

extension WriteAheadLog {
    /// Drop every segment and continue the log at `index + 1`: a follower that installed a
    /// snapshot at `index` (which must be durable before this is called) starts its own log
    /// there, as the primary's did not reach back far enough to stream from where it was.
    ///
    /// `meta` moves the log start first, so a crash half way leaves only segments below the
    /// start, which recovery removes as leftovers. The caller must not append meanwhile.
    /// Returns the removed segment names.
    @discardableResult
    public func restart(after index: UInt64) throws -> [String] {
        try self.commitBlocking()
        self.ioMutex.lock()
        defer { self.ioMutex.unlock() }
        let writer = self.writer
        let old = try self.lock.withLock { (state) throws -> [SegmentInfo] in
            if let failure = state.failure { throw failure }
            guard state.pending.count == 0, writer.held == nil, state.sealedIndex == state.nextIndex - 1 else {
                throw WALError(.invalidArgument, "The log cannot restart while records are still being written.")
            }
            return state.segments
        }
        let number = (old.last?.number ?? 0) + 1
        let path = FileIO.join(self.configuration.directory, SegmentName.format(number))
        try self.updateMeta { meta in
            meta.logStartSegment = number
            meta.logStartIndex = index + 1
        }
        var removed: [String] = []
        for segment in old {
            try FileIO.remove(segment.path)
            removed.append(SegmentName.format(segment.number))
        }
        let (fd, direct) = try FileIO.openForAppend(path, direct: self.configuration.directIO, flags: O_TRUNC)
        try FileIO.fsyncDirectory(self.configuration.directory)
        writer.replaceSegment(with: LogWriter.OpenSegment(fd: fd, number: number, path: path, size: 0, direct: direct))
        // Offsets in the new segment mean other bytes than the old ones held in memory.
        self.recent.removeAll()
        writer.writtenIndex = index
        writer.unsynced.removeAll()
        self.lock.withLock { state in
            state.segments = [SegmentInfo(number: number, path: path, firstIndex: index + 1)]
            state.nextIndex = index + 1
            state.sealedIndex = index
        }
        self.logger.info(
            "The log restarts after a snapshot",
            metadata: ["wal.index": "\(index)", "wal.segment": "\(path)", "wal.removed": "\(removed.joined(separator: ","))"])
        return removed
    }
}
