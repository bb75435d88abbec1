/// The one error type of the write-ahead log.
///
/// Every message has three parts: what happened, where (file and byte offset), and what the
/// operator should do about it.
public struct WALError: Error, Sendable, CustomStringConvertible {
    /// Broad classification of a WAL failure; compare codes, not messages.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Value: Hashable, Sendable {
            case corruptRecord, segmentGap, directoryLocked, io, closed, recordTooLarge
            case unknownOp, diskFull, invalidArgument, failed
        }
        fileprivate var value: Value

        /// A record failed its checks (magic, length, CRC) somewhere it cannot be a torn write.
        public static let corruptRecord = Code(value: .corruptRecord)
        /// A segment is missing between two others, or the log does not start where `meta` says.
        public static let segmentGap = Code(value: .segmentGap)
        /// Another process holds the data directory's LOCK.
        public static let directoryLocked = Code(value: .directoryLocked)
        /// A system call failed.
        public static let io = Code(value: .io)
        /// The log was closed.
        public static let closed = Code(value: .closed)
        /// A record is larger than the configured maximum.
        public static let recordTooLarge = Code(value: .recordTooLarge)
        /// A record carries an operation this version does not know.
        public static let unknownOp = Code(value: .unknownOp)
        /// The disk is full: writes are refused until space returns; reads go on.
        public static let diskFull = Code(value: .diskFull)
        /// The caller passed something the log cannot take.
        public static let invalidArgument = Code(value: .invalidArgument)
        /// An earlier fdatasync or write failed; the log refuses every later write.
        public static let failed = Code(value: .failed)

        public var description: String { "\(self.value)" }
    }

    /// What kind of failure this is.
    public var code: Code
    /// What happened, where, and what to do.
    public var message: String
    /// The file the failure concerns, when there is one.
    public var path: String?
    /// The byte offset in `path` the failure concerns, when there is one.
    public var offset: Int64?
    /// The `errno` of a failed system call, when there is one.
    public var errno: Int32?

    public init(_ code: Code, _ message: String, path: String? = nil, offset: Int64? = nil, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.path = path
        self.offset = offset
        self.errno = errno
    }

    public var description: String { self.message }
}

extension WALError: Equatable {
    /// Errors compare by code only, so callers can match on the kind of failure.
    public static func == (lhs: WALError, rhs: WALError) -> Bool { lhs.code == rhs.code }
}
