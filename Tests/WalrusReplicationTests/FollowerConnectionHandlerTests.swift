import NIOCore
import NIOEmbedded
import Testing
import WALCore
@testable import WalrusProtocol
@testable import WalrusReplication
import WalrusStore

/// The follower's end of a replication connection on an EmbeddedChannel: HELLO after CHALLENGE,
/// STREAM applied and acknowledged, a refusal, a stale primary, a silent primary.
struct FollowerConnectionHandlerTests {
    /// A follower of "primary:1" on `channel`'s loop, over `fixture`'s store.
    func follower(_ fixture: ReplicationFixture, loop: EmbeddedEventLoop, configure: (inout ReplicationConfiguration) -> Void = { _ in })
        -> ReplicationFollower
    {
        var configuration = ReplicationConfiguration()
        configuration.heartbeatMilliseconds = 100
        configure(&configuration)
        return ReplicationFollower(
            store: fixture.store, configuration: configuration, host: "primary", port: 1, logger: quietLogger, eventLoop: loop,
            threadPool: InPlaceBlockingWork())
    }

    func channel(for follower: ReplicationFollower, loop: EmbeddedEventLoop) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(loop: loop)
        let handler = FollowerConnectionHandler(follower: follower, maxPayloadBytes: 1 << 20)
        // As `connect` does: the log's seals reach the connection's handler.
        follower.current.withLock { $0 = handler }
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    func challenge(epoch: UInt64 = 1, sealed: UInt64 = 3) -> ReplicationChallenge {
        ReplicationChallenge(
            clusterID: "cluster-a", nodeID: "the-primary", epoch: epoch, nonce: Array(repeating: 9, count: 32), authRequired: false,
            sealedIndex: sealed, keyCount: 3)
    }

    /// Three WAL frames, indexes 1…3, as a primary's log holds them.
    func records() -> ByteBuffer {
        var buffer = ByteBuffer()
        for i in 1...3 { buffer.writeBytes(RecordEncoder.encode(op: .set, key: Array("k\(i)".utf8), value: Array("v\(i)".utf8))) }
        return buffer
    }

    /// A follower past its handshake: CHALLENGE sent, HELLO answered.
    func linked(_ fixture: ReplicationFixture) throws -> (EmbeddedEventLoop, ReplicationFollower, EmbeddedChannel) {
        let loop = EmbeddedEventLoop()
        let follower = self.follower(fixture, loop: loop)
        let channel = try self.channel(for: follower, loop: loop)
        let frames = WrittenFrames(channel)
        try channel.sendFrame(.challenge) { self.challenge().encode(into: &$0) }
        #expect(try frames.next()?.kind == .hello)
        return (loop, follower, channel)
    }

    /// HELLO names this node and its durable index; STREAM is appended, applied and acknowledged
    /// (within 10 ms when nobody waits, at the seal when the primary asks).
    @Test func helloThenStreamThenAck() throws {
        let fixture = try ReplicationFixture(clusterID: "cluster-a")
        let loop = EmbeddedEventLoop()
        let follower = self.follower(fixture, loop: loop)
        let channel = try self.channel(for: follower, loop: loop)
        let frames = WrittenFrames(channel)
        try channel.sendFrame(.challenge) { self.challenge().encode(into: &$0) }
        let hello = try #require(try frames.next())
        #expect(hello.kind == .hello)
        let decoded = try ReplicationHello.decode(hello.payload)
        #expect(decoded.clusterID == "cluster-a" && decoded.nodeID == "node-cluster-a" && decoded.durableIndex == 0)
        try channel.sendFrame(.stream) { ReplicationStream(firstIndex: 1, count: 3, frames: self.records()).encode(into: &$0) }
        #expect(fixture.store.get("k2") == "v2" && fixture.store.wal.lastIndex == 3)
        #expect(follower.status.linkUp && follower.status.received == 3)
        // Nobody waits for this follower: the ACK comes within 10 ms, coalesced.
        #expect(try frames.next(waitingMilliseconds: 20) == nil)
        loop.advanceTime(by: .milliseconds(FollowerConnectionHandler.lazyAckMilliseconds))
        let ack = try #require(try frames.next())
        #expect(ack.kind == .ack)
        #expect(try ReplicationAck.decode(ack.payload).received == 3)
        // A write waits (the primary's HEARTBEAT asks): the ACK follows the seal at once.
        try channel.sendFrame(.stream) {
            var more = ByteBuffer(bytes: RecordEncoder.encode(op: .set, key: Array("k4".utf8), value: Array("v4".utf8)))
            ReplicationStream(firstIndex: 4, count: 1, frames: more.readSlice(length: more.readableBytes)!).encode(into: &$0)
        }
        try channel.sendFrame(.heartbeat) { ReplicationHeartbeat(sealedIndex: 4).encode(into: &$0) }
        #expect(try frames.next(waitingMilliseconds: 20) == nil)
        fixture.store.wal.sealInline()
        let prompt = try #require(try frames.next(waitingMilliseconds: 100))
        let decodedAck = try ReplicationAck.decode(prompt.payload)
        #expect(prompt.kind == .ack && decodedAck.received == 4 && decodedAck.durable == 4)
        follower.stop()
        loop.run()
    }

    /// The handler cuts frames out of the bytes itself: one split over several reads, two in one
    /// read, and a damaged one ends the link naming what was wrong.
    @Test func framesAreCutFromAnyReads() throws {
        let fixture = try ReplicationFixture(clusterID: "cluster-a")
        let (loop, follower, channel) = try self.linked(fixture)
        // The first STREAM a few bytes at a time.
        var first = Frames.make(.stream, epoch: 1, allocator: channel.allocator) {
            ReplicationStream(firstIndex: 1, count: 3, frames: self.records()).encode(into: &$0)
        }
        while first.readableBytes > 0 { try channel.writeInbound(first.readSlice(length: min(7, first.readableBytes))!) }
        #expect(fixture.store.get("k3") == "v3" && fixture.store.wal.lastIndex == 3)
        // Two STREAMs in one read, the second cut short, then its rest.
        var two = ByteBuffer()
        for i in 4...5 { var frame = self.streamFrame(index: i, channel: channel); two.writeBuffer(&frame) }
        let cut = two.readableBytes - 5
        try channel.writeInbound(two.readSlice(length: cut)!)
        #expect(fixture.store.get("k4") == "v4" && fixture.store.get("k5") == nil)
        try channel.writeInbound(two)
        #expect(fixture.store.get("k5") == "v5" && fixture.store.wal.lastIndex == 5)
        // A frame whose header is cut, then one read with its rest, a whole frame and the start
        // of a third, then the third's rest: the kept frame takes only the bytes it lacks.
        var three = ByteBuffer()
        for i in 6...8 { var frame = self.streamFrame(index: i, channel: channel); three.writeBuffer(&frame) }
        let firstLength = three.readableBytes / 3
        try channel.writeInbound(three.readSlice(length: 10)!)
        try channel.writeInbound(three.readSlice(length: 2 * firstLength - 10 + 30)!)
        #expect(fixture.store.get("k7") == "v7" && fixture.store.get("k8") == nil && fixture.store.wal.lastIndex == 7)
        try channel.writeInbound(three)
        #expect(fixture.store.get("k8") == "v8" && fixture.store.wal.lastIndex == 8)
        // A frame damaged on the wire: the link ends with the decoder's words, nothing applied.
        var damaged = self.streamFrame(index: 9, channel: channel)
        damaged.setInteger(damaged.getInteger(at: damaged.writerIndex - 1, as: UInt8.self)! ^ 0xff, at: damaged.writerIndex - 1)
        try channel.writeInbound(damaged)
        loop.run()
        #expect(!channel.isActive)
        #expect(fixture.store.get("k9") == nil && fixture.store.wal.lastIndex == 8)
        #expect(follower.status.lastError?.contains("fails its CRC") == true)
        follower.stop()
        loop.run()
    }

    /// A STREAM frame of one record, k`index` = v`index`.
    func streamFrame(index: Int, channel: EmbeddedChannel) -> ByteBuffer {
        Frames.make(.stream, epoch: 1, allocator: channel.allocator) {
            var record = ByteBuffer(bytes: RecordEncoder.encode(op: .set, key: Array("k\(index)".utf8), value: Array("v\(index)".utf8)))
            ReplicationStream(firstIndex: UInt64(index), count: 1, frames: record.readSlice(length: record.readableBytes)!).encode(into: &$0)
        }
    }

    /// A header that claims more than the payload limit ends the link as soon as the header is
    /// whole, though it was cut between two reads and payload bytes follow it in the second: the
    /// follower does not wait for the gigabyte it claims (the handler checks such a header before
    /// it reserves room for a kept frame).
    @Test func oversizedFrameEndsTheLinkOnceItsHeaderIsWhole() throws {
        let fixture = try ReplicationFixture(clusterID: "cluster-a")
        let (loop, follower, channel) = try self.linked(fixture)
        var frame = self.streamFrame(index: 1, channel: channel)
        frame.setInteger(UInt32(1 << 30), at: frame.readerIndex + ReplicationFrame.Header.length)
        try channel.writeInbound(frame.readSlice(length: 9)!)
        #expect(channel.isActive)
        try channel.writeInbound(frame.readSlice(length: 11 + 4)!)  // the header's rest and some payload
        loop.run()
        #expect(!channel.isActive)
        #expect(follower.status.lastError?.contains("over the 1048576-byte limit") == true)
        #expect(fixture.store.wal.lastIndex == 0)
        follower.stop()
        loop.run()
    }

    /// A REJECT ends the connection and the link shows the primary's words.
    @Test func refusalIsShown() throws {
        let fixture = try ReplicationFixture()
        let loop = EmbeddedEventLoop()
        let follower = self.follower(fixture, loop: loop)
        let channel = try self.channel(for: follower, loop: loop)
        let frames = WrittenFrames(channel)
        try channel.sendFrame(.challenge) { self.challenge().encode(into: &$0) }
        _ = try frames.next()
        try channel.sendFrame(.reject) { ReplicationReject(reason: .badAuth, message: "wrong key").encode(into: &$0) }
        loop.run()
        #expect(!channel.isActive)
        #expect(follower.status.state == .refused && follower.status.lastError == "wrong key")
        follower.stop()
        loop.run()
    }

    /// A primary of an older epoch than this node has seen is stale: the HELLO goes (so it learns
    /// of the newer epoch) and nothing is streamed from it.
    @Test func stalePrimaryIsRefused() throws {
        let fixture = try ReplicationFixture()
        try fixture.store.wal.updateMeta { $0.epochs.append(MetaFile.EpochStart(epoch: 5, firstIndex: 1)) }
        let loop = EmbeddedEventLoop()
        let follower = self.follower(fixture, loop: loop)
        let channel = try self.channel(for: follower, loop: loop)
        let frames = WrittenFrames(channel)
        try channel.sendFrame(.challenge, epoch: 2) { self.challenge(epoch: 2).encode(into: &$0) }
        let hello = try #require(try frames.next())
        #expect(try ReplicationHello.decode(hello.payload).epoch == 5)
        loop.run()
        #expect(!channel.isActive)
        #expect(follower.status.state == .refused && follower.status.lastError?.contains("stale primary") == true)
        follower.stop()
        loop.run()
    }

    /// A primary silent past repl-timeout is dropped: NIO's IdleStateHandler (in front of the
    /// handler in the follower's pipeline) says so; it times with the real clock, so the test
    /// delivers its event.
    @Test func silentPrimaryIsDropped() throws {
        let fixture = try ReplicationFixture()
        let loop = EmbeddedEventLoop()
        let follower = self.follower(fixture, loop: loop)
        let channel = try self.channel(for: follower, loop: loop)
        channel.pipeline.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.read)
        loop.run()
        #expect(!channel.isActive)
        #expect(follower.status.lastError?.contains("silent") == true)
        follower.stop()
        loop.run()
    }
}
