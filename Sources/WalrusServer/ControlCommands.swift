import Foundation
public import Logging
public import NIOPosix
public import WALCore
public import WalrusProtocol
public import WalrusReplication
public import WalrusStore

/// What the control socket can do: each verb takes a checked `ControlRequest` and answers with
/// its `Codable` reply (WalrusProtocol's `ControlReplies`), encoded as one JSON line. Blocking
/// work (a checkpoint, an epoch record, a digest of every key) runs on the thread pool; a
/// switchover awaits its follower's acknowledgements.
public final class ControlCommands: Sendable {
    let store: KeyValueStore
    let server: RESPServer
    let logLevel: DynamicLogLevel
    let logger: Logger
    let reload: @Sendable () -> String
    let replication: ReplicationNode?
    let threadPool: NIOThreadPool

    /// A request the daemon refuses, with what to do instead.
    public struct ControlError: Error {
        public var message: String
        public init(_ message: String) { self.message = message }
    }

    /// - Parameter reload: applies what can change live and says what happened (also used by SIGHUP).
    public init(
        store: KeyValueStore, server: RESPServer, logLevel: DynamicLogLevel, logger: Logger, replication: ReplicationNode? = nil,
        threadPool: NIOThreadPool, reload: @escaping @Sendable () -> String
    ) {
        self.replication = replication
        self.store = store
        self.server = server
        self.logLevel = logLevel
        self.logger = logger
        self.threadPool = threadPool
        self.reload = reload
    }

    /// Answer one request line: the reply line (with its newline), never throwing.
    func answer(_ line: some Collection<UInt8>) async -> [UInt8] {
        do {
            let request = try ControlRequest.parse(line)
            return try await self.run(request)
        } catch let error as ControlRequest.Invalid {
            return Self.encode(ControlReply<ReloadReply>(error: error.message))
        } catch let error as ControlError {
            return Self.encode(ControlReply<ReloadReply>(error: error.message))
        } catch let error as ReplicationError {
            return Self.encode(ControlReply<ReloadReply>(error: error.message))
        } catch let error as StoreError {
            return Self.encode(ControlReply<ReloadReply>(error: error.message))
        } catch let error as WALError {
            return Self.encode(ControlReply<ReloadReply>(error: error.message))
        } catch {
            return Self.encode(ControlReply<ReloadReply>(error: "\(error)"))
        }
    }

    /// Run `body` on the thread pool (it blocks: fdatasync, a whole snapshot).
    private func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await self.threadPool.runIfActive(body)
    }

    private func run(_ request: ControlRequest) async throws -> [UInt8] {
        switch request {
        case .status:
            return Self.encode(ControlReply(result: self.server.status.capture()))
        case .flush:
            try await self.store.commit()
            return Self.encode(ControlReply(result: FlushReply(sealedIndex: self.store.wal.sealedIndex)))
        case .checkpoint:
            let store = self.store
            let report = try await self.blocking { try store.checkpointBlocking() }
            return Self.encode(
                ControlReply(
                    result: CheckpointReply(
                        index: report.index, path: report.path, bytes: report.bytes, keys: report.keys,
                        removedSegments: report.removedSegments, removedSnapshots: report.removedSnapshots,
                        milliseconds: report.nanoseconds / 1_000_000)))
        case .logLevel(nil):
            return Self.encode(ControlReply(result: LogLevelReply(level: self.logLevel.current.rawValue, previous: nil)))
        case .logLevel(let name?):
            guard let level = Logger.Level(rawValue: name.lowercased()) else {
                throw ControlError(
                    "Unknown log level '\(name.prefix(64))'; use one of trace, debug, info, notice, warning, error, critical.")
            }
            let previous = self.logLevel.current
            self.logLevel.current = level
            self.logger.notice("Log level changed", metadata: ["log.previous": "\(previous)", "log.level": "\(level)"])
            return Self.encode(ControlReply(result: LogLevelReply(level: level.rawValue, previous: previous.rawValue)))
        case .reload:
            return Self.encode(ControlReply(result: ReloadReply(result: self.reload())))
        case .replicas:
            guard let replication = self.replication else { return Self.encode(ControlReply(result: ReplicasReply(replicas: []))) }
            if replication.isFollower {
                throw ControlError("This node is a follower; run 'walrusctl replicas' on its primary (see 'walrusctl status').")
            }
            return Self.encode(ControlReply(result: ReplicasReply(replicas: replication.primary.replicas())))
        case .digest:
            let store = self.store
            let digest = try await self.blocking { store.digest() }
            return Self.encode(ControlReply(result: DigestReply(digest: digest.digest, index: digest.index, keys: digest.keys)))
        case .promote(let force):
            let replication = try self.replicationNode()
            return Self.encode(ControlReply(result: try await self.blocking { try replication.promote(force: force) }))
        case .follow(let host, let port):
            return Self.encode(ControlReply(result: try self.replicationNode().follow(host: host, port: port)))
        case .switchover(let target, let timeout):
            let reply = try await self.replicationNode().switchover(to: target, timeoutMilliseconds: timeout)
            return Self.encode(ControlReply(result: reply))
        }
    }

    private func replicationNode() throws -> ReplicationNode {
        guard let replication = self.replication else { throw ControlError("This walrusd runs without replication.") }
        return replication
    }

    /// One JSON object and a newline.
    static func encode<T: Encodable>(_ reply: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = (try? encoder.encode(reply)) ?? Data("{\"ok\":false,\"error\":\"the reply could not be encoded\"}".utf8)
        return Array(data) + [10]
    }
}
