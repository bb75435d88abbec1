import ArgumentParser
import CMallocTuning
import CoreMetrics
import Foundation
import Logging
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization
import WALCore
import WalrusReplication
import WalrusServer
import WalrusStore
import WalrusSystemd
import WalrusTLS
import WalrusProtocol
#if canImport(Glibc)
import Glibc
#endif

/// `walrusd`: the walrus daemon. Recovers the data directory, then serves RESP clients, followers,
/// the control socket and metrics, under systemd or by hand.
@main
struct Walrusd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "walrusd",
        abstract: "The walrus daemon: a write-ahead-logged key-value store that speaks the Redis protocol.",
        discussion: """
            Every key of the --config file is also a flag (--key value or --key=value; a flag wins over the file):

            \(DaemonSettings.flagHelp)
            """)

    @Option(help: "A config file (key = value lines, TOML); flags override it. SIGHUP re-reads it.")
    var config: String?

    /// Every other flag: a key of `DaemonSettings.keys`, checked against the table.
    @Argument(parsing: .allUnrecognized, help: .hidden)
    var flags: [String] = []

    /// The file (if any), then the flags.
    func resolve() throws -> DaemonConfiguration {
        do {
            return try DaemonSettings.resolve(file: self.config, flags: self.flags)
        } catch let error as DaemonSettings.FileError {
            throw ValidationError(error.description)
        }
    }

    func validate() throws { _ = try self.resolve() }

    func run() async throws {
        let settings = try self.resolve()
        // Under systemd, stderr is the journal: log natively (fields, priorities); else text.
        let toJournal = JournalLogHandler.stderrIsJournal
        let level = DynamicLogLevel(settings.logLevel)
        let logger = Logger(label: "walrusd") { label -> any LogHandler in
            level.handler(toJournal ? JournalLogHandler(identifier: "walrusd") : StreamLogHandler.standardError(label: label))
        }
        let notifier = SystemdNotifier()
        let registry = Self.bootstrapMetrics(settings)
        let store = try Self.openStore(settings, logger: logger, notifier: notifier)
        try Self.ensureIdentity(store, settings: settings, logger: logger)
        let security = try Self.makeSecurity(settings, store: store, logger: logger, notifier: notifier)
        var replicationConfiguration = try Self.replicationConfiguration(settings, store: store, logger: logger, notifier: notifier)
        if settings.tlsReplication == "yes" { replicationConfiguration.security = security }

        // One event-loop group for every listener and connection (clients, followers, the control
        // socket, metrics; the link to a primary has its own loop, below), and one thread pool
        // for blocking work off those loops. Default: half the cores, at least one. Measured on 2
        // cores with the client on the same machine: one loop serves -c 50 GET/SET 27–44% faster
        // than two, which contend for the store and the cores the flusher and the clients need.
        let loops = settings.eventLoops > 0 ? settings.eventLoops : max(1, System.coreCount / 2)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: loops)
        // A follower's link to its primary has a loop of its own: it appends, fdatasyncs and
        // ACKs each batch there (no hand-off to the flusher and back), without holding up
        // client reads on the loops above for the length of an fdatasync. Idle on a primary.
        let linkGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let threadPool = NIOThreadPool(numberOfThreads: 2)
        threadPool.start()
        func stopThreads() async {
            try? await group.shutdownGracefully()
            try? await linkGroup.shutdownGracefully()
            try? await threadPool.shutdownGracefully()
        }

        let serverBox = ServerBox()
        let replication = ReplicationNode(
            store: store, configuration: replicationConfiguration, logger: logger, group: group, threadPool: threadPool,
            followerLoop: linkGroup.next()
        ) { _ in
            if let server = serverBox.server { notifier.status(server.status.capture().statusLine) }
        }
        let ports = ListenerPorts()
        let flagKeys = Set(self.flags.filter { $0.hasPrefix("--") }.map { String($0.dropFirst(2).split(separator: "=").first ?? "") })
        let current = ServerSettings(
            settings, configFile: self.config, flagKeys: flagKeys,
            validate: { fresh, keys in
                // CONFIG SET of a certificate, key or TLS option: loaded now, or refused with why.
                if let security, !DaemonSettings.tlsLiveKeys.isDisjoint(with: keys) { try security.reload(Self.tlsOptions(fresh)) }
            }
        ) { fresh, keys in
            // The running parts follow a reload or CONFIG SET of a live key.
            if keys.contains("log-level") { level.current = fresh.logLevel }
            if keys.contains("max-clients") { serverBox.server?.maxClients.store(fresh.maxClients, ordering: .relaxed) }
            if keys.contains("max-key-bytes") || keys.contains("max-value-bytes") {
                store.setLimits(maxKeyBytes: fresh.maxKeyBytes, maxValueBytes: fresh.maxValueBytes)
                serverBox.server?.maxBulkBytes.store(max(fresh.maxKeyBytes, fresh.maxValueBytes) + 1024, ordering: .relaxed)
            }
            if keys.contains("fsync-interval") { store.wal.setFsyncInterval(milliseconds: fresh.fsyncInterval) }
        }
        var serverConfiguration = ServerConfiguration()
        serverConfiguration.bindAddress = settings.bind
        serverConfiguration.port = settings.port
        serverConfiguration.maxClients = settings.maxClients
        serverConfiguration.idleTimeoutSeconds = settings.idleTimeout
        serverConfiguration.maxBulkBytes = max(settings.maxValueBytes, settings.maxKeyBytes) + 1024
        serverConfiguration.tlsPort = settings.tlsPort > 0 ? settings.tlsPort : nil
        let server = RESPServer(
            store: store, configuration: serverConfiguration, logger: logger, group: group, replication: replication,
            threadPool: threadPool, commandMetrics: registry == nil ? nil : CommandMetrics(), ports: ports, settings: current,
            logLevel: { level.current }, security: security,
            // SHUTDOWN takes the path SIGTERM takes: drain, seal, exit 0.
            shutdown: { kill(getpid(), SIGTERM) })
        serverBox.server = server
        let replicationService = ReplicationService(node: replication, logger: logger) { port in ports.replicationPort = port }
        let reloadAction: @Sendable () -> String = {
            notifier.reloading(status: "Reloading")
            let result = self.reload(settings: current, store: store, logger: logger, security: security)
            notifier.notify(["READY=1", "STATUS=" + server.status.capture().statusLine])
            return result
        }
        let controlPath =
            settings.controlSocket ?? getenv("RUNTIME_DIRECTORY").map { String(cString: $0) + "/control.sock" }
            ?? settings.data + "/control.sock"
        let control = ControlSocketService(
            path: controlPath,
            commands: ControlCommands(
                store: store, server: server, logLevel: level, logger: logger, replication: replication, threadPool: threadPool,
                reload: reloadAction),
            logger: logger, group: group)
        let metrics = registry.flatMap { registry in
            settings.metricsPort.map { port in
                MetricsService(
                    collector: MetricsCollector(registry: registry, store: store, server: server, replication: replication),
                    host: settings.metricsBind, port: port, logger: logger, group: group)
            }
        }

        // Every listener binds before anything is served, so every view (INFO, CONFIG GET, the
        // follower's HELLO, walrusctl status) shows the bound ports from the first request; then
        // READY=1.
        do {
            try await server.bind()
            try await replicationService.bind()
            try await control.bind()
            try await metrics?.bind()
        } catch {
            logger.critical("Cannot listen", metadata: ["walrusd.error": "\(error)"])
            notifier.status("Failed: \(error)")
            store.close()
            await stopThreads()
            throw ExitCode(75)  // EX_TEMPFAIL: the port may be free later
        }
        let role = settings.follow.map { "follower of \($0)" } ?? "primary"
        notifier.ready(status: "\(role) · listening on \(settings.bind):\(ports.clientPort) · \(store.count) keys")
        logger.info(
            "Ready",
            metadata: [
                "server.port": "\(ports.clientPort)", "walrusd.role": "\(role)",
                // 1: one glibc arena, set before main (CMallocTuning); 0: left to glibc or the operator's setting.
                "malloc.arenaMax": "\(walrus_malloc_arena_max())",
            ])

        // The certificates' expiry is checked at start, at every reload and once a day.
        let expiryCheck = security.map { security in
            group.next().scheduleRepeatedTask(initialDelay: .hours(24), delay: .hours(24)) { _ in security.warnIfExpiring() }
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: server, failureTerminationBehavior: .gracefullyShutdownGroup),
            .init(service: replicationService, failureTerminationBehavior: .gracefullyShutdownGroup),
            .init(service: control, failureTerminationBehavior: .gracefullyShutdownGroup),
            .init(
                service: SystemdStatusService(notifier: notifier, store: store, server: server, groups: [group, linkGroup], logger: logger),
                failureTerminationBehavior: .gracefullyShutdownGroup),
            .init(service: ExpiryService(store: store, server: server, threadPool: threadPool, logger: logger)),
            .init(service: ReloadService(reload: reloadAction)),
        ]
        if let metrics { services.append(.init(service: metrics, failureTerminationBehavior: .gracefullyShutdownGroup)) }
        let serviceGroup = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await withGracefulShutdownHandler {
                try await serviceGroup.run()
            } onGracefulShutdown: {
                notifier.stopping(status: "Stopping: draining clients and sealing the log")
            }
        } catch {
            logger.critical("walrusd stopped", metadata: ["walrusd.error": "\(error)"])
            expiryCheck?.cancel()
            store.close()
            await stopThreads()
            throw ExitCode(70)  // EX_SOFTWARE
        }
        expiryCheck?.cancel()
        store.close()
        await stopThreads()
        logger.info("Stopped cleanly")
    }

    // MARK: Start-up steps

    /// swift-metrics with a Prometheus registry behind it, bootstrapped before the log opens (the
    /// log's flusher records fdatasync latency and group-commit sizes through it).
    static func bootstrapMetrics(_ settings: DaemonSettings) -> PrometheusCollectorRegistry? {
        guard settings.metricsPort != nil else { return nil }
        let prometheus = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: prometheus)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
            .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
        ]
        factory.defaultValueHistogramBuckets = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384]
        MetricsSystem.bootstrap(factory)
        return prometheus
    }

    static func openStore(_ settings: DaemonSettings, logger: Logger, notifier: SystemdNotifier) throws -> KeyValueStore {
        let directory = settings.data
        var configuration = StoreConfiguration(directory: directory)
        configuration.wal.fsyncMode = settings.fsync == "always" ? .always : .interval(milliseconds: settings.fsyncInterval)
        configuration.wal.segmentSizeBytes = settings.segmentSize
        configuration.maxKeyBytes = settings.maxKeyBytes
        configuration.maxValueBytes = settings.maxValueBytes
        configuration.retention = .init(keepBytes: Int64(settings.retentionBytes), keepSeconds: Int64(settings.retentionSeconds))
        let store: KeyValueStore
        do {
            // Recovery has begun: ask for time now, not only after the first progress report.
            notifier.extendTimeout(microseconds: 10_000_000, status: "Recovering \(directory)")
            store = try KeyValueStore.open(configuration, logger: logger) { progress in
                logger.info(
                    "Recovering", metadata: ["recovery.percent": "\(progress.percent)", "recovery.bytes": "\(progress.bytesRead)"])
                // Still making progress: ask the manager for 10 s more (progress comes every 250 ms).
                notifier.extendTimeout(
                    microseconds: 10_000_000,
                    status:
                        "Recovering \(directory): \(progress.percent)% (\(progress.bytesRead / 1_048_576) of \(progress.bytesTotal / 1_048_576) MiB)"
                )
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
        return store
    }

    /// A node id for every node; a cluster id when a primary initialises its directory (a
    /// follower adopts its primary's on the first sync).
    static func ensureIdentity(_ store: KeyValueStore, settings: DaemonSettings, logger: Logger) throws {
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
    }

    static func replicationConfiguration(
        _ settings: DaemonSettings, store: KeyValueStore, logger: Logger, notifier: SystemdNotifier
    ) throws -> ReplicationConfiguration {
        var configuration = ReplicationConfiguration()
        configuration.bindAddress = settings.replBind
        configuration.port = settings.replPort
        configuration.follow = settings.followTarget
        configuration.syncReplicas = settings.syncReplicas
        configuration.syncTimeoutMilliseconds = settings.syncReplicasTimeout
        configuration.timeoutMilliseconds = settings.replTimeout
        configuration.heartbeatMilliseconds = min(1000, settings.replTimeout / 4)
        configuration.snapshotBytesPerSecond = settings.replSnapshotRate
        configuration.retentionMaxBytes = Int64(settings.replRetentionBytes)
        configuration.retentionSeconds = Int64(settings.replRetentionSeconds)
        configuration.clientPort = settings.port
        configuration.announceHost = settings.replicaAnnounceIp
        configuration.announcePort = settings.replicaAnnouncePort
        configuration.maxRecordBytes = store.configuration.wal.maxRecordBytes
        if let keyFile = settings.replAuthFile {
            do {
                configuration.secret = try ReplicationAuth.loadKeyFile(keyFile)
            } catch {
                logger.critical("Cannot use the replication key file", metadata: ["walrusd.error": "\(error)"])
                notifier.status("Failed: \(error)")
                store.close()
                throw ExitCode(78)  // EX_CONFIG
            }
        }
        return configuration
    }

    /// The TLS keys of `settings`, for WalrusTLS.
    static func tlsOptions(_ settings: DaemonSettings) -> TLSOptions {
        var options = TLSOptions()
        options.certFile = settings.tlsCertFile
        options.keyFile = settings.tlsKeyFile
        options.keyFilePass = settings.tlsKeyFilePass
        options.clientCertFile = settings.tlsClientCertFile
        options.clientKeyFile = settings.tlsClientKeyFile
        options.clientKeyFilePass = settings.tlsClientKeyFilePass
        options.caCertFile = settings.tlsCaCertFile
        options.caCertDir = settings.tlsCaCertDir
        options.authClients = settings.tlsAuthClients
        options.replication = settings.tlsReplication == "yes"
        options.protocols = settings.tlsProtocols
        options.ciphers = settings.tlsCiphers
        options.ciphersuites = settings.tlsCiphersuites
        return options
    }

    /// TLS, when a `tls-port` or `tls-replication yes` asks for it; a certificate that does not
    /// load stops the start (EX_CONFIG) with the reason.
    static func makeSecurity(
        _ settings: DaemonSettings, store: KeyValueStore, logger: Logger, notifier: SystemdNotifier
    ) throws -> TLSSecurity? {
        guard settings.tlsEnabled else { return nil }
        do {
            let security = try TLSSecurity(options: Self.tlsOptions(settings), logger: logger)
            let summary = security.summary
            logger.info(
                "TLS certificates loaded",
                metadata: [
                    "tls.subject": "\(summary.certificateSubject)", "tls.issuer": "\(summary.certificateIssuer)",
                    "tls.notAfter": "\(TLSSecurity.date(Int(summary.certificateExpires)))", "tls.authClients": "\(summary.authClients)",
                    "tls.protocols": "\(summary.protocols)", "tls.replication": "\(summary.replication)",
                ])
            return security
        } catch {
            logger.critical("Cannot set up TLS", metadata: ["walrusd.error": "\(error)"])
            notifier.status("Failed: TLS: \(error)")
            store.close()
            throw ExitCode(78)  // EX_CONFIG
        }
    }

    /// Re-read the config file and apply what can change live; say what needs a restart. The
    /// certificates are read again every time (renewed files at the same paths are the usual
    /// rotation); if they do not load, nothing changes.
    func reload(settings: ServerSettings, store: KeyValueStore, logger: Logger, security: TLSSecurity?) -> String {
        let fresh: DaemonSettings
        do {
            fresh = try self.resolve()
        } catch {
            logger.error("Reload failed: the configuration does not parse; nothing changed", metadata: ["reload.error": "\(error)"])
            return "nothing changed: \(error)"
        }
        let before = settings.snapshot
        let changed = fresh.changedKeys(from: before)
        var live = changed.filter { DaemonSettings.liveKeys.contains($0) }
        var needRestart = changed.filter { !DaemonSettings.liveKeys.contains($0) }
        // The interval can change live, the mode cannot (it decides when clients are answered).
        if live.contains("fsync-interval") && store.wal.fsyncMode == .always {
            live.removeAll { $0 == "fsync-interval" }
            if !needRestart.contains("fsync") { needRestart.append("fsync-interval (with fsync = \"always\" it has no effect)") }
        }
        // Only live keys take their new values; the rest keep the running ones until a restart.
        var applied = before
        for name in live { if let key = DaemonSettings.key(name) { try? applied.set(name, fresh.value(of: key)) } }
        var certificates = ""
        if let security {
            do {
                try security.reload(Self.tlsOptions(applied))
                certificates = "; TLS certificates reloaded"
            } catch {
                logger.error("Reload failed: the TLS certificates do not load; nothing changed", metadata: ["reload.error": "\(error)"])
                return "nothing changed: TLS: \(error)"
            }
        }
        settings.replace(with: applied, applying: live)
        var parts: [String] = []
        parts.append(live.isEmpty ? "nothing changed live" : "applied " + live.joined(separator: ", "))
        if !needRestart.isEmpty { parts.append("needs a restart: " + needRestart.joined(separator: ", ")) }
        let summary = parts.joined(separator: "; ") + certificates
        logger.notice(
            "Reloaded",
            metadata: ["reload.applied": "\(live.joined(separator: ","))", "reload.needRestart": "\(needRestart.joined(separator: ","))"])
        return summary
    }

    /// `bytes` random bytes as hex (node and cluster ids).
    static func randomHex(bytes: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<bytes).map { _ in
            let byte = UInt8.random(in: 0...255, using: &generator)
            return (byte < 16 ? "0" : "") + String(byte, radix: 16)
        }.joined()
    }
}

/// The server, once made (the link-change callback and the settings' appliers are made before it).
final class ServerBox: @unchecked Sendable {
    private let lock = LockedValue<RESPServer?>(nil)
    var server: RESPServer? {
        get { self.lock.withLock { $0 } }
        set { self.lock.withLock { $0 = newValue } }
    }
}
