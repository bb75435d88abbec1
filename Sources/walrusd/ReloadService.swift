import ServiceLifecycle
import UnixSignals

/// SIGHUP (`systemctl reload`) runs the reload action (RELOADING=1 … READY=1). SIGHUP must be
/// handled in any case: its default action would kill the daemon.
struct ReloadService: Service {
    let reload: @Sendable () -> String

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        for await _ in signals.cancelOnGracefulShutdown() { _ = self.reload() }
    }
}
