public import WalrusProtocol
/// How a node replicates: where its replication listener is, whom it follows, and the timing.
public struct ReplicationConfiguration: Sendable {
    /// The address the replication listener binds (`repl-bind`, default 127.0.0.1).
    public var bindAddress = "127.0.0.1"
    /// TLS for the replication listener and the follower's link (`tls-replication yes`; nil: clear).
    public var security: (any TransportSecurity)? = nil
    /// The replication port (`repl-port`, default 7380; 0 picks a free one).
    public var port = 7380
    /// The primary to follow (`follow = "host:port"`); nil on a primary.
    public var follow: (host: String, port: Int)?
    /// The shared secret (the bytes of `repl-auth-file`); nil: no authentication.
    public var secret: [UInt8]?
    /// Heartbeats are sent after this much silence (milliseconds).
    public var heartbeatMilliseconds = 1000
    /// A peer silent for this long is dropped (`repl-timeout`, milliseconds).
    public var timeoutMilliseconds = 10_000
    /// Writes wait for this many followers to report them durable (`sync-replicas`).
    public var syncReplicas = 0
    /// …for at most this long (`sync-replicas-timeout`, milliseconds).
    public var syncTimeoutMilliseconds = 5000
    /// Snapshot transfers are paced to this many bytes per second (`repl-snapshot-rate`; 0: as fast as the link).
    public var snapshotBytesPerSecond = 0
    /// Snapshot chunk size in bytes.
    public var snapshotChunkBytes = 1 << 20
    /// A STREAM frame carries about this many bytes of records.
    public var streamBatchBytes = 1 << 20
    /// Log kept for followers beyond what retention keeps anyway, at most (`repl-retention-bytes`).
    public var retentionMaxBytes: Int64 = 1 << 30
    /// A follower that went away is remembered, and its log kept, this long (`repl-retention-seconds`).
    public var retentionSeconds: Int64 = 3600
    /// This node's client port, told to the primary for INFO's slaveN:port.
    public var clientPort = 0
    /// What the primary reports for this follower instead of the address it sees and the client
    /// port (`replica-announce-ip`, `replica-announce-port`; "" and 0: those).
    public var announceHost = ""
    public var announcePort = 0
    /// The longest record the log accepts (bounds the frames a follower accepts).
    public var maxRecordBytes = 64 * 1024 * 1024

    public init() {}

    /// The largest replication payload either side accepts.
    var maxPayloadBytes: Int { max(self.maxRecordBytes, self.streamBatchBytes, self.snapshotChunkBytes) + 64 * 1024 }
}
