public import Logging
import NIOCore
import Synchronization
import WALCore
import WalrusProtocol
public import WalrusStore
#if canImport(Glibc)
import Glibc
#endif

/// The follower's link to its primary, as `walrusctl status`, INFO and STATUS= show it.
public struct FollowerLinkStatus: Sendable {
    public enum State: String, Sendable {
        case connecting, handshake, snapshot, catchingUp = "catching up", streaming, refused, stopped
    }

    public var primaryHost: String
    public var primaryPort: Int
    public var primaryNodeID: String
    public var state: State
    /// Whether the connection is up and past the handshake.
    public var linkUp: Bool
    /// Seconds since the last frame from the primary (since the link went down when it is down).
    public var lastIOSecondsAgo: Double
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
    public var primaryEpoch: UInt64 = 0
    /// Diverged files written since this process started.
    public var divergedFiles: [String] = []
}

/// A follower: one thread connects to the primary (reconnecting with capped backoff), checks
/// every frame, appends the primary's records byte for byte to this node's log and applies them;
/// another sends ACKs {received, durable, applied} whenever the log seals and as heartbeats.
public final class ReplicationFollower: @unchecked Sendable {
    let store: KeyValueStore
    let configuration: ReplicationConfiguration
    let logger: Logger
    let host: String
    let port: Int
    private let onLinkChange: @Sendable (FollowerLinkStatus) -> Void
    private let link: LockedValue<FollowerLinkStatus>
    private let stopping = Atomic<Bool>(false)
    /// The socket the ACK thread sends on (nil between connections), a dirty flag, and a condition.
    private let ackState = ConditionLock<(socket: BlockingSocket?, dirty: Bool, received: UInt64)>((nil, false, 0))
    private var reader: DedicatedThread?
    private var acker: DedicatedThread?
    private let lastFrame = Atomic<UInt64>(0)
    /// Set once a switchover promoted this node: the reader stops instead of reconnecting.
    private let promotedFlag = Atomic<Bool>(false)
    /// This node's client and replication ports, read at each HELLO (the listeners may bind after
    /// following starts).
    var ports: @Sendable () -> (client: Int, replication: Int) = { (0, 0) }
    /// Called (on its own thread) after a switchover promoted this node.
    var onPromoted: @Sendable (UInt64) -> Void = { _ in }

    public init(
        store: KeyValueStore, configuration: ReplicationConfiguration, host: String, port: Int, logger: Logger,
        onLinkChange: @escaping @Sendable (FollowerLinkStatus) -> Void = { _ in }
    ) {
        self.store = store
        self.configuration = configuration
        self.host = host
        self.port = port
        self.logger = logger
        self.onLinkChange = onLinkChange
        let durable = store.wal.sealedIndex
        self.link = LockedValue(
            FollowerLinkStatus(
                primaryHost: host, primaryPort: port, primaryNodeID: "", state: .connecting, linkUp: false,
                lastIOSecondsAgo: 0, primarySealedIndex: 0, received: durable, durable: durable,
                applied: store.appliedIndex, lagRecords: 0, snapshotBytes: 0, snapshotTotal: 0, lastError: nil,
                snapshotsInstalled: 0))
        self.ackState.withLock { $0.received = durable }
        store.wal.addSealObserver { [weak self] _ in self?.markDirty() }
    }

    /// Start the threads.
    public func start() {
        self.reader = DedicatedThread(name: "walrus-repl-recv") { [self] in self.runReader() }
        self.acker = DedicatedThread(name: "walrus-repl-ack") { [self] in self.runAcker() }
    }

    /// Stop following: close the connection and wait for the threads.
    public func stop() {
        guard !self.stopping.exchange(true, ordering: .relaxed) else { return }
        self.ackState.withLock { state in
            state.socket?.shutdownBoth()
            self.ackState.broadcast()
        }
        self.reader?.join()
        self.acker?.join()
        self.update { $0.state = .stopped; $0.linkUp = false }
    }

    /// The link as of now.
    public var status: FollowerLinkStatus {
        var status = self.link.withLock { $0 }
        let durable = self.store.wal.sealedIndex
        let applied = self.store.appliedIndex
        status.durable = durable
        status.applied = applied
        status.received = max(status.received, applied)
        status.lagRecords = status.primarySealedIndex > applied ? status.primarySealedIndex - applied : 0
        let last = self.lastFrame.load(ordering: .relaxed)
        status.lastIOSecondsAgo = last == 0 ? -1 : Double(monotonicNanoseconds() - last) / 1e9
        return status
    }

    private func update(_ body: (inout FollowerLinkStatus) -> Void) {
        let (changed, snapshot) = self.link.withLock { link -> (Bool, FollowerLinkStatus) in
            let before = (link.state, link.linkUp)
            body(&link)
            return (before != (link.state, link.linkUp), link)
        }
        if changed { self.onLinkChange(snapshot) }
    }

    private func markDirty() {
        self.ackState.withLock { state in
            state.dirty = true
            self.ackState.signal()
        }
    }

    // MARK: The reader thread

    private func runReader() {
        var backoffMilliseconds: UInt64 = 100
        var failures = 0
        while !self.stopping.load(ordering: .relaxed) && !self.promotedFlag.load(ordering: .relaxed) {
            var refused = false
            do {
                try self.connection(onEstablished: {
                    backoffMilliseconds = 100
                    failures = 0
                })
            } catch let reconnect as Reconnect {
                self.logger.notice(
                    "Reconnecting to the primary", metadata: ["repl.primary": "\(self.host):\(self.port)", "repl.reason": "\(reconnect.reason)"])
                self.ackState.withLock { $0.socket = nil }
                continue
            } catch let error as Rejected {
                refused = true
                self.update { link in
                    link.state = .refused
                    link.linkUp = false
                    link.lastError = error.message
                }
                self.logger.error(
                    "The primary refused this follower",
                    metadata: [
                        "repl.primary": "\(self.host):\(self.port)", "repl.reason": "\(error.reason)", "repl.error": "\(error.message)",
                    ])
            } catch {
                if self.stopping.load(ordering: .relaxed) || self.promotedFlag.load(ordering: .relaxed) { break }
                failures += 1
                let wasUp = self.link.withLock { $0.linkUp }
                self.update { link in
                    link.state = .connecting
                    link.linkUp = false
                    link.lastError = "\(error)"
                }
                // Say it when the link drops, and then now and again, not at every retry.
                if wasUp || failures == 1 || failures % 30 == 0 {
                    self.logger.warning(
                        wasUp ? "Replication link down; reconnecting" : "Cannot reach the primary; retrying",
                        metadata: ["repl.primary": "\(self.host):\(self.port)", "repl.error": "\(error)", "repl.attempts": "\(failures)"])
                }
            }
            self.ackState.withLock { $0.socket = nil }
            if self.stopping.load(ordering: .relaxed) { break }
            let wait = refused ? 5000 : backoffMilliseconds
            backoffMilliseconds = min(backoffMilliseconds * 2, 5000)
            let deadline = monotonicNanoseconds() + wait * 1_000_000
            self.ackState.wait(while: { _ in !self.stopping.load(ordering: .relaxed) }, untilMonotonicNanoseconds: deadline)
        }
    }

    /// The connection ends on purpose and a new one starts at once (after a cut).
    struct Reconnect: Error {
        var reason: String
    }

    struct Rejected: Error {
        var reason: ReplicationReject.Reason
        var message: String
    }

    /// One connection: handshake, then frames until it ends (always by a thrown error).
    private func connection(onEstablished: () -> Void) throws {
        self.update { $0.state = .connecting }
        let socket = try BlockingSocket.connect(host: self.host, port: self.port, timeoutMilliseconds: 3000)
        self.ackState.withLock { state in
            state.socket = socket
            if self.stopping.load(ordering: .relaxed) { socket.shutdownBoth() }
        }
        defer { socket.shutdownBoth() }
        self.update { $0.state = .handshake }
        var reader = FrameReader(socket: socket, configuration: self.configuration) { [self] in self.lastFrame.store(monotonicNanoseconds(), ordering: .relaxed) }

        let first = try reader.next()
        guard first.kind == .challenge else {
            throw ReplicationError("the primary's first frame is \(first.kind), not CHALLENGE; is \(self.host):\(self.port) a walrus replication port?")
        }
        let challenge = try ReplicationChallenge.decode(first.payload)
        let meta = self.store.wal.meta
        if challenge.authRequired && self.configuration.secret == nil {
            throw Rejected(
                reason: .badAuth,
                message: "The primary requires authentication; set repl-auth-file on this follower to the primary's key file.")
        }
        let proof = self.configuration.secret.map {
            ReplicationAuth.proof(secret: $0, nonce: challenge.nonce, clusterID: challenge.clusterID)
        } ?? []
        let partial = self.partialSnapshot()
        try self.store.commitBlocking()
        let durable = self.store.wal.sealedIndex
        let hello = ReplicationHello(
            protocolVersion: ReplicationFrame.protocolVersion, clusterID: meta.clusterID, nodeID: meta.nodeID,
            epoch: meta.currentEpoch, durableEpoch: meta.currentEpoch, durableIndex: durable, authProof: proof,
            partialSnapshotIndex: partial?.index ?? 0, partialSnapshotBytes: partial?.bytes ?? 0,
            listeningPort: UInt16(clamping: self.ports().client == 0 ? self.configuration.clientPort : self.ports().client),
            epochs: meta.epochs.map { (epoch: $0.epoch, firstIndex: $0.firstIndex) })
        var greeting = hello
        greeting.replicationPort = UInt16(clamping: self.ports().replication)
        try self.sendFrame(socket, .hello, epoch: meta.currentEpoch) { greeting.encode(into: &$0) }
        // Fencing: a primary of an older epoch than this node has seen is stale; never stream from
        // it. (The HELLO went first so that it learns of the newer epoch and stops taking writes.)
        if challenge.epoch < meta.currentEpoch {
            throw Rejected(
                reason: .staleEpoch,
                message: "The primary at \(self.host):\(self.port) is at epoch \(challenge.epoch) but this node has seen epoch "
                    + "\(meta.currentEpoch): it is a stale primary. Follow the current primary instead.")
        }
        if !meta.clusterID.isEmpty && meta.clusterID != challenge.clusterID && !challenge.clusterID.isEmpty {
            // The primary refuses this too; say it here as well, in this node's terms.
            self.logger.error(
                "The primary belongs to another cluster",
                metadata: ["repl.primary": "\(self.host):\(self.port)", "repl.theirs": "\(challenge.clusterID)", "repl.ours": "\(meta.clusterID)"])
        }
        self.ackState.withLock { $0.received = durable }
        self.update { link in
            link.primaryNodeID = challenge.nodeID
            link.received = durable
            link.primarySealedIndex = max(link.primarySealedIndex, challenge.sealedIndex)
            link.primaryEpoch = challenge.epoch
        }
        // Far behind: size the table for the primary's keys now instead of growing it step by step.
        if challenge.sealedIndex > durable + 100_000 { self.store.reserve(keys: Int(challenge.keyCount)) }

        var established = false
        var snapshot: IncomingSnapshot?
        defer { if let snapshot { close(snapshot.fd) } }
        var lastProgressLog: UInt64 = 0
        while !self.stopping.load(ordering: .relaxed) {
            let frame = try reader.next()
            guard frame.epoch <= challenge.epoch || frame.kind == .reject else {
                throw ReplicationError("a frame from epoch \(frame.epoch) on a connection opened at epoch \(challenge.epoch)")
            }
            switch frame.kind {
            case .reject:
                let reject = try ReplicationReject.decode(frame.payload)
                throw Rejected(reason: reject.reason, message: reject.message)
            case .promote:
                // Switchover: the primary has paused writes and waited for this node to hold every
                // sealed record; begin the next epoch here, tell it, and stop following.
                let request = try ReplicationPromotion.decode(frame.payload)
                try self.store.commitBlocking()
                let index = try self.store.beginEpoch(request.epoch)
                try self.sendFrame(socket, .promoted, epoch: request.epoch) {
                    ReplicationPromotion(epoch: request.epoch, index: index).encode(into: &$0)
                }
                self.promotedFlag.store(true, ordering: .relaxed)
                self.logger.notice(
                    "Promoted by a switchover from the primary",
                    metadata: ["repl.epoch": "\(request.epoch)", "repl.index": "\(index)", "repl.oldPrimary": "\(self.host):\(self.port)"])
                let done = self.onPromoted
                _ = DedicatedThread(name: "walrus-promoted", detached: true) { done(request.epoch) }
                throw ReplicationError("promoted to primary of epoch \(request.epoch)")
            case .diverged:
                let diverged = try ReplicationDiverged.decode(frame.payload)
                // This node holds records the primary never had (it was a primary, or followed
                // one, that lost its place): keep them in a file, cut, and say HELLO again.
                if let moved = try self.store.truncate(after: diverged.index) {
                    self.logger.warning(
                        "This node's log diverged from the primary's; records past the cut were moved aside",
                        metadata: [
                            "repl.cut": "\(diverged.index)", "repl.moved": "\(moved.records)", "repl.diverged": "\(moved.path)",
                            "repl.primary": "\(self.host):\(self.port)",
                        ])
                    self.link.withLock { $0.divergedFiles.append(moved.path) }
                }
                throw Reconnect(reason: "the log was cut back to \(diverged.index) to match the primary")
            case .heartbeat:
                var payload = frame.payload
                if let sealed = payload.readInteger(as: UInt64.self) {
                    self.link.withLock { $0.primarySealedIndex = max($0.primarySealedIndex, sealed) }
                }
                if !established {
                    established = true
                    try self.established(challenge: challenge, onEstablished)
                }
                self.update { link in
                    if link.state != .snapshot { link.state = .streaming }
                }
                self.markDirty()
            case .stream:
                let stream = try ReplicationStream.decode(frame.payload)
                if !established {
                    established = true
                    try self.established(challenge: challenge, onEstablished)
                }
                let last = try stream.frames.withUnsafeReadableBytes { bytes in
                    try self.store.applyReplicated(frames: bytes, firstIndex: stream.firstIndex, count: Int(stream.count))
                }
                self.ackState.withLock { state in
                    state.received = last
                    state.dirty = true
                    self.ackState.signal()
                }
                self.link.withLock { link in
                    link.received = last
                    link.primarySealedIndex = max(link.primarySealedIndex, last)
                }
                let caughtUp = reader.buffered == 0
                self.update { $0.state = caughtUp ? .streaming : .catchingUp }
            case .snapshotBegin:
                let begin = try ReplicationSnapshotBegin.decode(frame.payload)
                if !established {
                    established = true
                    try self.established(challenge: challenge, onEstablished)
                }
                if let old = snapshot { close(old.fd) }
                snapshot = try self.openSnapshot(begin)
                self.update { link in
                    link.state = .snapshot
                    link.snapshotBytes = begin.offset
                    link.snapshotTotal = begin.totalBytes
                }
            case .snapshotChunk:
                guard var incoming = snapshot else { throw ReplicationError("a SNAPSHOT-CHUNK without a SNAPSHOT") }
                let chunk = try ReplicationSnapshotChunk.decode(frame.payload)
                guard chunk.offset == incoming.written, incoming.written + UInt64(chunk.bytes.readableBytes) <= incoming.total else {
                    throw ReplicationError(
                        "a snapshot chunk at offset \(chunk.offset) does not continue the \(incoming.written) bytes received")
                }
                try chunk.bytes.withUnsafeReadableBytes { bytes in
                    try FileIO.pwriteAll(incoming.fd, bytes, at: Int64(incoming.written), path: incoming.partialPath)
                }
                incoming.written += UInt64(chunk.bytes.readableBytes)
                snapshot = incoming
                let written = incoming.written
                self.update { $0.snapshotBytes = written }
                let now = monotonicNanoseconds()
                if now - lastProgressLog > 2_000_000_000 {
                    lastProgressLog = now
                    self.logger.info(
                        "Receiving a snapshot",
                        metadata: [
                            "repl.percent": "\(written * 100 / max(incoming.total, 1))", "repl.bytes": "\(written)",
                            "repl.total": "\(incoming.total)",
                        ])
                }
                if incoming.written == incoming.total {
                    snapshot = nil
                    try self.install(incoming, challenge: challenge)
                }
            default:
                throw ReplicationError("a \(frame.kind) frame, which a primary never sends")
            }
        }
        throw ReplicationError("stopping")
    }

    private func established(challenge: ReplicationChallenge, _ onEstablished: () -> Void) throws {
        if self.store.wal.meta.clusterID.isEmpty && !challenge.clusterID.isEmpty {
            try self.store.wal.updateMeta { $0.clusterID = challenge.clusterID }
            self.logger.notice("Joined the cluster", metadata: ["repl.cluster": "\(challenge.clusterID)"])
        }
        onEstablished()
        self.update { link in
            link.linkUp = true
            link.lastError = nil
            if link.state == .handshake { link.state = .catchingUp }
        }
        self.logger.notice(
            "Replication link up",
            metadata: ["repl.primary": "\(self.host):\(self.port)", "repl.primaryNode": "\(challenge.nodeID)", "repl.durable": "\(self.store.wal.sealedIndex)"])
    }

    private func sendFrame(_ socket: BlockingSocket, _ kind: ReplicationFrame.Kind, epoch: UInt64, _ body: (inout ByteBuffer) -> Void) throws {
        let frame = FrameBuilder.frame(kind, epoch: epoch, allocator: ByteBufferAllocator(), body)
        try frame.withUnsafeReadableBytes { try socket.send($0) }
    }

    // MARK: Snapshots

    struct IncomingSnapshot {
        var index: UInt64
        var total: UInt64
        var written: UInt64
        var fd: Int32
        var partialPath: String
    }

    private static let partialSuffix = ".partial"

    /// A snapshot transfer that broke off earlier: its index and how many bytes are here.
    private func partialSnapshot() -> (index: UInt64, bytes: UInt64)? {
        let directory = self.store.configuration.directory
        guard let names = try? FileIO.listDirectory(directory) else { return nil }
        for name in names where name.hasSuffix(Self.partialSuffix) {
            if let index = SnapshotName.parse(String(name.dropLast(Self.partialSuffix.count))),
                let size = FileIO.fileStatus(FileIO.join(directory, name))?.size
            {
                return (index, UInt64(size))
            }
        }
        return nil
    }

    private func openSnapshot(_ begin: ReplicationSnapshotBegin) throws -> IncomingSnapshot {
        let directory = self.store.configuration.directory
        let path = FileIO.join(directory, SnapshotName.format(begin.index)) + Self.partialSuffix
        // Parts of other snapshots are of no more use.
        for name in try FileIO.listDirectory(directory) where name.hasSuffix(Self.partialSuffix) && FileIO.join(directory, name) != path {
            try FileIO.remove(FileIO.join(directory, name))
        }
        let fd: Int32
        if begin.offset == 0 {
            fd = try FileIO.open(path, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
            self.logger.notice(
                "Receiving a snapshot from the primary",
                metadata: ["repl.index": "\(begin.index)", "repl.bytes": "\(begin.totalBytes)"])
        } else {
            fd = try FileIO.open(path, O_WRONLY, mode: 0o644)
            let size = try FileIO.size(fd, path: path)
            guard size == Int64(begin.offset) else {
                close(fd)
                try? FileIO.remove(path)
                throw ReplicationError("the primary resumes the snapshot at \(begin.offset) but \(size) bytes are here; starting over")
            }
            self.logger.notice(
                "Resuming a snapshot transfer where it broke off",
                metadata: ["repl.index": "\(begin.index)", "repl.offset": "\(begin.offset)", "repl.bytes": "\(begin.totalBytes)"])
        }
        return IncomingSnapshot(index: begin.index, total: begin.totalBytes, written: begin.offset, fd: fd, partialPath: path)
    }

    private func install(_ incoming: IncomingSnapshot, challenge: ReplicationChallenge) throws {
        let directory = self.store.configuration.directory
        let path = FileIO.join(directory, SnapshotName.format(incoming.index))
        try FileIO.fdatasync(incoming.fd, path: incoming.partialPath)
        close(incoming.fd)
        guard rename(incoming.partialPath, path) == 0 else {
            throw ReplicationError("cannot rename \(incoming.partialPath) to \(path): \(String(cString: strerror(errno)))")
        }
        try FileIO.fsyncDirectory(directory)
        let started = monotonicNanoseconds()
        do {
            let header = try self.store.installSnapshot(path: path)
            self.logger.notice(
                "Snapshot installed",
                metadata: [
                    "repl.index": "\(header.index)", "repl.keys": "\(header.entryCount)",
                    "repl.ms": "\((monotonicNanoseconds() - started) / 1_000_000)",
                ])
        } catch {
            // A snapshot that fails its checks is moved aside, not used; the next try starts over.
            _ = rename(path, path + ".rejected")
            throw ReplicationError("the snapshot from the primary fails its checks (\(error)); kept as \(path).rejected")
        }
        self.ackState.withLock { state in
            state.received = incoming.index
            state.dirty = true
            self.ackState.signal()
        }
        self.update { link in
            link.received = incoming.index
            link.snapshotsInstalled += 1
            link.state = .catchingUp
        }
    }

    // MARK: The ACK thread

    private func runAcker() {
        let heartbeat = UInt64(self.configuration.heartbeatMilliseconds) * 1_000_000
        var lastSent: UInt64 = 0
        while !self.stopping.load(ordering: .relaxed) {
            self.ackState.wait(
                while: { state in !state.dirty && !self.stopping.load(ordering: .relaxed) },
                untilMonotonicNanoseconds: lastSent + heartbeat)
            let (socket, received) = self.ackState.withLock { state -> (BlockingSocket?, UInt64) in
                state.dirty = false
                return (state.socket, state.received)
            }
            lastSent = monotonicNanoseconds()
            guard let socket, self.link.withLock({ $0.linkUp }) else { continue }
            let durable = min(self.store.wal.sealedIndex, received)
            let applied = min(self.store.appliedIndex, received)
            let ack = ReplicationAck(received: received, durable: durable, applied: applied)
            // A failed send ends nothing here: the reader sees the broken connection and reconnects.
            try? self.sendFrame(socket, .ack, epoch: self.store.wal.meta.currentEpoch) { ack.encode(into: &$0) }
        }
    }
}

/// Reads whole, checked frames from a blocking socket; a peer silent past the timeout is an error.
struct FrameReader {
    let socket: BlockingSocket
    let timeoutNanoseconds: UInt64
    let heartbeatMilliseconds: Int32
    var buffer: ByteBuffer
    var decoder: ReplicationFrameDecoder
    let onFrame: () -> Void

    init(socket: BlockingSocket, configuration: ReplicationConfiguration, onFrame: @escaping () -> Void) {
        self.socket = socket
        self.timeoutNanoseconds = UInt64(configuration.timeoutMilliseconds) * 1_000_000
        self.heartbeatMilliseconds = Int32(configuration.heartbeatMilliseconds)
        self.buffer = ByteBufferAllocator().buffer(capacity: 4 << 20)
        self.decoder = ReplicationFrameDecoder(maxPayloadBytes: configuration.maxPayloadBytes, checksum: FrameBuilder.checksum)
        self.onFrame = onFrame
    }

    /// Bytes received but not yet decoded.
    var buffered: Int { self.buffer.readableBytes }

    mutating func next() throws -> ReplicationFrame {
        var lastData = monotonicNanoseconds()
        while true {
            if let frame = try self.decoder.decode(buffer: &self.buffer) {
                self.onFrame()
                return frame
            }
            if self.buffer.readerIndex > 0 && self.buffer.writableBytes < 256 * 1024 { self.buffer.discardReadBytes() }
            let socket = self.socket
            let timeout = self.heartbeatMilliseconds
            let n = try self.buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 256 * 1024) { raw in
                try socket.receive(into: raw, timeoutMilliseconds: timeout)
            }
            let now = monotonicNanoseconds()
            if n > 0 {
                lastData = now
            } else if now - lastData > self.timeoutNanoseconds {
                throw ReplicationError(
                    "the primary has been silent for \(self.timeoutNanoseconds / 1_000_000) ms (repl-timeout); reconnecting")
            }
        }
    }
}
