/// One follower as the primary sees it (`walrusctl replicas`, INFO replication, /metrics); the
/// JSON the control socket sends is this type's encoding.
public struct ReplicaStatus: Sendable, Codable, Equatable {
    public enum State: String, Sendable, Codable {
        case handshake, snapshot, catchingUp = "catching up", streaming, disconnected
    }

    public var nodeID: String
    /// The follower's IP address and its replication connection's port.
    public var host: String
    public var remotePort: Int
    /// The follower's client port (from its HELLO).
    public var clientPort: Int
    public var state: State
    /// Highest index sent, and the follower's received / durable / applied indexes.
    public var sent: UInt64
    public var received: UInt64
    public var durable: UInt64
    public var applied: UInt64
    /// Records the follower has not applied yet.
    public var lagRecords: UInt64
    /// About how many bytes of log those records are.
    public var lagBytes: Int64
    /// How old the oldest write the follower has not applied is (0 when it has everything).
    public var dataAgeSeconds: Double
    /// Seconds since the follower was last heard from.
    public var lastHeardSecondsAgo: Double
    /// Snapshot transfer progress (0 of 0 when none).
    public var snapshotBytesSent: UInt64
    public var snapshotBytesTotal: UInt64
    /// Snapshots sent to this follower since the primary started.
    public var snapshotsSent: Int
    /// Set when the follower is close to falling off the retained log.
    public var warning: String?
    /// The follower's certificate subject, when replication speaks TLS.
    public var peerSubject: String? = nil

    public init(
        nodeID: String, host: String, remotePort: Int, clientPort: Int, state: State, sent: UInt64, received: UInt64,
        durable: UInt64, applied: UInt64, lagRecords: UInt64, lagBytes: Int64, dataAgeSeconds: Double,
        lastHeardSecondsAgo: Double, snapshotBytesSent: UInt64, snapshotBytesTotal: UInt64, snapshotsSent: Int,
        warning: String?
    ) {
        self.nodeID = nodeID
        self.host = host
        self.remotePort = remotePort
        self.clientPort = clientPort
        self.state = state
        self.sent = sent
        self.received = received
        self.durable = durable
        self.applied = applied
        self.lagRecords = lagRecords
        self.lagBytes = lagBytes
        self.dataAgeSeconds = dataAgeSeconds
        self.lastHeardSecondsAgo = lastHeardSecondsAgo
        self.snapshotBytesSent = snapshotBytesSent
        self.snapshotBytesTotal = snapshotBytesTotal
        self.snapshotsSent = snapshotsSent
        self.warning = warning
    }

    /// `host:replication-connection-port`.
    public var address: String { "\(self.host):\(self.remotePort)" }
}

/// The follower's link to its primary, as `walrusctl status`, INFO and STATUS= show it.
public struct FollowerLinkStatus: Sendable, Codable, Equatable {
    public enum State: String, Sendable, Codable {
        case connecting, handshake, snapshot, catchingUp = "catching up", streaming, refused, stopped
    }

    public var primaryHost: String
    public var primaryPort: Int
    /// The primary's client port, from its CHALLENGE (0 until heard; an older primary never says).
    public var primaryClientPort: Int = 0
    public var primaryNodeID: String
    public var state: State
    /// Whether the connection is up and past the handshake.
    public var linkUp: Bool
    /// Seconds since the last frame from the primary (-1: none yet).
    public var lastIOSecondsAgo: Double
    /// When the link went down (monotonic seconds ago; -1 while it is up).
    public var linkDownSecondsAgo: Double
    /// The primary's sealed index as last heard.
    public var primarySealedIndex: UInt64
    public var received: UInt64
    public var durable: UInt64
    public var applied: UInt64
    /// Records the primary has sealed that this node has not applied.
    public var lagRecords: UInt64
    public var snapshotBytes: UInt64
    public var snapshotTotal: UInt64
    /// Why the last connection ended or was refused.
    public var lastError: String?
    /// Snapshots installed since this process started.
    public var snapshotsInstalled: Int
    /// The primary's epoch (from its CHALLENGE).
    public var primaryEpoch: UInt64
    /// Diverged files written since this process started.
    public var divergedFiles: [String]
    /// The primary's certificate subject, when the link speaks TLS.
    public var peerSubject: String? = nil

    public init(primaryHost: String, primaryPort: Int) {
        self.primaryHost = primaryHost
        self.primaryPort = primaryPort
        self.primaryNodeID = ""
        self.state = .connecting
        self.linkUp = false
        self.lastIOSecondsAgo = -1
        self.linkDownSecondsAgo = -1
        self.primarySealedIndex = 0
        self.received = 0
        self.durable = 0
        self.applied = 0
        self.lagRecords = 0
        self.snapshotBytes = 0
        self.snapshotTotal = 0
        self.lastError = nil
        self.snapshotsInstalled = 0
        self.primaryEpoch = 0
        self.divergedFiles = []
    }
}
