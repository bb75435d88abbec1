public import Logging
public import NIOCore
public import NIOPosix
public import ServiceLifecycle
public import Synchronization
import WALCore
public import WalrusProtocol
public import WalrusStore
public import WalrusReplication

/// The client port: RESP2 over TCP, as a swift-service-lifecycle service.
///
/// On graceful shutdown it stops accepting, lets in-flight commands finish (bounded), closes the
/// connections and seals the log.
public final class RESPServer: Service, Sendable {
    let store: KeyValueStore
    let configuration: ServerConfiguration
    let logger: Logger
    /// The daemon's one event-loop group (not owned: the daemon shuts it down last).
    let group: any EventLoopGroup
    /// Counters for INFO.
    public let statistics: ServerStatistics
    /// Connections beyond this are refused; changes take effect for the next connection (reload).
    public let maxClients: Atomic<Int>
    /// The decoder's bulk limit for new connections (reload raises it with max-value-bytes).
    public let maxBulkBytes: Atomic<Int>
    private let onBound: @Sendable (Int) -> Void
    /// Replication (nil: a standalone primary, as in the embedded tests).
    public let replication: ReplicationNode?
    /// Per-command counters and latency (nil: metrics off).
    let commandMetrics: CommandMetrics?
    /// The ports every listener bound.
    public let ports: ListenerPorts
    /// The settings in force (CONFIG GET/SET, reload).
    public let settings: ServerSettings
    /// The node's status, as INFO, walrusctl, STATUS= and /metrics show it.
    public let status: NodeStatusSource
    let executor: CommandExecutor
    private let listener = LockedValue<(any Channel)?>(nil)
    private let tlsListener = LockedValue<(any Channel)?>(nil)
    /// TLS for the `tlsPort` listener (nil: none).
    public let security: (any TransportSecurity)?

    /// - Parameters:
    ///   - threadPool: where SAVE and BGSAVE write snapshots (nil: a thread each).
    ///   - settings: the running settings (nil: the store's and `configuration`'s, for embedded use).
    ///   - onBound: called with the bound port once listening (READY=1 goes here).
    public init(
        store: KeyValueStore, configuration: ServerConfiguration, logger: Logger, group: any EventLoopGroup,
        replication: ReplicationNode? = nil, threadPool: NIOThreadPool? = nil, commandMetrics: CommandMetrics? = nil,
        ports: ListenerPorts = ListenerPorts(),
        settings: ServerSettings? = nil, logLevel: @escaping @Sendable () -> Logger.Level = { .info },
        security: (any TransportSecurity)? = nil,
        shutdown: (@Sendable () -> Void)? = nil, onBound: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.security = security
        self.replication = replication
        self.commandMetrics = commandMetrics
        self.store = store
        self.configuration = configuration
        self.logger = logger
        self.group = group
        let statistics = ServerStatistics(startedNanoseconds: monotonicNanoseconds())
        self.statistics = statistics
        self.maxClients = Atomic(configuration.maxClients)
        self.maxBulkBytes = Atomic(configuration.maxBulkBytes)
        self.onBound = onBound
        self.ports = ports
        let settings = settings ?? ServerSettings(server: configuration, store: store)
        self.settings = settings
        self.status = NodeStatusSource(
            store: store, statistics: statistics, replication: replication, ports: ports, settings: settings, logLevel: logLevel,
            security: security)
        self.executor = CommandExecutor(
            store: store, statistics: statistics, server: configuration, logger: logger, replication: replication, ports: ports,
            settings: settings, status: self.status, background: threadPool.map { .pool($0) } ?? .ownThread, shutdown: shutdown)
        // The primary's PUBLISHes reach this node's subscribers too.
        let hub = self.executor.pubsub
        replication?.setPublishHandler { channel, message in
            hub.publish(channel: ByteKey(channel), message: ByteBuffer(bytes: message))
        }
    }

    /// The port actually bound (after `run` started), for `port = 0`.
    public var port: Int? {
        let port = self.ports.clientPort
        return port == 0 ? nil : port
    }

    /// Bind the client listener (the daemon binds every listener before it serves, so every
    /// view shows the bound ports from the start). `run` binds if this was not called.
    public func bind() async throws {
        guard self.listener.withLock({ $0 }) == nil else { return }
        let serverConfiguration = self.configuration
        let executor = self.executor
        let statistics = self.statistics
        let logger = self.logger
        let limits = {
            var limits = RESPLimits()
            limits.maxBulkBytes = serverConfiguration.maxBulkBytes
            limits.maxArguments = serverConfiguration.maxArguments
            return limits
        }()
        let server = self
        let idle = serverConfiguration.idleTimeoutSeconds
        let commandMetrics = self.commandMetrics
        let security = self.security
        func bootstrap(tls: Bool) -> ServerBootstrap {
            ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // The tcpOption form sets TCP_NODELAY at IPPROTO_TCP (the socketOption form would set
            // SO_DEBUG, which needs CAP_NET_ADMIN and gets every connection reset under hardening).
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let maxClients = server.maxClients.load(ordering: .relaxed)
                    if statistics.connectedClients.load(ordering: .relaxed) >= maxClients {
                        statistics.rejectedConnections.add(1, ordering: .relaxed)
                        logger.warning(
                            "Refusing a client: max clients reached",
                            metadata: ["client.address": "\(channel.remoteAddress?.description ?? "?")", "server.maxClients": "\(maxClients)"])
                        var buffer = channel.allocator.buffer(capacity: 48)
                        buffer.writeErrorReply("ERR max number of clients reached")
                        channel.writeAndFlush(buffer).whenComplete { _ in channel.close(promise: nil) }
                        return
                    }
                    let sync = channel.pipeline.syncOperations
                    if idle > 0 {
                        try sync.addHandler(IdleStateHandler(readTimeout: .seconds(Int64(idle))))
                    }
                    var connectionLimits = limits
                    connectionLimits.maxBulkBytes = server.maxBulkBytes.load(ordering: .relaxed)
                    try sync.addHandler(
                        RESPConnectionHandler(
                            executor: executor, statistics: statistics, logger: logger, limits: connectionLimits,
                            metrics: commandMetrics, tls: tls))
                    // TLS goes in front of everything: the handlers behind it see plaintext.
                    if tls, let security { try security.addServerHandlers(to: channel, listener: "client", onHandshake: nil) }
                }
            }
        }
        if let tlsPort = serverConfiguration.tlsPort, self.security != nil {
            let channel = try await bootstrap(tls: true).bind(host: serverConfiguration.bindAddress, port: tlsPort).get()
            let port = channel.localAddress?.port ?? tlsPort
            self.ports.tlsPort = port
            self.tlsListener.withLock { $0 = channel }
            self.logger.info(
                "Listening for TLS clients",
                metadata: ["server.address": "\(serverConfiguration.bindAddress)", "server.tlsPort": "\(port)"])
        }
        let channel = try await bootstrap(tls: false).bind(host: serverConfiguration.bindAddress, port: serverConfiguration.port).get()
        let port = channel.localAddress?.port ?? serverConfiguration.port
        self.ports.clientPort = port
        // With TLS replication the port peers are told (HELLO, CHALLENGE, so INFO's slaveN and
        // master_port, which Sentinel connects to) is the TLS one, as Redis announces its tls-port.
        let tlsPort = self.ports.tlsPort
        self.replication?.clientPort = self.replication?.configuration.security != nil && tlsPort > 0 ? tlsPort : port
        self.listener.withLock { $0 = channel }
        self.logger.info(
            "Listening for clients",
            metadata: ["server.address": "\(serverConfiguration.bindAddress)", "server.port": "\(port)"])
        self.onBound(port)
    }

    public func run() async throws {
        try await self.bind()
        guard let channel = self.listener.withLock({ $0 }) else { return }
        // Serve until a graceful shutdown (SIGTERM/SIGINT) or cancellation.
        try? await gracefulShutdown()
        self.logger.info("Shutting down: no new clients; sealing the log")
        try? await channel.close()
        if let tls = self.tlsListener.withLock({ $0 }) { try? await tls.close() }
        // In-flight writes finish when the log seals them; commit waits for that.
        try? await self.store.commit()
    }
}
