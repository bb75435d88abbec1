import NIOCore
import NIOEmbedded
import Testing
import WALCore
@testable import WalrusProtocol

/// The replication frame codec: round trips in any chunking, and every kind of bad frame refused
/// from its header (before any allocation) or by its CRC.
struct ReplicationFrameDecoderTests {
    let crc: @Sendable (UnsafeRawBufferPointer) -> UInt32 = { CRC32.checksum($0) }

    func encode(_ frame: ReplicationFrame) -> ByteBuffer {
        var buffer = ByteBuffer()
        frame.encode(into: &buffer, checksum: { CRC32.checksum($0) })
        return buffer
    }

    func sampleFrames() -> [ReplicationFrame] {
        var hello = ByteBuffer()
        ReplicationHello(
            protocolVersion: 1, clusterID: "c-1", nodeID: "n-2", epoch: 3, durableEpoch: 3, durableIndex: 1200,
            authProof: [1, 2, 3]
        ).encode(into: &hello)
        var announced = ByteBuffer()
        var announcing = ReplicationHello(
            protocolVersion: 1, clusterID: "c-1", nodeID: "n-3", epoch: 3, durableEpoch: 3, durableIndex: 7, authProof: [],
            listeningPort: 6390, epochs: [(1, 1), (3, 5)])
        announcing.announceHost = "10.9.8.7"
        announcing.encode(into: &announced)
        var ack = ByteBuffer()
        ReplicationAck(received: 10, durable: 9, applied: 8).encode(into: &ack)
        var stream = ByteBuffer()
        let walFrames = RecordEncoder.encode(op: .set, key: Array("k".utf8), value: Array("v".utf8))
        ReplicationStream(firstIndex: 1201, count: 1, frames: ByteBuffer(bytes: walFrames)).encode(into: &stream)
        var reject = ByteBuffer()
        ReplicationReject(reason: .otherCluster, message: "cluster c-9 is not c-1").encode(into: &reject)
        return [
            ReplicationFrame(kind: .hello, epoch: 3, payload: hello),
            ReplicationFrame(kind: .stream, epoch: 4, payload: stream),
            ReplicationFrame(kind: .ack, epoch: 3, payload: ack),
            ReplicationFrame(kind: .heartbeat, epoch: 4, payload: ByteBuffer()),
            ReplicationFrame(kind: .reject, epoch: 4, payload: reject),
            ReplicationFrame(kind: .hello, epoch: 3, payload: announced),
        ]
    }

    /// Frames fed a byte at a time, in pieces, or all at once decode to what was sent.
    @Test(arguments: [1, 3, 19, 20, 21, 4096])
    func roundTripsInAnyChunking(chunk: Int) throws {
        let frames = self.sampleFrames()
        var all = ByteBuffer()
        for frame in frames { all.writeImmutableBuffer(self.encode(frame)) }
        let bytes = Array(all.readableBytesView)
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(ReplicationFrameDecoder(maxPayloadBytes: 1 << 20, checksum: self.crc)))
        var offset = 0
        while offset < bytes.count {
            try channel.writeInbound(ByteBuffer(bytes: bytes[offset..<min(offset + chunk, bytes.count)]))
            offset += chunk
        }
        var decoded: [ReplicationFrame] = []
        while let frame = try channel.readInbound(as: ReplicationFrame.self) { decoded.append(frame) }
        #expect(try channel.finish().isClean)
        #expect(decoded == frames)
        #expect(try ReplicationHello.decode(decoded[0].payload).durableIndex == 1200)
        #expect(try ReplicationStream.decode(decoded[1].payload).firstIndex == 1201)
        #expect(try ReplicationAck.decode(decoded[2].payload) == ReplicationAck(received: 10, durable: 9, applied: 8))
        #expect(try ReplicationReject.decode(decoded[4].payload).reason == .otherCluster)
    }

    /// Bad magic, version, kind, an oversized length claim, and a flipped payload bit are refused.
    @Test(arguments: [
        ("bad magic", 0, UInt8(0x00), "bad magic"),
        ("bad version", 2, UInt8(9), "version 9"),
        ("unknown kind", 3, UInt8(77), "unknown replication frame kind 77"),
        ("4 GiB length", 12, UInt8(0xFF), "over the"),
        ("payload bit flip", 25, UInt8(0x01), "fails its CRC"),
    ])
    func refusesBadFrames(name: String, position: Int, value: UInt8, expected: String) throws {
        var bytes = Array(self.encode(self.sampleFrames()[0]).readableBytesView)
        if name == "payload bit flip" { bytes[position] ^= value } else { bytes[position] = value }
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(ReplicationFrameDecoder(maxPayloadBytes: 1 << 20, checksum: self.crc)))
        do {
            try channel.writeInbound(ByteBuffer(bytes: bytes))
            Issue.record("\(name): accepted")
        } catch let error as ReplicationFrameError {
            #expect(error.message.contains(expected), "\(name): \(error.message)")
        }
        _ = try? channel.finish()
    }

    /// A client speaking RESP to the replication port is told so at its first byte.
    /// HELLO's optional announced address (replica-announce-ip) round-trips; without it the
    /// payload is the same as before; garbage after it is refused.
    @Test func helloAnnouncedAddress() throws {
        let frames = self.sampleFrames()
        let plain = try ReplicationHello.decode(frames[0].payload)
        #expect(plain.announceHost.isEmpty)
        let announced = try ReplicationHello.decode(frames[5].payload)
        #expect(announced.announceHost == "10.9.8.7" && announced.listeningPort == 6390 && announced.epochs.count == 2)
        var trailing = frames[5].payload
        trailing.writeInteger(UInt8(1))
        #expect(throws: ReplicationFrameError.self) { try ReplicationHello.decode(trailing) }
    }

    @Test func respOnTheReplicationPortIsRefusedAtOnce() {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(ReplicationFrameDecoder(maxPayloadBytes: 1 << 20, checksum: self.crc)))
        #expect(throws: ReplicationFrameError.self) { try channel.writeInbound(ByteBuffer(string: "*")) }
        _ = try? channel.finish()
    }

    /// Payloads that do not parse, or ACKs that claim the impossible, are refused.
    @Test func refusesBadPayloads() {
        #expect(throws: ReplicationFrameError.self) { try ReplicationAck.decode(ByteBuffer(bytes: [1, 2, 3])) }
        var impossible = ByteBuffer()
        ReplicationAck(received: 5, durable: 6, applied: 1).encode(into: &impossible)
        #expect(throws: ReplicationFrameError.self) { try ReplicationAck.decode(impossible) }
        var hello = ByteBuffer()
        hello.writeInteger(UInt16(1))
        hello.writeInteger(UInt32.max)  // a cluster id "of 4 GiB"
        #expect(throws: ReplicationFrameError.self) { try ReplicationHello.decode(hello) }
    }
}
