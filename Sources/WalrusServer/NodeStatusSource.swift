import Logging
public import WalrusProtocol
public import WalrusReplication
public import WalrusStore
import WALCore
#if canImport(Glibc)
import Glibc
#endif

/// Takes `NodeStatus` snapshots from the running parts. Nothing here takes the store's lock (the
/// store publishes its counts), so INFO inside a MULTI or a script is safe.
public final class NodeStatusSource: Sendable {
    let store: KeyValueStore
    let statistics: ServerStatistics
    let replication: ReplicationNode?
    let ports: ListenerPorts
    let settings: ServerSettings
    let logLevel: @Sendable () -> Logger.Level
    let security: (any TransportSecurity)?
    /// 40 hex characters, new at every start (INFO's run_id).
    public let runID: String

    init(
        store: KeyValueStore, statistics: ServerStatistics, replication: ReplicationNode?, ports: ListenerPorts,
        settings: ServerSettings, logLevel: @escaping @Sendable () -> Logger.Level, security: (any TransportSecurity)? = nil
    ) {
        self.security = security
        self.store = store
        self.statistics = statistics
        self.replication = replication
        self.ports = ports
        self.settings = settings
        self.logLevel = logLevel
        var generator = SystemRandomNumberGenerator()
        self.runID = (0..<20).map { _ in
            let byte = UInt8.random(in: 0...255, using: &generator)
            return (byte < 16 ? "0" : "") + String(byte, radix: 16)
        }.joined()
    }

    /// The walrus release.
    public static let version = "0.2.0"

    /// One snapshot of everything.
    public func capture() -> NodeStatus {
        let wal = self.store.wal
        let walStatistics = wal.statistics
        let segments = wal.segmentSummaries
        let meta = wal.meta
        var fsync: String
        switch wal.fsyncMode {
        case .always: fsync = "always"
        case .interval(let milliseconds): fsync = "interval \(milliseconds) ms"
        }
        // How the open segment is written (direct I/O unless the filesystem refused it or
        // WALRUS_DIRECT_IO=0).
        fsync += wal.writesDirectly ? ", direct I/O" : ", through the page cache"

        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let directory = self.store.configuration.directory
        let names = (try? FileIO.listDirectory(directory)) ?? []
        let refusal = self.replication?.writeRefusal
        let health = wal.failure?.message ?? wal.diskFull?.message ?? "ok"
        var status = NodeStatus(
            role: self.replication?.isFollower == true ? "follower" : "primary", epoch: meta.currentEpoch, nodeID: meta.nodeID,
            clusterID: meta.clusterID, runID: self.runID, version: Self.version, pid: Int(getpid()),
            uptimeSeconds: (monotonicNanoseconds() - self.statistics.startedNanoseconds) / 1_000_000_000,
            dataDirectory: directory, logLevel: self.logLevel().rawValue, health: health,
            epochHistory: meta.epochs.map { .init(epoch: $0.epoch, firstIndex: $0.firstIndex) },
            divergedFiles: names.filter { $0.hasPrefix("diverged-") && $0.hasSuffix(".log") }.sorted(),
            lastIndex: wal.lastIndex, sealedIndex: wal.sealedIndex, firstIndex: wal.firstIndex,
            appliedIndex: self.store.appliedIndex, keys: self.store.count, expiringKeys: self.store.expiringCount,
            expiredKeys: self.store.expiredKeys, dataBytes: self.store.dataBytes,
            walBytes: segments.reduce(Int64(0)) { $0 + $1.bytes }, walSegments: segments.count, fsync: fsync,
            fsyncs: UInt64(walStatistics.fsyncCount), lastFsyncMicroseconds: UInt64(walStatistics.lastFsyncNanoseconds / 1000),
            maxFsyncMicroseconds: UInt64(walStatistics.maxFsyncNanoseconds / 1000),
            snapshotAgeSeconds: Self.snapshotAge(directory, names: names),
            connectedClients: self.statistics.connectedClients.load(ordering: .relaxed),
            maxClients: self.settings.snapshot.maxClients, totalConnections: self.statistics.totalConnections.load(ordering: .relaxed),
            totalCommands: self.statistics.totalCommands.load(ordering: .relaxed),
            rejectedConnections: self.statistics.rejectedConnections.load(ordering: .relaxed),
            protocolErrors: self.statistics.protocolErrors.load(ordering: .relaxed), clientPort: self.ports.clientPort,
            replicationPort: self.ports.replicationPort,
            cpuUserSeconds: Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6,
            cpuSystemSeconds: Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6,
            residentBytes: Self.residentBytes())
        if let security = self.security {
            status.tls = security.summary
            status.tlsPort = self.ports.tlsPort
        }
        if let replication = self.replication {
            if replication.isFollower, let link = replication.link {
                status.setLink(link)
            } else if !replication.isFollower {
                let replicas = replication.primary.replicas()
                status.replicas = replicas
                status.followers = replicas.filter { $0.state != .disconnected }.count
                status.syncReplicas = replication.configuration.syncReplicas
                if let refusal {
                    status.health = refusal
                    status.fenced = true
                }
            }
        }
        return status
    }

    /// Seconds since the newest snapshot file was written, or -1.
    static func snapshotAge(_ directory: String, names: [String]) -> Double {
        let newest = names.compactMap { name in SnapshotName.parse(name).map { (index: $0, name: name) } }.max { $0.index < $1.index }
        guard let newest, let modified = FileIO.fileStatus(directory + "/" + newest.name)?.modified else { return -1 }
        return max(0, Double(time(nil)) - Double(modified))
    }

    /// The resident set size from /proc/self/statm.
    static func residentBytes() -> Int {
        guard let bytes = try? FileIO.readFile("/proc/self/statm") else { return 0 }
        let fields = String(decoding: bytes, as: UTF8.self).split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}
