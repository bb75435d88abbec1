import Logging
import NIOConcurrencyHelpers
import NIOCore
import WALCore
import WalrusProtocol
import WalrusReplication
import WalrusStore

/// Runs RESP commands against the store. Reads answer at once; writes answer once they are as
/// durable as the fsync mode promises (through `completion`, from the log's flusher thread).
final class CommandExecutor: Sendable {
    enum Outcome {
        /// The reply is ready.
        case reply(ByteBuffer)
        /// The reply is ready and the connection closes after it (QUIT).
        case replyAndClose(ByteBuffer)
        /// `completion` will be called with the reply.
        case pending
    }

    let store: KeyValueStore
    let statistics: ServerStatistics
    let server: ServerConfiguration
    let logger: Logger
    let replication: ReplicationNode?
    private let alwaysMode: Bool

    init(
        store: KeyValueStore, statistics: ServerStatistics, server: ServerConfiguration, logger: Logger,
        replication: ReplicationNode? = nil
    ) {
        self.store = store
        self.statistics = statistics
        self.server = server
        self.logger = logger
        self.replication = replication
        self.alwaysMode = store.configuration.wal.fsyncMode == .always
    }

    /// Redis's reply to a write on a replica, word for word (clients know it).
    static let readOnlyError = "READONLY You can't write against a read only replica."

    private var isFollower: Bool { self.replication?.isFollower ?? false }

    /// Words the original shell used, accepted where they do not clash with Redis commands.
    private static let aliases = ["HAS": "EXISTS", "LEN": "DBSIZE", "DELETE": "DEL"]

    /// Per-connection state a command can read or change.
    struct Session {
        /// 2 (RESP2) until a client asks for 3 with HELLO 3 (redis-py 8 does, by default).
        var protocolVersion = 2
        /// CLIENT SETNAME.
        var name: String?
        var resp3: Bool { self.protocolVersion == 3 }
    }

    func execute(
        _ command: RESPCommand, session: inout Session, allocator: ByteBufferAllocator,
        completion: @escaping @Sendable (ByteBuffer) -> Void
    ) -> Outcome {
        let resp3 = session.resp3
        var name = command.name
        name = Self.aliases[name] ?? name
        let arguments = Array(command.arguments.dropFirst())
        var out = allocator.buffer(capacity: 64)
        func reply(_ body: (inout ByteBuffer) -> Void) -> Outcome {
            body(&out)
            return .reply(out)
        }
        func arity(_ valid: Bool) -> Outcome? {
            valid ? nil : reply { $0.writeErrorReply("ERR wrong number of arguments for '\(name.lowercased())' command") }
        }

        switch name {
        case "PING":
            if let error = arity(arguments.count <= 1) { return error }
            return reply { if let message = arguments.first { $0.writeBulkReply(message) } else { $0.writeSimpleString("PONG") } }
        case "ECHO":
            if let error = arity(arguments.count == 1) { return error }
            return reply { $0.writeBulkReply(arguments[0]) }
        case "GET":
            if let error = arity(arguments.count == 1) { return error }
            arguments[0].withUnsafeReadableBytes { key in
                self.store.readValue(key: key) { value in
                    if let value { out.writeBulkReply(value) } else { out.writeNullReply(resp3: resp3) }
                }
            }
            return .reply(out)
        case "MGET":
            if let error = arity(arguments.count >= 1) { return error }
            out.writeArrayHeader(arguments.count)
            for key in arguments {
                _ = key.withUnsafeReadableBytes { key in
                    self.store.withValue(key: key) { value -> Bool in
                        if let value { out.writeBulkReply(value) } else { out.writeNullReply(resp3: resp3) }
                        return true
                    }
                }
            }
            return .reply(out)
        case "EXISTS":
            if let error = arity(arguments.count >= 1) { return error }
            let count = arguments.reduce(0) { $0 + (self.store.has(key: Array($1.readableBytesView)) ? 1 : 0) }
            return reply { $0.writeIntegerReply(count) }
        case "DBSIZE":
            if let error = arity(arguments.isEmpty) { return error }
            return reply { $0.writeIntegerReply(self.store.count) }
        case "KEYS":
            if let error = arity(arguments.count == 1) { return error }
            let pattern = Array(arguments[0].readableBytesView)
            let keys = self.store.keys().filter { key in key.bytes.withUnsafeBytes { GlobPattern.matches(pattern, $0) } }
            return reply { buffer in
                buffer.writeArrayHeader(keys.count)
                for key in keys { key.bytes.withUnsafeBytes { buffer.writeBulkReply($0) } }
            }
        case "SET":
            if let error = arity(arguments.count >= 2) { return error }
            guard arguments.count == 2 else {
                return reply { $0.writeErrorReply("ERR syntax error (walrus's SET takes a key and a value, no options)") }
            }
            if let refusal = self.replication?.writeRefusal { return reply { $0.writeErrorReply(refusal) } }
            return self.write(allocator: allocator, completion: completion, ok: { $0.writeSimpleString("OK") }) { callback in
                try self.store.set(
                    key: Array(arguments[0].readableBytesView), value: Array(arguments[1].readableBytesView),
                    onDurable: callback)
            }
        case "MSET":
            if let error = arity(arguments.count >= 2 && arguments.count % 2 == 0) { return error }
            if let refusal = self.replication?.writeRefusal { return reply { $0.writeErrorReply(refusal) } }
            var commands: [StoreCommand] = []
            commands.reserveCapacity(arguments.count / 2)
            for pair in stride(from: 0, to: arguments.count, by: 2) {
                commands.append(
                    .set(key: Array(arguments[pair].readableBytesView), value: Array(arguments[pair + 1].readableBytesView)))
            }
            return self.write(allocator: allocator, completion: completion, ok: { $0.writeSimpleString("OK") }) { callback in
                try self.store.apply(batch: commands, onDurable: callback)
            }
        case "DEL":
            if let error = arity(arguments.count >= 1) { return error }
            if let refusal = self.replication?.writeRefusal { return reply { $0.writeErrorReply(refusal) } }
            let deleted = Counter()
            return self.write(allocator: allocator, completion: completion, ok: { $0.writeIntegerReply(deleted.value) }) { callback in
                for key in arguments where try self.store.delete(key: Array(key.readableBytesView)) { deleted.value += 1 }
                // Every delete is in the log; the callback fires once all of them are durable.
                if deleted.value > 0 && self.alwaysMode { self.store.commit(onDurable: callback) } else { callback(nil) }
                return deleted.value > 0 ? self.store.wal.lastIndex : 0
            }
        case "COMMIT":
            return self.write(allocator: allocator, completion: completion, ok: { $0.writeSimpleString("OK") }) { callback in
                self.store.commit(onDurable: callback)
                return 0
            }
        case "INFO":
            let text = ServerInfo.render(
                sections: arguments.map { String(decoding: $0.readableBytesView, as: UTF8.self) }, executor: self)
            return reply { $0.writeBulkReply(text) }
        case "ROLE":
            return reply { self.writeRole(&$0) }
        case "WAIT":
            if let error = arity(arguments.count == 2) { return error }
            guard let needed = Int(String(decoding: arguments[0].readableBytesView, as: UTF8.self)),
                let timeout = Int(String(decoding: arguments[1].readableBytesView, as: UTF8.self)), needed >= 0, timeout >= 0
            else { return reply { $0.writeErrorReply("ERR value is not an integer or out of range") } }
            guard let replication = self.replication else { return reply { $0.writeIntegerReply(0) } }
            if replication.isFollower { return reply { $0.writeErrorReply("ERR WAIT cannot be used with replica instances.") } }
            // Every write made so far (this client's included) must be durable on the followers.
            let index = self.store.wal.lastIndex
            replication.primary.waitForReplicas(index: index, needed: needed, timeoutMilliseconds: timeout) { count, _ in
                var buffer = allocator.buffer(capacity: 16)
                buffer.writeIntegerReply(count)
                completion(buffer)
            }
            return .pending
        case "DIGEST":
            if let error = arity(arguments.isEmpty) { return error }
            let digest = self.store.digest()
            return reply { $0.writeBulkReply(digest.digest) }
        case "COMMAND":
            let sub = arguments.first.map { String(decoding: $0.readableBytesView, as: UTF8.self).uppercased() }
            if sub == "COUNT" { return reply { $0.writeIntegerReply(Self.commandNames.count) } }
            // redis-cli asks for COMMAND DOCS at start for its hints; an empty answer is allowed.
            return reply { $0.writeArrayHeader(0) }
        case "CONFIG":
            let sub = arguments.first.map { String(decoding: $0.readableBytesView, as: UTF8.self).uppercased() } ?? ""
            guard sub == "GET", arguments.count >= 2 else {
                return reply { $0.writeErrorReply("ERR CONFIG \(sub) is not supported by walrus; only CONFIG GET is") }
            }
            let pairs = self.configPairs()
            var matched: [(String, String)] = []
            for pattern in arguments.dropFirst() {
                let glob = Array(String(decoding: pattern.readableBytesView, as: UTF8.self).lowercased().utf8)
                for pair in pairs where !matched.contains(where: { $0.0 == pair.0 }) {
                    var name = pair.0
                    if name.withUTF8({ GlobPattern.matches(glob, UnsafeRawBufferPointer($0)) }) { matched.append(pair) }
                }
            }
            return reply { buffer in
                buffer.writeMapHeader(matched.count, resp3: resp3)
                for (key, value) in matched {
                    buffer.writeBulkReply(key)
                    buffer.writeBulkReply(value)
                }
            }
        case "HELLO":
            // RESP2, or RESP3 for clients that ask (redis-py 8 sends HELLO 3 and insists); walrus's
            // replies are the same in both but for nulls and maps.
            if let version = arguments.first.map({ String(decoding: $0.readableBytesView, as: UTF8.self) }) {
                guard version == "2" || version == "3" else {
                    return reply { $0.writeErrorReply("NOPROTO unsupported protocol version (walrus speaks RESP2 and RESP3)") }
                }
                guard arguments.count == 1 else {
                    return reply { $0.writeErrorReply("ERR HELLO options (AUTH, SETNAME) are not supported by walrus") }
                }
                session.protocolVersion = Int(version)!
            }
            let map = session.resp3
            return reply { buffer in
                let fields: [(String, String)] = [
                    ("server", "redis"), ("version", ServerInfo.redisVersion), ("walrus", ServerInfo.walrusVersion),
                    ("mode", "standalone"), ("role", self.isFollower ? "replica" : "master"),
                ]
                buffer.writeMapHeader(fields.count + 2, resp3: map)
                for (key, value) in fields {
                    buffer.writeBulkReply(key)
                    buffer.writeBulkReply(value)
                }
                buffer.writeBulkReply("proto")
                buffer.writeIntegerReply(session.protocolVersion)
                buffer.writeBulkReply("modules")
                buffer.writeArrayHeader(0)
            }
        case "CLIENT":
            let sub = arguments.first.map { String(decoding: $0.readableBytesView, as: UTF8.self).uppercased() } ?? ""
            switch sub {
            case "SETNAME":
                session.name = arguments.count > 1 ? String(decoding: arguments[1].readableBytesView, as: UTF8.self) : nil
                return reply { $0.writeSimpleString("OK") }
            case "SETINFO", "NO-EVICT", "NO-TOUCH", "REPLY": return reply { $0.writeSimpleString("OK") }
            case "GETNAME":
                let name = session.name
                return reply { if let name { $0.writeBulkReply(name) } else { $0.writeNullReply(resp3: resp3) } }
            case "ID": return reply { $0.writeIntegerReply(self.statistics.totalConnections.load(ordering: .relaxed)) }
            default: return reply { $0.writeErrorReply("ERR CLIENT \(sub) is not supported by walrus") }
            }
        case "SELECT":
            if let error = arity(arguments.count == 1) { return error }
            let index = String(decoding: arguments[0].readableBytesView, as: UTF8.self)
            return reply { index == "0" ? $0.writeSimpleString("OK") : $0.writeErrorReply("ERR DB index is out of range (walrus has one database, 0)") }
        case "QUIT":
            out.writeSimpleString("OK")
            return .replyAndClose(out)
        default:
            let words = arguments.prefix(3).map { "'" + String(decoding: $0.readableBytesView.prefix(64), as: UTF8.self) + "'" }
            let original = String(decoding: command.arguments[0].readableBytesView.prefix(64), as: UTF8.self)
            return reply {
                $0.writeErrorReply("ERR unknown command '\(original)', with args beginning with: \(words.joined(separator: " "))")
            }
        }
    }

    static let commandNames = [
        "PING", "ECHO", "GET", "MGET", "EXISTS", "DBSIZE", "KEYS", "SET", "MSET", "DEL", "COMMIT", "INFO", "ROLE", "WAIT",
        "COMMAND", "CONFIG", "HELLO", "CLIENT", "SELECT", "QUIT", "DIGEST",
    ]

    /// A write: start it with a seal callback; reply when durable (or at once in interval mode,
    /// where the store calls back inside the call). Errors become `-ERR` replies.
    private func write(
        allocator: ByteBufferAllocator,
        completion: @escaping @Sendable (ByteBuffer) -> Void,
        ok: @escaping @Sendable (inout ByteBuffer) -> Void,
        start: (@escaping WriteAheadLog.SealCallback) throws -> UInt64
    ) -> Outcome {
        let box = InlineCompletion(completion: completion)
        let render: @Sendable (WALError?) -> ByteBuffer = { error in
            var buffer = allocator.buffer(capacity: 16)
            if let error { buffer.writeErrorReply(Self.clientMessage(StoreError(error))) } else { ok(&buffer) }
            return buffer
        }
        do {
            // With sync-replicas, the local seal is not enough: the followers must have it too.
            if let replication = self.replication, replication.configuration.syncReplicas > 0, !replication.isFollower {
                let tracker = WriteTracker()
                let onSealed: @Sendable (UInt64) -> Void = { target in
                    Self.waitForFollowers(replication, index: target, allocator: allocator, box: box, render: render)
                }
                let index = try start { error in
                    if let error {
                        box.complete(render(error))
                    } else if let target = tracker.sealed() {
                        onSealed(target)
                    }
                }
                // The seal may come before or after the index is known here; whichever is second goes on.
                if tracker.indexKnown(index) { onSealed(index) }
            } else {
                _ = try start { error in box.complete(render(error)) }
            }
        } catch {
            _ = box.finishInline()
            if let storeError = error as? StoreError, storeError.code == .tooLarge {
                self.logger.notice("Refused a write over a limit", metadata: ["limit.error": "\(storeError.message)"])
            }
            var buffer = allocator.buffer(capacity: 64)
            buffer.writeErrorReply(Self.clientMessage(error))
            return .reply(buffer)
        }
        if let ready = box.finishInline() { return .reply(ready) }
        return .pending
    }

    /// Reply once `sync-replicas` followers have record `index` durable, or with NOREPLICAS when
    /// they do not within the timeout (index 0: nothing was written, nothing to wait for).
    private static func waitForFollowers(
        _ replication: ReplicationNode, index: UInt64, allocator: ByteBufferAllocator, box: InlineCompletion,
        render: @escaping @Sendable (WALError?) -> ByteBuffer
    ) {
        guard index > 0 else {
            box.complete(render(nil))
            return
        }
        let needed = replication.configuration.syncReplicas
        let timeout = replication.configuration.syncTimeoutMilliseconds
        replication.primary.waitForReplicas(index: index, needed: needed, timeoutMilliseconds: timeout) { count, timedOut in
            guard timedOut && count < needed else {
                box.complete(render(nil))
                return
            }
            var buffer = allocator.buffer(capacity: 256)
            buffer.writeErrorReply(
                "NOREPLICAS Not enough good replicas to write: \(count) of \(needed) follower(s) reported record "
                    + "\(index) durable within \(timeout) ms (sync-replicas). The write is NOT acknowledged, but it "
                    + "is in the primary's log and reaches the followers when they catch up; see 'walrusctl replicas'.")
            box.complete(buffer)
        }
    }

    /// One line an operator can act on, with a Redis-style error code.
    static func clientMessage(_ error: any Error) -> String {
        if let store = error as? StoreError {
            if let wal = store.walError {
                switch wal.code {
                case .diskFull: return "MISCONF " + wal.message
                case .failed: return "MISCONF " + wal.message
                case .closed: return "ERR the server is shutting down; retry against the new process"
                default: return "ERR " + wal.message
                }
            }
            return "ERR " + store.message
        }
        return "ERR \(error)"
    }

    private func configPairs() -> [(String, String)] {
        let fsync: String
        switch self.store.wal.fsyncMode {
        case .always: fsync = "always"
        case .interval: fsync = "everysec"
        }
        return [
            ("save", ""), ("appendonly", "yes"), ("appendfsync", fsync), ("databases", "1"),
            ("port", String(self.server.port)), ("bind", self.server.bindAddress),
            ("maxclients", String(self.server.maxClients)), ("timeout", String(self.server.idleTimeoutSeconds)),
            ("proto-max-bulk-len", String(self.server.maxBulkBytes)), ("dir", self.store.configuration.directory),
        ]
    }
}

/// Lets a seal callback that runs inside the store call (interval mode, or an error) return the
/// reply directly instead of hopping through the event loop.
final class InlineCompletion: @unchecked Sendable {
    private let lock = NIOLock()
    private var inline = true
    private var result: ByteBuffer?
    private let completion: @Sendable (ByteBuffer) -> Void

    init(completion: @escaping @Sendable (ByteBuffer) -> Void) { self.completion = completion }

    func complete(_ buffer: ByteBuffer) {
        let deliverNow = self.lock.withLock { () -> Bool in
            if self.inline {
                self.result = buffer
                return false
            }
            return true
        }
        if deliverNow { self.completion(buffer) }
    }

    /// The reply if it already arrived; afterwards, replies go to `completion`.
    func finishInline() -> ByteBuffer? {
        self.lock.withLock {
            self.inline = false
            return self.result
        }
    }
}

/// A count written before the reply is rendered and read after (same request, ordered by the seal).
private final class Counter: @unchecked Sendable {
    var value = 0
}

/// Meets a write's index (known when the append returns) and its seal (reported by the log's
/// flusher, possibly first): whichever arrives second carries on to wait for the followers.
private final class WriteTracker: @unchecked Sendable {
    private let lock = NIOLock()
    private var index: UInt64?
    private var isSealed = false

    /// The seal arrived; returns the index if it is already known.
    func sealed() -> UInt64? {
        self.lock.withLock {
            self.isSealed = true
            return self.index
        }
    }

    /// The index is known; returns whether the seal already arrived.
    func indexKnown(_ index: UInt64) -> Bool {
        self.lock.withLock {
            self.index = index
            return self.isSealed
        }
    }
}
