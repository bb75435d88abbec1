public import Logging
public import NIOCore
public import NIOPosix
import Synchronization
import WALCore
public import WalrusProtocol
public import WalrusStore
#if canImport(Glibc)
import Glibc
#endif

/// A follower: one connection at a time to the primary (reconnecting with capped backoff, on an
/// event loop of its own in walrusd), every frame checked, the primary's records appended byte
/// for byte to this node's log and applied; ACKs {received, durable, applied} after each local
/// fdatasync while the primary waits for them, within 10 ms otherwise, and as heartbeats.
/// Blocking steps (a snapshot's install, a cut of a diverged log, a switchover's epoch record)
/// run on the thread pool while the connection waits.
public final class ReplicationFollower: @unchecked Sendable {
    let store: KeyValueStore
    let configuration: ReplicationConfiguration
    let logger: Logger
    let host: String
    let port: Int
    let eventLoop: any EventLoop
    let threadPool: any BlockingWork
    private let onLinkChange: @Sendable (FollowerLinkStatus) -> Void
    private let link: LockedValue<FollowerLinkStatus>
    private let stopping = Atomic<Bool>(false)
    /// Set once a switchover promoted this node: no reconnecting.
    private let promotedFlag = Atomic<Bool>(false)
    let lastFrame = Atomic<UInt64>(0)
    private let downSince = Atomic<UInt64>(monotonicNanoseconds())
    /// The connection's handler, for the seal observer's ACKs (event-loop state otherwise).
    let current = LockedValue<FollowerConnectionHandler?>(nil)

    // Event-loop state.
    private var channel: (any Channel)?
    private var backoffMilliseconds: Int64 = 100
    private var failures = 0
    private var reconnect: Scheduled<Void>?
    private let finished: EventLoopPromise<Void>

    /// This node's client and replication ports, read at each HELLO.
    var ports: @Sendable () -> (client: Int, replication: Int) = { (0, 0) }
    /// Called after a switchover promoted this node (its epoch record is sealed).
    var onPromoted: @Sendable (UInt64) -> Void = { _ in }
    /// A PUBLISH the primary propagated, for this node's subscribers.
    var onPublish: @Sendable ([UInt8], [UInt8]) -> Void = { _, _ in }

    public init(
        store: KeyValueStore, configuration: ReplicationConfiguration, host: String, port: Int, logger: Logger,
        eventLoop: any EventLoop, threadPool: any BlockingWork, onLinkChange: @escaping @Sendable (FollowerLinkStatus) -> Void = { _ in }
    ) {
        self.store = store
        self.configuration = configuration
        self.host = host
        self.port = port
        self.logger = logger
        self.eventLoop = eventLoop
        self.threadPool = threadPool
        self.onLinkChange = onLinkChange
        self.finished = eventLoop.makePromise()
        var status = FollowerLinkStatus(primaryHost: host, primaryPort: port)
        status.received = store.wal.sealedIndex
        self.link = LockedValue(status)
        store.wal.addSealObserver { [weak self] _ in
            guard let self, !self.stopping.load(ordering: .relaxed) else { return }
            self.current.withLock { $0 }?.scheduleAck()
        }
    }

    var address: String { DaemonAddress.format(self.host, self.port) }

    /// Ask the primary to hand its role over to this node (a switchover it runs); the future
    /// says whether the request went out on an established link.
    func requestHandover() -> EventLoopFuture<Bool> {
        self.eventLoop.submit { self.current.withLock { $0 }?.requestHandover() ?? false }
    }

    /// Start connecting.
    public func start() {
        self.eventLoop.execute { self.connect() }
    }

    /// Stop following: close the connection; the future completes once it is closed.
    @discardableResult
    public func stop() -> EventLoopFuture<Void> {
        guard !self.stopping.exchange(true, ordering: .relaxed) else { return self.finished.futureResult }
        self.eventLoop.execute {
            self.reconnect?.cancel()
            self.reconnect = nil
            if let channel = self.channel {
                channel.close(promise: nil)
            } else {
                self.finish()
            }
        }
        return self.finished.futureResult
    }

    private func finish() {
        self.update { $0.state = .stopped; $0.linkUp = false }
        self.finished.succeed(())
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
        let now = monotonicNanoseconds()
        status.lastIOSecondsAgo = last == 0 ? -1 : Double(now - last) / 1e9
        let down = self.downSince.load(ordering: .relaxed)
        status.linkDownSecondsAgo = status.linkUp || down == 0 ? -1 : Double(now - down) / 1e9
        return status
    }

    /// Change the link's status; `onLinkChange` hears of it when the link went up or down or
    /// changed its state — except between streaming and catching up, which a busy link does
    /// from batch to batch (the periodic STATUS= refresh shows that one).
    func update(_ body: (inout FollowerLinkStatus) -> Void) {
        func phase(_ state: FollowerLinkStatus.State) -> FollowerLinkStatus.State { state == .catchingUp ? .streaming : state }
        let (changed, snapshot) = self.link.withLock { link -> (Bool, FollowerLinkStatus) in
            let before = (phase(link.state), link.linkUp)
            body(&link)
            return (before != (phase(link.state), link.linkUp), link)
        }
        if changed {
            if snapshot.linkUp { self.downSince.store(0, ordering: .relaxed) } else if self.downSince.load(ordering: .relaxed) == 0 {
                self.downSince.store(monotonicNanoseconds(), ordering: .relaxed)
            }
            self.onLinkChange(snapshot)
        }
    }

    // MARK: Connecting (event loop)

    private func connect() {
        self.eventLoop.assertInEventLoop()
        guard !self.stopping.load(ordering: .relaxed) && !self.promotedFlag.load(ordering: .relaxed) else { return self.finish() }
        self.update { $0.state = .connecting }
        let timeout = TimeAmount.milliseconds(Int64(self.configuration.timeoutMilliseconds))
        let maxPayload = self.configuration.maxPayloadBytes
        ClientBootstrap(group: self.eventLoop)
            .connectTimeout(.seconds(3))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.socketOption(.so_rcvbuf), value: 4 << 20)
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(IdleStateHandler(readTimeout: timeout))
                    let handler = FollowerConnectionHandler(follower: self, maxPayloadBytes: maxPayload)
                    self.current.withLock { $0 = handler }
                    try sync.addHandler(handler)
                    if let security = self.configuration.security {
                        try security.addClientHandlers(to: channel, host: self.host, link: "replication") { [self] subject in
                            self.update { $0.peerSubject = subject }
                        }
                    }
                }
            }
            .connect(host: self.host, port: self.port)
            .whenComplete { [self] result in
                switch result {
                case .success(let channel):
                    self.channel = channel
                    if self.stopping.load(ordering: .relaxed) { channel.close(promise: nil) }
                case .failure(let error):
                    self.ended(.failed(ReplicationError("cannot connect to \(self.address): \(error)")))
                }
            }
    }

    /// How a connection ended.
    enum Ending {
        /// On purpose, to reconnect at once (the log was cut back after DIVERGED).
        case reconnectNow(String)
        /// The primary refused this follower.
        case rejected(ReplicationReject.Reason, String)
        /// A switchover promoted this node.
        case promoted
        case failed(any Error)
    }

    /// The connection ended (event loop): reconnect after a backoff, unless stopping or promoted.
    func ended(_ ending: Ending) {
        self.eventLoop.assertInEventLoop()
        self.channel = nil
        self.current.withLock { $0 = nil }
        var wait = self.backoffMilliseconds
        switch ending {
        case .promoted:
            self.promotedFlag.store(true, ordering: .relaxed)
        case .reconnectNow(let reason):
            self.logger.notice("Reconnecting to the primary", metadata: ["repl.primary": "\(self.address)", "repl.reason": "\(reason)"])
            wait = 0
        case .rejected(let reason, let message):
            self.update { link in
                link.state = .refused
                link.linkUp = false
                link.lastError = message
            }
            self.logger.error(
                "The primary refused this follower",
                metadata: ["repl.primary": "\(self.address)", "repl.reason": "\(reason)", "repl.error": "\(message)"])
            wait = 5000
        case .failed(let error):
            if self.stopping.load(ordering: .relaxed) { break }
            self.failures += 1
            let wasUp = self.link.withLock { $0.linkUp }
            self.update { link in
                link.state = .connecting
                link.linkUp = false
                link.lastError = "\(error)"
            }
            // Say it when the link drops, and then now and again, not at every retry.
            if wasUp || self.failures == 1 || self.failures % 30 == 0 {
                self.logger.warning(
                    wasUp ? "Replication link down; reconnecting" : "Cannot reach the primary; retrying",
                    metadata: ["repl.primary": "\(self.address)", "repl.error": "\(error)", "repl.attempts": "\(self.failures)"])
            }
            self.backoffMilliseconds = min(self.backoffMilliseconds * 2, 5000)
        }
        self.update { $0.linkUp = false }
        if self.stopping.load(ordering: .relaxed) || self.promotedFlag.load(ordering: .relaxed) { return self.finish() }
        self.reconnect = self.eventLoop.scheduleTask(in: .milliseconds(wait)) { [self] in self.connect() }
    }

    /// The handshake got past HELLO (event loop).
    func established(challenge: ReplicationChallenge) throws {
        if self.store.wal.meta.clusterID.isEmpty && !challenge.clusterID.isEmpty {
            try self.store.wal.updateMeta { $0.clusterID = challenge.clusterID }
            self.logger.notice("Joined the cluster", metadata: ["repl.cluster": "\(challenge.clusterID)"])
        }
        self.backoffMilliseconds = 100
        self.failures = 0
        self.update { link in
            link.linkUp = true
            link.lastError = nil
            if challenge.clientPort != 0 { link.primaryClientPort = Int(challenge.clientPort) }
            if link.state == .handshake { link.state = .catchingUp }
        }
        self.logger.notice(
            "Replication link up",
            metadata: [
                "repl.primary": "\(self.address)", "repl.primaryNode": "\(challenge.nodeID)",
                "repl.durable": "\(self.store.wal.sealedIndex)",
            ])
    }

    var isStopping: Bool { self.stopping.load(ordering: .relaxed) }
}

/// The follower's end of one replication connection, on its event loop: answers CHALLENGE with
/// HELLO, then applies STREAM frames, receives snapshots, and handles DIVERGED and PROMOTE. A
/// step that blocks runs on the thread pool; frames that arrive meanwhile wait in order.
///
/// It cuts the frames out of the bytes itself (no ByteToMessageHandler in front): a frame handed
/// between two handlers travels boxed in `NIOAny` — a dynamic cast and a generic-metadata lookup
/// per frame, about a third of a follower's instructions per replicated SET at -c 1.
final class FollowerConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let follower: ReplicationFollower
    private var decoder: ReplicationFrameDecoder
    /// Bytes of a frame that has not fully arrived.
    private var partial: ByteBuffer?
    private var context: ChannelHandlerContext?
    private var phase: Phase = .awaitingChallenge
    /// Frames that arrived while a blocking step ran.
    private var queued = CircularBuffer<ReplicationFrame>()
    private var busy = false
    /// A drain is scheduled for when a script no longer holds the store.
    private var retryScheduled = false
    private var ending: ReplicationFollower.Ending?
    private var snapshot: IncomingSnapshot?
    private var heartbeat: RepeatedTask?
    private var lastProgressLog: UInt64 = 0
    /// The last index appended from the primary (ACK's `received`).
    private let received = Atomic<UInt64>(0)
    private let ackScheduled = Atomic<Bool>(false)
    /// What this follower had received when the primary last asked for an ACK (a HEARTBEAT).
    private var ackWanted: UInt64 = 0
    /// The durable index the last ACK carried.
    private var ackedDurable: UInt64 = 0
    private var lazyAck: Scheduled<Void>?

    private enum Phase {
        case awaitingChallenge
        case helloSent(ReplicationChallenge)
        case established(ReplicationChallenge)
    }

    init(follower: ReplicationFollower, maxPayloadBytes: Int) {
        self.follower = follower
        self.decoder = ReplicationFrameDecoder(maxPayloadBytes: maxPayloadBytes, checksum: Frames.checksum)
        self.received.store(follower.store.wal.sealedIndex, ordering: .relaxed)
    }

    private var store: KeyValueStore { self.follower.store }
    private var logger: Logger { self.follower.logger }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if self.store.wal.fsyncMode == .always && PassSealer.enabled {
            let loop = context.eventLoop
            self.sealer = PassSealer(wal: self.store.wal, handOverBytes: Self.inlineSealLimitBytes) { loop.execute($0) }
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        self.follower.update { $0.state = .handshake }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.heartbeat?.cancel()
        self.lazyAck?.cancel()
        self.lazyAck = nil
        if let snapshot = self.snapshot { close(snapshot.fd) }
        self.snapshot = nil
        let closed =
            !self.heardAnything && self.follower.configuration.security == nil
            ? "the primary closed the connection without sending anything: if its replication port speaks TLS (tls-replication yes), set tls-replication yes here too"
            : "the primary closed the connection"
        self.follower.ended(self.ending ?? .failed(ReplicationError(closed)))
        self.context = nil
        context.fireChannelInactive()
    }

    /// Whether this connection brought any bytes (a primary speaks first).
    private var heardAnything = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.heardAnything = true
        guard self.ending == nil else { return }  // closing: what follows a bad frame is not read
        var bytes = self.unwrapInboundIn(data)
        do {
            var decoded = false
            if var partial = self.partial {
                // A frame begun in an earlier read (a megabyte STREAM batch comes in reads of
                // 64 KiB): copy into it just the bytes it lacks, with room reserved for all of
                // them once its header says how many, and decode the rest of this read where it
                // lies — not append every read to it, regrowing it as it doubles.
                self.partial = nil
                var missing = ReplicationFrame.bytesMissing(in: partial)
                while missing > 0, bytes.readableBytes > 0 {
                    if partial.readableBytes >= ReplicationFrame.headerSize {
                        // Its header is whole: the decoder checks it (magic, version, kind, the
                        // payload limit) before room is reserved for the length it claims. The
                        // frame lacks bytes, so this returns nil or throws.
                        _ = try self.decoder.decode(buffer: &partial)
                        partial.reserveCapacity(minimumWritableBytes: missing)
                    }
                    var piece = bytes.readSlice(length: min(missing, bytes.readableBytes))!
                    partial.writeBuffer(&piece)
                    missing = ReplicationFrame.bytesMissing(in: partial)
                }
                // The decoder checks a header as soon as it is whole, so a bad frame fails here
                // even before the length it claims arrives.
                if let frame = try self.decoder.decode(buffer: &partial) {
                    self.queued.append(frame)
                    decoded = true
                }
                if partial.readableBytes > 0 { self.partial = partial }  // still short: this read is used up
            }
            while let frame = try self.decoder.decode(buffer: &bytes) {
                self.queued.append(frame)
                decoded = true
            }
            if decoded { self.follower.lastFrame.store(monotonicNanoseconds(), ordering: .relaxed) }
        } catch {
            return self.end(.failed(error))
        }
        if bytes.readableBytes > 0 { self.partial = bytes }
        self.drain()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.end(.failed(error))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            // Nothing at all since connecting: a primary speaks first (its CHALLENGE) unless it
            // waits for a TLS handshake this node does not start.
            if !self.heardAnything && self.follower.configuration.security == nil {
                self.end(
                    .failed(
                        ReplicationError(
                            "the primary has been silent since connecting (\(self.follower.configuration.timeoutMilliseconds) ms, repl-timeout): if its replication port speaks TLS (tls-replication yes), set tls-replication yes here too")))
                return
            }
            self.end(
                .failed(
                    ReplicationError(
                        "the primary has been silent for \(self.follower.configuration.timeoutMilliseconds) ms (repl-timeout); reconnecting")))
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Close the connection, remembering why.
    private func end(_ ending: ReplicationFollower.Ending) {
        if self.ending == nil { self.ending = ending }
        self.queued.removeAll()
        self.context?.close(promise: nil)
    }

    /// Handle queued frames until one starts a blocking step. While a script holds the store
    /// (a read-only script on this follower), the frames wait and are tried again shortly.
    private func drain() {
        guard !self.busy, self.ending == nil, !self.queued.isEmpty else { return }
        let gate = self.store.gate
        guard gate.enter() else {
            guard !self.retryScheduled, let context = self.context else { return }
            self.retryScheduled = true
            context.eventLoop.scheduleTask(in: .milliseconds(2)) { [self] in
                self.retryScheduled = false
                self.drain()
            }
            return
        }
        defer { gate.exit() }
        while !self.busy, self.ending == nil, let frame = self.queued.popFirst() {
            do {
                try self.handle(frame)
            } catch let rejected as Rejected {
                self.end(.rejected(rejected.reason, rejected.message))
            } catch {
                self.end(.failed(error))
            }
        }
    }

    /// Run `work` on the thread pool, holding the frames behind it; `then` runs on the event loop.
    private func offLoop<T: Sendable>(_ work: @escaping @Sendable () throws -> T, then: @escaping (T) throws -> Void) {
        guard let context = self.context else { return }
        self.busy = true
        self.follower.threadPool.run(on: context.eventLoop, work).whenComplete { [self] result in
            self.busy = false
            do {
                try then(try result.get())
            } catch let rejected as Rejected {
                self.end(.rejected(rejected.reason, rejected.message))
            } catch {
                self.end(.failed(error))
            }
            self.drain()
        }
    }

    struct Rejected: Error {
        var reason: ReplicationReject.Reason
        var message: String
    }

    /// A pass that appended more than this (catching up) leaves the seal to the flusher, so
    /// that receiving the next frames overlaps the fdatasync.
    static let inlineSealLimitBytes = 256 * 1024

    /// Seals what a pass appended once its reads are done: on this loop (as a Redis replica
    /// fsyncs before it sleeps, and as the primary's loops seal their clients' writes), with no
    /// hand-off to the flusher and back before the ACK. walrusd runs the follower's link on a
    /// loop of its own, so the fdatasync never holds up client reads. Nil in interval mode and
    /// with `WALRUS_INLINE_SEAL=0` (the flusher seals, as before).
    private var sealer: PassSealer?

    /// Ask the primary for its role (REPLICAOF NO ONE): true if the link was up to ask on.
    /// Event loop.
    func requestHandover() -> Bool {
        guard case .established(let challenge) = self.phase, self.context != nil, self.ending == nil else { return false }
        self.send(.handover, epoch: max(challenge.epoch, self.store.wal.meta.currentEpoch)) { _ in }
        return true
    }

    private func send(_ kind: ReplicationFrame.Kind, epoch: UInt64, _ body: (inout ByteBuffer) -> Void) {
        guard let context = self.context else { return }
        context.writeAndFlush(self.wrapOutboundOut(Frames.make(kind, epoch: epoch, allocator: context.channel.allocator, body)), promise: nil)
    }

    // MARK: Frames

    private func handle(_ frame: ReplicationFrame) throws {
        switch (self.phase, frame.kind) {
        case (.awaitingChallenge, .challenge):
            try self.challenged(ReplicationChallenge.decode(frame.payload))
        case (.awaitingChallenge, _):
            throw ReplicationError(
                "the primary's first frame is \(frame.kind), not CHALLENGE; is \(self.follower.address) a walrus replication port?")
        case (.helloSent(let challenge), _), (.established(let challenge), _):
            guard frame.epoch <= challenge.epoch || frame.kind == .reject else {
                throw ReplicationError("a frame from epoch \(frame.epoch) on a connection opened at epoch \(challenge.epoch)")
            }
            try self.handle(frame, challenge: challenge)
        }
    }

    private func challenged(_ challenge: ReplicationChallenge) throws {
        let configuration = self.follower.configuration
        if challenge.authRequired && configuration.secret == nil {
            throw Rejected(
                reason: .badAuth,
                message: "The primary requires authentication; set repl-auth-file on this follower to the primary's key file.")
        }
        // The HELLO names this node's durable index: seal what it holds first (off the loop).
        let store = self.store
        self.offLoop({ try store.commitBlocking() }) { [self] in
            let meta = self.store.wal.meta
            let durable = self.store.wal.sealedIndex
            let partial = self.partialSnapshot()
            let ports = self.follower.ports()
            var hello = ReplicationHello(
                protocolVersion: ReplicationFrame.protocolVersion, clusterID: meta.clusterID, nodeID: meta.nodeID,
                epoch: meta.currentEpoch, durableEpoch: meta.currentEpoch, durableIndex: durable,
                authProof: configuration.secret.map {
                    ReplicationAuth.proof(secret: $0, nonce: challenge.nonce, clusterID: challenge.clusterID)
                } ?? [],
                partialSnapshotIndex: partial?.index ?? 0, partialSnapshotBytes: partial?.bytes ?? 0,
                listeningPort: UInt16(
                    clamping: configuration.announcePort != 0 ? configuration.announcePort : ports.client == 0 ? configuration.clientPort : ports.client),
                epochs: meta.epochs.map { (epoch: $0.epoch, firstIndex: $0.firstIndex) })
            hello.replicationPort = UInt16(clamping: ports.replication)
            hello.announceHost = configuration.announceHost
            self.send(.hello, epoch: meta.currentEpoch) { hello.encode(into: &$0) }
            // Fencing: a primary of an older epoch than this node has seen is stale; never stream
            // from it. (The HELLO went first so that it learns of the newer epoch and stops.)
            if challenge.epoch < meta.currentEpoch {
                throw Rejected(
                    reason: .staleEpoch,
                    message: "The primary at \(self.follower.address) is at epoch \(challenge.epoch) but this node has seen epoch "
                        + "\(meta.currentEpoch): it is a stale primary. Follow the current primary instead.")
            }
            if !meta.clusterID.isEmpty && meta.clusterID != challenge.clusterID && !challenge.clusterID.isEmpty {
                // The primary refuses this too; say it here as well, in this node's terms.
                self.logger.error(
                    "The primary belongs to another cluster",
                    metadata: [
                        "repl.primary": "\(self.follower.address)", "repl.theirs": "\(challenge.clusterID)",
                        "repl.ours": "\(meta.clusterID)",
                    ])
            }
            self.received.store(durable, ordering: .relaxed)
            self.follower.update { link in
                link.primaryNodeID = challenge.nodeID
                link.received = durable
                link.primarySealedIndex = max(link.primarySealedIndex, challenge.sealedIndex)
                link.primaryEpoch = challenge.epoch
            }
            // Far behind: size the table for the primary's keys now instead of growing it step by step.
            if challenge.sealedIndex > durable + 100_000 { self.store.reserve(keys: Int(challenge.keyCount)) }
            self.phase = .helloSent(challenge)
        }
    }

    /// The first frame after HELLO that is not a refusal: the link is up.
    private func establish(_ challenge: ReplicationChallenge) throws {
        guard case .helloSent = self.phase else { return }
        self.phase = .established(challenge)
        try self.follower.established(challenge: challenge)
        guard let context = self.context else { return }
        let period = TimeAmount.milliseconds(Int64(self.follower.configuration.heartbeatMilliseconds))
        self.heartbeat = context.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { [self] _ in self.sendAck() }
    }

    private func handle(_ frame: ReplicationFrame, challenge: ReplicationChallenge) throws {
        switch frame.kind {
        case .reject:
            let reject = try ReplicationReject.decode(frame.payload)
            throw Rejected(reason: reject.reason, message: reject.message)
        case .promote:
            try self.promote(ReplicationPromotion.decode(frame.payload))
        case .publish:
            let publish = try ReplicationPublish.decode(frame.payload)
            self.follower.onPublish(publish.channel, publish.message)
        case .diverged:
            try self.diverged(ReplicationDiverged.decode(frame.payload))
        case .heartbeat:
            let heartbeat = try ReplicationHeartbeat.decode(frame.payload)
            if let sealed = heartbeat.sealedIndex {
                self.follower.update { $0.primarySealedIndex = max($0.primarySealedIndex, sealed) }
            }
            try self.establish(challenge)
            self.follower.update { link in
                if link.state != .snapshot { link.state = .streaming }
            }
            // The primary asks for an ACK: now if everything here is durable, else at each
            // seal until what is here now is.
            let received = self.received.load(ordering: .relaxed)
            self.ackWanted = max(self.ackWanted, received)
            if self.store.wal.sealedIndex >= received { self.sendAck() }
        case .stream:
            let stream = try ReplicationStream.decode(frame.payload)
            try self.establish(challenge)
            // In always mode this loop seals what its pass appended once the pass's reads are
            // done (see `scheduleSeal`), and the seal leads to the ACK.
            let store = self.store
            func apply() throws -> UInt64 {
                try stream.frames.withUnsafeReadableBytes { bytes in
                    try store.applyReplicated(frames: bytes, firstIndex: stream.firstIndex, count: Int(stream.count))
                }
            }
            let last: UInt64
            var appended = false
            if let sealer = self.sealer {
                do {
                    (last, appended) = try InlineSeal.deferringWakes(apply)
                } catch {
                    // Whatever of the batch was appended before the failure is the flusher's to seal.
                    store.wal.handToFlusher()
                    throw error
                }
                if appended { sealer.schedule(bytes: stream.frames.readableBytes) }
            } else {
                last = try apply()
            }
            self.received.store(last, ordering: .relaxed)
            // Behind while more records wait here (a HEARTBEAT read with them does not count:
            // the state would flip, and systemd be told, at every batch).
            let caughtUp = !self.queued.contains { $0.kind == .stream }
            self.follower.update { link in
                link.received = last
                link.primarySealedIndex = max(link.primarySealedIndex, last)
                link.state = caughtUp ? .streaming : .catchingUp
            }
            // (A seal this loop makes leads to the ACK; otherwise say what arrived.)
            if !appended { self.scheduleAck() }
        case .snapshotBegin:
            let begin = try ReplicationSnapshotBegin.decode(frame.payload)
            try self.establish(challenge)
            if let old = self.snapshot { close(old.fd) }
            self.snapshot = try self.openSnapshot(begin)
            self.follower.update { link in
                link.state = .snapshot
                link.snapshotBytes = begin.offset
                link.snapshotTotal = begin.totalBytes
            }
        case .snapshotChunk:
            try self.snapshotChunk(ReplicationSnapshotChunk.decode(frame.payload))
        default:
            throw ReplicationError("a \(frame.kind) frame, which a primary never sends")
        }
    }

    /// Switchover: the primary has paused writes and waited for this node to hold every sealed
    /// record; begin the next epoch here (sealed, in `meta`), tell it, and stop following.
    private func promote(_ request: ReplicationPromotion) throws {
        let store = self.store
        self.offLoop({
            try store.commitBlocking()
            return try store.beginEpoch(request.epoch)
        }) { [self] index in
            self.send(.promoted, epoch: request.epoch) { ReplicationPromotion(epoch: request.epoch, index: index).encode(into: &$0) }
            self.logger.notice(
                "Promoted by a switchover from the primary",
                metadata: ["repl.epoch": "\(request.epoch)", "repl.index": "\(index)", "repl.oldPrimary": "\(self.follower.address)"])
            self.follower.onPromoted(request.epoch)
            // Close once PROMOTED is written.
            self.ending = .promoted
            self.context?.channel.flush()
            self.context?.close(promise: nil)
        }
    }

    /// This node holds records the primary never had (it was a primary, or followed one, that
    /// lost its place): keep them in a file, cut, and say HELLO again.
    private func diverged(_ diverged: ReplicationDiverged) throws {
        let store = self.store
        let address = self.follower.address
        self.offLoop({ try store.truncate(after: diverged.index) }) { [self] moved in
            if let moved {
                self.logger.warning(
                    "This node's log diverged from the primary's; records past the cut were moved aside",
                    metadata: [
                        "repl.cut": "\(diverged.index)", "repl.moved": "\(moved.records)", "repl.diverged": "\(moved.path)",
                        "repl.primary": "\(address)",
                    ])
                self.follower.update { $0.divergedFiles.append(moved.path) }
            }
            self.end(.reconnectNow("the log was cut back to \(diverged.index) to match the primary"))
        }
    }

    // MARK: ACKs

    /// How soon an ACK follows progress that nobody waits for (for the primary's lag figures
    /// and its log retention): ACKs coalesce over this long instead of one per batch.
    static let lazyAckMilliseconds: Int64 = 10

    /// Something moved (a seal, any thread; a batch or a snapshot, on the loop): ACK it at once
    /// if the primary waits for this follower, else within `lazyAckMilliseconds`.
    func scheduleAck() {
        guard let loop = self.context?.eventLoop else { return }
        // A seal this loop made (the inline seal, at the end of its pass): no task needed, which
        // saves the follower a task's hand-off (~1,000 instructions) per replicated batch.
        if loop.inEventLoop { return self.progressed() }
        guard !self.ackScheduled.exchange(true, ordering: .acquiringAndReleasing) else { return }
        loop.execute { [self] in
            self.ackScheduled.store(false, ordering: .releasing)
            self.progressed()
        }
    }

    /// The primary asks (with a HEARTBEAT) whenever a write waits for followers — sync-replicas,
    /// WAIT, a switchover — so, as long as the durable index has not reached what this follower
    /// had received when asked, every seal is ACKed at once; otherwise ACKs coalesce. A Redis
    /// replica, by comparison, ACKs once a second and on REPLCONF GETACK.
    private func progressed() {
        let durable = min(self.store.wal.sealedIndex, self.received.load(ordering: .relaxed))
        if self.ackWanted > self.ackedDurable && durable > self.ackedDurable { return self.sendAck() }
        guard self.lazyAck == nil, let loop = self.context?.eventLoop else { return }
        self.lazyAck = loop.scheduleTask(in: .milliseconds(Self.lazyAckMilliseconds)) { [self] in
            self.lazyAck = nil
            self.sendAck()
        }
    }

    private func sendAck() {
        guard case .established = self.phase else { return }
        self.lazyAck?.cancel()
        self.lazyAck = nil
        let received = self.received.load(ordering: .relaxed)
        let ack = ReplicationAck(
            received: received, durable: min(self.store.wal.sealedIndex, received), applied: min(self.store.appliedIndex, received))
        self.ackedDurable = ack.durable
        self.send(.ack, epoch: self.store.wal.currentEpoch) { ack.encode(into: &$0) }
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
                "Receiving a snapshot from the primary", metadata: ["repl.index": "\(begin.index)", "repl.bytes": "\(begin.totalBytes)"])
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

    private func snapshotChunk(_ chunk: ReplicationSnapshotChunk) throws {
        guard var incoming = self.snapshot else { throw ReplicationError("a SNAPSHOT-CHUNK without a SNAPSHOT") }
        guard chunk.offset == incoming.written, incoming.written + UInt64(chunk.bytes.readableBytes) <= incoming.total else {
            throw ReplicationError("a snapshot chunk at offset \(chunk.offset) does not continue the \(incoming.written) bytes received")
        }
        // Into the page cache; the fdatasync comes once, at install.
        try chunk.bytes.withUnsafeReadableBytes { bytes in
            try FileIO.pwriteAll(incoming.fd, bytes, at: Int64(incoming.written), path: incoming.partialPath)
        }
        incoming.written += UInt64(chunk.bytes.readableBytes)
        self.snapshot = incoming
        let written = incoming.written
        self.follower.update { $0.snapshotBytes = written }
        let now = monotonicNanoseconds()
        if now - self.lastProgressLog > 2_000_000_000 {
            self.lastProgressLog = now
            self.logger.info(
                "Receiving a snapshot",
                metadata: [
                    "repl.percent": "\(written * 100 / max(incoming.total, 1))", "repl.bytes": "\(written)",
                    "repl.total": "\(incoming.total)",
                ])
        }
        guard incoming.written == incoming.total else { return }
        self.snapshot = nil
        let store = self.store
        let complete = incoming
        self.offLoop({ () -> (SnapshotFile.Header, UInt64) in
            let started = monotonicNanoseconds()
            let directory = store.configuration.directory
            let path = FileIO.join(directory, SnapshotName.format(complete.index))
            try FileIO.fdatasync(complete.fd, path: complete.partialPath)
            close(complete.fd)
            guard rename(complete.partialPath, path) == 0 else {
                throw ReplicationError("cannot rename \(complete.partialPath) to \(path): \(String(cString: strerror(errno)))")
            }
            try FileIO.fsyncDirectory(directory)
            do {
                return (try store.installSnapshot(path: path), monotonicNanoseconds() - started)
            } catch {
                // A snapshot that fails its checks is moved aside, not used; the next try starts over.
                _ = rename(path, path + ".rejected")
                throw ReplicationError("the snapshot from the primary fails its checks (\(error)); kept as \(path).rejected")
            }
        }) { [self] (header, nanoseconds) in
            self.logger.notice(
                "Snapshot installed",
                metadata: [
                    "repl.index": "\(header.index)", "repl.keys": "\(header.entryCount)", "repl.ms": "\(nanoseconds / 1_000_000)",
                ])
            self.received.store(complete.index, ordering: .relaxed)
            self.follower.update { link in
                link.received = complete.index
                link.snapshotsInstalled += 1
                link.state = .catchingUp
            }
            self.scheduleAck()
        }
    }
}
