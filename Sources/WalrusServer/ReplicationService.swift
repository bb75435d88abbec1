public import Logging
public import ServiceLifecycle
public import WalrusReplication

/// Runs replication for the daemon: binds the replication listener (a follower binds it too, so
/// it can serve followers once promoted), starts following if configured, and on shutdown
/// stops the follower and closes every replication connection.
public struct ReplicationService: Service {
    let node: ReplicationNode
    let logger: Logger
    let onBound: @Sendable (Int) -> Void

    public init(node: ReplicationNode, logger: Logger, onBound: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.node = node
        self.logger = logger
        self.onBound = onBound
    }

    /// Bind the replication listener (before the daemon serves).
    public func bind() async throws {
        guard self.node.primary.port == nil else { return }
        let port = try await self.node.primary.bind()
        self.onBound(port)
    }

    public func run() async throws {
        try await self.bind()
        // The HELLO tells the primary this node's client port; the daemon binds the client
        // listener first, so it is known by now.
        self.node.startIfFollowing()
        try? await gracefulShutdown()
        await self.node.stopFollowing()
        await self.node.primary.shutdown()
    }
}
