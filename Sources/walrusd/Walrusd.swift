import ArgumentParser
import Foundation
import CoreMetrics
import Logging
import Prometheus
import ServiceLifecycle
import Synchronization
import WALCore
import WalrusReplication
import WalrusServer
import WalrusStore
import WalrusSystemd
#if canImport(Glibc)
import Glibc
#endif

/// `walrusd`: the walrus daemon. Recovers the data directory, then serves RESP clients and the
/// control socket, under systemd or by hand.
@main
struct Walrusd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "walrusd",
        abstract: "The walrus daemon: a write-ahead-logged key-value store that speaks the Redis protocol.",
        discussion: "Every option is also a key of the --config file (flags win over the file).")

    @Option(help: "A config file (key = value lines, TOML); flags override it. SIGHUP re-reads it.")
    var config: String?
    @Option(help: "The data directory (default ./walrus-data, or $STATE_DIRECTORY under systemd).")
    var data: String?
    @Option(help: "The address to listen on for clients (default 127.0.0.1).")
    var bind: String?
    @Option(help: "The client port (default 7379; 0 picks a free one and logs it).")
    var port: Int?
    @Option(
        name: .customLong("control-socket"),
        help: "The control socket (default $RUNTIME_DIRECTORY/control.sock under systemd, else DATA/control.sock).")
    var controlSocket: String?
    @Option(help: "When writes are acknowledged: always (after fdatasync, the default) or interval.")
    var fsync: String?
    @Option(name: .customLong("fsync-interval"), help: "Milliseconds between fdatasyncs with --fsync interval (default 100).")
    var fsyncInterval: String?
    @Option(name: .customLong("max-clients"), help: "Connections beyond this are refused with an error (default 10000).")
    var maxClients: String?
    @Option(name: .customLong("idle-timeout"), help: "Close a client idle this many seconds (default 0: never).")
    var idleTimeout: String?
    @Option(name: .customLong("log-level"), help: "trace, debug, info (default), notice, warning, error or critical.")
    var logLevel: String?
    @Option(name: .customLong("repl-bind"), help: "The address the replication listener binds (default 127.0.0.1).")
    var replBind: String?
    @Option(name: .customLong("repl-port"), help: "The replication port followers connect to (default 7380; 0 picks one).")
    var replPort: String?
    @Option(help: "Run as a follower of the primary at HOST:PORT (its replication port).")
    var follow: String?
    @Option(name: .customLong("sync-replicas"), help: "Acknowledge a write only once this many followers have it durable (default 0).")
    var syncReplicas: String?
    @Option(name: .customLong("sync-replicas-timeout"), help: "Milliseconds a write waits for sync-replicas before failing (default 5000).")
    var syncReplicasTimeout: String?
    @Option(name: .customLong("repl-auth-file"), help: "A file holding the replication shared secret (the same on every node).")
    var replAuthFile: String?
    @Option(name: .customLong("repl-timeout"), help: "Milliseconds of silence before a replication peer is dropped (default 10000).")
    var replTimeout: String?
    @Option(name: .customLong("repl-snapshot-rate"), help: "Pace snapshot transfers to this many bytes per second (default 0: unpaced).")
    var replSnapshotRate: String?
    @Option(name: .customLong("repl-retention-bytes"), help: "At most this much log is kept for a lagging follower (default 1 GiB).")
    var replRetentionBytes: String?
    @Option(name: .customLong("repl-retention-seconds"), help: "A follower that went away keeps its log this long (default 3600).")
    var replRetentionSeconds: String?
    @Option(name: .customLong("segment-size"), help: "Rotate log segments past this many bytes (default 10485760).")
    var segmentSize: String?
    @Option(name: .customLong("max-key-bytes"), help: "Refuse keys longer than this (default 65536).")
    var maxKeyBytes: String?
    @Option(name: .customLong("max-value-bytes"), help: "Refuse values longer than this (default 16777216).")
    var maxValueBytes: String?
    @Option(name: .customLong("retention-bytes"), help: "Log kept behind a snapshot, in bytes (default 67108864).")
    var retentionBytes: String?
    @Option(name: .customLong("retention-seconds"), help: "Log kept behind a snapshot, in seconds (default 3600).")
    var retentionSeconds: String?
    @Option(name: .customLong("event-loops"), help: "Threads serving client connections (default 0: half the cores, at least one).")
    var eventLoops: String?
    @Option(name: .customLong("metrics-port"), help: "Serve Prometheus metrics at GET /metrics on this port (default: off; 0 picks a free one).")
    var metricsPort: String?
    @Option(name: .customLong("metrics-bind"), help: "The address of the metrics endpoint (default 127.0.0.1).")
    var metricsBind: String?

    /// The flags given, as config keys.
    var flagValues: [(String, String)] {
        [
            ("data", self.data), ("bind", self.bind), ("port", self.port.map(String.init)),
            ("control-socket", self.controlSocket), ("fsync", self.fsync), ("fsync-interval", self.fsyncInterval),
            ("max-clients", self.maxClients), ("idle-timeout", self.idleTimeout), ("log-level", self.logLevel),
            ("repl-bind", self.replBind), ("repl-port", self.replPort), ("follow", self.follow),
            ("sync-replicas", self.syncReplicas), ("sync-replicas-timeout", self.syncReplicasTimeout),
            ("repl-auth-file", self.replAuthFile), ("repl-timeout", self.replTimeout),
            ("repl-snapshot-rate", self.replSnapshotRate), ("repl-retention-bytes", self.replRetentionBytes),
            ("metrics-port", self.metricsPort), ("metrics-bind", self.metricsBind), ("event-loops", self.eventLoops),
            ("repl-retention-seconds", self.replRetentionSeconds), ("segment-size", self.segmentSize),
            ("max-key-bytes", self.maxKeyBytes), ("max-value-bytes", self.maxValueBytes),
            ("retention-bytes", self.retentionBytes), ("retention-seconds", self.retentionSeconds),
        ].compactMap { key, value in value.map { (key, $0) } }
    }

    /// The file (if any), then the flags.
    func resolve() throws -> DaemonConfiguration {
        var configuration = DaemonConfiguration()
        if let file = self.config { try configuration.apply(file: file) }
        for (key, value) in self.flagValues {
            do {
                try configuration.set(key, value)
            } catch let error as DaemonConfiguration.FileError {
                throw ValidationError("--\(key): \(error.description)")
            }
        }
        return configuration
    }

    func validate() throws {
        do {
            _ = try self.resolve()
        } catch let error as DaemonConfiguration.FileError {
            throw ValidationError(error.description)
        }
    }

    func run() async throws {
        let settings = try self.resolve()
        // Under systemd, stderr is the journal: log natively (fields, priorities); else text.
        let toJournal = JournalLogHandler.stderrIsJournal
        let level = DynamicLogLevel(settings.logLevel)
        let logger = Logger(label: "walrusd") { label -> any LogHandler in
            level.handler(toJournal ? JournalLogHandler(identifier: "walrusd") : StreamLogHandler.standardError(label: label))
        }
        let notifier = SystemdNotifier()
        let directory = settings.data
        // Metrics: swift-metrics with a Prometheus registry behind it, bootstrapped before the log
        // opens (the log's flusher records fdatasync latency and group-commit sizes through it).
        var registry: PrometheusCollectorRegistry? = nil
        if settings.metricsPort != nil {
            let prometheus = PrometheusCollectorRegistry()
            var factory = PrometheusMetricsFactory(registry: prometheus)
            factory.defaultDurationHistogramBuckets = [
                .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
                .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
            ]
            factory.defaultValueHistogramBuckets = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384]
            MetricsSystem.bootstrap(factory)
            registry = prometheus
        }

        var storeConfiguration = StoreConfiguration(directory: directory)
        storeConfiguration.wal.fsyncMode = settings.fsync == "always" ? .always : .interval(milliseconds: settings.fsyncInterval)
        storeConfiguration.wal.segmentSizeBytes = settings.segmentSize
        storeConfiguration.maxKeyBytes = settings.maxKeyBytes
        storeConfiguration.maxValueBytes = settings.maxValueBytes
        storeConfiguration.retention = .init(keepBytes: Int64(settings.retentionBytes), keepSeconds: Int64(settings.retentionSeconds))
        let store: KeyValueStore
        do {
            // Recovery has begun: ask for time now, not only after the first progress report.
            notifier.extendTimeout(microseconds: 10_000_000, status: "Recovering \(directory)")
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

        // Identity: a node id for every node; a cluster id when a primary initialises its directory
        // (a follower adopts its primary's on the first sync).
        do {
            let meta = store.wal.meta
            if meta.nodeID.isEmpty || (meta.clusterID.isEmpty && settings.follow == nil) {
                try store.wal.updateMeta { meta in
                    if meta.nodeID.isEmpty { meta.nodeID = Self.randomHex(bytes: 8) }
                    if meta.clusterID.isEmpty && settings.follow == nil { meta.clusterID = Self.randomHex(bytes: 16) }
                }
            }
        } catch {
            logger.critical("Cannot write the meta file", metadata: ["walrusd.error": "\(error)"])
            throw ExitCode(73)
        }
        var replicationConfiguration = ReplicationConfiguration()
        replicationConfiguration.bindAddress = settings.replBind
        replicationConfiguration.port = settings.replPort
        replicationConfiguration.follow = settings.followTarget
        replicationConfiguration.syncReplicas = settings.syncReplicas
        replicationConfiguration.syncTimeoutMilliseconds = settings.syncReplicasTimeout
        replicationConfiguration.timeoutMilliseconds = settings.replTimeout
        replicationConfiguration.heartbeatMilliseconds = min(1000, settings.replTimeout / 4)
        replicationConfiguration.snapshotBytesPerSecond = settings.replSnapshotRate
        replicationConfiguration.retentionMaxBytes = Int64(settings.replRetentionBytes)
        replicationConfiguration.retentionSeconds = Int64(settings.replRetentionSeconds)
        replicationConfiguration.clientPort = settings.port
        replicationConfiguration.maxRecordBytes = storeConfiguration.wal.maxRecordBytes
        if let keyFile = settings.replAuthFile {
            do {
                replicationConfiguration.secret = try ReplicationAuth.loadKeyFile(keyFile)
            } catch {
                logger.critical("Cannot use the replication key file", metadata: ["walrusd.error": "\(error)"])
                notifier.status("Failed: \(error)")
                store.close()
                throw ExitCode(78)  // EX_CONFIG
            }
        }
        let serverBox = ServerBox()
        let replication = ReplicationNode(store: store, configuration: replicationConfiguration, logger: logger) { link in
            if let server = serverBox.server {
                notifier.status(SystemdStatusService.statusLine(store: store, server: server))
            }
            _ = link
        }

        var serverConfiguration = ServerConfiguration()
        serverConfiguration.bindAddress = settings.bind
        serverConfiguration.port = settings.port
        serverConfiguration.maxClients = settings.maxClients
        serverConfiguration.idleTimeoutSeconds = settings.idleTimeout
        // Default: half the cores (at least one). Measured on 2 cores with the client on the same
        // machine: one loop serves -c 50 GET/SET 27–44% faster than two, which contend for the
        // store and the cores the flusher and the clients need.
        serverConfiguration.eventLoopThreads = settings.eventLoops > 0 ? settings.eventLoops : max(1, ProcessInfo.processInfo.activeProcessorCount / 2)
        serverConfiguration.maxBulkBytes = max(settings.maxValueBytes, settings.maxKeyBytes) + 1024
        let bindAddress = settings.bind
        // READY=1 only once recovery is done and every listener is bound.
        let role = settings.follow.map { "follower of \($0)" } ?? "primary"
        let readiness = ReadinessGate(listeners: registry == nil ? 3 : 4) { port in
            notifier.ready(status: "\(role) · listening on \(bindAddress):\(port) · \(store.count) keys")
            logger.info("Ready", metadata: ["server.port": "\(port)", "walrusd.role": "\(role)"])
        }
        let server = RESPServer(
            store: store, configuration: serverConfiguration, logger: logger, replication: replication,
            commandMetrics: registry == nil ? nil : CommandMetrics()
        ) { port in
            replication.clientPort = port
            readiness.bound(port: port)
        }
        serverBox.server = server
        let replicationService = ReplicationService(node: replication, logger: logger) { _ in readiness.bound(port: nil) }
        let status = SystemdStatusService(notifier: notifier, store: store, server: server, logger: logger)
        let current = ConfigurationBox(settings)
        let command = self
        let reloadAction: @Sendable () -> String = {
            notifier.reloading(status: "Reloading")
            let result = command.reload(current: current, level: level, server: server, store: store, logger: logger)
            notifier.notify(["READY=1", "STATUS=" + SystemdStatusService.statusLine(store: store, server: server)])
            return result
        }
        let reload = ReloadService(reload: reloadAction)
        let controlPath =
            settings.controlSocket ?? getenv("RUNTIME_DIRECTORY").map { String(cString: $0) + "/control.sock" }
            ?? directory + "/control.sock"
        let control = ControlSocketService(
            path: controlPath,
            commands: ControlCommands(
                store: store, server: server, logLevel: level, logger: logger, replication: replication, reload: reloadAction),
            logger: logger, onBound: { readiness.bound(port: nil) })
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: server, failureTerminationBehavior: .gracefullyShutdownGroup),
            .init(service: replicationService, failureTerminationBehavior: .gracefullyShutdownGroup),
            .init(service: control, failureTerminationBehavior: .gracefullyShutdownGroup),
            .init(service: status, failureTerminationBehavior: .gracefullyShutdownGroup),
            .init(service: reload),
        ]
        if let registry, let metricsPort = settings.metricsPort {
            let collector = MetricsCollector(registry: registry, store: store, server: server, replication: replication)
            let metrics = MetricsService(
                collector: collector, host: settings.metricsBind, port: metricsPort, logger: logger,
                onBound: { _ in readiness.bound(port: nil) })
            services.append(.init(service: metrics, failureTerminationBehavior: .gracefullyShutdownGroup))
        }
        let group = ServiceGroup(
            configuration: .init(
                services: services,
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

    /// Re-read the config file and apply what can change live; say what needs a restart.
    func reload(
        current: ConfigurationBox, level: DynamicLogLevel, server: RESPServer, store: KeyValueStore, logger: Logger
    ) -> String {
        let fresh: DaemonConfiguration
        do {
            fresh = try self.resolve()
        } catch {
            logger.error("Reload failed: the configuration does not parse; nothing changed", metadata: ["reload.error": "\(error)"])
            return "nothing changed: \(error)"
        }
        let before = current.state.withLock { $0 }
        let changed = fresh.changedKeys(from: before)
        var live = changed.filter { DaemonConfiguration.liveKeys.contains($0) }
        var needRestart = changed.filter { !DaemonConfiguration.liveKeys.contains($0) }
        // The interval can change live, the mode cannot (it decides when clients are answered).
        if live.contains("fsync-interval") && !store.wal.setFsyncInterval(milliseconds: fresh.fsyncInterval) {
            live.removeAll { $0 == "fsync-interval" }
            if !needRestart.contains("fsync") { needRestart.append("fsync-interval (with fsync = \"always\" it has no effect)") }
        }
        level.current = fresh.logLevel
        server.maxClients.store(fresh.maxClients, ordering: .relaxed)
        store.setLimits(maxKeyBytes: fresh.maxKeyBytes, maxValueBytes: fresh.maxValueBytes)
        server.maxBulkBytes.store(max(fresh.maxKeyBytes, fresh.maxValueBytes) + 1024, ordering: .relaxed)
        current.state.withLock { state in
            state.logLevel = fresh.logLevel
            state.maxClients = fresh.maxClients
            state.maxKeyBytes = fresh.maxKeyBytes
            state.maxValueBytes = fresh.maxValueBytes
            if live.contains("fsync-interval") { state.fsyncInterval = fresh.fsyncInterval }
        }
        var parts: [String] = []
        parts.append(live.isEmpty ? "nothing changed live" : "applied " + live.joined(separator: ", "))
        if !needRestart.isEmpty { parts.append("needs a restart: " + needRestart.joined(separator: ", ")) }
        let summary = parts.joined(separator: "; ")
        logger.notice(
            "Reloaded",
            metadata: ["reload.applied": "\(live.joined(separator: ","))", "reload.needRestart": "\(needRestart.joined(separator: ","))"])
        return summary
    }
}

extension Walrusd {
    /// `bytes` random bytes as hex (node and cluster ids).
    static func randomHex(bytes: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<bytes).map { _ in
            let byte = UInt8.random(in: 0...255, using: &generator)
            return (byte < 16 ? "0" : "") + String(byte, radix: 16)
        }.joined()
    }
}

/// The server, once made (the link-change callback is created before it).
final class ServerBox: @unchecked Sendable {
    private let lock = LockedValue<RESPServer?>(nil)
    var server: RESPServer? {
        get { self.lock.withLock { $0 } }
        set { self.lock.withLock { $0 = newValue } }
    }
}

/// The configuration in force, shared with the reload action.
final class ConfigurationBox: Sendable {
    let state: LockedValue<DaemonConfiguration>
    init(_ configuration: DaemonConfiguration) { self.state = LockedValue(configuration) }
}
