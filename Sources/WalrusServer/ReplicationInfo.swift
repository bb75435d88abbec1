import NIOCore
import WALCore
import WalrusProtocol
import WalrusReplication
import WalrusStore

/// ROLE and INFO replication, with Redis's field names where they mean the same; offsets are
/// record indexes.
extension CommandExecutor {
    func writeRole(_ buffer: inout ByteBuffer) {
        if let replication = self.replication, replication.isFollower, let link = replication.link {
            buffer.writeArrayHeader(5)
            buffer.writeBulkReply("slave")
            buffer.writeBulkReply(link.primaryHost)
            buffer.writeIntegerReply(link.primaryPort)
            let state: String =
                switch link.state {
                case .connecting, .refused, .stopped: "connect"
                case .handshake: "handshake"
                case .snapshot, .catchingUp: "sync"
                case .streaming: "connected"
                }
            buffer.writeBulkReply(state)
            buffer.writeIntegerReply(Int(link.applied))
            return
        }
        let replicas = self.replication?.primary.replicas().filter { $0.state != .disconnected } ?? []
        buffer.writeArrayHeader(3)
        buffer.writeBulkReply("master")
        buffer.writeIntegerReply(Int(self.store.wal.sealedIndex))
        buffer.writeArrayHeader(replicas.count)
        for replica in replicas {
            buffer.writeArrayHeader(3)
            buffer.writeBulkReply(replica.host)
            buffer.writeBulkReply(String(replica.clientPort))
            buffer.writeBulkReply(String(replica.durable))
        }
    }

    func replicationFields() -> [(String, String)] {
        var fields = self.replicationRoleFields()
        let meta = self.store.wal.meta
        fields.append(("walrus_epoch", String(meta.currentEpoch)))
        fields.append(("walrus_epoch_history", meta.epochs.map { "\($0.epoch):\($0.firstIndex)" }.joined(separator: ",")))
        let diverged = ((try? FileIO.listDirectory(self.store.configuration.directory)) ?? [])
            .filter { $0.hasPrefix("diverged-") && $0.hasSuffix(".log") }.sorted()
        fields.append(("walrus_diverged_files", diverged.joined(separator: ",")))
        if let refusal = self.replication?.writeRefusal, !(self.replication?.isFollower ?? false) {
            fields.append(("walrus_fenced", refusal))
        }
        return fields
    }

    private func replicationRoleFields() -> [(String, String)] {
        let wal = self.store.wal
        let clusterID = wal.meta.clusterID
        guard let replication = self.replication else {
            return [("role", "master"), ("connected_slaves", "0"), ("master_repl_offset", String(wal.sealedIndex))]
        }
        if replication.isFollower, let link = replication.link {
            let linkUp = link.linkUp && (link.state == .streaming || link.state == .catchingUp)
            return [
                ("role", "slave"), ("master_host", link.primaryHost), ("master_port", String(link.primaryPort)),
                ("master_link_status", linkUp ? "up" : "down"),
                ("master_last_io_seconds_ago", link.lastIOSecondsAgo < 0 ? "-1" : String(Int(link.lastIOSecondsAgo))),
                ("master_sync_in_progress", link.state == .snapshot ? "1" : "0"),
                ("master_sync_total_bytes", String(link.snapshotTotal)),
                ("master_sync_read_bytes", String(link.snapshotBytes)),
                ("slave_read_repl_offset", String(link.received)), ("slave_repl_offset", String(link.applied)),
                ("slave_priority", "100"), ("slave_read_only", "1"), ("replica_announced", "1"),
                ("connected_slaves", "0"), ("master_replid", clusterID), ("master_repl_offset", String(link.applied)),
                ("walrus_durable_index", String(link.durable)), ("walrus_lag_records", String(link.lagRecords)),
                ("walrus_link_state", link.state.rawValue),
                ("walrus_link_error", link.lastError ?? ""),
            ]
        }
        let replicas = replication.primary.replicas().filter { $0.state != .disconnected }
        var fields: [(String, String)] = [("role", "master"), ("connected_slaves", String(replicas.count))]
        for (number, replica) in replicas.enumerated() {
            let state = replica.state == .streaming ? "online" : replica.state == .snapshot ? "send_bulk" : "wait_bgsave"
            fields.append((
                "slave\(number)",
                "ip=\(replica.host),port=\(replica.clientPort),state=\(state),offset=\(replica.durable),"
                    + "lag=\(Int(replica.lastHeardSecondsAgo)),node=\(replica.nodeID),applied=\(replica.applied),"
                    + "lag_records=\(replica.lagRecords),data_age_ms=\(Int(replica.dataAgeSeconds * 1000))"
            ))
        }
        fields += [
            ("master_failover_state", "no-failover"), ("master_replid", clusterID),
            ("master_repl_offset", String(wal.sealedIndex)), ("repl_backlog_active", "1"),
            ("repl_backlog_first_byte_offset", String(wal.firstIndex)),
            ("walrus_sync_replicas", String(replication.configuration.syncReplicas)),
        ]
        return fields
    }
}
