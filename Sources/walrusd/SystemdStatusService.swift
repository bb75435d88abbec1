import Logging
import ServiceLifecycle
import WALCore
import WalrusServer
import WalrusStore
import WalrusSystemd

/// Keeps the service manager informed: STATUS= every few seconds, and WATCHDOG=1 at half the
/// watchdog period — but only while the event loops answer and the log is not stuck in a write
/// or fdatasync, so a hung disk or loop gets the process restarted.
struct SystemdStatusService: Service {
    let notifier: SystemdNotifier
    let store: KeyValueStore
    let server: RESPServer
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
            let loopsAnswer = await self.server.eventLoopsRespond(withinMilliseconds: Int64(periodMicroseconds / 2000))
            let healthy = stall < self.maxStallNanoseconds && loopsAnswer && self.store.wal.failure == nil
            self.server.replication?.primary.logRetentionWarnings()
            if healthy {
                if watchdog != nil { self.notifier.watchdog() }
                self.notifier.status(Self.statusLine(store: self.store, server: self.server))
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

    /// `primary · index 1200 (sealed 1200) · 2 followers, max lag 0 · 3 clients · 1042 keys`, or
    /// `follower of 10.0.0.1:7380 · link up, streaming · applied 1200 · lag 0 records · 1042 keys`.
    static func statusLine(store: KeyValueStore, server: RESPServer) -> String {
        let clients = server.statistics.connectedClients.load(ordering: .relaxed)
        let clientText = "\(clients) client" + (clients == 1 ? "" : "s")
        if let replication = server.replication, replication.isFollower, let link = replication.link {
            var text = "follower of \(link.primaryHost):\(link.primaryPort) · link \(link.linkUp ? "up" : "down"), \(link.state.rawValue)"
            if link.state == .snapshot && link.snapshotTotal > 0 {
                text += " \(link.snapshotBytes * 100 / link.snapshotTotal)% (\(link.snapshotBytes / 1_048_576) of \(link.snapshotTotal / 1_048_576) MiB)"
            }
            text += " · applied \(link.applied) · lag \(link.lagRecords) records · \(clientText) · \(store.count) keys"
            return text
        }
        var text = "primary · epoch \(store.wal.meta.currentEpoch) · index \(store.wal.lastIndex) (sealed \(store.wal.sealedIndex))"
        if let refusal = server.replication?.writeRefusal {
            return "FENCED (stale primary, refusing writes) · " + text + " · " + refusal
        }
        if let replication = server.replication {
            let replicas = replication.primary.replicas().filter { $0.state != .disconnected }
            let maxLag = replicas.map(\.lagRecords).max() ?? 0
            text += " · \(replicas.count) follower" + (replicas.count == 1 ? "" : "s")
            if !replicas.isEmpty { text += ", max lag \(maxLag)" }
            if let sending = replicas.first(where: { $0.state == .snapshot }), sending.snapshotBytesTotal > 0 {
                text += ", sending snapshot \(sending.snapshotBytesSent * 100 / sending.snapshotBytesTotal)%"
            }
            if let risky = replication.primary.replicas().first(where: { $0.warning != nil }) {
                text += " · WARNING: follower \(risky.nodeID) is about to fall off the retained log"
            }
        }
        return text + " · \(clientText) · \(store.count) keys"
    }
}
