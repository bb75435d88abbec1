public import Logging
public import NIOCore
public import NIOPosix
import Synchronization
#if canImport(Glibc)
import Glibc
#endif
import WALCore
public import WalrusProtocol
public import WalrusStore

/// This node's part in replication. The role is one `NodeRole` changed only through its state
/// machine; this class performs the actions a transition returns (start or stop following, let
/// followers go, write an epoch record) and publishes the role every write asks about.
public final class ReplicationNode: Sendable {
    public let store: KeyValueStore
    public let configuration: ReplicationConfiguration
    public let primary: ReplicationPrimary
    let logger: Logger
    public let group: any EventLoopGroup
    /// The loop the link to a primary runs on (walrusd gives it one of its own: the link seals
    /// its batches there, and an fdatasync must not hold up client reads); else one of `group`'s.
    let followerLoop: (any EventLoop)?
    let threadPool: any BlockingWork
    private let machine: LockedValue<NodeRole.StateMachine>
    /// The role writes and status read: published after a transition's actions when the new
    /// role takes writes (so no write lands before its epoch record), before them otherwise.
    private let published: LockedValue<NodeRole>
    /// `published` takes writes (every write asks: one atomic load on the common path).
    private let writable: Atomic<Bool>
    private let followerFlag: Atomic<Bool>
    private let follower = LockedValue<ReplicationFollower?>(nil)
    private let clientPortValue = Atomic<Int>(0)
    private let onLinkChange: @Sendable (FollowerLinkStatus) -> Void

    /// This node's client port once bound (a follower tells its primary, for INFO's slaveN:port).
    public var clientPort: Int {
        get { self.clientPortValue.load(ordering: .relaxed) }
        set {
            self.clientPortValue.store(newValue, ordering: .relaxed)
            self.primary.clientPort.store(newValue, ordering: .relaxed)
        }
    }

    public init(
        store: KeyValueStore, configuration: ReplicationConfiguration, logger: Logger, group: any EventLoopGroup,
        threadPool: any BlockingWork, followerLoop: (any EventLoop)? = nil,
        onLinkChange: @escaping @Sendable (FollowerLinkStatus) -> Void = { _ in }
    ) {
        self.store = store
        self.configuration = configuration
        self.logger = logger
        self.group = group
        self.followerLoop = followerLoop
        self.threadPool = threadPool
        self.onLinkChange = onLinkChange
        self.primary = ReplicationPrimary(
            store: store, configuration: configuration, logger: logger, group: group, threadPool: threadPool)
        // A node configured to follow refuses writes from the first moment, before its link is up.
        let role: NodeRole = configuration.follow.map { .following(host: $0.host, port: $0.port) } ?? .primary
        self.machine = LockedValue(NodeRole.StateMachine(role))
        self.published = LockedValue(role)
        self.writable = Atomic(role.writeRefusal == nil)
        self.followerFlag = Atomic(role.isFollower)
        self.primary.serving = !role.isFollower
        let seconds = configuration.retentionSeconds
        let maxBytes = configuration.retentionMaxBytes
        store.setRetentionGuard { [primary = self.primary] in
            primary.retentionFloor(seenWithinSeconds: seconds, maxBytes: maxBytes)
        }
        self.primary.onHigherEpoch.withLock {
            $0 = { [weak self] reason in
                guard let self, case .success = self.transition(.metHigherEpoch(reason: reason)) else { return }
                self.logger.critical("Fenced: a newer epoch exists; refusing writes", metadata: ["repl.reason": "\(reason)"])
            }
        }
        self.primary.onHandover.withLock {
            $0 = { [weak self] session in
                guard let self else { return }
                Task { await self.handOver(to: session) }
            }
        }
    }

    // MARK: Pub/sub

    private let onPublish = LockedValue<(@Sendable ([UInt8], [UInt8]) -> Void)?>(nil)

    /// Where PUBLISHes propagated by this node's primary go (the server's pub/sub hub).
    public func setPublishHandler(_ handler: @escaping @Sendable (_ channel: [UInt8], _ message: [UInt8]) -> Void) {
        self.onPublish.withLock { $0 = handler }
    }

    /// A PUBLISH on this node: a primary sends it on to its streaming followers (Redis
    /// propagates PUBLISH to replicas); a follower keeps it to itself.
    public func propagatePublish(channel: [UInt8], message: [UInt8]) {
        guard !self.isFollower else { return }
        self.primary.propagatePublish(ReplicationPublish(channel: channel, message: message))
    }

    // MARK: The role

    /// The role in force.
    public var role: NodeRole { self.published.withLock { $0 } }

    /// Whether this node follows another (fast: writes ask).
    public var isFollower: Bool { self.followerFlag.load(ordering: .relaxed) }

    /// Why writes are refused now, in Redis's words, or nil.
    public var writeRefusal: String? {
        if self.writable.load(ordering: .relaxed) { return nil }
        return self.published.withLock { $0.writeRefusal }
    }

    /// The link to the primary, on a follower.
    public var link: FollowerLinkStatus? { self.follower.withLock { $0 }?.status }

    private func publish(_ role: NodeRole) {
        self.published.withLock { $0 = role }
        self.writable.store(role.writeRefusal == nil, ordering: .relaxed)
        self.followerFlag.store(role.isFollower, ordering: .relaxed)
        self.primary.serving = !role.isFollower
    }

    /// Apply `event` to the role machine and perform its actions. A blocking action (an epoch
    /// record) runs on the caller's thread: call from the thread pool.
    @discardableResult
    private func transition(_ event: NodeRole.StateMachine.Event) -> Result<[NodeRole.StateMachine.Action], NodeRole.StateMachine.Refusal>
    {
        let (result, role, previous) = self.machine.withLock { machine in
            let previous = machine.role
            return (machine.handle(event), machine.role, previous)
        }
        guard case .success(let actions) = result else { return result }
        let takesWrites = role.writeRefusal == nil
        if !takesWrites { self.publish(role) }
        do {
            for action in actions { try self.perform(action) }
        } catch {
            // The epoch could not be written: this node must not take writes as the new primary.
            let reason =
                "Promotion to primary failed: \(error). This node refuses writes; fix the cause and run 'walrusctl promote --force'."
            self.machine.withLock { $0 = NodeRole.StateMachine(.fenced(reason: reason)) }
            self.publish(.fenced(reason: reason))
            self.logger.critical("Promotion failed", metadata: ["repl.error": "\(error)", "repl.previous": "\(previous)"])
            return .failure(.notPrimary)
        }
        if takesWrites { self.publish(role) }
        return result
    }

    private func perform(_ action: NodeRole.StateMachine.Action) throws {
        switch action {
        case .stopFollowing:
            self.follower.withLock { current -> ReplicationFollower? in
                defer { current = nil }
                return current
            }?.stop()
        case .startFollowing(let host, let port):
            self.startFollower(host: host, port: port)
        case .dropFollowers(let reason):
            self.primary.dropFollowers(reason: reason)
        case .beginEpoch(let epoch):
            if self.store.wal.meta.clusterID.isEmpty {
                // A follower that never synced starts a cluster of its own.
                var generator = SystemRandomNumberGenerator()
                let id = (0..<16).map { _ in hex2(UInt8.random(in: 0...255, using: &generator)) }.joined()
                try self.store.wal.updateMeta { $0.clusterID = id }
            }
            let index = try self.store.beginEpoch(epoch)
            self.logger.notice("Promoted: this node is the primary", metadata: ["repl.epoch": "\(epoch)", "repl.index": "\(index)"])
        }
    }

    private func startFollower(host: String, port: Int) {
        var configuration = self.configuration
        if self.clientPort != 0 { configuration.clientPort = self.clientPort }
        let follower = ReplicationFollower(
            store: self.store, configuration: configuration, host: host, port: port, logger: self.logger,
            eventLoop: self.followerLoop ?? self.group.next(), threadPool: self.threadPool, onLinkChange: self.onLinkChange)
        follower.onPromoted = { [weak self] epoch in self?.promotedBySwitchover(epoch: epoch) }
        follower.onPublish = { [weak self] channel, message in self?.onPublish.withLock { $0 }?(channel, message) }
        follower.ports = { [weak self] in (self?.clientPort ?? 0, self?.primary.port ?? 0) }
        self.follower.withLock { current -> ReplicationFollower? in
            defer { current = follower }
            return current
        }?.stop()
        follower.start()
        self.logger.notice("Following a primary", metadata: ["repl.primary": "\(DaemonAddress.format(host, port))"])
    }

    /// Start following the configured primary (once the listeners are bound).
    public func startIfFollowing() {
        if case .following(let host, let port) = self.role { self.startFollower(host: host, port: port) }
    }

    /// Stop following (shutdown).
    public func stopFollowing() async {
        let current = self.follower.withLock { current -> ReplicationFollower? in
            defer { current = nil }
            return current
        }
        try? await current?.stop().get()
    }

    // MARK: Operator verbs

    /// A refusal as the operator reads it.
    private func describe(_ refusal: NodeRole.StateMachine.Refusal, link: FollowerLinkStatus?) -> ReplicationError {
        switch refusal {
        case .alreadyPrimary:
            ReplicationError("This node is already the primary (epoch \(self.store.wal.meta.currentEpoch)).")
        case .behind(let records):
            ReplicationError(
                "This follower is \(records) record(s) behind the primary it last saw "
                    + "(\(link.map { DaemonAddress.format($0.primaryHost, $0.primaryPort) } ?? "?") had sealed "
                    + "\(link?.primarySealedIndex ?? 0), this node applied \(self.store.appliedIndex)). "
                    + "Promote the most advanced follower, wait for this one to catch up, or use --force to accept losing them.")
        case .switchoverInProgress(let target):
            ReplicationError("A switchover to \(target) is in progress; wait for it to finish.")
        case .notPrimary:
            ReplicationError("This node is a follower; run this on the primary.")
        }
    }

    /// Promote this node: stop following, begin a new epoch (its record sealed and in `meta`
    /// before anything else), take writes. Refuses, unless `force`, when the node knows it is
    /// behind the primary it last saw. Blocks for the epoch record: call off the event loops.
    public func promote(force: Bool) throws -> PromoteReply {
        let link = self.link
        let applied = self.store.appliedIndex
        let behind = link.map { $0.primarySealedIndex > applied ? $0.primarySealedIndex - applied : 0 } ?? 0
        let seen = max(self.store.wal.meta.currentEpoch, link?.primaryEpoch ?? 0)
        if case .failure(let refusal) = self.transition(.promote(epoch: seen + 1, force: force, behind: behind)) {
            throw self.describe(refusal, link: link)
        }
        return self.promoteReply
    }

    /// Follow `host:port` from now on (a former primary rejoining, or a follower re-pointed).
    /// Writes are refused at once; this node's followers are let go.
    public func follow(host: String, port: Int) throws -> FollowReply {
        if case .failure(let refusal) = self.transition(.follow(host: host, port: port)) { throw self.describe(refusal, link: nil) }
        return FollowReply(role: "follower", primary: DaemonAddress.format(host, port))
    }

    // MARK: Role changes under way

    private let roleChanges = LockedValue<(count: Int, waiters: [@Sendable () -> Void])>((0, []))

    /// Run `body` once the role changes under way (a REPLICAOF's join, a handover) have
    /// settled — at once if none is (CONFIG REWRITE after REPLICAOF in Sentinel's MULTI).
    public func afterRoleChanges(_ body: @escaping @Sendable () -> Void) {
        let now = self.roleChanges.withLock { state -> Bool in
            if state.count == 0 { return true }
            state.waiters.append(body)
            return false
        }
        if now { body() }
    }

    private func roleChangeBegins() { self.roleChanges.withLock { $0.count += 1 } }

    private func roleChangeEnds() {
        let waiters = self.roleChanges.withLock { state -> [@Sendable () -> Void] in
            state.count -= 1
            guard state.count == 0 else { return [] }
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter() }
    }

    /// REPLICAOF `host clientPort`: refuse writes at once, find the replication port with
    /// `probe` (off the event loops: it dials `host`), then follow. On failure writes resume,
    /// unless another role change came meanwhile. `completion` gets the follow or the error.
    public func join(
        host: String, clientPort: Int, probe: @escaping @Sendable () throws -> Int,
        completion: @escaping @Sendable (Result<FollowReply, any Error>) -> Void
    ) {
        let target = DaemonAddress.format(host, clientPort)
        if case .failure(let refusal) = self.transition(.beginJoining(target: target)) {
            return completion(.failure(self.describe(refusal, link: nil)))
        }
        self.roleChangeBegins()
        self.threadPool.run(on: self.group.next()) { [self] () -> Result<FollowReply, any Error> in
            let port: Int
            do { port = try probe() } catch {
                self.transition(.joiningFailed(target: target))
                return .failure(error)
            }
            if case .following(let currentHost, let currentPort) = self.role, currentHost == host, currentPort == port {
                return .success(FollowReply(role: "follower", primary: DaemonAddress.format(host, port)))
            }
            if case .failure(let refusal) = self.transition(.joined(target: target, host: host, port: port)) {
                return .failure(self.describe(refusal, link: nil))
            }
            self.logger.notice(
                "Following by REPLICAOF", metadata: ["repl.primary": "\(target)", "repl.replicationPort": "\(port)"])
            return .success(FollowReply(role: "follower", primary: DaemonAddress.format(host, port)))
        }.whenComplete { [self] result in
            switch result {
            case .success(let inner): completion(inner)
            case .failure(let error): completion(.failure(error))
            }
            self.roleChangeEnds()
        }
    }

    /// A switchover promoted this node (its follower link wrote the epoch): take writes.
    private func promotedBySwitchover(epoch: UInt64) {
        self.transition(.promotedBySwitchover)
        self.logger.notice("Promoted: this node is the primary", metadata: ["repl.epoch": "\(epoch)", "repl.by": "switchover"])
        let waiters = self.takeHandoverWaiters()
        guard !waiters.isEmpty else { return }
        let reply = self.promoteReply
        for waiter in waiters { waiter(.success(reply)) }
        self.roleChangeEnds()
    }

    /// What a promotion answers: the epoch in force and where it began.
    private var promoteReply: PromoteReply {
        let meta = self.store.wal.meta
        return PromoteReply(
            epoch: meta.currentEpoch, index: meta.epochs.last?.firstIndex ?? 0, role: "primary",
            note: self.configuration.follow != nil
                ? "remove 'follow' from this node's config, or it follows its old primary again after a restart" : nil)
    }

    // MARK: Handover (REPLICAOF NO ONE with the primary reachable)

    /// How long a primary takes at most to hand over when a follower asks (its switchover's
    /// timeout), and how long the follower waits before it promotes itself regardless.
    public static let handoverMilliseconds = 5000

    /// Who waits for the handover under way, and which one it is (a late timer of an earlier
    /// handover must not cut a later one short).
    private let handover = LockedValue<(waiters: [@Sendable (Result<PromoteReply, any Error>) -> Void], generation: Int)>(([], 0))

    private func takeHandoverWaiters(generation: Int? = nil) -> [@Sendable (Result<PromoteReply, any Error>) -> Void] {
        self.handover.withLock { state in
            guard generation == nil || generation == state.generation else { return [] }
            defer { state.waiters = [] }
            return state.waiters
        }
    }

    /// Become the primary, losing nothing the old primary acknowledged when it can be reached:
    /// ask it to hand over (HANDOVER → its switchover: writes paused there, this node caught up
    /// durably, PROMOTE, the old primary follows this one). If the link is down, or the primary
    /// does not hand over within `handoverMilliseconds` + 1 s, promote anyway (as Redis's
    /// REPLICAOF NO ONE does): the old primary is gone or must be fenced by its next contact.
    /// `completion` runs once this node takes writes, or with why it could not.
    public func promoteByHandover(completion: @escaping @Sendable (Result<PromoteReply, any Error>) -> Void) {
        guard self.isFollower else {
            return completion(.failure(ReplicationError("This node is already the primary (epoch \(self.store.wal.meta.currentEpoch)).")))
        }
        let generation = self.handover.withLock { state -> Int? in
            state.waiters.append(completion)
            guard state.waiters.count == 1 else { return nil }
            state.generation += 1
            return state.generation
        }
        // A handover is under way already: this caller waits for the same outcome.
        guard let generation else { return }
        self.roleChangeBegins()
        guard let follower = self.follower.withLock({ $0 }) else {
            return self.promoteWaitersAnyway(generation, because: "this node has no link to a primary")
        }
        let started = monotonicNanoseconds()
        follower.requestHandover().whenComplete { [self] result in
            guard (try? result.get()) == true else {
                return self.promoteWaitersAnyway(generation, because: "the link to the primary \(follower.address) is not up")
            }
            self.logger.notice(
                "Asked the primary to hand over (REPLICAOF NO ONE)",
                metadata: ["repl.primary": "\(follower.address)", "repl.timeoutMs": "\(Self.handoverMilliseconds + 1000)"])
            follower.eventLoop.scheduleTask(in: .milliseconds(Int64(Self.handoverMilliseconds + 1000))) { [self] in
                let waited = Double(monotonicNanoseconds() - started) / 1e6
                self.promoteWaitersAnyway(
                    generation, because: "the primary \(follower.address) did not hand over within \(Int(waited)) ms")
            }
        }
    }

    private func promoteWaitersAnyway(_ generation: Int, because why: String) {
        let waiters = self.takeHandoverWaiters(generation: generation)
        guard !waiters.isEmpty else { return }
        let loop = self.group.next()
        self.threadPool.run(on: loop) { [self] () -> Result<PromoteReply, any Error> in
            // Promoted meanwhile (the handover finished as the timer fired).
            guard self.isFollower else { return .success(self.promoteReply) }
            let lag = self.link.map { $0.primarySealedIndex > $0.applied ? $0.primarySealedIndex - $0.applied : 0 } ?? 0
            self.logger.warning(
                "Promoting without a handover: \(why); writes the old primary acknowledged after this node's last record are not here",
                metadata: ["repl.recordsBehindOldPrimary": "\(lag)"])
            return Result { try self.promote(force: true) }
        }.whenComplete { result in
            let outcome: Result<PromoteReply, any Error>
            switch result {
            case .success(let inner): outcome = inner
            case .failure(let error): outcome = .failure(error)
            }
            for waiter in waiters { waiter(outcome) }
            self.roleChangeEnds()
        }
    }

    /// A follower asked for the primary's role (HANDOVER): run the switchover to it.
    private func handOver(to session: FollowerSession) async {
        self.logger.notice(
            "A follower asks to take over (REPLICAOF NO ONE there): switching over to it",
            metadata: ["repl.follower": "\(session.nodeID)", "repl.address": "\(session.address)"])
        do {
            let reply = try await self.switchover(to: session.nodeID, timeoutMilliseconds: Self.handoverMilliseconds)
            self.logger.notice(
                "Handed over", metadata: ["repl.newPrimary": "\(reply.clientAddress)", "repl.pausedMs": "\(reply.pausedMilliseconds)"])
        } catch {
            self.logger.error("Handover failed", metadata: ["repl.follower": "\(session.nodeID)", "repl.error": "\(error)"])
        }
    }

    /// The planned handover to the follower `target` (node id, or host:port): pause writes, wait
    /// until it holds every sealed record durably, have it begin the next epoch, then follow it.
    /// On any failure within `timeoutMilliseconds` before PROMOTE is sent, writes resume here; if
    /// PROMOTE went out unconfirmed this node stays fenced (two primaries must not be possible).
    public func switchover(to target: String, timeoutMilliseconds: Int) async throws -> SwitchoverReply {
        guard !self.isFollower else { throw ReplicationError("This node is a follower; run switchover on the primary.") }
        guard let session = self.primary.session(matching: target), session.state == .streaming || session.state == .catchingUp else {
            throw ReplicationError("No connected follower is '\(target)'; give a node id or host:port from 'walrusctl replicas'.")
        }
        guard session.replicationPort > 0 else {
            throw ReplicationError("The follower '\(target)' did not say its replication port; it cannot become the primary.")
        }
        let clientAddress = "\(session.host):\(session.clientPort)"
        let replicationAddress = "\(session.host):\(session.replicationPort)"
        if case .failure(let refusal) = self.transition(.beginSwitchover(target: clientAddress)) {
            throw self.describe(refusal, link: nil)
        }
        let started = monotonicNanoseconds()
        let deadline = started + UInt64(max(timeoutMilliseconds, 1)) * 1_000_000
        func remainingMilliseconds() -> Int { max(1, Int((Int64(deadline) - Int64(monotonicNanoseconds())) / 1_000_000)) }
        self.logger.notice(
            "Switchover: writes paused", metadata: ["repl.target": "\(session.nodeID)", "repl.address": "\(replicationAddress)"])
        func resume(_ why: String) -> ReplicationError {
            self.transition(.switchoverFailed)
            self.logger.error("Switchover failed; writes resume here", metadata: ["repl.target": "\(session.nodeID)", "repl.error": "\(why)"])
            return ReplicationError("Switchover to \(session.nodeID) failed: \(why) This node is still the primary and takes writes again.")
        }
        // 1. Every record appended so far sealed here, then durable on the target (its ACKs
        //    release the wait, the same mechanism sync-replicas uses).
        do { try await self.store.commit() } catch { throw resume("sealing the log failed (\(error)).") }
        let sealed = self.store.wal.lastIndex
        let (count, _) = await withCheckedContinuation { (continuation: CheckedContinuation<(Int, Bool), Never>) in
            self.primary.waitForReplicas(
                index: sealed, needed: 1, timeoutMilliseconds: remainingMilliseconds(), nodeID: session.nodeID
            ) { continuation.resume(returning: ($0, $1)) }
        }
        if session.isStopped { throw resume("the target disconnected while catching up.") }
        guard count >= 1 else {
            throw resume(
                "the target had \(session.durableIndex) of \(sealed) records durable when the \(timeoutMilliseconds) ms ran out.")
        }
        let caughtUp = monotonicNanoseconds()
        // 2. Promote it, and wait for its PROMOTED (or its disconnect, or the deadline).
        let epoch = self.store.wal.meta.currentEpoch + 1
        let frame = Frames.make(.promote, epoch: epoch - 1, allocator: session.channel.allocator) {
            ReplicationPromotion(epoch: epoch, index: 0).encode(into: &$0)
        }
        session.channel.writeAndFlush(frame, promise: nil)
        let confirmed = await Self.first(session.promoted.futureResult, orAfterMilliseconds: remainingMilliseconds(), on: session.channel.eventLoop)
        guard confirmed != nil else {
            // PROMOTE was sent: the target may have promoted itself. Resuming writes here could
            // make two primaries, so this node stays off (fenced) until the operator decides.
            let why =
                "Switchover to \(session.nodeID): PROMOTE was sent but not confirmed "
                + (session.isStopped ? "(the target disconnected)" : "within \(timeoutMilliseconds) ms")
                + ". The target may now be the primary of epoch \(epoch). This node refuses writes until you decide: "
                + "if '\(replicationAddress)' is primary, run 'walrusctl follow \(replicationAddress)' here; if not, "
                + "run 'walrusctl promote --force' here."
            self.transition(.switchoverUnconfirmed(reason: why))
            self.logger.critical("Fenced: refusing writes", metadata: ["repl.reason": "\(why)"])
            throw ReplicationError(why)
        }
        let promoted = monotonicNanoseconds()
        // 3. Follow it. Writes are refused from here on with READONLY (clients reconnect to it).
        self.transition(.switchoverCompleted(host: session.host, port: session.replicationPort))
        let pausedMilliseconds = Double(promoted - started) / 1e6
        self.logger.notice(
            "Switchover done: this node follows the new primary",
            metadata: ["repl.primary": "\(replicationAddress)", "repl.epoch": "\(epoch)", "repl.pausedMs": "\(pausedMilliseconds)"])
        return SwitchoverReply(
            newPrimary: session.nodeID, clientAddress: clientAddress, replicationAddress: replicationAddress, epoch: epoch,
            sealedIndex: sealed, catchUpMilliseconds: Double(caughtUp - started) / 1e6, pausedMilliseconds: pausedMilliseconds)
    }

    /// `future`'s value, or nil if it fails or `milliseconds` pass first.
    private static func first<T: Sendable>(
        _ future: EventLoopFuture<T>, orAfterMilliseconds milliseconds: Int, on loop: any EventLoop
    ) async -> T? {
        let promise = loop.makePromise(of: T?.self)
        let settled = LockedValue(false)
        let settle: @Sendable (T?) -> Void = { value in
            let first = settled.withLock { done -> Bool in
                defer { done = true }
                return !done
            }
            if first { promise.succeed(value) }
        }
        future.whenComplete { settle(try? $0.get()) }
        loop.scheduleTask(in: .milliseconds(Int64(milliseconds))) { settle(nil) }
        return (try? await promise.futureResult.get()) ?? nil
    }
}

/// Two hex digits.
func hex2(_ byte: UInt8) -> String { (byte < 16 ? "0" : "") + String(byte, radix: 16) }
