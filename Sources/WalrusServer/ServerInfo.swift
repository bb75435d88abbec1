import Synchronization
import WALCore
import WalrusStore
#if canImport(Glibc)
import Glibc
#endif

/// The INFO reply: Redis's field names where they mean the same thing, `walrus_*` for the rest.
enum ServerInfo {
    /// What clients that check `redis_version` see: the Redis release whose commands walrus follows.
    static let redisVersion = "7.0.0"
    /// walrus's own version.
    static let walrusVersion = "0.1.0"

    static func render(sections requested: [String], executor: CommandExecutor) -> String {
        let wanted = Set(requested.map { $0.lowercased() })
        let all = wanted.isEmpty || wanted.contains("all") || wanted.contains("everything") || wanted.contains("default")
        let store = executor.store
        let wal = store.wal
        let statistics = wal.statistics
        let server = executor.statistics
        let uptime = (monotonicNanoseconds() - server.startedNanoseconds) / 1_000_000_000
        let segments = wal.segmentSummaries
        var text = ""
        func section(_ name: String, _ fields: [(String, String)]) {
            guard all || wanted.contains(name.lowercased()) else { return }
            text += "# \(name)\r\n"
            for (key, value) in fields { text += "\(key):\(value)\r\n" }
            text += "\r\n"
        }
        section(
            "Server",
            [
                ("redis_version", redisVersion), ("walrus_version", walrusVersion), ("redis_mode", "standalone"),
                ("walrus_node_id", wal.meta.nodeID), ("walrus_cluster_id", wal.meta.clusterID),
                ("walrus_epoch", String(wal.meta.currentEpoch)),
                ("os", "Linux"), ("arch_bits", "64"), ("process_id", String(getpid())),
                ("tcp_port", String(executor.server.port)), ("uptime_in_seconds", String(uptime)),
                ("uptime_in_days", String(uptime / 86400)),
            ])
        section(
            "Clients",
            [
                ("connected_clients", String(server.connectedClients.load(ordering: .relaxed))),
                ("maxclients", String(executor.server.maxClients)), ("blocked_clients", "0"),
            ])
        let fsyncMode: String
        switch store.wal.fsyncMode {
        case .always: fsyncMode = "always"
        case .interval(let ms): fsyncMode = "interval \(ms)ms"
        }
        section(
            "Persistence",
            [
                ("loading", "0"), ("aof_enabled", "1"),
                ("aof_last_write_status", wal.failure == nil && wal.diskFull == nil ? "ok" : "err"),
                ("walrus_fsync", fsyncMode), ("walrus_last_index", String(wal.lastIndex)),
                ("walrus_sealed_index", String(wal.sealedIndex)), ("walrus_first_index", String(wal.firstIndex)),
                ("walrus_wal_segments", String(segments.count)),
                ("walrus_wal_bytes", String(segments.reduce(Int64(0)) { $0 + $1.bytes })),
                ("walrus_fsyncs", String(statistics.fsyncCount)),
                ("walrus_last_fsync_usec", String(statistics.lastFsyncNanoseconds / 1000)),
                ("walrus_data_dir", store.configuration.directory),
            ])
        section(
            "Stats",
            [
                ("total_connections_received", String(server.totalConnections.load(ordering: .relaxed))),
                ("total_commands_processed", String(server.totalCommands.load(ordering: .relaxed))),
                ("rejected_connections", String(server.rejectedConnections.load(ordering: .relaxed))),
                ("walrus_protocol_errors", String(server.protocolErrors.load(ordering: .relaxed))),
            ])
        section("Replication", executor.replicationFields())
        section("Keyspace", store.count > 0 ? [("db0", "keys=\(store.count),expires=0,avg_ttl=0")] : [])
        return text
    }
}
