/// Everything a node says about itself, taken once: INFO, `walrusctl status`, the service
/// manager's STATUS= line and /metrics all render this one snapshot, so they cannot disagree.
/// Its JSON encoding is the control socket's `status` reply (flat, as scripts read it).
public struct NodeStatus: Codable, Sendable, Equatable {
    public struct EpochStart: Codable, Sendable, Equatable {
        public var epoch: UInt64
        public var firstIndex: UInt64
        public init(epoch: UInt64, firstIndex: UInt64) {
            self.epoch = epoch
            self.firstIndex = firstIndex
        }
    }

    // The node.
    /// "primary" or "follower".
    public var role: String
    public var epoch: UInt64
    public var nodeID: String
    public var clusterID: String
    /// 40 hex characters, new at every start (INFO's run_id).
    public var runID: String
    public var version: String
    public var pid: Int
    public var uptimeSeconds: UInt64
    public var dataDirectory: String
    public var logLevel: String
    /// "ok", or why the node is unhealthy or refuses writes.
    public var health: String
    /// A primary that refuses writes (stale, or a switchover's outcome unknown).
    public var fenced: Bool?
    public var epochHistory: [EpochStart]
    public var divergedFiles: [String]

    // The log and the store.
    public var lastIndex: UInt64
    public var sealedIndex: UInt64
    public var firstIndex: UInt64
    public var appliedIndex: UInt64
    public var keys: Int
    public var expiringKeys: Int
    public var expiredKeys: Int
    public var dataBytes: Int
    public var walBytes: Int64
    public var walSegments: Int
    /// "always", or "interval 100 ms".
    public var fsync: String
    public var fsyncs: UInt64
    public var lastFsyncMicroseconds: UInt64
    public var maxFsyncMicroseconds: UInt64
    /// Seconds since the newest snapshot was written (-1: none).
    public var snapshotAgeSeconds: Double

    // The server.
    public var connectedClients: Int
    public var maxClients: Int
    public var totalConnections: Int
    public var totalCommands: Int
    public var rejectedConnections: Int
    public var protocolErrors: Int
    public var clientPort: Int
    public var replicationPort: Int
    /// Process CPU time (INFO cpu), seconds.
    public var cpuUserSeconds: Double
    public var cpuSystemSeconds: Double
    /// Resident set size (INFO memory), bytes.
    public var residentBytes: Int

    // TLS (nil: off).
    public var tls: TransportSecuritySummary?
    public var tlsPort: Int?

    // A follower's link (nil on a primary).
    public var primary: String?
    public var primaryHost: String?
    public var primaryPort: Int?
    /// The primary's client port (0: not heard yet), for INFO's master_port and ROLE.
    public var primaryClientPort: Int?
    public var primaryNodeID: String?
    /// "up" or "down".
    public var link: String?
    public var linkState: String?
    public var lastIOSecondsAgo: Double?
    public var linkDownSecondsAgo: Double?
    public var receivedIndex: UInt64?
    public var durableIndex: UInt64?
    public var primarySealedIndex: UInt64?
    public var lagRecords: UInt64?
    public var snapshotsInstalled: Int?
    public var snapshotBytes: UInt64?
    public var snapshotTotalBytes: UInt64?
    public var snapshotPercent: Int?
    public var linkError: String?
    /// The primary's certificate subject, when the link speaks TLS.
    public var linkPeerSubject: String?

    // A primary's followers (nil on a follower).
    public var followers: Int?
    public var syncReplicas: Int?
    public var replicas: [ReplicaStatus]?

    public init(
        role: String, epoch: UInt64, nodeID: String, clusterID: String, runID: String, version: String, pid: Int,
        uptimeSeconds: UInt64, dataDirectory: String, logLevel: String, health: String, epochHistory: [EpochStart],
        divergedFiles: [String], lastIndex: UInt64, sealedIndex: UInt64, firstIndex: UInt64, appliedIndex: UInt64, keys: Int,
        expiringKeys: Int, expiredKeys: Int, dataBytes: Int, walBytes: Int64, walSegments: Int, fsync: String, fsyncs: UInt64,
        lastFsyncMicroseconds: UInt64, maxFsyncMicroseconds: UInt64, snapshotAgeSeconds: Double, connectedClients: Int,
        maxClients: Int, totalConnections: Int, totalCommands: Int, rejectedConnections: Int, protocolErrors: Int,
        clientPort: Int, replicationPort: Int, cpuUserSeconds: Double, cpuSystemSeconds: Double, residentBytes: Int
    ) {
        self.role = role
        self.epoch = epoch
        self.nodeID = nodeID
        self.clusterID = clusterID
        self.runID = runID
        self.version = version
        self.pid = pid
        self.uptimeSeconds = uptimeSeconds
        self.dataDirectory = dataDirectory
        self.logLevel = logLevel
        self.health = health
        self.epochHistory = epochHistory
        self.divergedFiles = divergedFiles
        self.lastIndex = lastIndex
        self.sealedIndex = sealedIndex
        self.firstIndex = firstIndex
        self.appliedIndex = appliedIndex
        self.keys = keys
        self.expiringKeys = expiringKeys
        self.expiredKeys = expiredKeys
        self.dataBytes = dataBytes
        self.walBytes = walBytes
        self.walSegments = walSegments
        self.fsync = fsync
        self.fsyncs = fsyncs
        self.lastFsyncMicroseconds = lastFsyncMicroseconds
        self.maxFsyncMicroseconds = maxFsyncMicroseconds
        self.snapshotAgeSeconds = snapshotAgeSeconds
        self.connectedClients = connectedClients
        self.maxClients = maxClients
        self.totalConnections = totalConnections
        self.totalCommands = totalCommands
        self.rejectedConnections = rejectedConnections
        self.protocolErrors = protocolErrors
        self.clientPort = clientPort
        self.replicationPort = replicationPort
        self.cpuUserSeconds = cpuUserSeconds
        self.cpuSystemSeconds = cpuSystemSeconds
        self.residentBytes = residentBytes
    }

    public var isFollower: Bool { self.role == "follower" }

    /// Fill in a follower's link fields.
    public mutating func setLink(_ link: FollowerLinkStatus) {
        self.primary = "\(link.primaryHost):\(link.primaryPort)"
        self.primaryHost = link.primaryHost
        self.primaryPort = link.primaryPort
        self.primaryClientPort = link.primaryClientPort
        self.primaryNodeID = link.primaryNodeID
        self.link = link.linkUp ? "up" : "down"
        self.linkState = link.state.rawValue
        self.lastIOSecondsAgo = link.lastIOSecondsAgo
        self.linkDownSecondsAgo = link.linkDownSecondsAgo
        self.receivedIndex = link.received
        self.durableIndex = link.durable
        self.appliedIndex = link.applied
        self.primarySealedIndex = link.primarySealedIndex
        self.lagRecords = link.lagRecords
        self.snapshotsInstalled = link.snapshotsInstalled
        if link.state == .snapshot {
            self.snapshotBytes = link.snapshotBytes
            self.snapshotTotalBytes = link.snapshotTotal
            self.snapshotPercent = link.snapshotTotal == 0 ? 0 : Int(link.snapshotBytes * 100 / link.snapshotTotal)
        }
        self.linkError = link.lastError
        self.linkPeerSubject = link.peerSubject
    }

    /// The service manager's one line: `primary · epoch 1 · index 1200 (sealed 1200) · 2
    /// followers, max lag 0 · 3 clients · 1042 keys`, or `follower of 10.0.0.1:7380 · link up,
    /// streaming · applied 1200 · lag 0 records · 3 clients · 1042 keys`.
    public var statusLine: String {
        let clientText = "\(self.connectedClients) client" + (self.connectedClients == 1 ? "" : "s")
        if self.isFollower {
            var text = "follower of \(self.primary ?? "?") · link \(self.link ?? "down"), \(self.linkState ?? "connecting")"
            if let total = self.snapshotTotalBytes, total > 0, let bytes = self.snapshotBytes {
                text += " \(bytes * 100 / total)% (\(bytes / 1_048_576) of \(total / 1_048_576) MiB)"
            }
            text += " · applied \(self.appliedIndex) · lag \(self.lagRecords ?? 0) records · \(clientText) · \(self.keys) keys"
            return text
        }
        var text = "primary · epoch \(self.epoch) · index \(self.lastIndex) (sealed \(self.sealedIndex))"
        if self.fenced == true { return "FENCED (stale primary, refusing writes) · " + text + " · " + self.health }
        if let replicas = self.replicas {
            let live = replicas.filter { $0.state != .disconnected }
            text += " · \(live.count) follower" + (live.count == 1 ? "" : "s")
            if !live.isEmpty { text += ", max lag \(live.map(\.lagRecords).max() ?? 0)" }
            if let sending = live.first(where: { $0.state == .snapshot }), sending.snapshotBytesTotal > 0 {
                text += ", sending snapshot \(sending.snapshotBytesSent * 100 / sending.snapshotBytesTotal)%"
            }
            if let risky = replicas.first(where: { $0.warning != nil }) {
                text += " · WARNING: follower \(risky.nodeID) is about to fall off the retained log"
            }
        }
        return text + " · \(clientText) · \(self.keys) keys"
    }
}
