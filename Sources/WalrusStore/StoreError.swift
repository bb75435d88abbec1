public import WALCore

/// The one error type of the store.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    /// Broad classification of a store failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate var name: String
        /// A key or value is larger than the configured limit.
        public static let tooLarge = Code(name: "tooLarge")
        /// A snapshot file fails its checks.
        public static let badSnapshot = Code(name: "badSnapshot")
        /// The write-ahead log refused or failed (see `walError`).
        public static let log = Code(name: "log")
        /// A checkpoint is already running (another caller may join it and take its result).
        public static let checkpointRunning = Code(name: "checkpointRunning")
        /// The caller passed something the store cannot take.
        public static let invalidArgument = Code(name: "invalidArgument")
        public var description: String { self.name }
    }

    /// What kind of failure this is.
    public var code: Code
    /// What happened, where, and what to do.
    public var message: String
    /// The log's error, when the log refused or failed.
    public var walError: WALError?

    public init(_ code: Code, _ message: String, walError: WALError? = nil) {
        self.code = code
        self.message = message
        self.walError = walError
    }

    /// Wrap a log error.
    public init(_ error: WALError) {
        self.init(.log, error.message, walError: error)
    }

    public var description: String { self.message }
}

extension StoreError: Equatable {
    /// Errors compare by code only.
    public static func == (lhs: StoreError, rhs: StoreError) -> Bool { lhs.code == rhs.code }
}
