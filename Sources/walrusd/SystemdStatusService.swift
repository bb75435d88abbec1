import Logging
import NIOCore
import ServiceLifecycle
import WALCore
import WalrusServer
import WalrusStore
import WalrusSystemd

/// Keeps the service manager informed: STATUS= every few seconds (the node's status line), and
/// WATCHDOG=1 at half the watchdog period — but only while the event loops answer and the log is
/// not stuck in a write or fdatasync, so a hung disk or loop gets the process restarted.
struct SystemdStatusService: Service {
    let notifier: SystemdNotifier
    let store: KeyValueStore
    let server: RESPServer
    /// Every event-loop group of the process (the clients' and the follower link's).
    let groups: [any EventLoopGroup]
    let logger: Logger

    /// The log may be stuck this long before the watchdog stops pinging (default: 10 s).
    var maxStallNanoseconds: UInt64 = 10_000_000_000

    func run() async throws {
        let watchdog = self.notifier.watchdogMicroseconds
        // Ping at half the watchdog period; refresh the status at least every 5 s.
        let periodMicroseconds = min(watchdog.map { $0 / 2 } ?? 5_000_000, 5_000_000)
        var wasHealthy = true
        while !Task.isCancelled {
            do {
                // A shutdown cancels the wait at once instead of after up to one period.
                try await cancelWhenGracefulShutdown {
                    try await Task.sleep(for: .microseconds(Int64(periodMicroseconds)))
                }
            } catch {
                return
            }
            if Task.isShuttingDownGracefully { return }
            let stall = self.store.wal.stallNanoseconds
            var loopsAnswer = true
            for group in self.groups where loopsAnswer {
                loopsAnswer = await Self.eventLoopsRespond(group, withinMilliseconds: Int64(periodMicroseconds / 2000))
            }
            let healthy = stall < self.maxStallNanoseconds && loopsAnswer && self.store.wal.failure == nil
            self.server.replication?.primary.logRetentionWarnings()
            if healthy {
                if watchdog != nil { self.notifier.watchdog() }
                self.notifier.status(self.server.status.capture().statusLine)
            } else if wasHealthy {
                self.logger.critical(
                    "Unhealthy: withholding the watchdog ping",
                    metadata: [
                        "wal.stallMs": "\(stall / 1_000_000)", "server.loopsAnswer": "\(loopsAnswer)",
                        "wal.failure": "\(self.store.wal.failure?.message ?? "none")",
                    ])
                self.notifier.status(
                    "UNHEALTHY: " + (self.store.wal.failure?.message ?? "log stalled \(stall / 1_000_000) ms or event loops not answering"))
            }
            wasHealthy = healthy
        }
    }

    /// Whether every event loop runs a task within `milliseconds` (a stuck loop means stuck
    /// clients). A stuck loop would not run a timer scheduled on itself: whichever of the loop
    /// and a sleeping task answers first wins.
    static func eventLoopsRespond(_ group: any EventLoopGroup, withinMilliseconds milliseconds: Int64) async -> Bool {
        for loop in group.makeIterator() {
            let answered = loop.submit { true }
            let ok = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let decided = LockedValue(false)
                let finish: @Sendable (Bool) -> Void = { value in
                    let first = decided.withLock { done -> Bool in
                        defer { done = true }
                        return !done
                    }
                    if first { continuation.resume(returning: value) }
                }
                answered.whenComplete { _ in finish(true) }
                Task {
                    try? await Task.sleep(for: .milliseconds(milliseconds))
                    finish(false)
                }
            }
            if !ok { return false }
        }
        return true
    }
}
