import Logging
import NIOCore
import NIOPosix
import Synchronization
import WALCore
import WalrusProtocol
import WalrusStore
#if canImport(Glibc)
import Glibc
#endif

/// One connected follower on the primary: its acknowledged positions, and the sender that ships
/// it a snapshot (if it needs one) and then the sealed log, read from the segments on disk.
///
/// The sender lives on the connection's event loop and is paced by the channel's writability:
/// it writes STREAM frames while the channel takes them, stops when the write buffer passes its
/// high-water mark (`channelWritabilityChanged` resumes it), and when it has sent every sealed
/// record it waits for the next seal (`sealed()`, from the log's flusher, wakes it). Snapshot
/// chunks are read on the thread pool (a snapshot is cold on disk; the event loop must not wait
/// on it). No thread per follower.
final class FollowerSession: @unchecked Sendable {
    let id: UInt64
    let channel: any Channel
    let address: String
    let host: String
    let remotePort: Int
    let nodeID: String
    /// The follower's client port (from its HELLO), for INFO's slaveN:port.
    let clientPort: Int
    /// What status and INFO report as its address (`replica-announce-ip`, else `host`).
    let reportedHost: String
    /// The follower's own replication port (a switchover hands over to host:replicationPort).
    let replicationPort: Int
    /// Fulfilled when the follower reports it promoted itself (switchover); failed when the
    /// connection closes first.
    let promoted: EventLoopPromise<ReplicationPromotion>
    private let primary: ReplicationPrimary
    private let positions = LockedValue(Positions())
    private let stopped = Atomic<Bool>(false)
    /// The sender has sent every sealed record and waits for `sealed()`.
    private let waitingForSeal = Atomic<Bool>(false)

    // Event-loop state.
    private var phase: Phase = .starting
    private var cursor: WALCursor?
    private let records: RecordBuffer
    /// The last STREAM frame sent, kept to build the next one in: its storage is reused when
    /// the socket has taken it (a frame per replicated SET at -c 1 was an allocation each).
    private var spareFrame = ByteBuffer()
    private var lastSent: UInt64 = 0
    private var heartbeat: RepeatedTask?
    /// The last sent index a HEARTBEAT asked the follower to ACK promptly once durable.
    private var askedUpTo: UInt64 = 0

    private enum Phase {
        case starting
        case snapshot(SnapshotTransfer)
        case streaming
        case stopped
    }

    /// A snapshot file being sent.
    private final class SnapshotTransfer {
        let plan: SnapshotPlan
        let fd: Int32
        var offset: UInt64
        let started = monotonicNanoseconds()
        var lastReport = monotonicNanoseconds()
        /// A chunk is being read on the thread pool or waits for its pacing time.
        var busy = false

        init(plan: SnapshotPlan, fd: Int32) {
            self.plan = plan
            self.fd = fd
            self.offset = plan.offset
        }
        deinit { close(self.fd) }
    }

    struct Positions {
        var state: ReplicaStatus.State = .handshake
        var sent: UInt64 = 0
        var received: UInt64 = 0
        var durable: UInt64 = 0
        var applied: UInt64 = 0
        var lastHeard = monotonicNanoseconds()
        var snapshotSent: UInt64 = 0
        var snapshotTotal: UInt64 = 0
        var snapshots = 0
    }

    /// Where to start: a snapshot (then the log after it) or the log from an index.
    enum Plan: Equatable {
        case stream(from: UInt64)
        /// A snapshot; the follower holds `partialBytes` of the one at `partialIndex` already.
        case snapshot(partialIndex: UInt64, partialBytes: UInt64)
    }

    struct SnapshotPlan: Sendable {
        var path: String
        var index: UInt64
        var totalBytes: UInt64
        var offset: UInt64
    }

    /// The follower's certificate subject (TLS replication).
    let peerSubject: String?

    /// The link handler's context, for the sender's STREAM frames (on the loop only). A write
    /// from it starts at the handler's place in the pipeline — TLS, when on, sits in front of it
    /// — instead of entering at the tail through the `Channel` existential: ~840 fewer
    /// instructions per frame, a frame per replicated SET at -c 1 (callgrind).
    private let context: ChannelHandlerContext

    init(
        primary: ReplicationPrimary, channel: any Channel, context: ChannelHandlerContext, hello: ReplicationHello,
        peerSubject: String? = nil
    ) {
        self.peerSubject = peerSubject
        self.primary = primary
        self.channel = channel
        self.context = context
        self.id = primary.makeSessionID()
        self.host = channel.remoteAddress?.ipAddress ?? "?"
        self.remotePort = channel.remoteAddress?.port ?? 0
        self.address = "\(self.host):\(self.remotePort)"
        self.nodeID = hello.nodeID
        self.clientPort = Int(hello.listeningPort)
        self.reportedHost = hello.announceHost.isEmpty ? self.host : hello.announceHost
        self.replicationPort = Int(hello.replicationPort)
        self.promoted = channel.eventLoop.makePromise()
        self.records = RecordBuffer(capacity: primary.configuration.streamBatchBytes + 64 * 1024)
        self.positions.withLock { positions in
            positions.received = hello.durableIndex
            positions.durable = hello.durableIndex
            positions.applied = hello.durableIndex
            positions.state = .catchingUp
        }
    }

    var state: ReplicaStatus.State { self.positions.withLock { $0.state } }
    var durableIndex: UInt64 { self.positions.withLock { $0.durable } }
    var isStopped: Bool { self.stopped.load(ordering: .relaxed) }
    private var epoch: UInt64 { self.primary.store.wal.currentEpoch }
    private var logger: Logger { self.primary.logger }

    // MARK: Starting and stopping

    /// Start shipping (on the channel's event loop, after the HELLO was accepted).
    func start(_ plan: Plan) {
        self.channel.eventLoop.assertInEventLoop()
        self.primary.register(self)
        let period = TimeAmount.milliseconds(Int64(self.primary.configuration.heartbeatMilliseconds))
        self.heartbeat = self.channel.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { [self] _ in
            self.sendHeartbeatIfIdle()
        }
        switch plan {
        case .stream(let from):
            self.logger.info(
                "Follower connected; streaming from its durable index",
                metadata: ["repl.follower": "\(self.nodeID)", "repl.address": "\(self.address)", "repl.from": "\(from)"])
            self.beginStreaming(from: from)
        case .snapshot(let partialIndex, let partialBytes):
            // Choosing may write a whole checkpoint: off the event loop.
            let primary = self.primary
            self.primary.threadPool.run(on: self.channel.eventLoop) {
                try primary.chooseSnapshot(partialIndex: partialIndex, partialBytes: partialBytes)
            }.whenComplete { [self] result in
                switch result {
                case .success(let plan): self.beginSnapshot(plan)
                case .failure(let error): self.fail(error)
                }
            }
        }
    }

    /// Stop the sender and close the connection.
    func stop(reason: String) {
        guard !self.stopped.exchange(true, ordering: .relaxed) else { return }
        self.channel.eventLoop.execute { [self] in
            self.phase = .stopped
            self.heartbeat?.cancel()
            self.heartbeat = nil
            self.cursor = nil
        }
        self.channel.close(promise: nil)
        self.logger.debug("Stopping replication to a follower", metadata: ["repl.follower": "\(self.nodeID)", "repl.reason": "\(reason)"])
    }

    /// The connection closed (from the handler): the switchover waiting on it learns so.
    func closed() {
        self.stop(reason: "connection closed")
        self.promoted.fail(ReplicationError("the follower \(self.nodeID) disconnected"))
    }

    private func fail(_ error: any Error) {
        if !self.isStopped {
            self.logger.warning(
                "Replication to a follower stopped",
                metadata: ["repl.follower": "\(self.nodeID)", "repl.address": "\(self.address)", "repl.error": "\(error)"])
        }
        self.stop(reason: "sender failed")
    }

    // MARK: Acknowledgements (from the handler, on the event loop)

    func heard() { self.positions.withLock { $0.lastHeard = monotonicNanoseconds() } }

    func acknowledge(_ ack: ReplicationAck) {
        self.positions.withLock { positions in
            positions.lastHeard = monotonicNanoseconds()
            positions.received = max(positions.received, ack.received)
            positions.durable = max(positions.durable, ack.durable)
            positions.applied = max(positions.applied, ack.applied)
        }
        self.primary.checkWaiters()
    }

    // MARK: The log

    private func beginStreaming(from index: UInt64) {
        self.cursor = WALCursor(wal: self.primary.store.wal, from: index)
        self.phase = .streaming
        self.pump()
    }

    /// A PUBLISH for the follower's subscribers (any thread): sent while the session streams
    /// (during a snapshot the follower has no state to speak of yet, as a Redis replica in a
    /// full sync).
    func sendPublish(_ publish: ReplicationPublish) {
        self.channel.eventLoop.execute { [self] in
            guard case .streaming = self.phase, !self.isStopped else { return }
            let frame = Frames.make(.publish, epoch: self.epoch, allocator: self.channel.allocator, capacity: publish.channel.count + publish.message.count + 8) {
                publish.encode(into: &$0)
            }
            self.channel.writeAndFlush(frame, promise: nil)
        }
    }

    /// The log sealed more records (the flusher, or an event loop sealing its pass): wake the
    /// sender if it waits for them — at once when the seal ran on this session's own loop (the
    /// frame then follows the clients' replies out in the same pass, without a task per seal;
    /// `pump` takes no lock the seal holds: it reads sealed bytes under the log's state lock,
    /// which the seal has released by now), else by a task on its loop.
    func sealed() {
        if self.waitingForSeal.exchange(false, ordering: .acquiringAndReleasing) {
            if self.channel.eventLoop.inEventLoop {
                self.pump()
            } else {
                self.channel.eventLoop.execute { [self] in self.pump() }
            }
        }
    }

    /// The channel can take more (from the handler).
    func writabilityChanged() {
        guard self.channel.isWritable else { return }
        switch self.phase {
        case .streaming: self.pump()
        case .snapshot(let transfer): self.sendChunk(transfer)
        default: break
        }
    }

    /// Write STREAM frames while the channel takes them and sealed records remain.
    private func pump() {
        guard case .streaming = self.phase, let cursor = self.cursor, !self.isStopped else { return }
        let batchBytes = self.primary.configuration.streamBatchBytes  // (not a copy of the whole configuration)
        // The frames go out in one flush at the end, with an ACK request after them when a
        // write waits for followers. The last frame is held back to go with the flush in one
        // `writeAndFlush` (one trip through the pipeline instead of two). `isWritable` does not
        // count the held frame yet: the sender may pass the high-water mark by one batch.
        var held: ByteBuffer?
        defer {
            if let last = held {
                if self.primary.wantsPromptAcks {
                    self.sendFrame(last, flush: false)
                    self.writeAckRequest()
                    self.channel.flush()
                } else {
                    self.sendFrame(last, flush: true)
                }
                self.spareFrame = last
            }
        }
        do {
            while self.channel.isWritable {
                self.records.removeAll()
                let first = cursor.nextIndex
                var count = try cursor.read(into: self.records, maxBytes: batchBytes)
                if count == 0 {
                    // Say we wait before looking once more, so a seal in between is not missed.
                    self.waitingForSeal.store(true, ordering: .releasing)
                    guard self.primary.sealedIndex >= cursor.nextIndex else {
                        self.positions.withLock { $0.state = .streaming }
                        return
                    }
                    self.waitingForSeal.store(false, ordering: .relaxed)
                    count = try cursor.read(into: self.records, maxBytes: batchBytes)
                    if count == 0 { continue }
                }
                if let previous = held { self.sendFrame(previous, flush: false) }
                // (Taken out of `spareFrame`, so the storage is unique if the socket let go of it.)
                var frame = self.spareFrame
                self.spareFrame = ByteBuffer()
                Frames.make(.stream, epoch: self.epoch, reusing: &frame, capacity: self.records.count + 12) {
                    ReplicationStream.encodeHeader(firstIndex: first, count: UInt32(count), into: &$0)
                    $0.writeBytes(self.records.bytes)
                }
                held = frame
                let caughtUp = cursor.nextIndex > self.primary.sealedIndex
                self.positions.withLock { positions in
                    positions.sent = cursor.nextIndex - 1
                    positions.state = caughtUp ? .streaming : .catchingUp
                }
                self.lastSent = monotonicNanoseconds()
                if caughtUp {
                    // Everything sealed is sent: wait for the next seal without reading the log
                    // once more to find nothing (as the empty read above does, flag first).
                    self.waitingForSeal.store(true, ordering: .releasing)
                    guard self.primary.sealedIndex >= cursor.nextIndex else { return }
                    self.waitingForSeal.store(false, ordering: .relaxed)
                }
            }
        } catch {
            self.fail(error)
        }
    }

    /// A STREAM frame out, from the link handler's place in the pipeline (on the loop).
    private func sendFrame(_ frame: ByteBuffer, flush: Bool) {
        self.channel.eventLoop.assertInEventLoop()
        if flush {
            self.context.writeAndFlush(NIOAny(frame), promise: nil)
        } else {
            self.context.write(NIOAny(frame), promise: nil)
        }
    }

    /// A write waits for `index` on this follower (WAIT, a switchover; any thread): if it has
    /// been sent and not yet ACKed as durable, ask for an ACK as soon as it is (records not
    /// sent yet carry the request when they go).
    func requestAck(upTo index: UInt64) {
        self.channel.eventLoop.execute { [self] in
            guard case .streaming = self.phase, !self.isStopped else { return }
            let (sent, durable) = self.positions.withLock { ($0.sent, $0.durable) }
            guard durable < index, sent >= index, self.askedUpTo < index else { return }
            self.writeAckRequest()
            self.channel.flush()
        }
    }

    /// A HEARTBEAT asks the follower to ACK each seal at once until what it has received by
    /// then is durable (followers ACK otherwise within a few milliseconds, coalesced).
    private func writeAckRequest() {
        let frame = Frames.make(.heartbeat, epoch: self.epoch, allocator: self.channel.allocator, capacity: 8) {
            ReplicationHeartbeat(sealedIndex: self.primary.sealedIndex).encode(into: &$0)
        }
        self.channel.write(frame, promise: nil)
        self.askedUpTo = self.positions.withLock { $0.sent }
    }

    /// A heartbeat (with the sealed index) after a period with nothing sent.
    private func sendHeartbeatIfIdle() {
        let period = UInt64(self.primary.configuration.heartbeatMilliseconds) * 1_000_000
        let now = monotonicNanoseconds()
        guard !self.isStopped, now >= self.lastSent + period, self.channel.isWritable else { return }
        let frame = Frames.make(.heartbeat, epoch: self.epoch, allocator: self.channel.allocator, capacity: 8) {
            ReplicationHeartbeat(sealedIndex: self.primary.sealedIndex).encode(into: &$0)
        }
        self.channel.writeAndFlush(frame, promise: nil)
        self.lastSent = now
    }

    // MARK: Snapshots

    private func beginSnapshot(_ plan: SnapshotPlan) {
        guard !self.isStopped else { return }
        let fd: Int32
        do {
            fd = try FileIO.open(plan.path, O_RDONLY)
        } catch {
            return self.fail(error)
        }
        self.primary.snapshotSent(to: self.nodeID)
        self.positions.withLock { positions in
            positions.state = .snapshot
            positions.snapshotSent = plan.offset
            positions.snapshotTotal = plan.totalBytes
            positions.snapshots += 1
        }
        self.logger.notice(
            plan.offset > 0 ? "Resuming a snapshot transfer where it broke off" : "Sending a snapshot to a follower",
            metadata: [
                "repl.follower": "\(self.nodeID)", "repl.snapshot": "\(plan.path)", "repl.index": "\(plan.index)",
                "repl.bytes": "\(plan.totalBytes)", "repl.offset": "\(plan.offset)",
            ])
        let begin = Frames.make(.snapshotBegin, epoch: self.epoch, allocator: self.channel.allocator, capacity: 24) {
            ReplicationSnapshotBegin(index: plan.index, totalBytes: plan.totalBytes, offset: plan.offset).encode(into: &$0)
        }
        self.channel.writeAndFlush(begin, promise: nil)
        let transfer = SnapshotTransfer(plan: plan, fd: fd)
        self.phase = .snapshot(transfer)
        self.sendChunk(transfer)
    }

    /// Read the next chunk on the thread pool, then write it (paced, if configured).
    private func sendChunk(_ transfer: SnapshotTransfer) {
        guard !self.isStopped, !transfer.busy, self.channel.isWritable else { return }
        let plan = transfer.plan
        guard transfer.offset < plan.totalBytes else { return self.finishSnapshot(transfer) }
        transfer.busy = true
        let want = Int(min(UInt64(self.primary.configuration.snapshotChunkBytes), plan.totalBytes - transfer.offset))
        let offset = transfer.offset
        let allocator = self.channel.allocator
        let epoch = self.epoch
        let fd = transfer.fd
        self.primary.threadPool.run(on: self.channel.eventLoop) {
            try Frames.make(.snapshotChunk, epoch: epoch, allocator: allocator, capacity: want + 8) { frame in
                ReplicationSnapshotChunk.encodeHeader(offset: offset, into: &frame)
                try frame.writeWithUnsafeMutableBytes(minimumWritableBytes: want) { raw in
                    var done = 0
                    while done < want {
                        let n = try FileIO.pread(
                            fd, into: raw.baseAddress! + done, count: want - done, at: Int64(offset) + Int64(done),
                            path: plan.path)
                        guard n > 0 else {
                            throw ReplicationError("The snapshot \(plan.path) is shorter than its size; it changed while being sent.")
                        }
                        done += n
                    }
                    return done
                }
            }
        }.whenComplete { [self] result in
            transfer.busy = false
            switch result {
            case .failure(let error): return self.fail(error)
            case .success(let frame):
                guard !self.isStopped else { return }
                self.channel.writeAndFlush(frame, promise: nil)
                transfer.offset += UInt64(want)
                self.positions.withLock { $0.snapshotSent = transfer.offset }
                self.reportProgress(transfer)
                self.paceThenContinue(transfer)
            }
        }
    }

    private func paceThenContinue(_ transfer: SnapshotTransfer) {
        let rate = self.primary.configuration.snapshotBytesPerSecond
        guard rate > 0 else { return self.sendChunk(transfer) }
        // The bytes sent so far may not arrive before their time.
        let due = transfer.started + (transfer.offset - transfer.plan.offset) * 1_000_000_000 / UInt64(rate)
        let now = monotonicNanoseconds()
        guard due > now else { return self.sendChunk(transfer) }
        transfer.busy = true
        self.channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(due - now))) { [self] in
            transfer.busy = false
            self.sendChunk(transfer)
        }
    }

    private func reportProgress(_ transfer: SnapshotTransfer) {
        let now = monotonicNanoseconds()
        guard now - transfer.lastReport > 2_000_000_000 else { return }
        transfer.lastReport = now
        let total = transfer.plan.totalBytes
        self.logger.info(
            "Snapshot transfer",
            metadata: [
                "repl.follower": "\(self.nodeID)", "repl.percent": "\(transfer.offset * 100 / max(total, 1))",
                "repl.bytes": "\(transfer.offset)", "repl.total": "\(total)",
            ])
    }

    private func finishSnapshot(_ transfer: SnapshotTransfer) {
        let seconds = Double(monotonicNanoseconds() - transfer.started) / 1e9
        self.logger.notice(
            "Snapshot sent",
            metadata: [
                "repl.follower": "\(self.nodeID)", "repl.index": "\(transfer.plan.index)", "repl.bytes": "\(transfer.plan.totalBytes)",
                "repl.seconds": "\(DurationFormat.seconds(seconds))",
            ])
        self.beginStreaming(from: transfer.plan.index + 1)
    }

    // MARK: Status

    func status(primary: ReplicationPrimary) -> ReplicaStatus {
        let positions = self.positions.withLock { $0 }
        let sealed = primary.sealedIndex
        let lag = sealed > positions.applied ? sealed - positions.applied : 0
        var status = ReplicaStatus(
            nodeID: self.nodeID, host: self.reportedHost, remotePort: self.remotePort, clientPort: self.clientPort,
            state: positions.state, sent: positions.sent, received: positions.received, durable: positions.durable,
            applied: positions.applied, lagRecords: lag, lagBytes: Self.estimateBytes(primary.store.wal, after: positions.applied),
            dataAgeSeconds: primary.dataAgeSeconds(after: positions.applied),
            lastHeardSecondsAgo: Double(monotonicNanoseconds() - positions.lastHeard) / 1e9,
            snapshotBytesSent: positions.snapshotSent, snapshotBytesTotal: positions.snapshotTotal,
            snapshotsSent: positions.snapshots, warning: nil)
        status.peerSubject = self.peerSubject
        return status
    }

    /// Bytes of sealed log after `index`, from the segments' sizes (exact for whole segments,
    /// proportional inside the one holding `index`).
    static func estimateBytes(_ wal: WriteAheadLog, after index: UInt64) -> Int64 {
        var total: Int64 = 0
        for segment in wal.segmentSummaries where segment.lastIndex > index {
            let count = segment.lastIndex + 1 - segment.firstIndex
            guard count > 0 else { continue }
            if segment.firstIndex > index {
                total += segment.sealedBytes
            } else {
                let after = segment.lastIndex - index
                total += Int64(Double(segment.sealedBytes) * Double(after) / Double(count))
            }
        }
        return total
    }
}

/// Replication frames with WALCore's CRC-32 (the protocol module's encoder takes the checksum).
enum Frames {
    static let checksum: @Sendable (UnsafeRawBufferPointer) -> UInt32 = { CRC32.checksum($0) }

    static func make(
        _ kind: ReplicationFrame.Kind, epoch: UInt64, allocator: ByteBufferAllocator, capacity: Int = 64,
        _ body: (inout ByteBuffer) throws -> Void = { _ in }
    ) rethrows -> ByteBuffer {
        try ReplicationFrame.make(kind, epoch: epoch, allocator: allocator, capacity: capacity, checksum: Self.checksum, body)
    }

    static func make(
        _ kind: ReplicationFrame.Kind, epoch: UInt64, reusing buffer: inout ByteBuffer, capacity: Int,
        _ body: (inout ByteBuffer) throws -> Void
    ) rethrows {
        try ReplicationFrame.make(kind, epoch: epoch, reusing: &buffer, capacity: capacity, checksum: Self.checksum, body)
    }
}

