#if canImport(Glibc)
import Glibc
#endif

/// Ctrl-C, SIGTERM and SIGHUP end the shell cleanly from any state (also while libedit waits for a
/// key): the signals are blocked in every thread and taken by one thread with `sigwait`, which
/// commits, saves the history, restores the terminal and exits.
enum ShellSignals {
    final class Handler: @unchecked Sendable {
        let body: (Int32) -> Void
        init(_ body: @escaping (Int32) -> Void) { self.body = body }
    }

    /// Block the signals in this thread (and so in every thread created after it): call first.
    static func block() {
        var set = Self.set()
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Start the thread that waits for them.
    static func handle(_ body: @escaping (Int32) -> Void) {
        let handler = Unmanaged.passRetained(Handler(body)).toOpaque()
        var thread = pthread_t()
        pthread_create(&thread, nil, { raw in
            let handler = Unmanaged<Handler>.fromOpaque(raw!).takeRetainedValue()
            var set = ShellSignals.set()
            var signal: Int32 = 0
            while sigwait(&set, &signal) == 0 {
                handler.body(signal)
            }
            return nil
        }, handler)
        pthread_detach(thread)
    }

    private static func set() -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGHUP)
        return set
    }
}
