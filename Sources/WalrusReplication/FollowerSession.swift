import Logging
import NIOCore
import Synchronization
import WALCore
import WalrusProtocol
import WalrusStore
#if canImport(Glibc)
import Glibc
#endif

/// One connected follower on the primary: its acknowledged positions and the thread that ships
/// it a snapshot (if it needs one) and then the sealed log, read from the segments on disk.
final class FollowerSession: @unchecked Sendable {
    let id: UInt64
    let channel: any Channel
    let address: String
    let host: String
    let remotePort: Int
    private(set) var nodeID = ""
    private(set) var clientPort = 0
    /// The follower's own replication port (a switchover hands over to host:replicationPort).
    private(set) var replicationPort = 0
    /// Set when the follower reports it promoted itself (switchover).
    let promotion = LockedValue<ReplicationPromotion?>(nil)
    private let primary: ReplicationPrimary
    private let lock = LockedValue(Positions())
    private let stopped = Atomic<Bool>(false)
    private var thread: DedicatedThread?

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
    enum Plan {
        case stream(from: UInt64)
        /// A snapshot; the follower holds `partialBytes` of the one at `partialIndex` already.
        case snapshot(partialIndex: UInt64, partialBytes: UInt64)
    }

    struct SnapshotPlan {
        var path: String
        var index: UInt64
        var totalBytes: UInt64
        var offset: UInt64
    }

    init(primary: ReplicationPrimary, channel: any Channel) {
        self.primary = primary
        self.channel = channel
        self.id = primary.makeSessionID()
        self.host = channel.remoteAddress?.ipAddress ?? "?"
        self.remotePort = channel.remoteAddress?.port ?? 0
        self.address = "\(self.host):\(self.remotePort)"
    }

    var state: ReplicaStatus.State { self.lock.withLock { $0.state } }
    var durableIndex: UInt64 { self.lock.withLock { $0.durable } }
    var isStopped: Bool { self.stopped.load(ordering: .relaxed) }

    /// Start shipping after a HELLO was accepted.
    func start(hello: ReplicationHello, plan: Plan) {
        self.nodeID = hello.nodeID
        self.clientPort = Int(hello.listeningPort)
        self.replicationPort = Int(hello.replicationPort)
        self.lock.withLock { positions in
            positions.received = hello.durableIndex
            positions.durable = hello.durableIndex
            positions.applied = hello.durableIndex
            positions.state = .catchingUp
        }
        self.primary.register(self)
        self.thread = DedicatedThread(name: "walrus-repl-send", detached: true) { [self] in self.run(plan) }
    }

    func heard() { self.lock.withLock { $0.lastHeard = monotonicNanoseconds() } }

    func acknowledge(_ ack: ReplicationAck) {
        self.lock.withLock { positions in
            positions.lastHeard = monotonicNanoseconds()
            positions.received = max(positions.received, ack.received)
            positions.durable = max(positions.durable, ack.durable)
            positions.applied = max(positions.applied, ack.applied)
        }
        self.primary.checkWaiters()
    }

    /// Stop the sender and close the connection.
    func stop(reason: String) {
        guard !self.stopped.exchange(true, ordering: .relaxed) else { return }
        self.primary.wakeSenders()
        self.channel.close(promise: nil)
        self.primary.logger.debug(
            "Stopping replication to a follower", metadata: ["repl.follower": "\(self.nodeID)", "repl.reason": "\(reason)"])
    }

    func status(primary: ReplicationPrimary) -> ReplicaStatus {
        let positions = self.lock.withLock { $0 }
        let sealed = primary.sealedIndex
        let lag = sealed > positions.applied ? sealed - positions.applied : 0
        return ReplicaStatus(
            nodeID: self.nodeID, host: self.host, remotePort: self.remotePort, clientPort: self.clientPort,
            state: positions.state, sent: positions.sent, received: positions.received, durable: positions.durable,
            applied: positions.applied, lagRecords: lag, lagBytes: Self.estimateBytes(primary.store.wal, after: positions.applied),
            dataAgeSeconds: primary.dataAgeSeconds(after: positions.applied),
            lastHeardSecondsAgo: Double(monotonicNanoseconds() - positions.lastHeard) / 1e9,
            snapshotBytesSent: positions.snapshotSent, snapshotBytesTotal: positions.snapshotTotal,
            snapshotsSent: positions.snapshots, warning: nil)
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

    // MARK: The sender thread

    private func run(_ plan: Plan) {
        let logger = self.primary.logger
        do {
            var next: UInt64
            switch plan {
            case .stream(let from):
                next = from
                logger.info(
                    "Follower connected; streaming from its durable index",
                    metadata: ["repl.follower": "\(self.nodeID)", "repl.address": "\(self.address)", "repl.from": "\(from)"])
            case .snapshot(let partialIndex, let partialBytes):
                let snapshot = try self.primary.chooseSnapshot(partialIndex: partialIndex, partialBytes: partialBytes)
                next = try self.sendSnapshot(snapshot) + 1
            }
            try self.stream(from: next)
        } catch {
            if !self.isStopped {
                logger.warning(
                    "Replication to a follower stopped",
                    metadata: ["repl.follower": "\(self.nodeID)", "repl.address": "\(self.address)", "repl.error": "\(error)"])
            }
        }
        self.stop(reason: "sender finished")
    }

    private var epoch: UInt64 { self.primary.store.wal.meta.currentEpoch }

    /// Write a frame; wait for the one before it (two in flight keeps the link busy while bounding memory).
    private func send(_ frame: ByteBuffer, after previous: inout EventLoopFuture<Void>?) throws {
        let future = self.channel.writeAndFlush(frame)
        if let previous { try previous.wait() }
        previous = future
    }

    private func stream(from start: UInt64) throws {
        let configuration = self.primary.configuration
        let cursor = WALCursor(wal: self.primary.store.wal, from: start)
        let records = RecordBuffer(capacity: configuration.streamBatchBytes + 64 * 1024)
        let allocator = self.channel.allocator
        let heartbeat = UInt64(configuration.heartbeatMilliseconds) * 1_000_000
        var lastSent: UInt64 = 0
        var inFlight: EventLoopFuture<Void>?
        while !self.isStopped {
            records.removeAll()
            let first = cursor.nextIndex
            let count = try cursor.read(into: records, maxBytes: configuration.streamBatchBytes)
            if count > 0 {
                let frame = FrameBuilder.frame(.stream, epoch: self.epoch, allocator: allocator, capacity: records.count + 12) {
                    $0.writeInteger(first)
                    $0.writeInteger(UInt32(count))
                    $0.writeBytes(records.bytes)
                }
                try self.send(frame, after: &inFlight)
                let caughtUp = cursor.nextIndex > self.primary.sealedIndex
                self.lock.withLock { positions in
                    positions.sent = cursor.nextIndex - 1
                    positions.state = caughtUp ? .streaming : .catchingUp
                }
                lastSent = monotonicNanoseconds()
                continue
            }
            self.lock.withLock { $0.state = .streaming }
            let now = monotonicNanoseconds()
            if now >= lastSent + heartbeat {
                let sealed = self.primary.sealedIndex
                let frame = FrameBuilder.frame(.heartbeat, epoch: self.epoch, allocator: allocator, capacity: 8) {
                    $0.writeInteger(sealed)
                }
                try self.send(frame, after: &inFlight)
                lastSent = now
            }
            self.primary.waitForSeal(after: cursor.nextIndex - 1, until: lastSent + heartbeat) { self.isStopped }
        }
        try inFlight?.wait()
    }

    /// Send the snapshot file from the plan's offset, paced if configured; returns its index.
    private func sendSnapshot(_ plan: SnapshotPlan) throws -> UInt64 {
        let logger = self.primary.logger
        let configuration = self.primary.configuration
        let fd = try FileIO.open(plan.path, O_RDONLY)
        defer { close(fd) }
        self.primary.snapshotSent(to: self.nodeID)
        self.lock.withLock { positions in
            positions.state = .snapshot
            positions.snapshotSent = plan.offset
            positions.snapshotTotal = plan.totalBytes
            positions.snapshots += 1
        }
        logger.notice(
            plan.offset > 0 ? "Resuming a snapshot transfer where it broke off" : "Sending a snapshot to a follower",
            metadata: [
                "repl.follower": "\(self.nodeID)", "repl.snapshot": "\(plan.path)", "repl.index": "\(plan.index)",
                "repl.bytes": "\(plan.totalBytes)", "repl.offset": "\(plan.offset)",
            ])
        let allocator = self.channel.allocator
        var inFlight: EventLoopFuture<Void>?
        try self.send(
            FrameBuilder.frame(.snapshotBegin, epoch: self.epoch, allocator: allocator, capacity: 24) {
                ReplicationSnapshotBegin(index: plan.index, totalBytes: plan.totalBytes, offset: plan.offset).encode(into: &$0)
            }, after: &inFlight)
        let started = monotonicNanoseconds()
        var offset = plan.offset
        var lastReport = started
        let chunk = configuration.snapshotChunkBytes
        while offset < plan.totalBytes && !self.isStopped {
            let want = Int(min(UInt64(chunk), plan.totalBytes - offset))
            var frame = FrameBuilder.frame(.snapshotChunk, epoch: self.epoch, allocator: allocator, capacity: want + 8) {
                $0.writeInteger(offset)
            }
            // Read straight into the frame, then fix up its header's length and CRC.
            frame = try Self.appendingFile(fd: fd, path: plan.path, offset: offset, count: want, to: frame)
            try self.send(frame, after: &inFlight)
            offset += UInt64(want)
            self.lock.withLock { $0.snapshotSent = offset }
            let now = monotonicNanoseconds()
            if now - lastReport > 2_000_000_000 {
                lastReport = now
                logger.info(
                    "Snapshot transfer",
                    metadata: [
                        "repl.follower": "\(self.nodeID)", "repl.percent": "\(offset * 100 / max(plan.totalBytes, 1))",
                        "repl.bytes": "\(offset)", "repl.total": "\(plan.totalBytes)",
                    ])
            }
            if configuration.snapshotBytesPerSecond > 0 {
                // Pace: the bytes sent so far may not arrive before their time.
                let due = started + (offset - plan.offset) * 1_000_000_000 / UInt64(configuration.snapshotBytesPerSecond)
                let now = monotonicNanoseconds()
                if due > now { usleep(useconds_t(min((due - now) / 1000, 1_000_000))) }
            }
        }
        try inFlight?.wait()
        guard !self.isStopped else { throw ReplicationError("the follower went away during the snapshot transfer") }
        let seconds = Double(monotonicNanoseconds() - started) / 1e9
        logger.notice(
            "Snapshot sent",
            metadata: [
                "repl.follower": "\(self.nodeID)", "repl.index": "\(plan.index)", "repl.bytes": "\(plan.totalBytes)",
                "repl.seconds": "\(String(format3(seconds)))",
            ])
        return plan.index
    }

    /// `frame` with `count` bytes of the file at `offset` appended and its header's length and CRC redone.
    private static func appendingFile(fd: Int32, path: String, offset: UInt64, count: Int, to frame: ByteBuffer) throws -> ByteBuffer {
        var buffer = frame
        let read = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
            var done = 0
            while done < count {
                let n = try FileIO.pread(fd, into: raw.baseAddress! + done, count: count - done, at: Int64(offset) + Int64(done), path: path)
                guard n > 0 else { throw ReplicationError("The snapshot \(path) is shorter than its size; it changed while being sent.") }
                done += n
            }
            return done
        }
        let start = buffer.readerIndex
        let length = buffer.readableBytes - ReplicationFrame.headerSize
        let crc = buffer.withUnsafeReadableBytes { CRC32.checksum(UnsafeRawBufferPointer(rebasing: $0[ReplicationFrame.headerSize...])) }
        buffer.setInteger(UInt32(length), at: start + 12)
        buffer.setInteger(crc, at: start + 16)
        _ = read
        return buffer
    }
}

/// Seconds with three decimals.
func format3(_ value: Double) -> String {
    let thousandths = Int((value * 1000).rounded())
    let fraction = String(thousandths % 1000)
    return "\(thousandths / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
}
