public import Logging
import Synchronization
import WALCore

/// Keeps every log message in memory so tests can assert what an operator would read.
public final class LogCapture: Sendable {
    /// One captured message.
    public struct Entry: Sendable {
        public var level: Logger.Level
        public var message: String
        public var metadata: [String: String]
    }

    private let storage = LockedValue<[Entry]>([])

    public init() {}

    /// Everything logged so far.
    public var entries: [Entry] { self.storage.withLock { $0 } }

    /// A logger that writes here.
    public func logger(label: String = "test") -> Logger {
        Logger(label: label) { _ in Handler(capture: self) }
    }

    fileprivate func append(_ entry: Entry) { self.storage.withLock { $0.append(entry) } }

    private struct Handler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { self.metadata[key] }
            set { self.metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            var fields: [String: String] = [:]
            for (key, value) in self.metadata { fields[key] = "\(value)" }
            for (key, value) in event.metadata ?? [:] { fields[key] = "\(value)" }
            self.capture.append(Entry(level: event.level, message: "\(event.message)", metadata: fields))
        }
    }
}
