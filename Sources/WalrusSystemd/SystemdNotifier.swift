import CSystemd
#if canImport(Glibc)
import Glibc
#endif

/// Talks to the service manager through `sd_notify` (libsystemd): readiness, status, watchdog,
/// reloads and shutdown. Every call is a no-op when not run by systemd (no `$NOTIFY_SOCKET`).
public struct SystemdNotifier: Sendable {
    public init() {}

    /// Whether a service manager is listening (`$NOTIFY_SOCKET` is set).
    public var isActive: Bool { getenv("NOTIFY_SOCKET") != nil }

    /// Send raw `KEY=value` lines.
    @discardableResult
    public func notify(_ lines: [String]) -> Bool {
        guard self.isActive else { return false }
        // unset_environment = 0: child processes (none today) would still see NOTIFY_SOCKET.
        return sd_notify(0, lines.joined(separator: "\n")) > 0
    }

    /// READY=1 with a status line: recovery is done and every listener is bound.
    public func ready(status: String) { self.notify(["READY=1", "STATUS=\(status.oneLine)"]) }

    /// STATUS=… (what `systemctl status` shows).
    public func status(_ text: String) { self.notify(["STATUS=\(text.oneLine)"]) }

    /// Ask for more start-up (or shutdown) time: the manager waits `microseconds` more from now.
    public func extendTimeout(microseconds: UInt64, status: String) {
        self.notify(["EXTEND_TIMEOUT_USEC=\(microseconds)", "STATUS=\(status.oneLine)"])
    }

    /// WATCHDOG=1: we are alive (send only after checking that we are).
    public func watchdog() { self.notify(["WATCHDOG=1"]) }

    /// RELOADING=1 (with the monotonic timestamp newer managers want), before a reload.
    public func reloading(status: String) {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        let microseconds = UInt64(time.tv_sec) * 1_000_000 + UInt64(time.tv_nsec) / 1000
        self.notify(["RELOADING=1", "MONOTONIC_USEC=\(microseconds)", "STATUS=\(status.oneLine)"])
    }

    /// STOPPING=1: shutdown has begun.
    public func stopping(status: String) { self.notify(["STOPPING=1", "STATUS=\(status.oneLine)"]) }

    /// The watchdog period the manager set for us (`WatchdogSec=`), if any.
    public var watchdogMicroseconds: UInt64? {
        var microseconds: UInt64 = 0
        return sd_watchdog_enabled(0, &microseconds) > 0 && microseconds > 0 ? microseconds : nil
    }
}

extension String {
    fileprivate var oneLine: String { String(self.map { $0 == "\n" ? " " : $0 }) }
}
