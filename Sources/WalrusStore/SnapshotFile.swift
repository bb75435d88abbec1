#if canImport(Glibc)
import Glibc
#endif
public import WALCore

/// `snapshot-<index>.snap`: the whole key-value state at one index, with the epoch history.
///
/// Big-endian throughout:
/// ```
/// "WLRSNAP2"                          8 bytes, magic and version
/// index u64, epoch u64                the state is every record up to `index` applied
/// historyCount u32, then per entry    epoch u64, firstIndex u64
/// entryCount u64, then per entry      keyLength u32, valueLength u32, [deadline i64], key, value
/// "WLRSEND1", crc32 u32               CRC-32 (IEEE) of every byte before the CRC field
/// ```
/// Bit 31 of `keyLength` says a deadline (ms since the Unix epoch) follows the lengths; keys
/// without one take no room for it. Version 1 (`WLRSNAP1`, no deadlines: the flag bit is never
/// set there) still loads.
/// Written to `snapshot-<index>.snap.tmp`, fsync'ed, renamed, and the directory fsync'ed, so a
/// crash leaves the old snapshot or the new one, never half of one.
public enum SnapshotFile {
    static let magic: [UInt8] = Array("WLRSNAP2".utf8)
    /// The format before deadlines; read, never written.
    static let magicVersion1: [UInt8] = Array("WLRSNAP1".utf8)
    static let deadlineFlag: UInt32 = 1 << 31
    static let trailer: [UInt8] = Array("WLRSEND1".utf8)

    /// What a snapshot file holds besides the state.
    public struct Header: Sendable, Equatable {
        /// The index the state is at.
        public var index: UInt64
        /// The epoch at that index.
        public var epoch: UInt64
        /// The epoch history up to that index.
        public var epochs: [MetaFile.EpochStart]
        /// How many keys.
        public var entryCount: UInt64
    }

    /// Write `count` entries (visited by `entries`) as the state at `index` into `directory`;
    /// returns the file's path and size.
    static func write(
        count: Int,
        entries: ((UnsafeRawBufferPointer, UnsafeRawBufferPointer, Int64?) throws -> Void) throws -> Void,
        index: UInt64, epochs: [MetaFile.EpochStart], directory: String
    ) throws -> (path: String, bytes: Int64) {
        let path = FileIO.join(directory, SnapshotName.format(index))
        let temporary = path + ".tmp"
        let fd = try FileIO.open(temporary, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
        var closed = false
        defer {
            if !closed {
                close(fd)
                unlink(temporary)
            }
        }
        let buffer = RecordBuffer(capacity: 1 << 20)
        var crc: UInt32 = 0
        var total: Int64 = 0
        func flush() throws {
            crc = CRC32.checksum(buffer.bytes, seed: crc)
            try FileIO.writeAll(fd, buffer.bytes, path: temporary)
            total += Int64(buffer.count)
            buffer.removeAll()
        }
        func put(_ bytes: [UInt8]) { bytes.withUnsafeBytes { buffer.append($0) } }
        func put64(_ value: UInt64) { withUnsafeBytes(of: value.bigEndian) { buffer.append($0) } }
        func put32(_ value: UInt32) { withUnsafeBytes(of: value.bigEndian) { buffer.append($0) } }

        put(magic)
        put64(index)
        put64(epochs.last?.epoch ?? 1)
        put32(UInt32(epochs.count))
        for entry in epochs {
            put64(entry.epoch)
            put64(entry.firstIndex)
        }
        put64(UInt64(count))
        var written = 0
        try entries { key, value, deadline in
            put32(UInt32(key.count) | (deadline == nil ? 0 : deadlineFlag))
            put32(UInt32(value.count))
            if let deadline { put64(UInt64(bitPattern: deadline)) }
            buffer.append(key)
            buffer.append(value)
            written += 1
            if buffer.count >= 1 << 20 { try flush() }
        }
        precondition(written == count, "snapshot entry count changed while writing")
        put(trailer)
        try flush()
        put32(crc)
        try FileIO.writeAll(fd, buffer.bytes, path: temporary)
        total += 4
        while fsync(fd) != 0 {
            if errno == EINTR { continue }
            throw WALError(.io, "fsync failed on \(temporary): \(FileIO.describe(errno)).", path: temporary)
        }
        close(fd)
        closed = true
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw WALError(.io, "rename \(temporary) failed: \(FileIO.describe(code)).", path: temporary)
        }
        try FileIO.fsyncDirectory(directory)
        return (path, total)
    }

    /// Read and verify a snapshot; the state comes back only if every byte checks out.
    public static func read(path: String) throws -> (header: Header, state: StoreState) {
        let fd = try FileIO.open(path, O_RDONLY)
        defer { close(fd) }
        let size = try FileIO.size(fd, path: path)
        func bad(_ why: String) -> StoreError {
            StoreError(
                .badSnapshot,
                "The snapshot \(path) is not usable: \(why). walrus falls back to an older snapshot or the full log; "
                    + "move the file aside if this keeps happening.")
        }
        let minimum = Int64(magic.count + 8 + 8 + 4 + 8 + trailer.count + 4)
        guard size >= minimum else { throw bad("it is only \(size) bytes") }

        let reader = ChunkReader(fd: fd, path: path, size: size)
        let version = try reader.take(8)
        guard version == magic || version == magicVersion1 else {
            throw bad("bad magic (not a walrus snapshot, or a newer version)")
        }
        let index = try reader.u64()
        let epoch = try reader.u64()
        let historyCount = try reader.u32()
        guard Int64(historyCount) * 16 < size else { throw bad("the epoch history count \(historyCount) is impossible") }
        var epochs: [MetaFile.EpochStart] = []
        for _ in 0..<historyCount {
            epochs.append(MetaFile.EpochStart(epoch: try reader.u64(), firstIndex: try reader.u64()))
        }
        let entryCount = try reader.u64()
        guard entryCount <= UInt64(size) / 8 else { throw bad("the entry count \(entryCount) is impossible") }
        let state = StoreState(capacity: Int(entryCount))
        for _ in 0..<entryCount {
            let keyField = try reader.u32()
            let keyCount = Int(keyField & ~deadlineFlag)
            let valueCount = Int(try reader.u32())
            var deadline: Int64?
            if keyField & deadlineFlag != 0 {
                guard version == magic else { throw bad("a version 1 entry at offset \(reader.position) has a deadline flag") }
                deadline = Int64(bitPattern: try reader.u64())
            }
            guard Int64(keyCount) + Int64(valueCount) <= size - reader.position else {
                throw bad("an entry at offset \(reader.position) claims more bytes than the file holds")
            }
            let key = try reader.take(keyCount)
            let value = try reader.take(valueCount)
            key.withUnsafeBytes { k in value.withUnsafeBytes { v in state.map.set(k, v, deadline: deadline) } }
        }
        guard try reader.take(trailer.count) == trailer else { throw bad("the end marker is missing") }
        let computed = reader.crc
        let stored = try reader.u32()
        guard stored == computed else { throw bad("its CRC does not match") }
        guard reader.position == size else { throw bad("\(size - reader.position) bytes follow the end marker") }
        state.appliedIndex = index
        return (Header(index: index, epoch: epoch, epochs: epochs, entryCount: entryCount), state)
    }

    /// Sequential reads in 1 MiB chunks with a running CRC.
    private final class ChunkReader {
        let fd: Int32
        let path: String
        let size: Int64
        var position: Int64 = 0
        var crc: UInt32 = 0
        private var chunk: [UInt8] = []
        private var chunkStart = 0

        init(fd: Int32, path: String, size: Int64) {
            self.fd = fd
            self.path = path
            self.size = size
        }

        func take(_ count: Int) throws -> [UInt8] {
            var out: [UInt8] = []
            out.reserveCapacity(count)
            var needed = count
            while needed > 0 {
                if self.chunkStart == self.chunk.count {
                    let want = Int(min(Int64(1 << 20), self.size - self.position))
                    guard want > 0 else {
                        throw StoreError(.badSnapshot, "The snapshot \(self.path) ends early at offset \(self.position).")
                    }
                    self.chunk = [UInt8](repeating: 0, count: want)
                    let n = try self.chunk.withUnsafeMutableBytes { raw in
                        try FileIO.pread(self.fd, into: raw.baseAddress!, count: want, at: self.position, path: self.path)
                    }
                    guard n == want else {
                        throw StoreError(.badSnapshot, "The snapshot \(self.path) shrank while being read.")
                    }
                    self.chunkStart = 0
                }
                let step = min(needed, self.chunk.count - self.chunkStart)
                let slice = self.chunk[self.chunkStart..<(self.chunkStart + step)]
                out.append(contentsOf: slice)
                self.crc = slice.withUnsafeBytes { CRC32.checksum($0, seed: self.crc) }
                self.chunkStart += step
                self.position += Int64(step)
                needed -= step
            }
            return out
        }

        func u64() throws -> UInt64 {
            try self.take(8).reduce(0) { $0 << 8 | UInt64($1) }
        }

        func u32() throws -> UInt32 {
            try self.take(4).reduce(0) { $0 << 8 | UInt32($1) }
        }
    }
}
