public import Logging
public import NIOCore
public import NIOPosix
import DequeModule
import Synchronization
import WALCore
public import WalrusProtocol
public import WalrusStore
#if canImport(Glibc)
import Glibc
#endif

/// The primary's side of replication: the listener, one session per connected follower, the
/// table of what each has acknowledged, and the writers waiting for followers (sync-replicas, WAIT).
public final class ReplicationPrimary: @unchecked Sendable {
    let store: KeyValueStore
    let configuration: ReplicationConfiguration
    let logger: Logger
    /// The daemon's one event-loop group (the listener, each follower's connection, timers).
    let group: any EventLoopGroup
    /// Blocking work off the event loops: choosing and reading snapshots.
    let threadPool: any BlockingWork
    /// The sealed index and when each index was sealed (for data age).
    private let seals = LockedValue(SealHistory())
    /// `seals.sealedIndex`, stored under its lock after each change: a sender reads it two or
    /// three times per frame, and each read under the lock was a lock pair.
    private let sealedMirror = Atomic<UInt64>(0)
    private let sessions = LockedValue(SessionTable())
    /// This node's client port (its CHALLENGE names it: a follower's INFO shows it as master_port).
    let clientPort = Atomic<Int>(0)
    /// Followers that disconnected, by node id, for status and retention (seen recently).
    private let departed = LockedValue<[String: (status: ReplicaStatus, at: UInt64)]>([:])
    private let waiters = LockedValue<[UInt64: ReplicaWaiter]>([:])
    /// Some write waits for followers (WAIT, a switchover): followers are asked for prompt ACKs.
    private let anyWaiter = Atomic<Bool>(false)

    /// Whether followers should ACK each of their seals at once (a write waits for them:
    /// sync-replicas, WAIT, a switchover), rather than coalesce ACKs over a few milliseconds.
    var wantsPromptAcks: Bool { self.configuration.syncReplicas > 0 || self.anyWaiter.load(ordering: .relaxed) }
    private let nextID = Atomic<UInt64>(1)
    /// Whether HELLOs are served (false while this node is a follower).
    let servingFlag = Atomic<Bool>(true)
    public var serving: Bool {
        get { self.servingFlag.load(ordering: .relaxed) }
        set { self.servingFlag.store(newValue, ordering: .relaxed) }
    }
    /// Told when a peer shows a newer epoch than this node's (the node fences itself: its role
    /// machine decides, once).
    let onHigherEpoch = LockedValue<(@Sendable (String) -> Void)?>(nil)
    /// A follower asked to be handed the primary's role (HANDOVER): the node runs a switchover to it.
    let onHandover = LockedValue<(@Sendable (FollowerSession) -> Void)?>(nil)

    /// A peer knows epoch `epoch`, newer than ours: stop taking writes at once.
    func metHigherEpoch(_ epoch: UInt64, from peer: String) {
        let ours = self.store.wal.meta.currentEpoch
        guard epoch > ours else { return }
        let reason =
            "This node was the primary of epoch \(ours), but \(peer) has seen epoch \(epoch): a newer primary exists, so "
            + "this node takes no more writes. Make it follow the current primary ('walrusctl follow HOST:PORT')."
        self.onHigherEpoch.withLock { $0 }?(reason)
    }

    /// Close every follower connection (this node stops being their primary).
    public func dropFollowers(reason: String) {
        for session in self.sessions.withLock({ Array($0.values) }) { session.stop(reason: reason) }
    }

    /// The live session of the follower named `target`: its node id, or its host:port (client or
    /// replication port).
    /// Send a PUBLISH to every follower that streams.
    func propagatePublish(_ publish: ReplicationPublish) {
        let sessions = self.sessions.withLock { Array($0.values) }
        for session in sessions { session.sendPublish(publish) }
    }

    func session(matching target: String) -> FollowerSession? {
        self.sessions.withLock { sessions in
            sessions.values.first { session in
                session.nodeID == target || "\(session.host):\(session.clientPort)" == target
                    || "\(session.host):\(session.replicationPort)" == target
            }
        }
    }

    /// Snapshots sent by node id (tests check a resumed follower got none).
    private let snapshotCounts = LockedValue<[String: Int]>([:])
    private let channel = LockedValue<(any Channel)?>(nil)
    private let boundPort = Atomic<Int>(0)

    /// Connections that have not said HELLO yet, at most `maxPendingHandshakes`; refusals counted.
    private let pendingHandshakes = Atomic<Int>(0)
    private let refusedHandshakes = Atomic<Int>(0)
    public static let maxPendingHandshakes = 128

    func beginHandshake() -> Bool {
        if self.pendingHandshakes.add(1, ordering: .relaxed).newValue <= Self.maxPendingHandshakes { return true }
        self.pendingHandshakes.subtract(1, ordering: .relaxed)
        return false
    }

    func endHandshake() { self.pendingHandshakes.subtract(1, ordering: .relaxed) }

    /// Connections refused because too many others had not said HELLO yet.
    public var refusedHandshakeCount: Int { self.refusedHandshakes.load(ordering: .relaxed) }

    /// Log the first refusal and then every 1000th (a flood must not flood the journal too).
    func noteRefusedHandshake(peer: String) {
        let count = self.refusedHandshakes.add(1, ordering: .relaxed).newValue
        if count == 1 || count % 1000 == 0 {
            self.logger.warning(
                "Refused replication connections: too many have not said HELLO yet",
                metadata: [
                    "repl.address": "\(peer)", "repl.refused": "\(count)",
                    "repl.pendingLimit": "\(Self.maxPendingHandshakes)",
                ])
        }
    }
    private let warned = LockedValue<Set<String>>([])
    /// The replication port once bound.
    public var port: Int? {
        let port = self.boundPort.load(ordering: .relaxed)
        return port == 0 ? nil : port
    }
    public init(
        store: KeyValueStore, configuration: ReplicationConfiguration, logger: Logger, group: any EventLoopGroup,
        threadPool: any BlockingWork
    ) {
        self.store = store
        self.configuration = configuration
        self.logger = logger
        self.group = group
        self.threadPool = threadPool
        self.recordSeal(store.wal.sealedIndex)
        store.wal.addSealObserver { [weak self] index in self?.sealed(index) }
    }

    // MARK: Listener

    /// Bind the replication listener; returns the bound port.
    public func bind() async throws -> Int {
        let bootstrap = ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)  // IPPROTO_TCP; the socketOption form sets SO_DEBUG
            // Senders write while the channel is writable: a few MB in flight keep a fast link busy
            // during catch-up and bound what a slow follower holds in memory.
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 1 << 20, high: 4 << 20))
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    // (No IdleStateHandler: PrimaryConnectionHandler times the follower's silence.)
                    try sync.addHandler(
                        ByteToMessageHandler(
                            // A follower sends only HELLO, ACK, heartbeats and PROMOTED: small frames.
                            ReplicationFrameDecoder(maxPayloadBytes: 1 << 20, checksum: Frames.checksum)))
                    let handler = PrimaryConnectionHandler(primary: self)
                    try sync.addHandler(handler)
                    if let security = self.configuration.security {
                        let bound = NIOLoopBound(handler, eventLoop: channel.eventLoop)
                        try security.addServerHandlers(to: channel, listener: "replication") { subject in
                            bound.value.peerSubject = subject
                        }
                    }
                }
            }
        let channel = try await bootstrap.bind(host: self.configuration.bindAddress, port: self.configuration.port).get()
        self.channel.withLock { $0 = channel }
        let port = channel.localAddress?.port ?? self.configuration.port
        self.boundPort.store(port, ordering: .relaxed)
        self.logger.info(
            "Replication listener ready", metadata: ["repl.bind": "\(self.configuration.bindAddress)", "repl.port": "\(port)"])
        return port
    }

    /// Close the listener and every follower connection.
    public func shutdown() async {
        let channel = self.channel.withLock { channel -> (any Channel)? in
            defer { channel = nil }
            return channel
        }
        try? await channel?.close()
        for session in self.sessions.withLock({ Array($0.values) }) { session.stop(reason: "the primary is stopping") }
    }

    // MARK: Seals

    /// After every fdatasync (flusher thread): record when, and wake the senders that wait.
    private func sealed(_ index: UInt64) {
        self.recordSeal(index)
        for session in self.sessions.withLock({ $0.values }) { session.sealed() }
    }

    var sealedIndex: UInt64 { self.sealedMirror.load(ordering: .acquiring) }

    private func recordSeal(_ index: UInt64) {
        self.seals.withLock { history in
            history.record(index: index, at: monotonicNanoseconds())
            self.sealedMirror.store(history.sealedIndex, ordering: .releasing)
        }
    }

    // MARK: Sessions

    func makeSessionID() -> UInt64 { self.nextID.add(1, ordering: .relaxed).newValue }

    func register(_ session: FollowerSession) {
        // A node that reconnects replaces its old session (the old socket may not have noticed yet).
        let stale = self.sessions.withLock { sessions -> [FollowerSession] in
            let old = sessions.values.filter { $0.nodeID == session.nodeID }
            for item in old { sessions[item.id] = nil }
            sessions[session.id] = session
            return old
        }
        for old in stale { old.stop(reason: "the same follower connected again") }
        _ = self.departed.withLock { $0.removeValue(forKey: session.nodeID) }
    }

    func unregister(_ session: FollowerSession) {
        let removed = self.sessions.withLock { $0.removeValue(forKey: session.id) != nil }
        guard removed, !session.nodeID.isEmpty else { return }
        var status = session.status(primary: self)
        status.state = .disconnected
        self.departed.withLock { $0[session.nodeID] = (status, monotonicNanoseconds()) }
        self.logger.warning(
            "Follower disconnected",
            metadata: ["repl.follower": "\(session.nodeID)", "repl.address": "\(session.address)", "repl.durable": "\(status.durable)"])
        self.checkWaiters()
    }

    func snapshotSent(to nodeID: String) {
        self.snapshotCounts.withLock { $0[nodeID, default: 0] += 1 }
    }

    func snapshotsSent(to nodeID: String) -> Int { self.snapshotCounts.withLock { $0[nodeID] ?? 0 } }

    /// Every follower: connected ones first, then those seen in the last hour.
    public func replicas() -> [ReplicaStatus] {
        let limit = self.configuration.retentionMaxBytes
        func warn(_ status: inout ReplicaStatus) {
            guard status.state != .snapshot else { return }
            let needed = FollowerSession.estimateBytes(self.store.wal, after: status.durable)
            if needed > limit * 8 / 10 {
                status.warning =
                    "about to fall off the retained log: it needs \(needed) bytes of log and at most \(limit) are kept "
                    + "for followers (repl-retention-bytes); past that it needs a new snapshot"
            }
        }
        let live = self.sessions.withLock { Array($0.values) }.sorted { $0.id < $1.id }.map { session -> ReplicaStatus in
            var status = session.status(primary: self)
            warn(&status)
            return status
        }
        let now = monotonicNanoseconds()
        let window = UInt64(max(self.configuration.retentionSeconds, 60)) * 1_000_000_000
        let gone = self.departed.withLock { departed -> [ReplicaStatus] in
            departed = departed.filter { now - $0.value.at < window }
            return departed.values.map { entry in
                var status = entry.status
                status.lastHeardSecondsAgo = Double(now - entry.at) / 1e9 + status.lastHeardSecondsAgo
                warn(&status)
                return status
            }
        }
        return live.filter { $0.state != .handshake } + gone.sorted { $0.nodeID < $1.nodeID }
    }

    /// How many followers (or the one named `nodeID`) have `index` durable.
    public func durableCount(atLeast index: UInt64, nodeID: String? = nil) -> Int {
        self.sessions.withLock { sessions in
            sessions.values.reduce(0) { $0 + ($1.durableIndex >= index && (nodeID == nil || $1.nodeID == nodeID) ? 1 : 0) }
        }
    }

    /// The lowest index a follower seen within `seconds` still needs (its durable index + 1),
    /// for retention; nil when no follower needs anything.
    public func neededIndex(seenWithinSeconds seconds: Int64) -> (index: UInt64, nodeID: String)? {
        var lowest: (UInt64, String)?
        for session in self.sessions.withLock({ Array($0.values) }) where session.state != .handshake {
            let needed = session.durableIndex + 1
            if lowest == nil || needed < lowest!.0 { lowest = (needed, session.nodeID) }
        }
        let now = monotonicNanoseconds()
        for (node, entry) in self.departed.withLock({ $0 }) where now - entry.at < UInt64(max(seconds, 0)) * 1_000_000_000 {
            let needed = entry.status.durable + 1
            if lowest == nil || needed < lowest!.0 { lowest = (needed, node) }
        }
        return lowest
    }

    // MARK: Waiting for followers (sync-replicas, WAIT)

    /// Call `done(count, timedOut)` once `needed` followers (or the one named `nodeID`) have
    /// `index` durable, or after `timeoutMilliseconds` (0: no timeout) with how many had it.
    public func waitForReplicas(
        index: UInt64, needed: Int, timeoutMilliseconds: Int, nodeID: String? = nil,
        done: @escaping @Sendable (Int, Bool) -> Void
    ) {
        let count = self.durableCount(atLeast: index, nodeID: nodeID)
        if count >= needed || needed <= 0 {
            done(count, false)
            return
        }
        let id = self.makeSessionID()
        self.waiters.withLock {
            $0[id] = ReplicaWaiter(index: index, needed: needed, nodeID: nodeID, done: done)
            self.anyWaiter.store(true, ordering: .relaxed)
        }
        // Ask the followers that lack it for an ACK as soon as they have it (with sync-replicas
        // every STREAM asks already).
        if self.configuration.syncReplicas == 0 {
            for session in self.sessions.withLock({ Array($0.values) }) where nodeID == nil || session.nodeID == nodeID {
                session.requestAck(upTo: index)
            }
        }
        // An ACK may have arrived between the count and the registration.
        self.checkWaiters()
        if timeoutMilliseconds > 0 {
            self.group.next().scheduleTask(in: .milliseconds(Int64(timeoutMilliseconds))) { [self] in
                if let waiter = self.waiters.withLock({ waiters -> ReplicaWaiter? in
                    defer { self.anyWaiter.store(!waiters.isEmpty, ordering: .relaxed) }
                    return waiters.removeValue(forKey: id)
                }) {
                    waiter.done(self.durableCount(atLeast: waiter.index, nodeID: waiter.nodeID), true)
                }
            }
        }
    }

    /// Release the waiters whose index enough followers now hold.
    func checkWaiters() {
        let ready = self.waiters.withLock { waiters -> [ReplicaWaiter] in
            guard !waiters.isEmpty else { return [] }
            var ready: [ReplicaWaiter] = []
            for (id, waiter) in waiters where self.durableCount(atLeast: waiter.index, nodeID: waiter.nodeID) >= waiter.needed {
                ready.append(waiter)
                waiters[id] = nil
            }
            self.anyWaiter.store(!waiters.isEmpty, ordering: .relaxed)
            return ready
        }
        for waiter in ready { waiter.done(self.durableCount(atLeast: waiter.index, nodeID: waiter.nodeID), false) }
    }

    // MARK: Snapshots for followers

    /// The snapshot to send a follower that is behind the retained log: the one it has a part
    /// of if that is still usable (to resume), else the newest usable one, else a new checkpoint.
    /// Usable: the log still holds every record after it. Runs on the thread pool (it may write
    /// a whole snapshot).
    func chooseSnapshot(partialIndex: UInt64, partialBytes: UInt64) throws -> FollowerSession.SnapshotPlan {
        let directory = self.store.configuration.directory
        func usable() throws -> [UInt64] {
            let first = self.store.wal.firstIndex
            return try FileIO.listDirectory(directory).compactMap(SnapshotName.parse).filter { $0 + 1 >= first }.sorted(by: >)
        }
        func plan(_ index: UInt64, offset: UInt64) -> FollowerSession.SnapshotPlan? {
            let path = FileIO.join(directory, SnapshotName.format(index))
            guard let size = FileIO.fileStatus(path)?.size, size > 0 else { return nil }
            return .init(path: path, index: index, totalBytes: UInt64(size), offset: offset <= UInt64(size) ? offset : 0)
        }
        var candidates = try usable()
        if partialIndex > 0, candidates.contains(partialIndex), let resumed = plan(partialIndex, offset: partialBytes) {
            return resumed
        }
        if let newest = candidates.first, let fresh = plan(newest, offset: 0) { return fresh }
        // None usable: write one (or wait for the checkpoint already running, for another
        // follower say, and use its result).
        let report = try self.store.checkpointBlocking(joiningRunning: true)
        if let fresh = plan(report.index, offset: 0) { return fresh }
        candidates = try usable()
        if let newest = candidates.first, let fresh = plan(newest, offset: 0) { return fresh }
        throw ReplicationError("No snapshot could be made for a follower in \(directory).")
    }

    // MARK: Retention

    /// The index from which the log must be kept for followers seen within `seconds`, unless
    /// keeping it would hold more than `maxBytes` of log: then the follower is let go (it will
    /// get a snapshot) and a warning says so.
    public func retentionFloor(seenWithinSeconds seconds: Int64, maxBytes: Int64) -> UInt64? {
        guard let (needed, node) = self.neededIndex(seenWithinSeconds: seconds) else { return nil }
        let bytes = FollowerSession.estimateBytes(self.store.wal, after: needed &- 1)
        if bytes > maxBytes {
            self.logger.warning(
                "A follower is too far behind to keep the log for it; it will need a snapshot",
                metadata: [
                    "repl.follower": "\(node)", "repl.needs": "\(needed)", "repl.bytes": "\(bytes)",
                    "repl.retentionBytes": "\(maxBytes)",
                ])
            return nil
        }
        return needed
    }

    /// Log each follower's retention warning once (the status loop calls this every few seconds).
    public func logRetentionWarnings() {
        let warnings = self.replicas().compactMap { status in status.warning.map { (status.nodeID, $0) } }
        let fresh = self.warned.withLock { warned -> [(String, String)] in
            let current = Set(warnings.map(\.0))
            let new = warnings.filter { !warned.contains($0.0) }
            warned = current
            return new
        }
        for (node, warning) in fresh {
            self.logger.warning("A follower is about to fall off the retained log", metadata: ["repl.follower": "\(node)", "repl.warning": "\(warning)"])
        }
    }

    // MARK: Data age

    /// How long ago the first record after `index` was sealed (0 if there is none).
    func dataAgeSeconds(after index: UInt64) -> Double {
        let now = monotonicNanoseconds()
        return self.seals.withLock { history in
            guard let sealedAt = history.firstSeal(after: index) else { return 0 }
            return Double(now - sealedAt) / 1e9
        }
    }
}

/// When each index was sealed, for data-age lag: one entry per fdatasync, trimmed to the most
/// recent ~100,000 (older records count as at least as old as the oldest entry).
struct SealHistory {
    var sealedIndex: UInt64 = 0
    /// (index, when) per fdatasync, oldest first.
    private var seals = Deque<(index: UInt64, time: UInt64)>()

    mutating func record(index: UInt64, at time: UInt64) {
        guard index > self.sealedIndex || self.seals.isEmpty else { return }
        self.sealedIndex = index
        self.seals.append((index, time))
        if self.seals.count > 131_072 { self.seals.removeFirst(65_536) }
    }

    /// When the first record after `index` was sealed.
    func firstSeal(after index: UInt64) -> UInt64? {
        guard index < self.sealedIndex, !self.seals.isEmpty else { return nil }
        // The first entry whose index is > `index`: it sealed record index+1.
        var low = 0
        var high = self.seals.count - 1
        while low < high {
            let middle = (low + high) / 2
            if self.seals[middle].index > index { high = middle } else { low = middle + 1 }
        }
        return self.seals[low].time
    }
}

struct ReplicaWaiter {
    var index: UInt64
    var needed: Int
    var nodeID: String?
    var done: @Sendable (Int, Bool) -> Void
}

/// The live follower sessions by id, with an array of them kept beside: a seal walks them after
/// every batch, and `Array(dictionary.values)` was an allocation per seal.
struct SessionTable {
    private var byID: [UInt64: FollowerSession] = [:]
    /// The sessions (in no particular order).
    private(set) var values: [FollowerSession] = []

    subscript(id: UInt64) -> FollowerSession? {
        get { self.byID[id] }
        set {
            self.byID[id] = newValue
            self.values = Array(self.byID.values)
        }
    }

    @discardableResult
    mutating func removeValue(forKey id: UInt64) -> FollowerSession? {
        let removed = self.byID.removeValue(forKey: id)
        if removed != nil { self.values = Array(self.byID.values) }
        return removed
    }
}
