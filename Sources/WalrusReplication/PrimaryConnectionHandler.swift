import Logging
import NIOCore
import WALCore
import WalrusProtocol
import WalrusStore

/// The primary's end of one replication connection, on its event loop: sends CHALLENGE, checks
/// the HELLO (version, auth, cluster, epoch, position), answers REJECT or starts a session, and
/// takes ACKs and heartbeats. A frame that fails a check closes the connection, never the process.
final class PrimaryConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ReplicationFrame
    typealias OutboundOut = ByteBuffer

    private let primary: ReplicationPrimary
    private var nonce: [UInt8] = []
    private var session: FollowerSession?
    private var peer = "?"

    init(primary: ReplicationPrimary) { self.primary = primary }

    /// The follower's certificate subject, once a TLS handshake is done (tls-replication).
    var peerSubject: String?

    private var wal: WriteAheadLog { self.primary.store.wal }

    /// Whether this connection counts against `ReplicationPrimary.maxPendingHandshakes`.
    private var pending = false
    private var handshakeDeadline: Scheduled<Void>?

    /// When the follower last sent anything, and the task that drops it once it has been silent
    /// for repl-timeout (followers send a heartbeat or an ACK well within it). This handler keeps
    /// the time itself rather than NIO's IdleStateHandler in front of it: that handler is an
    /// outbound hop on every STREAM frame's write and flush (a few hundred instructions per
    /// replicated write), to time a read that comes a few times a second.
    private var lastRead = NIODeadline.uptimeNanoseconds(0)
    private var silenceCheck: Scheduled<Void>?

    func channelActive(context: ChannelHandlerContext) {
        self.peer = context.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
        // A peer that connects and never says HELLO (a half-open flood, a slowloris, a port scan)
        // holds a slot only until the deadline, and only up to the limit of such slots.
        guard self.primary.beginHandshake() else {
            self.primary.noteRefusedHandshake(peer: self.peer)
            context.close(promise: nil)
            return
        }
        self.pending = true
        let timeout = self.primary.configuration.timeoutMilliseconds
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        self.handshakeDeadline = context.eventLoop.scheduleTask(in: .milliseconds(Int64(timeout))) {
            let (handler, context) = bound.value
            if handler.session == nil {
                handler.drop(context: context, reason: "no HELLO within \(timeout) ms (repl-timeout) of connecting")
            }
        }
        self.nonce = ReplicationAuth.nonce()
        let meta = self.wal.meta
        var challenge = ReplicationChallenge(
            clusterID: meta.clusterID, nodeID: meta.nodeID, epoch: meta.currentEpoch, nonce: self.nonce,
            authRequired: self.primary.configuration.secret != nil, sealedIndex: self.primary.sealedIndex,
            keyCount: UInt64(self.primary.store.count))
        challenge.clientPort = UInt16(clamping: self.primary.clientPort.load(ordering: .relaxed))
        let frame = Frames.make(.challenge, epoch: meta.currentEpoch, allocator: context.channel.allocator) {
            challenge.encode(into: &$0)
        }
        context.writeAndFlush(self.wrapOutboundOut(frame), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = self.unwrapInboundIn(data)
        self.lastRead = context.eventLoop.now
        do {
            switch frame.kind {
            case .hello:
                guard self.session == nil else { throw ReplicationFrameError("a second HELLO on one connection") }
                try self.handshake(context: context, hello: ReplicationHello.decode(frame.payload))
            case .ack:
                guard let session = self.session else { throw ReplicationFrameError("an ACK before HELLO") }
                session.acknowledge(try ReplicationAck.decode(frame.payload))
            case .heartbeat:
                self.session?.heard()
            case .promoted:
                guard let session = self.session else { throw ReplicationFrameError("a PROMOTED before HELLO") }
                session.promoted.succeed(try ReplicationPromotion.decode(frame.payload))
            case .handover:
                guard let session = self.session else { throw ReplicationFrameError("a HANDOVER before HELLO") }
                self.primary.onHandover.withLock { $0 }?(session)
            default:
                throw ReplicationFrameError("a \(frame.kind) frame, which a follower never sends")
            }
        } catch {
            self.drop(context: context, reason: "\(error)")
        }
    }

    private func handshake(context: ChannelHandlerContext, hello: ReplicationHello) throws {
        let meta = self.wal.meta
        func reject(_ reason: ReplicationReject.Reason, _ message: String) {
            self.primary.logger.error(
                "Refused a follower",
                metadata: [
                    "repl.address": "\(self.peer)", "repl.follower": "\(hello.nodeID)", "repl.reason": "\(reason)",
                    "repl.error": "\(message)",
                ])
            self.sendAndClose(context: context, .reject, epoch: meta.currentEpoch) {
                ReplicationReject(reason: reason, message: message).encode(into: &$0)
            }
        }
        guard hello.protocolVersion == ReplicationFrame.protocolVersion else {
            return reject(
                .unsupportedVersion,
                "The follower speaks replication protocol \(hello.protocolVersion); this primary speaks "
                    + "\(ReplicationFrame.protocolVersion). Run the same walrus version on both nodes.")
        }
        guard self.primary.serving else {
            return reject(.notPrimary, "This node (\(meta.nodeID)) is a follower, not a primary; follow its primary instead.")
        }
        if let secret = self.primary.configuration.secret {
            let expected = ReplicationAuth.proof(secret: secret, nonce: self.nonce, clusterID: meta.clusterID)
            guard ReplicationAuth.matches(expected, hello.authProof) else {
                return reject(
                    .badAuth,
                    hello.authProof.isEmpty
                        ? "This primary requires authentication and the follower sent no proof: set repl-auth-file on the follower to the primary's key file."
                        : "The follower's authentication proof is wrong: its repl-auth-file differs from the primary's. Copy the same key file to both nodes.")
            }
        }
        if !hello.clusterID.isEmpty && hello.clusterID != meta.clusterID {
            return reject(
                .otherCluster,
                "The follower belongs to cluster \(hello.clusterID), this primary to \(meta.clusterID). Point it at its own "
                    + "primary, or empty its data directory to make it a new follower of this one.")
        }
        if hello.clusterID.isEmpty && hello.durableIndex > 0 {
            return reject(
                .otherCluster,
                "The follower's data directory holds \(hello.durableIndex) records but no cluster id: it was not made by this "
                    + "cluster. Empty its data directory to make it a new follower.")
        }
        if hello.epoch > meta.currentEpoch {
            // Fencing: a newer epoch exists, so this node is no longer the primary. Stop writes now.
            self.primary.metHigherEpoch(hello.epoch, from: "follower \(hello.nodeID) at \(self.peer)")
            return reject(
                .staleEpoch,
                "The follower has seen epoch \(hello.epoch); this primary is at epoch \(meta.currentEpoch) and is stale "
                    + "(it now refuses writes). Point the follower at the current primary.")
        }
        let sealed = self.primary.sealedIndex
        let history = meta.epochs
        if let cut = EpochHistory.divergence(
            follower: hello.epochs.map { MetaFile.EpochStart(epoch: $0.epoch, firstIndex: $0.firstIndex) },
            followerLast: hello.durableIndex, primary: history, primaryLast: sealed)
        {
            self.primary.logger.warning(
                "Follower's log diverged from this primary's; it moves its records past the cut aside",
                metadata: [
                    "repl.follower": "\(hello.nodeID)", "repl.address": "\(self.peer)", "repl.cut": "\(cut)",
                    "repl.followerLast": "\(hello.durableIndex)",
                ])
            return self.sendAndClose(context: context, .diverged, epoch: meta.currentEpoch) {
                ReplicationDiverged(index: cut).encode(into: &$0)
            }
        }
        let plan: FollowerSession.Plan
        if hello.durableIndex + 1 >= self.wal.firstIndex {
            plan = .stream(from: hello.durableIndex + 1)
        } else {
            self.primary.logger.notice(
                "Follower is behind the retained log; it gets a snapshot",
                metadata: [
                    "repl.follower": "\(hello.nodeID)", "repl.durable": "\(hello.durableIndex)",
                    "repl.firstIndex": "\(self.wal.firstIndex)",
                ])
            plan = .snapshot(partialIndex: hello.partialSnapshotIndex, partialBytes: hello.partialSnapshotBytes)
        }
        let session = FollowerSession(
            primary: self.primary, channel: context.channel, context: context, hello: hello, peerSubject: self.peerSubject)
        self.session = session
        self.endHandshake()
        // From here a silent follower is dropped after repl-timeout (before, the handshake deadline).
        self.watchSilence(context: context)
        session.start(plan)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        self.session?.writabilityChanged()
        context.fireChannelWritabilityChanged()
    }

    /// Drop the connection once nothing has come from the follower for repl-timeout: check when
    /// that would be, and look again then if something came in between.
    private func watchSilence(context: ChannelHandlerContext) {
        let timeout = TimeAmount.milliseconds(Int64(self.primary.configuration.timeoutMilliseconds))
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        self.silenceCheck = context.eventLoop.scheduleTask(deadline: self.lastRead + timeout) {
            let (handler, context) = bound.value
            handler.silenceCheck = nil
            guard context.channel.isActive else { return }
            if context.eventLoop.now >= handler.lastRead + timeout {
                handler.drop(
                    context: context,
                    reason: "silent for \(handler.primary.configuration.timeoutMilliseconds) ms (repl-timeout); dropping the connection")
            } else {
                handler.watchSilence(context: context)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.drop(context: context, reason: "\(error)")
    }

    private func endHandshake() {
        self.handshakeDeadline?.cancel()
        self.handshakeDeadline = nil
        if self.pending {
            self.pending = false
            self.primary.endHandshake()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.endHandshake()
        self.silenceCheck?.cancel()
        self.silenceCheck = nil
        if let session = self.session {
            session.closed()
            self.primary.unregister(session)
        }
        context.fireChannelInactive()
    }

    /// The handshake's last word (REJECT, DIVERGED): send it, then close once it is written.
    private func sendAndClose(
        context: ChannelHandlerContext, _ kind: ReplicationFrame.Kind, epoch: UInt64, _ body: (inout ByteBuffer) -> Void
    ) {
        let frame = Frames.make(kind, epoch: epoch, allocator: context.channel.allocator, body)
        let channel = context.channel
        context.writeAndFlush(self.wrapOutboundOut(frame)).whenComplete { _ in channel.close(promise: nil) }
    }

    private func drop(context: ChannelHandlerContext, reason: String) {
        self.primary.logger.warning(
            "Dropped a replication connection",
            metadata: ["repl.address": "\(self.peer)", "repl.follower": "\(self.session?.nodeID ?? "-")", "repl.reason": "\(reason)"])
        context.close(promise: nil)
    }
}
