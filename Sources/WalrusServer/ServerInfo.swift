import WalrusProtocol
import WalrusReplication
#if canImport(Glibc)
import Glibc
#endif

/// The INFO reply, rendered from one `NodeStatus`: Redis's section and field names where they
/// mean the same thing, `walrus_*` for the rest. Offsets are record indexes.
enum ServerInfo {
    /// What clients that check `redis_version` see: the Redis release whose commands walrus follows.
    static let redisVersion = "7.0.0"

    /// Redis's default sections, in its order; "all" and "everything" add commandstats.
    static let defaultSections = [
        "server", "clients", "memory", "persistence", "stats", "replication", "cpu", "modules", "errorstats", "cluster",
        "keyspace",
    ]

    static func render(sections requested: [String], executor: CommandExecutor) -> String {
        let status = executor.status.capture()
        var wanted = Set<String>()
        for name in requested.map({ $0.lowercased() }) {
            switch name {
            case "default": wanted.formUnion(Self.defaultSections)
            case "all", "everything": wanted.formUnion(Self.defaultSections + ["commandstats", "latencystats"])
            default: wanted.insert(name)
            }
        }
        if requested.isEmpty { wanted.formUnion(Self.defaultSections) }
        var text = ""
        func section(_ name: String, _ fields: @autoclosure () -> [(String, String)]) {
            guard wanted.contains(name.lowercased()) else { return }
            if !text.isEmpty { text += "\r\n" }
            text += "# \(name)\r\n"
            for (key, value) in fields() { text += "\(key):\(value)\r\n" }
        }
        section(
            "Server",
            [
                ("redis_version", redisVersion), ("redis_mode", "standalone"), ("os", "Linux"), ("arch_bits", "64"),
                ("process_id", String(status.pid)), ("run_id", status.runID), ("tcp_port", String(status.clientPort)),
                ("uptime_in_seconds", String(status.uptimeSeconds)), ("uptime_in_days", String(status.uptimeSeconds / 86400)),
                ("executable", "walrusd"), ("walrus_version", status.version), ("walrus_node_id", status.nodeID),
                ("walrus_cluster_id", status.clusterID), ("walrus_epoch", String(status.epoch)),
                ("walrus_replication_port", String(status.replicationPort)),
            ] + Self.tlsFields(status))
        section(
            "Clients",
            [
                ("connected_clients", String(status.connectedClients)), ("maxclients", String(status.maxClients)),
                ("blocked_clients", "0"), ("tracking_clients", "0"),
            ])
        section(
            "Memory",
            [
                ("used_memory", String(status.dataBytes)), ("used_memory_rss", String(status.residentBytes)),
                ("used_memory_lua", String(executor.scripts.luaMemory)),
                ("used_memory_vm_eval", String(executor.scripts.luaMemory)),
                ("used_memory_scripts_eval", String(executor.scripts.cachedBytes)),
                ("number_of_cached_scripts", String(executor.scripts.cachedCount)),
                ("maxmemory", "0"), ("maxmemory_policy", "noeviction"), ("mem_allocator", "libc"),
                ("walrus_data_bytes", String(status.dataBytes)),
            ])
        section(
            "Persistence",
            [
                ("loading", "0"), ("rdb_changes_since_last_save", String(status.lastIndex)),
                ("rdb_last_save_time", String(executor.store.lastCheckpointSeconds)), ("aof_enabled", "1"),
                ("aof_rewrite_in_progress", "0"), ("aof_last_write_status", status.health == "ok" ? "ok" : "err"),
                ("walrus_fsync", status.fsync), ("walrus_last_index", String(status.lastIndex)),
                ("walrus_sealed_index", String(status.sealedIndex)), ("walrus_first_index", String(status.firstIndex)),
                ("walrus_wal_segments", String(status.walSegments)), ("walrus_wal_bytes", String(status.walBytes)),
                ("walrus_fsyncs", String(status.fsyncs)), ("walrus_last_fsync_usec", String(status.lastFsyncMicroseconds)),
                ("walrus_commit_gathers", String(executor.statistics.commitGathers.load(ordering: .relaxed))),
                ("walrus_commit_gather_timeouts", String(executor.statistics.commitGatherTimeouts.load(ordering: .relaxed))),
                ("walrus_data_dir", status.dataDirectory),
            ])
        let pubsub = executor.pubsub.counts
        section(
            "Stats",
            [
                ("total_connections_received", String(status.totalConnections)),
                ("total_commands_processed", String(status.totalCommands)),
                ("rejected_connections", String(status.rejectedConnections)), ("expired_keys", String(status.expiredKeys)),
                ("total_error_replies", String(executor.statistics.errorReplies.load(ordering: .relaxed))),
                ("evicted_keys", "0"), ("pubsub_channels", String(pubsub.channels)), ("pubsub_patterns", String(pubsub.patterns)),
                ("walrus_protocol_errors", String(status.protocolErrors)),
            ])
        section("Replication", Self.replicationFields(status, executor: executor))
        section(
            "CPU",
            [
                ("used_cpu_sys", Self.seconds(status.cpuSystemSeconds)), ("used_cpu_user", Self.seconds(status.cpuUserSeconds)),
                ("used_cpu_sys_children", "0.000000"), ("used_cpu_user_children", "0.000000"),
            ])
        section("Modules", [])
        section("Errorstats", executor.statistics.errorStatistics)
        section("Cluster", [("cluster_enabled", "0")])
        section(
            "Keyspace",
            status.keys > 0 ? [("db0", "keys=\(status.keys),expires=\(status.expiringKeys),avg_ttl=0")] : [])
        section("Commandstats", executor.statistics.commands.infoFields())
        section("Latencystats", [])
        return text
    }

    /// The TLS listener and the certificate in force (none of these when TLS is off).
    static func tlsFields(_ status: NodeStatus) -> [(String, String)] {
        guard let tls = status.tls else { return [] }
        let now = Int64(time(nil))
        return [
            ("walrus_tls_port", String(status.tlsPort ?? 0)), ("walrus_tls_replication", tls.replication ? "yes" : "no"),
            ("walrus_tls_auth_clients", tls.authClients), ("walrus_tls_protocols", tls.protocols),
            ("walrus_tls_cert_subject", tls.certificateSubject), ("walrus_tls_cert_issuer", tls.certificateIssuer),
            ("walrus_tls_cert_expires", String(tls.certificateExpires)),
            ("walrus_tls_cert_expires_in_days", String((tls.certificateExpires - now) / 86_400)),
            ("walrus_tls_reloads", String(tls.reloads)),
        ]
    }

    private static func seconds(_ value: Double) -> String {
        let micro = Int((value * 1_000_000).rounded())
        let fraction = String(micro % 1_000_000)
        return "\(micro / 1_000_000)." + String(repeating: "0", count: 6 - fraction.count) + fraction
    }

    /// The primary's port as Redis tools expect it: its client port (from its CHALLENGE), or
    /// the replication port until the link has been up once.
    static func primaryClientPort(_ status: NodeStatus) -> Int {
        if let port = status.primaryClientPort, port != 0 { return port }
        return status.primaryPort ?? 0
    }

    private static func replicationFields(_ status: NodeStatus, executor: CommandExecutor) -> [(String, String)] {
        var fields: [(String, String)] = []
        if status.isFollower {
            let linkUp = status.link == "up" && (status.linkState == "streaming" || status.linkState == "catching up")
            fields += [
                ("role", "slave"), ("master_host", status.primaryHost ?? ""), ("master_port", String(Self.primaryClientPort(status))),
                ("master_link_status", linkUp ? "up" : "down"),
                ("master_last_io_seconds_ago", String(Int(status.lastIOSecondsAgo ?? -1))),
                ("master_sync_in_progress", status.linkState == "snapshot" ? "1" : "0"),
                ("slave_read_repl_offset", String(status.receivedIndex ?? 0)), ("slave_repl_offset", String(status.appliedIndex)),
            ]
            if !linkUp { fields.append(("master_link_down_since_seconds", String(Int(status.linkDownSecondsAgo ?? -1)))) }
            if status.linkState == "snapshot" {
                fields += [
                    ("master_sync_total_bytes", String(status.snapshotTotalBytes ?? 0)),
                    ("master_sync_read_bytes", String(status.snapshotBytes ?? 0)),
                ]
            }
            fields += [
                ("slave_priority", String(executor.settings.snapshot.replicaPriority)), ("slave_read_only", "1"), ("replica_announced", "1"), ("connected_slaves", "0"),
                ("master_failover_state", "no-failover"), ("master_replid", status.clusterID),
                ("master_repl_offset", String(status.appliedIndex)), ("walrus_durable_index", String(status.durableIndex ?? 0)),
                ("walrus_lag_records", String(status.lagRecords ?? 0)), ("walrus_link_state", status.linkState ?? ""),
                ("walrus_link_error", status.linkError ?? ""),
            ]
            if status.tls?.replication == true { fields.append(("walrus_master_tls_peer", status.linkPeerSubject ?? "")) }
        } else {
            let replicas = (status.replicas ?? []).filter { $0.state != .disconnected }
            fields += [("role", "master"), ("connected_slaves", String(replicas.count))]
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
                ("master_failover_state", "no-failover"), ("master_replid", status.clusterID),
                ("master_repl_offset", String(status.sealedIndex)), ("repl_backlog_active", "1"),
                ("repl_backlog_first_byte_offset", String(status.firstIndex)),
                ("walrus_sync_replicas", String(status.syncReplicas ?? 0)),
            ]
            if status.fenced == true { fields.append(("walrus_fenced", status.health)) }
        }
        fields.append(("walrus_epoch", String(status.epoch)))
        fields.append(("walrus_epoch_history", status.epochHistory.map { "\($0.epoch):\($0.firstIndex)" }.joined(separator: ",")))
        fields.append(("walrus_diverged_files", status.divergedFiles.joined(separator: ",")))
        return fields
    }
}
