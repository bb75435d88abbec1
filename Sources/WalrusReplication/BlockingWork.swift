public import NIOCore
public import NIOPosix

/// Where the replication handlers run blocking steps (an fdatasync, a checkpoint, a snapshot
/// read or install) so their event loop keeps serving: the daemon's `NIOThreadPool`, whose result
/// comes back on the loop. Handler tests on an `EmbeddedEventLoop` — which only the test's own
/// thread may touch — run the step in place instead (`InPlaceBlockingWork`).
public protocol BlockingWork: Sendable {
    /// Run `work` off `eventLoop`; the future completes on `eventLoop`.
    func run<T: Sendable>(on eventLoop: any EventLoop, _ work: @escaping @Sendable () throws -> T) -> EventLoopFuture<T>
}

extension NIOThreadPool: BlockingWork {
    public func run<T: Sendable>(on eventLoop: any EventLoop, _ work: @escaping @Sendable () throws -> T) -> EventLoopFuture<T> {
        self.runIfActive(eventLoop: eventLoop, work)
    }
}

/// Blocking steps run on the calling thread (the event loop's own): for tests on an
/// `EmbeddedEventLoop`, where a pool thread completing a promise would run the handler's
/// callback on the wrong thread.
public struct InPlaceBlockingWork: BlockingWork {
    public init() {}

    public func run<T: Sendable>(on eventLoop: any EventLoop, _ work: @escaping @Sendable () throws -> T) -> EventLoopFuture<T> {
        eventLoop.makeCompletedFuture(Result { try work() })
    }
}
