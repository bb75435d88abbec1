public import NIOPosix
import WALCore

/// Where the commands that block for a while (SAVE, BGSAVE: a snapshot's write) run: the
/// daemon's thread pool, a thread of their own for an embedded server, or the caller's thread
/// for `CommandRunner` (which blocks its caller anyway, and must not leave work running behind
/// a store it closes).
public struct BackgroundWork: Sendable {
    let run: @Sendable (_ work: @escaping @Sendable () -> Void) -> Void

    /// On `pool` (the daemon's).
    public static func pool(_ pool: NIOThreadPool) -> Self {
        Self { work in
            pool.submit { state in
                if state == .active { work() }
            }
        }
    }

    /// On a new thread each time (an embedded server without a pool).
    public static let ownThread = Self { work in _ = DedicatedThread(name: "walrus-save", detached: true, work) }

    /// On the calling thread, before `run` returns.
    public static let inPlace = Self { work in work() }
}
