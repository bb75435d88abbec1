/// The data directory's `meta` file: identity, where the log starts, and the epoch history.
///
/// A short text file so an operator can read it with `cat`, checksummed on its last line and
/// replaced atomically (temporary file, fsync, rename, fsync of the directory):
///
/// ```
/// walrus-meta 1
/// cluster-id 6f1c…
/// node-id 93ab…
/// log-start-segment 6
/// log-start-index 50001
/// epoch 1 1
/// epoch 2 50213
/// crc32 1a2b3c4d
/// ```
///
/// A directory without `meta` (one the original Go walrus wrote) is epoch 1 and starts at index 1
/// in `wal-0001.log`.
public struct MetaFile: Sendable, Equatable {
    /// Identifies the cluster; a follower refuses a primary of another cluster (empty until set).
    public var clusterID: String = ""
    /// Identifies this node (empty until set).
    public var nodeID: String = ""
    /// The number of the oldest segment still kept.
    public var logStartSegment: Int = 1
    /// The index of the first record of `logStartSegment`.
    public var logStartIndex: UInt64 = 1
    /// Epoch history: each epoch and the index of its first record, ascending.
    public var epochs: [EpochStart] = [EpochStart(epoch: 1, firstIndex: 1)]

    /// One entry of the epoch history.
    public struct EpochStart: Sendable, Equatable, Hashable {
        public var epoch: UInt64
        public var firstIndex: UInt64
        public init(epoch: UInt64, firstIndex: UInt64) {
            self.epoch = epoch
            self.firstIndex = firstIndex
        }
    }

    public init() {}

    /// The current (last) epoch.
    public var currentEpoch: UInt64 { self.epochs.last?.epoch ?? 1 }

    /// The file's text.
    public func encode() -> [UInt8] {
        var text = "walrus-meta 1\n"
        if !self.clusterID.isEmpty { text += "cluster-id \(self.clusterID)\n" }
        if !self.nodeID.isEmpty { text += "node-id \(self.nodeID)\n" }
        text += "log-start-segment \(self.logStartSegment)\n"
        text += "log-start-index \(self.logStartIndex)\n"
        for entry in self.epochs { text += "epoch \(entry.epoch) \(entry.firstIndex)\n" }
        let crc = CRC32.checksum(Array(text.utf8))
        text += "crc32 \(String(crc, radix: 16))\n"
        return Array(text.utf8)
    }

    /// Parse the file's text, or throw naming the line that is wrong.
    public static func decode(_ bytes: [UInt8], path: String) throws -> MetaFile {
        func fail(_ why: String) -> WALError {
            WALError(
                .corruptRecord,
                "The metadata file \(path) is damaged: \(why). Restore it from a backup, or move it aside if this "
                    + "directory never had a snapshot or a failover (walrus then assumes epoch 1 from index 1).",
                path: path)
        }
        // The checksum line is the last line; it covers every byte before it.
        var end = bytes.count
        while end > 0, bytes[end - 1] == UInt8(ascii: "\n") { end -= 1 }
        var lineStart = end
        while lineStart > 0, bytes[lineStart - 1] != UInt8(ascii: "\n") { lineStart -= 1 }
        let lastLine = String(decoding: bytes[lineStart..<end], as: UTF8.self)
        guard lastLine.hasPrefix("crc32 ") else { throw fail("no crc32 line") }
        guard let stored = UInt32(lastLine.dropFirst(6), radix: 16),
            stored == CRC32.checksum(Array(bytes[0..<lineStart]))
        else {
            throw fail("its checksum does not match")
        }
        let body = String(decoding: bytes[0..<lineStart], as: UTF8.self)
        var meta = MetaFile()
        meta.epochs = []
        var sawHeader = false
        for line in body.split(separator: "\n") {
            let fields = line.split(separator: " ").map(String.init)
            guard let key = fields.first else { continue }
            switch (key, fields.count) {
            case ("walrus-meta", 2):
                guard fields[1] == "1" else { throw fail("version \(fields[1]) is newer than this walrus") }
                sawHeader = true
            case ("cluster-id", 2): meta.clusterID = fields[1]
            case ("node-id", 2): meta.nodeID = fields[1]
            case ("log-start-segment", 2):
                guard let n = Int(fields[1]), n > 0 else { throw fail("bad line '\(line)'") }
                meta.logStartSegment = n
            case ("log-start-index", 2):
                guard let n = UInt64(fields[1]), n > 0 else { throw fail("bad line '\(line)'") }
                meta.logStartIndex = n
            case ("epoch", 3):
                guard let e = UInt64(fields[1]), let i = UInt64(fields[2]) else { throw fail("bad line '\(line)'") }
                meta.epochs.append(EpochStart(epoch: e, firstIndex: i))
            default:
                // Unknown keys from a newer walrus are kept out of the way rather than fatal.
                continue
            }
        }
        guard sawHeader else { throw fail("no 'walrus-meta 1' header") }
        if meta.epochs.isEmpty { meta.epochs = [EpochStart(epoch: 1, firstIndex: 1)] }
        return meta
    }

    /// Load `meta` from a directory; nil if there is none.
    public static func load(directory: String) throws -> MetaFile? {
        let path = FileIO.join(directory, "meta")
        guard FileIO.fileStatus(path) != nil else { return nil }
        return try decode(try FileIO.readFile(path), path: path)
    }

    /// Write `meta` into a directory atomically.
    public func store(directory: String) throws {
        try FileIO.writeFileAtomically(FileIO.join(directory, "meta"), directory: directory, bytes: self.encode())
    }
}
