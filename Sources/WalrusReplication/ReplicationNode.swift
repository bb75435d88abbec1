public import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif
import WALCore
import WalrusProtocol
public import WalrusStore

/// Two hex digits.
func format2(_ byte: UInt8) -> String { (byte < 16 ? "0" : "") + String(byte, radix: 16) }

/// This node's part in replication: a primary (its listener serves followers) or a follower of
/// another node (the listener refuses followers and writes are READONLY).
public final class ReplicationNode: Sendable {
    public enum Role: Sendable, Equatable {
        case primary
        case follower(host: String, port: Int)
    }

    public let store: KeyValueStore
    public let configuration: ReplicationConfiguration
    public let primary: ReplicationPrimary
    let logger: Logger
    private let follower = LockedValue<ReplicationFollower?>(nil)
    private let followerFlag = Atomic<Bool>(false)
    private let clientPortValue = Atomic<Int>(0)

    /// This node's client port once bound (a follower tells its primary, for INFO's slaveN:port).
    public var clientPort: Int {
        get { self.clientPortValue.load(ordering: .relaxed) }
        set { self.clientPortValue.store(newValue, ordering: .relaxed) }
    }
    private let onLinkChange: @Sendable (FollowerLinkStatus) -> Void

    public init(
        store: KeyValueStore, configuration: ReplicationConfiguration, logger: Logger,
        onLinkChange: @escaping @Sendable (FollowerLinkStatus) -> Void = { _ in }
    ) {
        self.store = store
        self.configuration = configuration
        self.logger = logger
        self.onLinkChange = onLinkChange
        self.primary = ReplicationPrimary(store: store, configuration: configuration, logger: logger)
        let seconds = configuration.retentionSeconds
        let maxBytes = configuration.retentionMaxBytes
        store.setRetentionGuard { [primary = self.primary] in
            primary.retentionFloor(seenWithinSeconds: seconds, maxBytes: maxBytes)
        }
        self.primary.onFenced.withLock { $0 = { [weak self] _ in self?.fencedFlag.store(true, ordering: .relaxed) } }
    }

    /// Whether this node follows another (fast: every write asks).
    public var isFollower: Bool { self.followerFlag.load(ordering: .relaxed) }

    /// Why writes are refused, if they are: a follower (Redis's READONLY words), or a primary that
    /// learned of a newer epoch (fenced).
    public var writeRefusal: String? {
        // Every write asks: the common case (a primary, not paused, not fenced) reads three atomics.
        if self.pausedFlag.load(ordering: .relaxed), let target = self.pausedFor.withLock({ $0 }) {
            return "TRYAGAIN Switchover in progress: the primary is moving to \(target); retry there in a moment."
        }
        if self.isFollower { return "READONLY You can't write against a read only replica." }
        if self.fencedFlag.load(ordering: .relaxed), let reason = self.primary.fencedReason { return "READONLY " + reason }
        return nil
    }

    private let fencedFlag = Atomic<Bool>(false)
    /// Set during a switchover: where the writes are going.
    private let pausedFor = LockedValue<String?>(nil)
    private let pausedFlag = Atomic<Bool>(false)

    private func pause(for target: String?) {
        self.pausedFor.withLock { $0 = target }
        self.pausedFlag.store(target != nil, ordering: .relaxed)
    }

    /// The planned handover to the follower `target` (node id, or host:port): pause writes, wait
    /// until it holds every sealed record durably, have it begin the next epoch, then follow it.
    /// On any failure within `timeoutMilliseconds` writes resume here and the error says what
    /// happened. Blocks the calling thread (the control socket runs it on its own).
    public func switchover(to target: String, timeoutMilliseconds: Int) throws -> [String: Any] {
        guard !self.isFollower else { throw ReplicationError("This node is a follower; run switchover on the primary.") }
        guard let session = self.primary.session(matching: target), session.state == .streaming || session.state == .catchingUp else {
            throw ReplicationError(
                "No connected follower is '\(target)'; give a node id or host:port from 'walrusctl replicas'.")
        }
        guard session.replicationPort > 0 else {
            throw ReplicationError("The follower '\(target)' did not say its replication port; it cannot become the primary.")
        }
        let clientAddress = "\(session.host):\(session.clientPort)"
        let replicationAddress = "\(session.host):\(session.replicationPort)"
        let started = monotonicNanoseconds()
        let deadline = started + UInt64(max(timeoutMilliseconds, 1)) * 1_000_000
        self.pause(for: clientAddress)
        self.logger.notice("Switchover: writes paused", metadata: ["repl.target": "\(session.nodeID)", "repl.address": "\(replicationAddress)"])
        func resume(_ why: String) -> ReplicationError {
            self.pause(for: nil)
            self.logger.error("Switchover failed; writes resume here", metadata: ["repl.target": "\(session.nodeID)", "repl.error": "\(why)"])
            return ReplicationError("Switchover to \(session.nodeID) failed: \(why) This node is still the primary and takes writes again.")
        }
        // 1. Every record appended so far sealed here, then durable on the target.
        do { try self.store.commitBlocking() } catch { throw resume("sealing the log failed (\(error)).") }
        let target = self.store.wal.lastIndex
        while session.durableIndex < target {
            if session.isStopped { throw resume("the target disconnected while catching up.") }
            if monotonicNanoseconds() > deadline {
                throw resume("the target had \(session.durableIndex) of \(target) records durable when the \(timeoutMilliseconds) ms ran out.")
            }
            usleep(1000)
        }
        let caughtUp = monotonicNanoseconds()
        // 2. Promote it.
        let epoch = self.store.wal.meta.currentEpoch + 1
        let frame = FrameBuilder.frame(.promote, epoch: epoch - 1, allocator: session.channel.allocator) {
            ReplicationPromotion(epoch: epoch, index: 0).encode(into: &$0)
        }
        session.channel.writeAndFlush(frame, promise: nil)
        while session.promotion.withLock({ $0 }) == nil {
            let lost = session.isStopped
            if monotonicNanoseconds() > deadline || lost {
                if lost { usleep(20_000) }
                if session.promotion.withLock({ $0 }) != nil { break }
                // PROMOTE was sent: the target may have promoted itself. Resuming writes here could
                // make two primaries, so this node stays off (fenced) until the operator decides.
                self.pause(for: nil)
                let why =
                    "Switchover to \(session.nodeID): PROMOTE was sent but not confirmed "
                    + (lost ? "(the target disconnected)" : "within \(timeoutMilliseconds) ms")
                    + ". The target may now be the primary of epoch \(epoch). This node refuses writes until you decide: "
                    + "if '\(replicationAddress)' is primary, run 'walrusctl follow \(replicationAddress)' here; if not, "
                    + "run 'walrusctl promote --force' here."
                self.primary.fence(reason: why)
                throw ReplicationError(why)
            }
            usleep(500)
        }
        let promoted = monotonicNanoseconds()
        // 3. Follow it. Writes are refused from here on with READONLY (clients reconnect to it).
        self.follow(host: session.host, port: session.replicationPort)
        self.pause(for: nil)
        let pausedMilliseconds = Double(promoted - started) / 1e6
        self.logger.notice(
            "Switchover done: this node follows the new primary",
            metadata: ["repl.primary": "\(replicationAddress)", "repl.epoch": "\(epoch)", "repl.pausedMs": "\(pausedMilliseconds)"])
        return [
            "newPrimary": session.nodeID, "clientAddress": clientAddress, "replicationAddress": replicationAddress,
            "epoch": epoch, "sealedIndex": target, "catchUpMilliseconds": Double(caughtUp - started) / 1e6,
            "pausedMilliseconds": pausedMilliseconds,
        ]
    }

    /// Promote this follower: stop following, begin a new epoch (its record sealed and in `meta`
    /// before anything else), take writes. Refuses, unless `force`, when the node knows it is
    /// behind the primary it last saw. Returns the new epoch and the epoch record's index.
    public func promote(force: Bool) throws -> (epoch: UInt64, index: UInt64, note: String) {
        guard self.isFollower else {
            if self.fencedFlag.load(ordering: .relaxed) && force {
                return try self.becomePrimary(epoch: self.store.wal.meta.currentEpoch + 1)
            }
            throw ReplicationError("This node is already the primary (epoch \(self.store.wal.meta.currentEpoch)).")
        }
        let link = self.link
        let applied = self.store.appliedIndex
        if let link, link.primarySealedIndex > applied, !force {
            throw ReplicationError(
                "This follower is \(link.primarySealedIndex - applied) record(s) behind the primary it last saw "
                    + "(\(link.primaryHost):\(link.primaryPort) had sealed \(link.primarySealedIndex), this node applied \(applied)). "
                    + "Promote the most advanced follower, wait for this one to catch up, or use --force to accept losing them.")
        }
        let seen = max(self.store.wal.meta.currentEpoch, link?.primaryEpoch ?? 0)
        self.stopFollowing()
        return try self.becomePrimary(epoch: seen + 1)
    }

    private func becomePrimary(epoch: UInt64) throws -> (epoch: UInt64, index: UInt64, note: String) {
        if self.store.wal.meta.clusterID.isEmpty {
            // A follower that never synced starts a cluster of its own.
            var generator = SystemRandomNumberGenerator()
            let id = (0..<16).map { _ in String(format2(UInt8.random(in: 0...255, using: &generator))) }.joined()
            try self.store.wal.updateMeta { $0.clusterID = id }
        }
        let index = try self.store.beginEpoch(epoch)
        self.primary.clearFence()
        self.fencedFlag.store(false, ordering: .relaxed)
        self.primary.serving = true
        self.followerFlag.store(false, ordering: .relaxed)
        self.logger.notice("Promoted: this node is the primary", metadata: ["repl.epoch": "\(epoch)", "repl.index": "\(index)"])
        let note =
            self.configuration.follow != nil
            ? "remove 'follow' from this node's config, or it follows its old primary again after a restart" : ""
        return (epoch, index, note)
    }

    /// A switchover promoted this node (its follower thread wrote the epoch): take writes.
    private func finishPromotion(epoch: UInt64) {
        self.stopFollowing()
        self.primary.clearFence()
        self.fencedFlag.store(false, ordering: .relaxed)
        self.primary.serving = true
        self.followerFlag.store(false, ordering: .relaxed)
        self.logger.notice("Promoted: this node is the primary", metadata: ["repl.epoch": "\(epoch)", "repl.by": "switchover"])
    }

    /// Follow `host:port` from now on (a former primary rejoining, or a follower re-pointed).
    /// Writes are refused at once; this node's followers are let go.
    public func follow(host: String, port: Int) {
        self.followerFlag.store(true, ordering: .relaxed)
        self.primary.serving = false
        self.primary.dropFollowers(reason: "this node now follows \(host):\(port)")
        self.primary.clearFence()
        self.fencedFlag.store(false, ordering: .relaxed)
        self.startFollowing(host: host, port: port)
    }

    public var role: Role {
        self.follower.withLock { follower in follower.map { .follower(host: $0.host, port: $0.port) } ?? .primary }
    }

    /// The link to the primary, on a follower.
    public var link: FollowerLinkStatus? { self.follower.withLock { $0 }?.status }

    /// Follow `host:port`: refuse writes and followers, stream from the primary.
    public func startFollowing(host: String, port: Int) {
        self.followerFlag.store(true, ordering: .relaxed)
        self.primary.serving = false
        var configuration = self.configuration
        if self.clientPort != 0 { configuration.clientPort = self.clientPort }
        configuration.replicationListenPort = self.primary.port ?? 0
        let follower = ReplicationFollower(
            store: self.store, configuration: configuration, host: host, port: port, logger: self.logger,
            onLinkChange: self.onLinkChange)
        let old = self.follower.withLock { current -> ReplicationFollower? in
            defer { current = follower }
            return current
        }
        old?.stop()
        follower.onPromoted = { [weak self] epoch in self?.finishPromotion(epoch: epoch) }
        follower.ports = { [weak self] in (self?.clientPort ?? 0, self?.primary.port ?? 0) }
        follower.start()
        self.logger.notice("Following a primary", metadata: ["repl.primary": "\(host):\(port)"])
    }

    /// Stop following (shutdown, or promotion later).
    public func stopFollowing() {
        let old = self.follower.withLock { current -> ReplicationFollower? in
            defer { current = nil }
            return current
        }
        old?.stop()
    }
}
