#if canImport(Glibc)
import Glibc
#endif

/// When an append is acknowledged relative to its fdatasync.
public enum FsyncMode: Sendable, Equatable, CustomStringConvertible {
    /// An append completes once its record is sealed (written and fdatasync'ed). Group commit:
    /// one fdatasync covers every record appended while the previous one ran.
    case always
    /// The original's behaviour: an append completes at once; records are written to the file as
    /// they come and fdatasync'ed every `milliseconds`. A power cut can lose one period of writes;
    /// `commit()` seals everything now.
    case interval(milliseconds: Int)

    public var description: String {
        switch self {
        case .always: "always"
        case .interval(let ms): "interval (\(ms) ms)"
        }
    }
}

/// How a write-ahead log is opened.
public struct WALConfiguration: Sendable {
    /// The data directory (created if missing).
    public var directory: String
    /// Start a new segment once the current one would grow past this (default 10 MiB, the original's).
    public var segmentSizeBytes: Int = 10 * 1024 * 1024
    /// The largest `Data` a record may have; longer length fields are corruption (default 64 MiB).
    public var maxRecordBytes: Int = 64 * 1024 * 1024
    /// When appends are acknowledged (default `.always`).
    public var fsyncMode: FsyncMode = .always
    /// A sparse index entry is kept every this many bytes of log (default 64 KiB), so a reader
    /// seeks to any index by scanning at most this much.
    public var sparseIndexStrideBytes: Int = 64 * 1024
    /// An fdatasync slower than this is logged as a warning (default 500 ms).
    public var slowFsyncWarningMilliseconds: Int = 500
    /// Write the open segment with direct I/O (O_DIRECT) where the filesystem allows it (default
    /// on; `WALRUS_DIRECT_IO=0` in the environment turns the default off, for A/B runs). The
    /// records are the same either way; a direct write skips the page cache, which costs less CPU
    /// per durable write than a buffered write + fdatasync does (PostgreSQL's open_datasync WAL
    /// does the same). Where O_DIRECT is refused (tmpfs) the log writes through the page cache.
    public var directIO: Bool = WALConfiguration.directIODefault

    /// `WALRUS_DIRECT_IO=0` turns direct I/O off by default.
    public static let directIODefault = getenv("WALRUS_DIRECT_IO").map { String(cString: $0) } != "0"

    /// A configuration with defaults for `directory`.
    public init(directory: String) { self.directory = directory }
}

/// A position in the history: which epoch, which record.
public struct LogPosition: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The epoch (1 for data written by the original walrus).
    public var epoch: UInt64
    /// The 1-based ordinal of the record since the start of history; 0 means "before the first record".
    public var index: UInt64

    public init(epoch: UInt64, index: UInt64) {
        self.epoch = epoch
        self.index = index
    }

    public static func < (lhs: LogPosition, rhs: LogPosition) -> Bool {
        (lhs.epoch, lhs.index) < (rhs.epoch, rhs.index)
    }

    public var description: String { "(\(self.epoch), \(self.index))" }
}
