public import Logging
public import NIOPosix
import NIOCore
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
        // The timer is one of the event loop's (an idle node's wake-ups are ten epoll timeouts a
        // second on a thread already running, not a Task.sleep's hand-offs through dispatch and
        // the cooperative pool); the cycle itself runs on the thread pool, one at a time.
        let loop = self.server.group.next()
        let cycle = ExpiryCycle(store: self.store, server: self.server, threadPool: self.threadPool, loop: loop, logger: self.logger)
        loop.execute { cycle.schedule(in: .milliseconds(100)) }
        try? await gracefulShutdown()
        try? await loop.submit { cycle.stop() }.get()
    }
}

/// The cycle's state, on its event loop.
private final class ExpiryCycle: @unchecked Sendable {
    let store: KeyValueStore
    let server: RESPServer
    let threadPool: NIOThreadPool
    let loop: any EventLoop
    let logger: Logger
    private var next: Scheduled<Void>?
    private var stopped = false

    init(store: KeyValueStore, server: RESPServer, threadPool: NIOThreadPool, loop: any EventLoop, logger: Logger) {
        self.store = store
        self.server = server
        self.threadPool = threadPool
        self.loop = loop
        self.logger = logger
    }

    func schedule(in delay: TimeAmount) {
        guard !self.stopped else { return }
        self.next = self.loop.scheduleTask(in: delay) { self.tick() }
    }

    func stop() {
        self.stopped = true
        self.next?.cancel()
        self.next = nil
    }

    private func tick() {
        guard self.store.expiringCount > 0, self.server.executor.expiresKeys else { return self.schedule(in: .milliseconds(100)) }
        let store = self.store
        // The cycle's rounds take the store's lock one at a time: off the event loop. Not while a
        // script holds the store (it would wait on the lock for the script).
        self.threadPool.runIfActive(eventLoop: self.loop) { () -> ExpiryCycleReport? in
            guard store.gate.enter() else { return nil }
            defer { store.gate.exit() }
            return store.expireCycle()
        }.whenComplete { result in
            let report = (try? result.get()) ?? nil
            if let report, report.expired > 0 {
                self.logger.trace("Expired keys", metadata: ["expiry.keys": "\(report.expired)", "expiry.rounds": "\(report.rounds)"])
            }
            // Redis's fast cycle: back after 10 ms while keys keep expiring in bulk.
            self.schedule(in: report?.timedOut == true ? .milliseconds(10) : .milliseconds(100))
        }
    }
}
