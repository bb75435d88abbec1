public import WALCore

/// How a store is opened. Every field has the daemon's default.
public struct StoreConfiguration: Sendable {
    /// The log's settings (directory, fsync mode, segment size, record limit).
    public var wal: WALConfiguration
    /// The largest key accepted (default 64 KiB).
    public var maxKeyBytes: Int = 64 * 1024
    /// The largest value accepted (default 16 MiB).
    public var maxValueBytes: Int = 16 * 1024 * 1024
    /// How much log a checkpoint keeps behind its snapshot (default 64 MiB and 1 hour).
    public var retention = WriteAheadLog.RetentionPolicy()
    /// How many snapshots to keep (default 2: the newest and one to fall back on).
    public var snapshotsToKeep = 2

    /// Defaults for `directory`.
    public init(directory: String) { self.wal = WALConfiguration(directory: directory) }

    /// The data directory.
    public var directory: String { self.wal.directory }
}
