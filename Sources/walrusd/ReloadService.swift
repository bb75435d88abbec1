import Logging
import ServiceLifecycle
import UnixSignals
import WalrusSystemd

/// SIGHUP (`systemctl reload`): RELOADING=1, apply what can change live, READY=1.
///
/// Without a config file nothing can change yet, so a reload says so instead of pretending;
/// SIGHUP must be handled all the same, or its default action would kill the daemon.
struct ReloadService: Service {
    let notifier: SystemdNotifier
    let logger: Logger

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        for await _ in signals.cancelOnGracefulShutdown() {
            self.notifier.reloading(status: "Reloading")
            self.logger.notice("Reload requested (SIGHUP): nothing changes live without a config file yet")
            self.notifier.notify(["READY=1", "STATUS=primary · reloaded"])
        }
    }
}
