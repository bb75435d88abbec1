public import Logging
import NIOCore
import NIOPosix
public import ServiceLifecycle
public import Synchronization
import WALCore
import WalrusProtocol
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
    let group: MultiThreadedEventLoopGroup
    /// Counters for INFO.
    public let statistics: ServerStatistics
    private let boundPort = LockedValue<Int?>(nil)
    /// Connections beyond this are refused; changes take effect for the next connection (reload).
    public let maxClients: Atomic<Int>
    /// The decoder's bulk limit for new connections (reload raises it with max-value-bytes).
    public let maxBulkBytes: Atomic<Int>
    private let onBound: @Sendable (Int) -> Void
    /// Replication (nil: a standalone primary, as in the embedded tests).
    public let replication: ReplicationNode?
    /// Per-command counters and latency (nil: metrics off).
    let commandMetrics: CommandMetrics?

    /// - Parameter onBound: called with the bound port once listening (READY=1 goes here).
    public init(
        store: KeyValueStore, configuration: ServerConfiguration, logger: Logger, replication: ReplicationNode? = nil,
        commandMetrics: CommandMetrics? = nil, onBound: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.replication = replication
        self.commandMetrics = commandMetrics
        self.store = store
        self.configuration = configuration
        self.logger = logger
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.eventLoopThreads))
        self.statistics = ServerStatistics(startedNanoseconds: monotonicNanoseconds())
        self.maxClients = Atomic(configuration.maxClients)
        self.maxBulkBytes = Atomic(configuration.maxBulkBytes)
        self.onBound = onBound
    }

    /// Whether every event loop runs a task within `milliseconds` (for the watchdog: a stuck
    /// loop means stuck clients).
    public func eventLoopsRespond(withinMilliseconds milliseconds: Int64) async -> Bool {
        for loop in self.group.makeIterator() {
            // A stuck loop would not run a timer scheduled on itself, and a task group would wait
            // for it forever: whichever of the loop and a sleeping Task answers first wins.
            let answered = loop.submit { true }
            let ok = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let decided = LockedValue(false)
                let finish: @Sendable (Bool) -> Void = { value in
                    let first = decided.withLock { done -> Bool in
                        defer { done = true }
                        return !done
                    }
                    if first { continuation.resume(returning: value) }
                }
                answered.whenComplete { _ in finish(true) }
                Task {
                    try? await Task.sleep(for: .milliseconds(milliseconds))
                    finish(false)
                }
            }
            if !ok { return false }
        }
        return true
    }

    /// The port actually bound (after `run` started), for `port = 0`.
    public var port: Int? { self.boundPort.withLock { $0 } }

    public func run() async throws {
        var serverConfiguration = self.configuration
        let executor = CommandExecutor(
            store: self.store, statistics: self.statistics, server: serverConfiguration, logger: self.logger,
            replication: self.replication)
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
        let bootstrap = ServerBootstrap(group: self.group)
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
                            metrics: self.commandMetrics))
                }
            }
        let channel = try await bootstrap.bind(host: serverConfiguration.bindAddress, port: serverConfiguration.port).get()
        let port = channel.localAddress?.port ?? serverConfiguration.port
        serverConfiguration.port = port
        self.boundPort.withLock { $0 = port }
        self.logger.info(
            "Listening for clients",
            metadata: ["server.address": "\(serverConfiguration.bindAddress)", "server.port": "\(port)"])
        self.onBound(port)

        // Serve until a graceful shutdown (SIGTERM/SIGINT) or cancellation.
        try? await gracefulShutdown()
        self.logger.info("Shutting down: no new clients; sealing the log")
        try? await channel.close()
        // In-flight writes finish when the log seals them; commit waits for that.
        try? await self.store.commit()
        try? await self.group.shutdownGracefully()
    }
}
