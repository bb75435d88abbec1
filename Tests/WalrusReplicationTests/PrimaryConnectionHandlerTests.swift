import Logging
import NIOCore
import NIOEmbedded
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif
import Testing
import WALCore
@testable import WalrusProtocol
@testable import WalrusReplication
import WalrusStore
import WalrusTestKit

let quietLogger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }

/// A store in a fresh directory. The handlers' blocking steps run in place: an EmbeddedEventLoop
/// belongs to the test's thread, and a pool thread completing their futures would race it.
final class ReplicationFixture {
    let directory = TemporaryDirectory()
    let store: KeyValueStore

    init(records: Int = 0, clusterID: String = "cluster-a", segmentSize: Int = 1 << 20) throws {
        var configuration = StoreConfiguration(directory: self.directory.path)
        configuration.wal.fsyncMode = .interval(milliseconds: 1000)
        configuration.wal.segmentSizeBytes = segmentSize
        self.store = try KeyValueStore.open(configuration, logger: quietLogger)
        try self.store.wal.updateMeta { meta in
            meta.clusterID = clusterID
            meta.nodeID = "node-\(clusterID)"
        }
        for i in 0..<records { try self.store.set(key: Array("k\(i)".utf8), value: Array(repeating: 7, count: 200)) }
        try self.store.commitBlocking()
    }

    deinit {
        self.store.close()
        self.directory.remove()
    }

    func primary(_ configure: (inout ReplicationConfiguration) -> Void = { _ in }) -> ReplicationPrimary {
        var configuration = ReplicationConfiguration()
        configuration.heartbeatMilliseconds = 100
        configure(&configuration)
        return ReplicationPrimary(
            store: self.store, configuration: configuration, logger: quietLogger, group: MultiThreadedEventLoopGroup.singleton,
            threadPool: InPlaceBlockingWork())
    }
}

extension EmbeddedChannel {
    /// Send a frame as the peer would.
    func sendFrame(_ kind: ReplicationFrame.Kind, epoch: UInt64 = 1, _ body: (inout ByteBuffer) -> Void) throws {
        try self.writeInbound(Frames.make(kind, epoch: epoch, allocator: self.allocator, body))
    }
}

/// The frames a handler wrote to an EmbeddedChannel, decoded as the peer would.
final class WrittenFrames {
    let channel: EmbeddedChannel
    private var buffer = ByteBuffer()
    private var decoder = ReplicationFrameDecoder(maxPayloadBytes: 64 << 20, checksum: Frames.checksum)

    init(_ channel: EmbeddedChannel) { self.channel = channel }

    /// The next frame, running the loop (bounded: a frame that never comes is nil).
    func next(waitingMilliseconds: Int = 3000) throws -> ReplicationFrame? {
        let deadline = monotonicNanoseconds() + UInt64(waitingMilliseconds) * 1_000_000
        while true {
            (self.channel.eventLoop as! EmbeddedEventLoop).run()
            while var more = try self.channel.readOutbound(as: ByteBuffer.self) { self.buffer.writeBuffer(&more) }
            if let frame = try self.decoder.decode(buffer: &self.buffer) { return frame }
            guard monotonicNanoseconds() < deadline else { return nil }
            usleep(1000)
        }
    }
}

/// The primary's end of a replication connection on an EmbeddedChannel: the handshake, every
/// REJECT reason, the handshake deadline, fencing, streaming and a resumed snapshot.
struct PrimaryConnectionHandlerTests {
    func connect(_ primary: ReplicationPrimary) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(handlers: [
            ByteToMessageHandler(ReplicationFrameDecoder(maxPayloadBytes: 1 << 20, checksum: Frames.checksum)),
            PrimaryConnectionHandler(primary: primary),
        ])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 40000)).wait()
        return channel
    }

    func hello(
        cluster: String = "cluster-a", node: String = "follower-1", epoch: UInt64 = 1, durable: UInt64 = 0,
        proof: [UInt8] = [], partial: (UInt64, UInt64) = (0, 0), version: UInt16 = ReplicationFrame.protocolVersion
    ) -> ReplicationHello {
        var hello = ReplicationHello(
            protocolVersion: version, clusterID: cluster, nodeID: node, epoch: epoch, durableEpoch: epoch, durableIndex: durable,
            authProof: proof, partialSnapshotIndex: partial.0, partialSnapshotBytes: partial.1, listeningPort: 6379,
            epochs: [(epoch: 1, firstIndex: 1)])
        hello.replicationPort = 6380
        return hello
    }

    /// CHALLENGE comes first; a good HELLO gets STREAM from its durable index + 1.
    @Test func handshakeThenStream() throws {
        let fixture = try ReplicationFixture(records: 5)
        let primary = fixture.primary()
        let channel = try self.connect(primary)
        let frames = WrittenFrames(channel)
        let challenge = try #require(try frames.next())
        #expect(challenge.kind == .challenge)
        let decoded = try ReplicationChallenge.decode(challenge.payload)
        #expect(decoded.clusterID == "cluster-a" && decoded.sealedIndex == 5 && !decoded.authRequired)
        try channel.sendFrame(.hello) { self.hello(durable: 2).encode(into: &$0) }
        let stream = try #require(try frames.next())
        #expect(stream.kind == .stream)
        let payload = try ReplicationStream.decode(stream.payload)
        #expect(payload.firstIndex == 3 && payload.count == 3)
        #expect(primary.replicas().first?.nodeID == "follower-1")
        // Nothing waits for the follower: no ACK request after the stream (it ACKs when it likes).
        #expect(try frames.next(waitingMilliseconds: 20) == nil)
        // A WAIT for index 5: the follower, sent it but not known to hold it, is asked for an ACK.
        let released = LockedValue<Int?>(nil)
        primary.waitForReplicas(index: 5, needed: 1, timeoutMilliseconds: 0) { count, _ in released.withLock { $0 = count } }
        let ask = try #require(try frames.next())
        #expect(ask.kind == .heartbeat && released.withLock { $0 } == nil)
        // Its ACK moves the follower's positions and releases the WAIT.
        try channel.sendFrame(.ack) { ReplicationAck(received: 5, durable: 5, applied: 5).encode(into: &$0) }
        #expect(primary.durableCount(atLeast: 5) == 1 && released.withLock { $0 } == 1)
        _ = try? channel.finish()
    }

    /// With sync-replicas every write waits for followers: each STREAM is followed by an ACK
    /// request in the same flush.
    @Test func syncReplicasAskForEachBatch() throws {
        let fixture = try ReplicationFixture(records: 5)
        let primary = fixture.primary { $0.syncReplicas = 1 }
        let channel = try self.connect(primary)
        let frames = WrittenFrames(channel)
        _ = try #require(try frames.next())
        try channel.sendFrame(.hello) { self.hello(durable: 2).encode(into: &$0) }
        #expect(try #require(try frames.next()).kind == .stream)
        #expect(try #require(try frames.next()).kind == .heartbeat)
        _ = try? channel.finish()
    }

    /// Every refusal names its reason and closes the connection.
    @Test(arguments: [
        ("otherCluster", ReplicationReject.Reason.otherCluster), ("version", .unsupportedVersion), ("auth", .badAuth),
        ("stale", .staleEpoch), ("notPrimary", .notPrimary),
    ])
    func refusals(name: String, reason: ReplicationReject.Reason) throws {
        let fixture = try ReplicationFixture(records: 1)
        let primary = fixture.primary { configuration in
            if name == "auth" { configuration.secret = Array(repeating: 42, count: 32) }
        }
        if name == "notPrimary" { primary.serving = false }
        let fenced = LockedValue<String?>(nil)
        primary.onHigherEpoch.withLock { $0 = { reason in fenced.withLock { $0 = reason } } }
        let channel = try self.connect(primary)
        let frames = WrittenFrames(channel)
        _ = try frames.next()
        let hello: ReplicationHello =
            switch name {
            case "otherCluster": self.hello(cluster: "cluster-b", durable: 1)
            case "version": self.hello(version: 99)
            case "auth": self.hello(proof: Array(repeating: 1, count: 32))
            case "stale": self.hello(epoch: 7)
            default: self.hello()
            }
        try channel.sendFrame(.hello) { hello.encode(into: &$0) }
        let reject = try #require(try frames.next())
        #expect(reject.kind == .reject)
        #expect(try ReplicationReject.decode(reject.payload).reason == reason)
        (channel.eventLoop as! EmbeddedEventLoop).run()
        #expect(!channel.isActive)
        // A follower of a newer epoch fences this primary.
        #expect((fenced.withLock { $0 } != nil) == (name == "stale"))
    }

    /// A peer that never says HELLO is dropped at the deadline (repl-timeout, timed on the loop).
    @Test func handshakeDeadline() throws {
        let fixture = try ReplicationFixture()
        let primary = fixture.primary { $0.timeoutMilliseconds = 500 }
        let channel = try self.connect(primary)
        _ = try WrittenFrames(channel).next()
        let loop = channel.eventLoop as! EmbeddedEventLoop
        loop.advanceTime(by: .milliseconds(400))
        #expect(channel.isActive)
        loop.advanceTime(by: .milliseconds(200))
        #expect(!channel.isActive)
    }

    /// After the handshake, a follower that sends nothing for repl-timeout is dropped; one that
    /// keeps sending (heartbeats, ACKs) stays, however long the connection lives.
    @Test func silentFollowerIsDropped() throws {
        let fixture = try ReplicationFixture(records: 2)
        let primary = fixture.primary { $0.timeoutMilliseconds = 500 }
        let channel = try self.connect(primary)
        let loop = channel.eventLoop as! EmbeddedEventLoop
        try channel.sendFrame(.hello) { self.hello(durable: 2).encode(into: &$0) }
        for _ in 0..<6 {
            loop.advanceTime(by: .milliseconds(300))
            try channel.sendFrame(.heartbeat) { ReplicationHeartbeat(sealedIndex: 2).encode(into: &$0) }
        }
        #expect(channel.isActive, "a follower heard every 300 ms was dropped with repl-timeout 500 ms")
        loop.advanceTime(by: .milliseconds(400))
        #expect(channel.isActive)
        loop.advanceTime(by: .milliseconds(150))
        #expect(!channel.isActive, "a follower silent for 550 ms was kept with repl-timeout 500 ms")
    }

    /// A follower behind the retained log gets a snapshot; one that holds part of it already
    /// gets the rest from where it broke off.
    @Test func snapshotResumes() throws {
        let fixture = try ReplicationFixture(records: 400, segmentSize: 8192)
        var retention = fixture.store.configuration.retention
        retention.keepBytes = 0
        retention.keepSeconds = 0
        let report = try fixture.store.checkpointBlocking()
        _ = try fixture.store.wal.removeSegments(coveredBy: report.index, policy: retention, nowSeconds: Int64(time(nil)))
        #expect(fixture.store.wal.firstIndex > 1)
        let primary = fixture.primary()
        let channel = try self.connect(primary)
        let frames = WrittenFrames(channel)
        _ = try frames.next()
        try channel.sendFrame(.hello) { self.hello(partial: (report.index, 1000)).encode(into: &$0) }
        let begin = try #require(try frames.next())
        #expect(begin.kind == .snapshotBegin)
        let snapshot = try ReplicationSnapshotBegin.decode(begin.payload)
        #expect(snapshot.index == report.index && snapshot.offset == 1000)
        let chunk = try #require(try frames.next())
        #expect(chunk.kind == .snapshotChunk)
        #expect(try ReplicationSnapshotChunk.decode(chunk.payload).offset == 1000)
        _ = try? channel.finish()
    }
}
