public import Logging
import NIOPosix
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

    public func run() async throws {
        let port = try await self.node.primary.bind(group: MultiThreadedEventLoopGroup.singleton)
        if let follow = self.node.configuration.follow {
            // The HELLO tells the primary this node's client port: wait (briefly) for it to be bound.
            for _ in 0..<500 where self.node.clientPort == 0 { try? await Task.sleep(for: .milliseconds(10)) }
            self.node.startFollowing(host: follow.host, port: follow.port)
        }
        self.onBound(port)
        try? await gracefulShutdown()
        self.node.stopFollowing()
        await self.node.primary.shutdown()
    }
}
