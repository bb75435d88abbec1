#if canImport(Glibc)
import Glibc
#endif

extension WriteAheadLog {
    /// Cut the log back to `index` after copying every record past it, byte for byte, into the
    /// file `divergedPath` (written whole and fsynced before anything is cut): a node that rejoins
    /// a primary whose history left its own at `index` keeps what only it had. Epoch history
    /// entries past `index` are dropped from `meta`. The caller must not append meanwhile.
    /// Returns how many records were moved aside (0: nothing to cut, no file written).
    @discardableResult
    public func truncate(after index: UInt64, divergedPath: String) throws -> UInt64 {
        try self.commitBlocking()
        let last = self.lastIndex
        guard index < last else { return 0 }
        guard index + 1 >= self.firstIndex else {
            throw WALError(
                .invalidArgument,
                "The log starts at \(self.firstIndex), after the cut point \(index): records \(index + 1)… are not all here.")
        }
        // 1. Everything past the cut, into the diverged file (tmp, fsync, rename, fsync dir).
        let cursor = WALCursor(wal: self, from: index + 1)
        let temporary = divergedPath + ".tmp"
        let out = try FileIO.open(temporary, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
        var moved: UInt64 = 0
        do {
            let buffer = RecordBuffer(capacity: 1 << 20)
            while true {
                buffer.removeAll()
                let count = try cursor.read(into: buffer)
                if count == 0 { break }
                try FileIO.writeAll(out, buffer.bytes, path: temporary)
                moved += UInt64(count)
            }
            try FileIO.fdatasync(out, path: temporary)
            Glibc.close(out)
        } catch {
            Glibc.close(out)
            try? FileIO.remove(temporary)
            throw error
        }
        guard moved == last - index else {
            try? FileIO.remove(temporary)
            throw WALError(.io, "Read \(moved) records past \(index) but the log holds \(last - index); nothing was cut.")
        }
        guard rename(temporary, divergedPath) == 0 else {
            throw FileIO.ioError("rename", divergedPath)
        }
        let directory = self.configuration.directory
        try FileIO.fsyncDirectory(directory)

        // 2. Cut: the segment holding index+1 ends where that record began; later ones go.
        guard let cut = try WALCursor(wal: self, from: index + 1).position() else {
            throw WALError(.io, "Could not find record \(index + 1) to cut the log there.")
        }
        self.ioMutex.lock()
        defer { self.ioMutex.unlock() }
        let writer = self.writer
        let doomed = self.lock.withLock { state -> [SegmentInfo] in state.segments.filter { $0.number > cut.segment } }
        let (fd, direct) = try FileIO.openForAppend(cut.path, direct: self.configuration.directIO)
        try FileIO.truncate(fd, to: cut.offset, path: cut.path)
        try FileIO.fdatasync(fd, path: cut.path)
        for segment in doomed { try FileIO.remove(segment.path) }
        try FileIO.fsyncDirectory(directory)
        writer.replaceSegment(with: LogWriter.OpenSegment(fd: fd, number: cut.segment, path: cut.path, size: cut.offset, direct: direct))
        // What was held in memory past the cut is no longer the log.
        self.recent.removeAll()
        writer.writtenIndex = index
        writer.unsynced.removeAll()
        self.lock.withLock { state in
            state.segments.removeAll { $0.number > cut.segment }
            let position = state.segments.count - 1
            var segment = state.segments[position]
            segment.recordCount = index + 1 - segment.firstIndex
            segment.sealedCount = segment.recordCount
            segment.size = cut.offset
            segment.sealedSize = cut.offset
            segment.sparse.removeAll { $0.index > index }
            state.segments[position] = segment
            state.nextIndex = index + 1
            state.sealedIndex = index
        }
        try self.updateMeta { meta in
            let first = meta.epochs.first
            meta.epochs.removeAll { $0.firstIndex > index }
            if meta.epochs.isEmpty, let first { meta.epochs = [first] }
        }
        self.logger.notice(
            "Moved diverged records aside and cut the log",
            metadata: ["wal.cut": "\(index)", "wal.moved": "\(moved)", "wal.diverged": "\(divergedPath)"])
        return moved
    }
}
