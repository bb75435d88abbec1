import CSystemd
public import Logging
#if canImport(Glibc)
import Glibc
#endif

/// A swift-log handler that writes to journald's native protocol (`sd_journal_sendv`): MESSAGE,
/// PRIORITY, SYSLOG_IDENTIFIER, CODE_FILE/CODE_LINE/CODE_FUNC, and every metadata key as a
/// `WALRUS_*` field (`wal.segment` becomes `WALRUS_WAL_SEGMENT`), so `journalctl -o json` and
/// `journalctl WALRUS_WAL_SEGMENT=…` work on the facts, not on parsed text.
public struct JournalLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    private let identifier: String

    public init(identifier: String) { self.identifier = identifier }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    /// Whether stderr is connected to the journal: `$JOURNAL_STREAM` (set by systemd as
    /// `device:inode`) names the file stderr is, so output redirected elsewhere keeps text.
    public static var stderrIsJournal: Bool {
        guard let value = getenv("JOURNAL_STREAM").map({ String(cString: $0) }) else { return false }
        let parts = value.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var info = stat()
        guard fstat(2, &info) == 0 else { return false }
        return UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode
    }

    public func log(event: LogEvent) {
        var fields: [String] = [
            "MESSAGE=\(event.message)",
            "PRIORITY=\(Self.priority(event.level))",
            "SYSLOG_IDENTIFIER=\(self.identifier)",
            "CODE_FILE=\(event.file)",
            "CODE_LINE=\(event.line)",
            "CODE_FUNC=\(event.function)",
            "WALRUS_SOURCE=\(event.source)",
        ]
        var merged = self.metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        for (key, value) in merged { fields.append("WALRUS_\(Self.fieldName(key))=\(value)") }
        Self.send(fields)
    }

    /// journald's syslog priorities.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    /// Journal field names are upper-case letters, digits and underscores.
    static func fieldName(_ key: String) -> String {
        String(key.uppercased().map { ($0.isLetter && $0.isASCII) || $0.isNumber ? $0 : "_" })
    }

    /// One entry; values may hold newlines (the native protocol carries them as they are).
    static func send(_ fields: [String]) {
        // One allocation holds every field; the iovecs point into it for the call's duration.
        let encoded = fields.map { Array($0.utf8) }
        let total = encoded.reduce(0) { $0 + $1.count }
        let storage = UnsafeMutableRawPointer.allocate(byteCount: max(total, 1), alignment: 1)
        defer { storage.deallocate() }
        var vectors: [iovec] = []
        vectors.reserveCapacity(encoded.count)
        var offset = 0
        for field in encoded {
            field.withUnsafeBytes { (storage + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            vectors.append(iovec(iov_base: storage + offset, iov_len: field.count))
            offset += field.count
        }
        _ = sd_journal_sendv(&vectors, Int32(vectors.count))
    }
}
