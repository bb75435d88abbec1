public import ArgumentParser
public import Logging
import ServiceLifecycle
import WALCore
import WalrusServer
import WalrusStore
import WalrusSystemd
import UnixSignals
#if canImport(Glibc)
import Glibc
#endif

/// `walrusd`: the walrus daemon. Recovers the data directory, then serves RESP clients.
@main
struct Walrusd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "walrusd",
        abstract: "The walrus daemon: a write-ahead-logged key-value store that speaks the Redis protocol.")

    @Option(help: "The data directory (default ./walrus-data, or $STATE_DIRECTORY under systemd).")
    var data: String?

    @Option(help: "The address to listen on for clients.")
    var bind: String = "127.0.0.1"

    @Option(help: "The client port (0 picks a free one and logs it).")
    var port: Int = 7379

    @Option(help: "When writes are acknowledged: always (after fdatasync, the default) or interval.")
    var fsync: FsyncChoice = .always

    @Option(name: .customLong("fsync-interval"), help: "Milliseconds between fdatasyncs with --fsync interval.")
    var fsyncInterval: Int = 100

    @Option(name: .customLong("max-clients"), help: "Connections beyond this are refused with an error.")
    var maxClients: Int = 10_000

    @Option(name: .customLong("idle-timeout"), help: "Close a client idle this many seconds (0: never).")
    var idleTimeout: Int = 0

    @Option(
        name: .customLong("control-socket"),
        help: "The control socket (default $RUNTIME_DIRECTORY/control.sock under systemd, else DATA/control.sock).")
    var controlSocket: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    enum FsyncChoice: String, ExpressibleByArgument, CaseIterable {
        case always, interval
    }

    func validate() throws {
        guard (0...65535).contains(self.port) else { throw ValidationError("--port must be 0…65535, not \(self.port)") }
        guard self.fsyncInterval > 0 else { throw ValidationError("--fsync-interval must be a positive number of milliseconds") }
        guard self.maxClients > 0 else { throw ValidationError("--max-clients must be positive") }
        guard self.idleTimeout >= 0 else { throw ValidationError("--idle-timeout must be 0 or more seconds") }
    }

    func run() async throws {
        // Under systemd, stderr is the journal: log natively (fields, priorities); else text.
        let toJournal = JournalLogHandler.stderrIsJournal
        let level = DynamicLogLevel(self.logLevel)
        let logger = Logger(label: "walrusd") { label -> any LogHandler in
            level.handler(toJournal ? JournalLogHandler(identifier: "walrusd") : StreamLogHandler.standardError(label: label))
        }
        let notifier = SystemdNotifier()
        let directory = self.data ?? getenv("STATE_DIRECTORY").map { String(cString: $0) } ?? "./walrus-data"

        var storeConfiguration = StoreConfiguration(directory: directory)
        storeConfiguration.wal.fsyncMode = self.fsync == .always ? .always : .interval(milliseconds: self.fsyncInterval)
        let store: KeyValueStore
        do {
            notifier.status("Recovering \(directory)")
            store = try KeyValueStore.open(storeConfiguration, logger: logger) { progress in
                logger.info(
                    "Recovering",
                    metadata: ["recovery.percent": "\(progress.percent)", "recovery.bytes": "\(progress.bytesRead)"])
                // Still making progress: ask the manager for 10 s more (progress comes every 250 ms).
                notifier.extendTimeout(
                    microseconds: 10_000_000,
                    status: "Recovering \(directory): \(progress.percent)% (\(progress.bytesRead / 1_048_576) of \(progress.bytesTotal / 1_048_576) MiB)")
            }
        } catch {
            logger.critical("Cannot open the data directory", metadata: ["walrusd.error": "\(error)"])
            notifier.status("Failed: \(error)")
            throw ExitCode(73)  // EX_CANTCREAT
        }
        logger.info(
            "Recovered",
            metadata: [
                "store.keys": "\(store.count)", "wal.lastIndex": "\(store.wal.lastIndex)",
                "store.snapshot": "\(store.recovery.snapshotIndex.map(String.init) ?? "none")",
            ])

        var serverConfiguration = ServerConfiguration()
        serverConfiguration.bindAddress = self.bind
        serverConfiguration.port = self.port
        serverConfiguration.maxClients = self.maxClients
        serverConfiguration.idleTimeoutSeconds = self.idleTimeout
        let bindAddress = self.bind
        // READY=1 only once recovery is done and every listener is bound.
        let readiness = ReadinessGate(listeners: 2) { port in
            notifier.ready(status: "primary · listening on \(bindAddress):\(port) · \(store.count) keys")
            logger.info("Ready", metadata: ["server.port": "\(port)"])
        }
        let server = RESPServer(store: store, configuration: serverConfiguration, logger: logger) { port in
            readiness.bound(port: port)
        }
        let status = SystemdStatusService(notifier: notifier, store: store, server: server, logger: logger)
        let reloadAction: @Sendable () -> String = {
            notifier.reloading(status: "Reloading")
            let result = "nothing changes live without a config file yet; the log level is set with 'walrusctl log-level'"
            logger.notice("Reload requested", metadata: ["reload.result": "\(result)"])
            notifier.notify(["READY=1", "STATUS=" + SystemdStatusService.statusLine(store: store, server: server)])
            return result
        }
        let reload = ReloadService(reload: reloadAction)
        let controlPath =
            self.controlSocket ?? getenv("RUNTIME_DIRECTORY").map { String(cString: $0) + "/control.sock" }
            ?? directory + "/control.sock"
        let control = ControlSocketService(
            path: controlPath,
            commands: ControlCommands(store: store, server: server, logLevel: level, logger: logger, reload: reloadAction),
            logger: logger, onBound: { readiness.bound(port: nil) })
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: server, failureTerminationBehavior: .gracefullyShutdownGroup),
                    .init(service: control, failureTerminationBehavior: .gracefullyShutdownGroup),
                    .init(service: status, failureTerminationBehavior: .gracefullyShutdownGroup),
                    .init(service: reload),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        do {
            try await withGracefulShutdownHandler {
                try await group.run()
            } onGracefulShutdown: {
                notifier.stopping(status: "Stopping: draining clients and sealing the log")
            }
        } catch {
            logger.critical("walrusd stopped", metadata: ["walrusd.error": "\(error)"])
            store.close()
            throw ExitCode(70)  // EX_SOFTWARE
        }
        store.close()
        logger.info("Stopped cleanly")
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
