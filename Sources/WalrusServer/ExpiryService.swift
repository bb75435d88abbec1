public import Logging
public import NIOPosix
public import ServiceLifecycle
import WALCore
public import WalrusStore

/// Redis's active expiry, on a primary that takes writes: ten times a second (Redis's hz 10) a
/// cycle samples keys that have a deadline and deletes the expired ones (one record per round of
/// 20), until few of a sample had expired or its 25 ms budget is spent — then it comes back after
/// 10 ms instead of 100 (Redis's fast cycle) while keys keep expiring in bulk. A follower, a paused
/// or a fenced primary expires nothing: its primary's deletes arrive as records.
public struct ExpiryService: Service {
    let store: KeyValueStore
    let server: RESPServer
    let threadPool: NIOThreadPool
    let logger: Logger

    public init(store: KeyValueStore, server: RESPServer, threadPool: NIOThreadPool, logger: Logger) {
        self.store = store
        self.server = server
        self.threadPool = threadPool
        self.logger = logger
    }

    public func run() async throws {
        var delay = Duration.milliseconds(100)
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let wait = delay
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: wait) }
            } catch {
                return
            }
            delay = .milliseconds(100)
            guard self.store.expiringCount > 0, self.server.executor.expiresKeys else { continue }
            // The cycle's rounds take the store's lock one at a time: off the cooperative pool.
            let store = self.store
            // Not while a script holds the store (it would wait on the lock for the script).
            guard
                let report = try? await self.threadPool.runIfActive({ () -> ExpiryCycleReport? in
                    guard store.gate.enter() else { return nil }
                    defer { store.gate.exit() }
                    return store.expireCycle()
                })
            else { continue }
            if report.timedOut { delay = .milliseconds(10) }
            if report.expired > 0 {
                self.logger.trace("Expired keys", metadata: ["expiry.keys": "\(report.expired)", "expiry.rounds": "\(report.rounds)"])
            }
        }
    }
}
