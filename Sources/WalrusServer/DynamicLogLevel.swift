public import Logging
import Synchronization
import WALCore

/// A log level that can change while the daemon runs (`walrusctl log-level`, reload). Loggers are
/// values copied everywhere, so their handler asks this shared level on every call instead.
public final class DynamicLogLevel: Sendable {
    private let level: LockedValue<Logger.Level>

    public init(_ level: Logger.Level) { self.level = LockedValue(level) }

    /// The current level.
    public var current: Logger.Level {
        get { self.level.withLock { $0 } }
        set { self.level.withLock { $0 = newValue } }
    }

    /// Wrap a handler so its level is this one.
    public func handler(_ wrapped: any LogHandler) -> any LogHandler { Handler(wrapped: wrapped, level: self) }

    private struct Handler: LogHandler {
        var wrapped: any LogHandler
        let level: DynamicLogLevel

        var logLevel: Logger.Level {
            get { self.level.current }
            set { self.level.current = newValue }
        }

        var metadata: Logger.Metadata {
            get { self.wrapped.metadata }
            set { self.wrapped.metadata = newValue }
        }

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { self.wrapped[metadataKey: key] }
            set { self.wrapped[metadataKey: key] = newValue }
        }

        func log(event: LogEvent) {
            var wrapped = self.wrapped
            wrapped.logLevel = .trace  // the level check already happened against ours
            wrapped.log(event: event)
        }
    }
}
