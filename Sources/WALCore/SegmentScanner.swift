#if canImport(Glibc)
import Glibc
#endif

/// Reads one segment front to back during recovery, in large sequential chunks (no per-record
/// system calls), checking every frame and handing each record to the caller.
///
/// Zeros after the last record of the last segment are its end (space made ahead by
/// `SegmentPreallocator`, or a size that reached the disk before the data did). Only one kind of
/// damage is repairable: an incomplete final record of the last segment (a torn write), also one
/// that turns into zeros part-way. Everything else is corruption and stops recovery with the
/// file, the offset and the fix.
struct SegmentScanner {
    /// How one segment ended.
    struct Outcome {
        var info: SegmentInfo
        /// Set when the last segment ends in a torn write that `TailRepair` must cut.
        var tornTail: TornTail?
    }

    /// A torn write at the end of the last segment.
    struct TornTail: Sendable, Equatable {
        /// Where the incomplete record starts (the file is cut here).
        var offset: Int64
        /// How many bytes follow it.
        var length: Int64
        /// Why it is a torn write and not corruption.
        var reason: String
    }

    /// The reusable read buffer (one per recovery).
    final class Buffer {
        var base: UnsafeMutableRawPointer
        var capacity: Int
        init(capacity: Int) {
            self.capacity = capacity
            self.base = .allocate(byteCount: capacity, alignment: 16)
        }
        func ensure(_ needed: Int, keeping count: Int) {
            guard needed > self.capacity else { return }
            let newBase = UnsafeMutableRawPointer.allocate(byteCount: needed, alignment: 16)
            newBase.copyMemory(from: self.base, byteCount: count)
            self.base.deallocate()
            self.base = newBase
            self.capacity = needed
        }
        deinit { self.base.deallocate() }
    }

    let configuration: WALConfiguration

    /// The frame length and key of the record whose header is at `position` (nil when it is
    /// not whole in the buffer or does not look like a record; no key for a batch or an epoch
    /// record). Not checked against its CRC: for hints only.
    @inline(__always)
    private static func peekKey(
        _ base: UnsafeMutableRawPointer, count: Int, at position: Int, maxRecordBytes: Int
    ) -> (key: UnsafeRawBufferPointer?, frameLength: Int)? {
        guard position + RecordFormat.minimumFrameSize <= count,
            loadBigEndianUInt32(base, position) == RecordFormat.magic
        else { return nil }
        let length = Int(loadBigEndianUInt32(base, position + 4))
        let frameLength = RecordFormat.headerSize + length
        guard length <= maxRecordBytes, position + frameLength <= count else { return nil }
        let data = position + RecordFormat.headerSize
        let op = RecordOp(rawValue: base.load(fromByteOffset: data, as: UInt8.self))
        let keyCount = Int(loadBigEndianUInt32(base, data + 1))
        guard op != .batch, op != .epoch, RecordFormat.dataHeaderSize + keyCount <= length else { return (nil, frameLength) }
        return (UnsafeRawBufferPointer(start: base + data + RecordFormat.dataHeaderSize, count: keyCount), frameLength)
    }

    /// Scan `path`; call `onRecord` for each valid record with its index.
    func scan(
        number: Int,
        path: String,
        firstIndex: UInt64,
        isLast: Bool,
        buffer: Buffer,
        onRecord: (UInt64, RecordView) throws -> Void,
        onUpcoming: ((UnsafeRawBufferPointer) -> Void)? = nil,
        onBytes: (Int64) -> Void
    ) throws -> Outcome {
        let fd = try FileIO.open(path, O_RDONLY)
        defer { close(fd) }
        let fileSize = try FileIO.size(fd, path: path)
        var info = SegmentInfo(number: number, path: path, firstIndex: firstIndex)
        let stride = Int64(self.configuration.sparseIndexStrideBytes)

        var bufferStart: Int64 = 0  // file offset of buffer.base
        var bufferCount = 0  // valid bytes in the buffer
        var position = 0  // parse position inside the buffer
        var index = firstIndex
        // `onUpcoming` is shown the keys of the records up to `lookahead` ahead of the one being
        // handed over (their headers read, not yet checked: a hint, e.g. to prefetch).
        let lookahead = onUpcoming == nil ? 0 : 8
        var peekPosition = 0
        var peeked = 0

        while true {
            let view = UnsafeRawBufferPointer(start: buffer.base, count: bufferCount)
            let result = RecordDecoder.decode(view, at: position, maxRecordBytes: self.configuration.maxRecordBytes)
            switch result {
            case .record(let record, let frameLength):
                let offset = bufferStart + Int64(position)
                if info.sparse.isEmpty || offset - info.sparse[info.sparse.count - 1].offset >= stride {
                    info.sparse.append(SparseEntry(index: index, offset: offset))
                }
                if let onUpcoming {
                    if peekPosition <= position {
                        peekPosition = position
                        peeked = 0
                    }
                    while peeked <= lookahead,
                        let key = Self.peekKey(buffer.base, count: bufferCount, at: peekPosition, maxRecordBytes: self.configuration.maxRecordBytes)
                    {
                        if peekPosition > position, let upcoming = key.key { onUpcoming(upcoming) }
                        peekPosition += key.frameLength
                        peeked += 1
                    }
                    peeked -= 1
                }
                try onRecord(index, record)
                index += 1
                position += frameLength
                info.recordCount += 1

            case .needMoreBytes(let frameLength):
                let consumedEnd = bufferStart + Int64(bufferCount)
                if consumedEnd >= fileSize {
                    let offset = bufferStart + Int64(position)
                    if offset == fileSize {
                        // Clean end of the segment.
                        info.size = fileSize
                        info.sealedSize = fileSize
                        info.sealedCount = info.recordCount
                        onBytes(fileSize)
                        return Outcome(info: info, tornTail: nil)
                    }
                    return try self.classifyIncompleteTail(
                        fd: fd, path: path, offset: offset, fileSize: fileSize, isLast: isLast,
                        claimed: frameLength, info: &info)
                }
                // Slide the unparsed bytes to the front and refill.
                let remaining = bufferCount - position
                if position > 0 && remaining > 0 {
                    buffer.base.copyMemory(from: buffer.base + position, byteCount: remaining)
                }
                bufferStart += Int64(position)
                bufferCount = remaining
                position = 0
                peekPosition = 0
                peeked = 0
                let wanted = max(frameLength ?? 0, RecordFormat.headerSize)
                buffer.ensure(wanted, keeping: bufferCount)
                let n = try FileIO.pread(
                    fd, into: buffer.base + bufferCount, count: buffer.capacity - bufferCount,
                    at: bufferStart + Int64(bufferCount), path: path)
                bufferCount += n
                onBytes(bufferStart)
                if n == 0 {
                    // The file shrank under us; treat what we have as the end.
                    continue
                }

            case .damaged(let damage):
                let offset = bufferStart + Int64(position)
                // Zeros up to the end of the last segment: right after the last record they are
                // its end; starting part-way through the last record, with nothing valid after,
                // they are what a power cut leaves when the file's size reached the disk but its
                // data did not — that record was never whole on disk (never acknowledged in
                // fsync=always): a torn write. Zeros that start after a record's end mean the
                // record itself is damaged: that stays a refusal.
                if isLast, let zerosFrom = try Self.zeroTailStart(fd: fd, from: offset, fileSize: fileSize, path: path) {
                    if zerosFrom == offset {
                        // Space made ahead (`SegmentPreallocator`), or a size that reached the
                        // disk before the data did. They hold no record: nothing to cut or keep.
                        onBytes(fileSize)
                        return Self.end(at: offset, info: &info)
                    }
                    let claimed = Self.claimedFrameLength(buffer.base + position, available: bufferCount - position)
                    // A length no writer would have written (over max-record-bytes) is damage to
                    // the header, not a record cut short.
                    if claimed - RecordFormat.headerSize <= self.configuration.maxRecordBytes, zerosFrom < offset + Int64(claimed),
                        try self.findValidRecord(fd: fd, after: offset, fileSize: fileSize, path: path) == nil
                    {
                        let reason = "the last record (\(damage)) turns into zeros at offset \(zerosFrom) up to the end of the file: "
                            + "its data never reached the disk"
                        info.size = offset
                        info.sealedSize = offset
                        info.sealedCount = info.recordCount
                        // The bytes up to the zeros are kept aside; the zeros after them are not data.
                        return Outcome(info: info, tornTail: TornTail(offset: offset, length: zerosFrom - offset, reason: reason))
                    }
                }
                let follower = try self.findValidRecord(fd: fd, after: offset, fileSize: fileSize, path: path)
                throw self.corruption(
                    path: path, offset: offset, what: damage.description, validFollowsAt: follower,
                    isLast: isLast, recordsBefore: info.recordCount, firstIndex: firstIndex)
            }
        }
    }

    /// The segment's records end at `offset`; zeros (or nothing) follow.
    private static func end(at offset: Int64, info: inout SegmentInfo) -> Outcome {
        info.size = offset
        info.sealedSize = offset
        info.sealedCount = info.recordCount
        return Outcome(info: info, tornTail: nil)
    }

    private func classifyIncompleteTail(
        fd: Int32, path: String, offset: Int64, fileSize: Int64, isLast: Bool, claimed: Int?,
        info: inout SegmentInfo
    ) throws -> Outcome {
        if isLast, try Self.zeroTailStart(fd: fd, from: offset, fileSize: fileSize, path: path) == offset {
            // Fewer zeros than a record header after the last record: the end of the log.
            return Self.end(at: offset, info: &info)
        }
        let what =
            claimed.map { "an incomplete record (it claims \($0) bytes, \(fileSize - offset) remain)" }
            ?? "an incomplete record header (\(fileSize - offset) bytes)"
        guard isLast else {
            throw WALError(
                .corruptRecord,
                "Segment \(Self.name(path)) ends with \(what) at offset \(offset), but it is not the last segment, "
                    + "so this is not a torn write and cannot be repaired automatically. "
                    + Self.fix(path: path, offset: offset),
                path: path, offset: offset)
        }
        if let follower = try self.findValidRecord(fd: fd, after: offset, fileSize: fileSize, path: path) {
            throw self.corruption(
                path: path, offset: offset, what: what, validFollowsAt: follower, isLast: true,
                recordsBefore: info.recordCount, firstIndex: info.firstIndex)
        }
        info.size = offset
        info.sealedSize = offset
        info.sealedCount = info.recordCount
        return Outcome(
            info: info,
            tornTail: TornTail(offset: offset, length: fileSize - offset, reason: "the last record is \(what)"))
    }

    /// The offset of the first complete, checksummed record that starts after `offset`, if any:
    /// its presence proves the damage is not a torn write.
    private func findValidRecord(fd: Int32, after offset: Int64, fileSize: Int64, path: String) throws -> Int64? {
        let count = Int(fileSize - offset)
        guard count > RecordFormat.minimumFrameSize else { return nil }
        var bytes = [UInt8](repeating: 0, count: count)
        let n = try bytes.withUnsafeMutableBytes { raw in
            try FileIO.pread(fd, into: raw.baseAddress!, count: count, at: offset, path: path)
        }
        return bytes.withUnsafeBytes { raw -> Int64? in
            let view = UnsafeRawBufferPointer(start: raw.baseAddress, count: n)
            var candidate = 1
            while candidate + RecordFormat.minimumFrameSize <= n {
                if view[candidate] == 0xCA, view[candidate + 1] == 0xFE, view[candidate + 2] == 0xBA,
                    view[candidate + 3] == 0xBE,
                    case .record = RecordDecoder.decode(
                        view, at: candidate, maxRecordBytes: self.configuration.maxRecordBytes)
                {
                    return offset + Int64(candidate)
                }
                candidate += 1
            }
            return nil
        }
    }

    /// Where the run of zero bytes that ends the file starts, if it starts at or after `offset`
    /// (nil when the file's last byte is not zero or nothing follows `offset`).
    static func zeroTailStart(fd: Int32, from offset: Int64, fileSize: Int64, path: String) throws -> Int64? {
        guard fileSize > offset else { return nil }
        var end = fileSize
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while end > offset {
            let start = max(offset, end - Int64(chunk.count))
            let want = Int(end - start)
            let n = try chunk.withUnsafeMutableBytes { raw in
                try FileIO.pread(fd, into: raw.baseAddress!, count: want, at: start, path: path)
            }
            guard n == want else { return nil }
            if let last = chunk[0..<n].lastIndex(where: { $0 != 0 }) {
                let zerosFrom = start + Int64(last) + 1
                return zerosFrom < fileSize ? zerosFrom : nil
            }
            end = start
        }
        return offset
    }

    /// The frame length a damaged frame's header claims: its length field when the magic is right
    /// and the field is whole, else just the header (zeros inside the header are a torn header).
    static func claimedFrameLength(_ base: UnsafeMutableRawPointer, available: Int) -> Int {
        guard available >= 8, base.load(fromByteOffset: 0, as: UInt8.self) == 0xCA,
            base.load(fromByteOffset: 1, as: UInt8.self) == 0xFE, base.load(fromByteOffset: 2, as: UInt8.self) == 0xBA,
            base.load(fromByteOffset: 3, as: UInt8.self) == 0xBE
        else { return RecordFormat.headerSize }
        var length = 0
        for i in 4..<8 { length = length << 8 | Int(base.load(fromByteOffset: i, as: UInt8.self)) }
        return RecordFormat.headerSize + length
    }

    private func corruption(
        path: String, offset: Int64, what: String, validFollowsAt: Int64?, isLast: Bool, recordsBefore: UInt64,
        firstIndex: UInt64
    ) -> WALError {
        var message = "Segment \(Self.name(path)) has \(what) at offset \(offset)"
        if let validFollowsAt {
            message += " and a valid record follows it at offset \(validFollowsAt), so it is not a torn write"
        } else if !isLast {
            message += " and it is not the last segment, so it is not a torn write"
        } else {
            message += ", which is not an incomplete final record, so it is not a torn write"
        }
        message += " (records before it: \(recordsBefore), indexes \(firstIndex)…\(firstIndex + recordsBefore - 1)). "
        message += "walrus refuses to open rather than drop data. " + Self.fix(path: path, offset: offset)
        return WALError(.corruptRecord, message, path: path, offset: offset)
    }

    static func name(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }

    static func fix(path: String, offset: Int64) -> String {
        "To recover what precedes the damage: stop every walrus process on the directory, back the directory up, "
            + "copy \(path) somewhere safe, then 'truncate -s \(offset) \(path)' and move every later segment out of "
            + "the directory. Or restore the directory from a follower or a backup."
    }
}
