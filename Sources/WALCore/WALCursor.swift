#if canImport(Glibc)
import Glibc
#endif

/// Reads sealed records from any index onward, in whole frames, exactly as they are on disk.
///
/// It seeks with the sparse index (at most `sparseIndexStrideBytes` scanned to find a start) and
/// then reads sequentially with large `pread`s; only sealed bytes are ever returned, so a reader
/// never sees a record the log could still lose. Replication tails the log with one of these.
public final class WALCursor {
    /// The index of the next record this cursor returns.
    public private(set) var nextIndex: UInt64
    private let wal: WriteAheadLog
    private var fd: Int32 = -1
    private var segmentNumber = 0
    private var segmentPath = ""
    private var offset: Int64 = 0
    /// The log's sealed index when `locate` last looked.
    private var knownSealedIndex: UInt64 = 0

    /// A cursor whose first record is `index` (it must still be in the log: ≥ `firstIndex`).
    public init(wal: WriteAheadLog, from index: UInt64) {
        self.wal = wal
        self.nextIndex = max(index, 1)
    }

    deinit { if self.fd >= 0 { close(self.fd) } }

    /// Read sealed frames starting at `nextIndex` into `output` (appended), up to about `maxBytes`
    /// (always at least one frame if one is sealed). Returns how many records were added; 0 means
    /// the cursor is at the sealed end.
    public func read(into output: RecordBuffer, maxBytes: Int = 1 << 20) throws -> Int {
        guard let target = try self.locate() else { return 0 }
        var added = 0
        var budget = maxBytes
        var segment = target
        while budget > 0 {
            let available = segment.sealedSize - self.offset
            if available <= 0 {
                // This segment is exhausted; move on if the next one has sealed records. Nothing
                // sealed past what `locate` saw: stop without taking the log's lock again (a
                // tailing reader's usual case, one batch per read).
                guard self.nextIndex <= self.knownSealedIndex, self.nextIndex <= segment.lastSealedIndex + 1,
                    let next = try self.locate(), next.number != segment.number
                else { break }
                segment = next
                continue
            }
            let want = Int(min(Int64(max(budget, RecordFormat.headerSize)), available))
            // Copy straight into the output and keep the whole frames (a frame cut off at the
            // end is read again next time): one copy per byte — from the log's newest writes
            // in memory when it still holds them (a reader tailing the log), else from the file.
            let destination = output.reserve(want)
            var n = self.wal.recent.copy(segment: segment.number, offset: self.offset, into: destination, count: want)
            if n == 0 { n = try FileIO.pread(self.fd, into: destination, count: want, at: self.offset, path: self.segmentPath) }
            let bytes = UnsafeRawBufferPointer(start: destination, count: n)
            var position = 0
            var consumedAny = false
            while position + RecordFormat.headerSize <= bytes.count {
                let length = Int(loadBigEndianUInt32(bytes.baseAddress!, position + 4))
                let frame = RecordFormat.headerSize + length
                guard position + frame <= bytes.count else { break }
                position += frame
                added += 1
                consumedAny = true
                self.nextIndex += 1
            }
            output.commit(position)
            if !consumedAny {
                // One frame is larger than what we read: read exactly it.
                guard bytes.count >= RecordFormat.headerSize else { break }
                let length = Int(loadBigEndianUInt32(bytes.baseAddress!, 4))
                let frame = RecordFormat.headerSize + length
                guard Int64(frame) <= available else { break }
                budget = frame
                continue
            }
            self.offset += Int64(position)
            budget -= position
        }
        return added
    }

    /// Decode every sealed record from `nextIndex` on and pass it to `body` (tests and tools).
    public func forEach(_ body: (UInt64, RecordView) throws -> Void) throws {
        let output = RecordBuffer(capacity: 1 << 20)
        while true {
            output.removeAll()
            let first = self.nextIndex
            let count = try self.read(into: output)
            if count == 0 { return }
            var position = 0
            var index = first
            while position < output.count {
                let result = RecordDecoder.decode(output.bytes, at: position, maxRecordBytes: self.wal.configuration.maxRecordBytes)
                guard case .record(let view, let length) = result else {
                    throw WALError(
                        .corruptRecord,
                        "Record \(index) no longer checks out on disk (\(result)): the segment was damaged after it was "
                            + "written. Run 'walrusctl wal verify --data \(self.wal.configuration.directory)' to find the file "
                            + "and offset, and check the disk (dmesg).")
                }
                try body(index, view)
                position += length
                index += 1
            }
        }
    }

    /// The segment and byte offset where record `nextIndex` starts (it must be sealed).
    func position() throws -> (segment: Int, path: String, offset: Int64)? {
        guard let info = try self.locate() else { return nil }
        return (info.number, info.path, self.offset)
    }

    /// Find the segment holding `nextIndex` and position `offset` at its frame; nil if not sealed yet.
    private func locate() throws -> SegmentInfo? {
        let (info, firstIndex, sealed) = self.wal.lock.withLock { state -> (SegmentInfo?, UInt64, UInt64) in
            let first = state.segments.first?.firstIndex ?? 1
            guard self.nextIndex <= state.sealedIndex else { return (nil, first, state.sealedIndex) }
            // Segments are few (log size / segment size); a linear scan from the end finds recent ones first.
            for segment in state.segments.reversed() where segment.firstIndex <= self.nextIndex {
                return (segment, first, state.sealedIndex)
            }
            return (nil, first, state.sealedIndex)
        }
        self.knownSealedIndex = sealed
        if self.nextIndex < firstIndex {
            throw WALError(
                .segmentGap,
                "Index \(self.nextIndex) is no longer in the log: the oldest retained record is \(firstIndex). "
                    + "A reader this far behind needs a snapshot.")
        }
        guard let info else { return nil }
        if info.number != self.segmentNumber || self.fd < 0 {
            if self.fd >= 0 { close(self.fd) }
            self.fd = try FileIO.open(info.path, O_RDONLY)
            self.segmentNumber = info.number
            self.segmentPath = info.path
            let seek = info.seekOffset(for: self.nextIndex)
            self.offset = seek.offset
            try self.skip(records: self.nextIndex - seek.index, limit: info.sealedSize)
        }
        return info
    }

    /// Step over `count` frames from `offset` (after a sparse-index seek).
    private func skip(records count: UInt64, limit: Int64) throws {
        var remaining = count
        var header = [UInt8](repeating: 0, count: RecordFormat.headerSize)
        while remaining > 0 {
            let n = try header.withUnsafeMutableBytes { (raw) throws -> Int in
                try FileIO.pread(self.fd, into: raw.baseAddress!, count: RecordFormat.headerSize, at: self.offset, path: self.segmentPath)
            }
            guard n == RecordFormat.headerSize, self.offset < limit else {
                throw WALError(.corruptRecord, "Could not seek to index \(self.nextIndex) in \(self.segmentPath).", path: self.segmentPath, offset: self.offset)
            }
            let length = header.withUnsafeBytes { loadBigEndianUInt32($0.baseAddress!, 4) }
            self.offset += Int64(RecordFormat.headerSize) + Int64(length)
            remaining -= 1
        }
    }
}

extension WriteAheadLog {
    /// Every sealed record from `index` on, decoded and copied (tests and tools; replication uses a cursor).
    public func readAll(from index: UInt64 = 1) throws -> [(index: UInt64, op: RecordOp, key: [UInt8], value: [UInt8])] {
        var records: [(index: UInt64, op: RecordOp, key: [UInt8], value: [UInt8])] = []
        try WALCursor(wal: self, from: max(index, self.firstIndex)).forEach { index, view in
            records.append((index, view.op, Array(view.key), Array(view.value)))
        }
        return records
    }
}
