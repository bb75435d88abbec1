public import Logging
import Synchronization
import WALCore
public import WalrusStore

/// This node's part in replication: a primary (its listener serves followers) or a follower of
/// another node (the listener refuses followers and writes are READONLY).
public final class ReplicationNode: Sendable {
    public enum Role: Sendable, Equatable {
        case primary
        case follower(host: String, port: Int)
    }

    public let store: KeyValueStore
    public let configuration: ReplicationConfiguration
    public let primary: ReplicationPrimary
    let logger: Logger
    private let follower = Mutex<ReplicationFollower?>(nil)
    private let followerFlag = Atomic<Bool>(false)
    private let clientPortValue = Atomic<Int>(0)

    /// This node's client port once bound (a follower tells its primary, for INFO's slaveN:port).
    public var clientPort: Int {
        get { self.clientPortValue.load(ordering: .relaxed) }
        set { self.clientPortValue.store(newValue, ordering: .relaxed) }
    }
    private let onLinkChange: @Sendable (FollowerLinkStatus) -> Void

    public init(
        store: KeyValueStore, configuration: ReplicationConfiguration, logger: Logger,
        onLinkChange: @escaping @Sendable (FollowerLinkStatus) -> Void = { _ in }
    ) {
        self.store = store
        self.configuration = configuration
        self.logger = logger
        self.onLinkChange = onLinkChange
        self.primary = ReplicationPrimary(store: store, configuration: configuration, logger: logger)
        let seconds = configuration.retentionSeconds
        let maxBytes = configuration.retentionMaxBytes
        store.setRetentionGuard { [primary = self.primary] in
            primary.retentionFloor(seenWithinSeconds: seconds, maxBytes: maxBytes)
        }
    }

    /// Whether writes are refused (fast: every write asks).
    public var isFollower: Bool { self.followerFlag.load(ordering: .relaxed) }

    public var role: Role {
        self.follower.withLock { follower in follower.map { .follower(host: $0.host, port: $0.port) } ?? .primary }
    }

    /// The link to the primary, on a follower.
    public var link: FollowerLinkStatus? { self.follower.withLock { $0 }?.status }

    /// Follow `host:port`: refuse writes and followers, stream from the primary.
    public func startFollowing(host: String, port: Int) {
        self.followerFlag.store(true, ordering: .relaxed)
        self.primary.serving = false
        var configuration = self.configuration
        if self.clientPort != 0 { configuration.clientPort = self.clientPort }
        let follower = ReplicationFollower(
            store: self.store, configuration: configuration, host: host, port: port, logger: self.logger,
            onLinkChange: self.onLinkChange)
        let old = self.follower.withLock { current -> ReplicationFollower? in
            defer { current = follower }
            return current
        }
        old?.stop()
        follower.start()
        self.logger.notice("Following a primary", metadata: ["repl.primary": "\(host):\(port)"])
    }

    /// Stop following (shutdown, or promotion later).
    public func stopFollowing() {
        let old = self.follower.withLock { current -> ReplicationFollower? in
            defer { current = nil }
            return current
        }
        old?.stop()
    }
}
