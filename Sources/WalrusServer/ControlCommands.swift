import Foundation
public import Logging
public import WALCore
public import WalrusStore
public import WalrusReplication
import WalrusProtocol

/// What the control socket can do. Each verb takes a JSON object and returns one; a thrown
/// `ControlError` becomes `{"ok": false, "error": "…"}`.
public final class ControlCommands: Sendable {
    let store: KeyValueStore
    let server: RESPServer
    let logLevel: DynamicLogLevel
    let logger: Logger
    let reload: @Sendable () -> String
    let replication: ReplicationNode?
    let startedNanoseconds = monotonicNanoseconds()

    /// A request the daemon refuses, with what to do instead.
    public struct ControlError: Error {
        public var message: String
        public init(_ message: String) { self.message = message }
    }

    /// - Parameter reload: applies what can change live and says what happened (also used by SIGHUP).
    public init(
        store: KeyValueStore, server: RESPServer, logLevel: DynamicLogLevel, logger: Logger,
        replication: ReplicationNode? = nil, reload: @escaping @Sendable () -> String
    ) {
        self.replication = replication
        self.store = store
        self.server = server
        self.logLevel = logLevel
        self.logger = logger
        self.reload = reload
    }

    /// Run one request (on a thread that may block: checkpoints write a whole snapshot).
    func run(_ request: ControlRequest) throws -> [String: Any] {
        switch request {
        case .status:
            return self.status()
        case .flush:
            try self.store.commitBlocking()
            return ["sealedIndex": self.store.wal.sealedIndex]
        case .checkpoint:
            let report = try self.store.checkpointBlocking()
            return [
                "index": report.index, "path": report.path, "bytes": report.bytes, "keys": report.keys,
                "removedSegments": report.removedSegments, "removedSnapshots": report.removedSnapshots,
                "milliseconds": report.nanoseconds / 1_000_000,
            ]
        case .logLevel(nil):
            return ["level": self.logLevel.current.rawValue]
        case .logLevel(let name?):
            guard let level = Logger.Level(rawValue: name.lowercased()) else {
                throw ControlError(
                    "Unknown log level '\(name.prefix(64))'; use one of trace, debug, info, notice, warning, error, critical.")
            }
            let previous = self.logLevel.current
            self.logLevel.current = level
            self.logger.notice(
                "Log level changed", metadata: ["log.previous": "\(previous)", "log.level": "\(level)"])
            return ["level": level.rawValue, "previous": previous.rawValue]
        case .reload:
            return ["result": self.reload()]
        case .replicas:
            guard let replication = self.replication else { return ["replicas": [Any]()] }
            if replication.isFollower {
                throw ControlError("This node is a follower; run 'walrusctl replicas' on its primary (see 'walrusctl status').")
            }
            return ["replicas": replication.primary.replicas().map(Self.replicaJSON)]
        case .digest:
            let digest = self.store.digest()
            return ["digest": digest.digest, "index": digest.index, "keys": digest.keys]
        case .promote(let force):
            guard let replication = self.replication else { throw ControlError("This walrusd runs without replication.") }
            do {
                let result = try replication.promote(force: force)
                var reply: [String: Any] = ["epoch": result.epoch, "index": result.index, "role": "primary"]
                if !result.note.isEmpty { reply["note"] = result.note }
                return reply
            } catch let error as ReplicationError {
                throw ControlError(error.message)
            }
        case .follow(let host, let port):
            guard let replication = self.replication else { throw ControlError("This walrusd runs without replication.") }
            replication.follow(host: host, port: port)
            return ["role": "follower", "primary": host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"]
        case .switchover(let target, let timeout):
            guard let replication = self.replication else { throw ControlError("This walrusd runs without replication.") }
            do {
                return try replication.switchover(to: target, timeoutMilliseconds: timeout)
            } catch let error as ReplicationError {
                throw ControlError(error.message)
            }
        }
    }

    func status() -> [String: Any] {
        let wal = self.store.wal
        let statistics = wal.statistics
        let segments = wal.segmentSummaries
        let fsync: String
        switch self.store.wal.fsyncMode {
        case .always: fsync = "always"
        case .interval(let ms): fsync = "interval \(ms) ms"
        }
        return [
            "role": "primary",
            "epoch": wal.meta.currentEpoch,
            "lastIndex": wal.lastIndex,
            "sealedIndex": wal.sealedIndex,
            "firstIndex": wal.firstIndex,
            "keys": self.store.count,
            "walBytes": segments.reduce(Int64(0)) { $0 + $1.bytes },
            "walSegments": segments.count,
            "fsync": fsync,
            "fsyncs": statistics.fsyncCount,
            "lastFsyncMicroseconds": statistics.lastFsyncNanoseconds / 1000,
            "maxFsyncMicroseconds": statistics.maxFsyncNanoseconds / 1000,
            "uptimeSeconds": (monotonicNanoseconds() - self.startedNanoseconds) / 1_000_000_000,
            "connectedClients": self.server.statistics.connectedClients.load(ordering: .relaxed),
            "clientPort": self.server.port ?? 0,
            "dataDirectory": self.store.configuration.directory,
            "pid": Int(getpid()),
            "logLevel": self.logLevel.current.rawValue,
            "health": wal.failure?.message ?? wal.diskFull?.message ?? "ok",
            "clusterID": wal.meta.clusterID,
            "nodeID": wal.meta.nodeID,
            "epochHistory": wal.meta.epochs.map { ["epoch": $0.epoch, "firstIndex": $0.firstIndex] },
            "divergedFiles": ((try? FileIO.listDirectory(self.store.configuration.directory)) ?? [])
                .filter { $0.hasPrefix("diverged-") && $0.hasSuffix(".log") }.sorted(),
        ].merging(self.replicationStatus()) { _, new in new }
    }

    private func replicationStatus() -> [String: Any] {
        guard let replication = self.replication else { return [:] }
        if replication.isFollower, let link = replication.link {
            var fields: [String: Any] = [
                "role": "follower",
                "primary": "\(link.primaryHost):\(link.primaryPort)",
                "primaryNodeID": link.primaryNodeID,
                "link": link.linkUp ? "up" : "down",
                "linkState": link.state.rawValue,
                "lastIOSecondsAgo": link.lastIOSecondsAgo,
                "receivedIndex": link.received,
                "durableIndex": link.durable,
                "appliedIndex": link.applied,
                "primarySealedIndex": link.primarySealedIndex,
                "lagRecords": link.lagRecords,
                "snapshotsInstalled": link.snapshotsInstalled,
            ]
            if link.state == .snapshot {
                fields["snapshotBytes"] = link.snapshotBytes
                fields["snapshotTotalBytes"] = link.snapshotTotal
                fields["snapshotPercent"] = link.snapshotTotal == 0 ? 0 : Int(link.snapshotBytes * 100 / link.snapshotTotal)
            }
            if let error = link.lastError { fields["linkError"] = error }
            return fields
        }
        let replicas = replication.primary.replicas()
        var fields: [String: Any] = [
            "followers": replicas.filter { $0.state != .disconnected }.count,
            "syncReplicas": replication.configuration.syncReplicas,
            "replicationPort": replication.primary.port ?? 0,
        ]
        if let refusal = replication.writeRefusal {
            fields["health"] = refusal
            fields["fenced"] = true
        }
        return fields
    }

    static func replicaJSON(_ replica: ReplicaStatus) -> [String: Any] {
        var fields: [String: Any] = [
            "nodeID": replica.nodeID, "address": "\(replica.host):\(replica.remotePort)", "clientPort": replica.clientPort,
            "state": replica.state.rawValue, "sent": replica.sent, "received": replica.received, "durable": replica.durable,
            "applied": replica.applied, "lagRecords": replica.lagRecords, "lagBytes": replica.lagBytes,
            "dataAgeSeconds": replica.dataAgeSeconds, "lastHeardSecondsAgo": replica.lastHeardSecondsAgo,
            "snapshotsSent": replica.snapshotsSent,
        ]
        if replica.state == .snapshot {
            fields["snapshotBytes"] = replica.snapshotBytesSent
            fields["snapshotTotalBytes"] = replica.snapshotBytesTotal
        }
        if let warning = replica.warning { fields["warning"] = warning }
        return fields
    }
}

extension StoreError: StoreErrorDescribable {
    var operatorMessage: String { self.message }
}

extension WALError: StoreErrorDescribable {
    var operatorMessage: String { self.message }
}
