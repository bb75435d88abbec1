public import NIOCore

/// HELLO: the follower's identity and position (DESIGN.md, replication protocol step 1).
public struct ReplicationHello: Sendable, Equatable {
    /// The replication protocol version the follower speaks.
    public var protocolVersion: UInt16
    /// The cluster the follower belongs to ("" for a new follower that adopts the primary's).
    public var clusterID: String
    /// The follower's node id.
    public var nodeID: String
    /// The follower's current epoch.
    public var epoch: UInt64
    /// The last durable position on the follower.
    public var durableEpoch: UInt64
    public var durableIndex: UInt64
    /// HMAC over the primary's nonce with the shared secret (empty without auth).
    public var authProof: [UInt8]
    /// A snapshot transfer that broke off: its index and the bytes the follower has of it
    /// (0, 0 when none), so the primary continues it instead of starting over.
    public var partialSnapshotIndex: UInt64
    public var partialSnapshotBytes: UInt64
    /// The follower's client port, for INFO's slaveN:port (0 when unknown).
    public var listeningPort: UInt16
    /// The follower's own replication port (where it serves followers once promoted; 0 unknown).
    public var replicationPort: UInt16 = 0
    /// The follower's epoch history: (epoch, first index) pairs, oldest first.
    public var epochs: [(epoch: UInt64, firstIndex: UInt64)]
    /// The address the primary reports for this follower in INFO (`replica-announce-ip`; empty:
    /// the address it connected from). Optional at the end of the payload.
    public var announceHost = ""

    public init(
        protocolVersion: UInt16, clusterID: String, nodeID: String, epoch: UInt64, durableEpoch: UInt64,
        durableIndex: UInt64, authProof: [UInt8], partialSnapshotIndex: UInt64 = 0, partialSnapshotBytes: UInt64 = 0,
        listeningPort: UInt16 = 0, epochs: [(epoch: UInt64, firstIndex: UInt64)] = [(1, 1)]
    ) {
        self.epochs = epochs
        self.protocolVersion = protocolVersion
        self.clusterID = clusterID
        self.nodeID = nodeID
        self.epoch = epoch
        self.durableEpoch = durableEpoch
        self.durableIndex = durableIndex
        self.authProof = authProof
        self.partialSnapshotIndex = partialSnapshotIndex
        self.partialSnapshotBytes = partialSnapshotBytes
        self.listeningPort = listeningPort
    }

    public static func == (a: ReplicationHello, b: ReplicationHello) -> Bool {
        a.protocolVersion == b.protocolVersion && a.clusterID == b.clusterID && a.nodeID == b.nodeID && a.epoch == b.epoch
            && a.durableEpoch == b.durableEpoch && a.durableIndex == b.durableIndex && a.authProof == b.authProof
            && a.partialSnapshotIndex == b.partialSnapshotIndex && a.partialSnapshotBytes == b.partialSnapshotBytes
            && a.listeningPort == b.listeningPort && a.replicationPort == b.replicationPort && a.epochs.elementsEqual(b.epochs, by: { $0 == $1 })
            && a.announceHost == b.announceHost
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(self.protocolVersion)
        buffer.writeLengthPrefixed(Array(self.clusterID.utf8))
        buffer.writeLengthPrefixed(Array(self.nodeID.utf8))
        buffer.writeInteger(self.epoch)
        buffer.writeInteger(self.durableEpoch)
        buffer.writeInteger(self.durableIndex)
        buffer.writeLengthPrefixed(self.authProof)
        buffer.writeInteger(self.partialSnapshotIndex)
        buffer.writeInteger(self.partialSnapshotBytes)
        buffer.writeInteger(self.listeningPort)
        buffer.writeInteger(self.replicationPort)
        buffer.writeInteger(UInt32(self.epochs.count))
        for entry in self.epochs {
            buffer.writeInteger(entry.epoch)
            buffer.writeInteger(entry.firstIndex)
        }
        if !self.announceHost.isEmpty { buffer.writeLengthPrefixed(Array(self.announceHost.utf8)) }
    }

    public static func decode(_ payload: ByteBuffer) throws -> ReplicationHello {
        var buffer = payload
        guard let version = buffer.readInteger(as: UInt16.self) else {
            throw ReplicationFrameError("a HELLO payload does not parse")
        }
        guard version == ReplicationFrame.protocolVersion else {
            // Fields may differ between versions: only the version is read, so the reason is exact.
            return ReplicationHello(
                protocolVersion: version, clusterID: "", nodeID: "", epoch: 0, durableEpoch: 0, durableIndex: 0,
                authProof: [])
        }
        guard let cluster = try buffer.readLengthPrefixed(),
            let node = try buffer.readLengthPrefixed(), let epoch = buffer.readInteger(as: UInt64.self),
            let durableEpoch = buffer.readInteger(as: UInt64.self), let durableIndex = buffer.readInteger(as: UInt64.self),
            let proof = try buffer.readLengthPrefixed(), let partialIndex = buffer.readInteger(as: UInt64.self),
            let partialBytes = buffer.readInteger(as: UInt64.self), let port = buffer.readInteger(as: UInt16.self),
            let replicationPort = buffer.readInteger(as: UInt16.self), let historyCount = buffer.readInteger(as: UInt32.self), Int(historyCount) * 16 <= buffer.readableBytes
        else { throw ReplicationFrameError("a HELLO payload does not parse") }
        var epochs: [(epoch: UInt64, firstIndex: UInt64)] = []
        for _ in 0..<historyCount {
            epochs.append((buffer.readInteger(as: UInt64.self)!, buffer.readInteger(as: UInt64.self)!))
        }
        var announceHost = ""
        if buffer.readableBytes > 0 {
            guard let host = try buffer.readLengthPrefixed(), host.count <= 255, buffer.readableBytes == 0 else {
                throw ReplicationFrameError("a HELLO payload does not parse")
            }
            announceHost = String(decoding: host, as: UTF8.self)
        }
        var hello = ReplicationHello(
            protocolVersion: version, clusterID: String(decoding: cluster, as: UTF8.self),
            nodeID: String(decoding: node, as: UTF8.self), epoch: epoch, durableEpoch: durableEpoch,
            durableIndex: durableIndex, authProof: proof, partialSnapshotIndex: partialIndex,
            partialSnapshotBytes: partialBytes, listeningPort: port, epochs: epochs)
        hello.replicationPort = replicationPort
        hello.announceHost = announceHost
        return hello
    }
}

/// ACK: how far the follower has got (sent after each batch and with each heartbeat).
public struct ReplicationAck: Sendable, Equatable {
    public var received: UInt64
    public var durable: UInt64
    public var applied: UInt64

    public init(received: UInt64, durable: UInt64, applied: UInt64) {
        self.received = received
        self.durable = durable
        self.applied = applied
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(self.received)
        buffer.writeInteger(self.durable)
        buffer.writeInteger(self.applied)
    }

    public static func decode(_ payload: ByteBuffer) throws -> ReplicationAck {
        var buffer = payload
        guard let received = buffer.readInteger(as: UInt64.self), let durable = buffer.readInteger(as: UInt64.self),
            let applied = buffer.readInteger(as: UInt64.self), buffer.readableBytes == 0
        else { throw ReplicationFrameError("an ACK payload does not parse") }
        guard durable <= received, applied <= received else {
            throw ReplicationFrameError("an ACK claims durable \(durable) / applied \(applied) past received \(received)")
        }
        return ReplicationAck(received: received, durable: durable, applied: applied)
    }
}

/// HEARTBEAT: still here. From the primary it carries its sealed index (a caught-up follower
/// learns how far the log is); from a follower it is empty.
public struct ReplicationHeartbeat: Sendable, Equatable {
    public var sealedIndex: UInt64?

    public init(sealedIndex: UInt64?) { self.sealedIndex = sealedIndex }

    public func encode(into buffer: inout ByteBuffer) {
        if let sealedIndex = self.sealedIndex { buffer.writeInteger(sealedIndex) }
    }

    public static func decode(_ payload: ByteBuffer) throws -> ReplicationHeartbeat {
        var buffer = payload
        if buffer.readableBytes == 0 { return ReplicationHeartbeat(sealedIndex: nil) }
        guard let sealed = buffer.readInteger(as: UInt64.self), buffer.readableBytes == 0 else {
            throw ReplicationFrameError("a HEARTBEAT payload does not parse")
        }
        return ReplicationHeartbeat(sealedIndex: sealed)
    }
}

/// REJECT: why the primary refuses the handshake, for both sides' logs.
public struct ReplicationReject: Sendable, Equatable {
    /// Why, as a code a follower can act on.
    public enum Reason: UInt8, Sendable {
        case otherCluster = 1, staleEpoch = 2, badAuth = 3, unsupportedVersion = 4, diverged = 5, notPrimary = 6
    }

    public var reason: Reason
    /// What happened and what to do, for the operator.
    public var message: String

    public init(reason: Reason, message: String) {
        self.reason = reason
        self.message = message
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(self.reason.rawValue)
        buffer.writeLengthPrefixed(Array(self.message.utf8))
    }

    public static func decode(_ payload: ByteBuffer) throws -> ReplicationReject {
        var buffer = payload
        guard let code = buffer.readInteger(as: UInt8.self), let reason = Reason(rawValue: code),
            let message = try buffer.readLengthPrefixed(), buffer.readableBytes == 0
        else { throw ReplicationFrameError("a REJECT payload does not parse") }
        return ReplicationReject(reason: reason, message: String(decoding: message, as: UTF8.self))
    }
}

/// STREAM: sealed WAL frames starting at `firstIndex`, byte for byte as on the primary's disk.
public struct ReplicationStream: Sendable, Equatable {
    public var firstIndex: UInt64
    public var count: UInt32
    /// The WAL frames (each keeps its own CRC; the follower checks them before it writes).
    public var frames: ByteBuffer

    public init(firstIndex: UInt64, count: UInt32, frames: ByteBuffer) {
        self.firstIndex = firstIndex
        self.count = count
        self.frames = frames
    }

    public func encode(into buffer: inout ByteBuffer) {
        Self.encodeHeader(firstIndex: self.firstIndex, count: self.count, into: &buffer)
        buffer.writeImmutableBuffer(self.frames)
    }

    /// The fields before the frames (a sender writes the frames straight after them).
    public static func encodeHeader(firstIndex: UInt64, count: UInt32, into buffer: inout ByteBuffer) {
        // Stored in one access (big-endian, as decode reads them): two writeInteger calls cost
        // ~540 instructions, once per STREAM frame — a frame per replicated SET at -c 1.
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 12) { bytes in
            bytes.storeBytes(of: firstIndex.bigEndian, toByteOffset: 0, as: UInt64.self)
            bytes.storeBytes(of: count.bigEndian, toByteOffset: 8, as: UInt32.self)
            return 12
        }
    }

    public static func decode(_ payload: ByteBuffer) throws -> ReplicationStream {
        var buffer = payload
        guard let first = buffer.readInteger(as: UInt64.self), let count = buffer.readInteger(as: UInt32.self) else {
            throw ReplicationFrameError("a STREAM payload does not parse")
        }
        return ReplicationStream(firstIndex: first, count: count, frames: buffer)
    }
}

/// PROMOTE (primary → follower, switchover): become the primary of `epoch`. PROMOTED (follower →
/// primary): done; the epoch record is at `index`.
public struct ReplicationPromotion: Sendable, Equatable {
    public var epoch: UInt64
    public var index: UInt64
    public init(epoch: UInt64, index: UInt64) {
        self.epoch = epoch
        self.index = index
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(self.epoch)
        buffer.writeInteger(self.index)
    }

    public static func decode(_ payload: ByteBuffer) throws -> ReplicationPromotion {
        var buffer = payload
        guard let epoch = buffer.readInteger(as: UInt64.self), let index = buffer.readInteger(as: UInt64.self),
            buffer.readableBytes == 0
        else { throw ReplicationFrameError("a PROMOTE payload does not parse") }
        return ReplicationPromotion(epoch: epoch, index: index)
    }
}

/// DIVERGED: the follower's log left the primary's after `index`.
public struct ReplicationDiverged: Sendable, Equatable {
    public var index: UInt64
    public init(index: UInt64) { self.index = index }

    public func encode(into buffer: inout ByteBuffer) { buffer.writeInteger(self.index) }

    public static func decode(_ payload: ByteBuffer) throws -> ReplicationDiverged {
        var buffer = payload
        guard let index = buffer.readInteger(as: UInt64.self), buffer.readableBytes == 0 else {
            throw ReplicationFrameError("a DIVERGED payload does not parse")
        }
        return ReplicationDiverged(index: index)
    }
}

/// PUBLISH: a channel and a message, each length-prefixed (u32).
public struct ReplicationPublish: Sendable, Equatable {
    public var channel: [UInt8]
    public var message: [UInt8]
    public init(channel: [UInt8], message: [UInt8]) {
        self.channel = channel
        self.message = message
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt32(self.channel.count))
        buffer.writeBytes(self.channel)
        buffer.writeInteger(UInt32(self.message.count))
        buffer.writeBytes(self.message)
    }

    public static func decode(_ payload: ByteBuffer) throws -> ReplicationPublish {
        var buffer = payload
        guard let channelCount = buffer.readInteger(as: UInt32.self), let channel = buffer.readBytes(length: Int(channelCount)),
            let messageCount = buffer.readInteger(as: UInt32.self), let message = buffer.readBytes(length: Int(messageCount)),
            buffer.readableBytes == 0
        else { throw ReplicationFrameError("a PUBLISH payload does not parse") }
        return ReplicationPublish(channel: channel, message: message)
    }
}

/// CHALLENGE: the primary's identity and a fresh nonce the follower proves the secret over.
public struct ReplicationChallenge: Sendable, Equatable {
    public var clusterID: String
    public var nodeID: String
    public var epoch: UInt64
    /// 32 random bytes, new for every connection.
    public var nonce: [UInt8]
    /// Whether the primary requires a proof (it has a key file).
    public var authRequired: Bool
    /// The primary's sealed index and key count now (a new follower sizes its table from them).
    public var sealedIndex: UInt64
    public var keyCount: UInt64
    /// The primary's client port (0: not said; an older primary's CHALLENGE ends before it).
    /// A follower shows it as INFO's master_port, which Sentinel and Redis clients dial.
    public var clientPort: UInt16 = 0

    public init(
        clusterID: String, nodeID: String, epoch: UInt64, nonce: [UInt8], authRequired: Bool, sealedIndex: UInt64 = 0,
        keyCount: UInt64 = 0
    ) {
        self.clusterID = clusterID
        self.nodeID = nodeID
        self.epoch = epoch
        self.nonce = nonce
        self.authRequired = authRequired
        self.sealedIndex = sealedIndex
        self.keyCount = keyCount
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(ReplicationFrame.protocolVersion)
        buffer.writeLengthPrefixed(Array(self.clusterID.utf8))
        buffer.writeLengthPrefixed(Array(self.nodeID.utf8))
        buffer.writeInteger(self.epoch)
        buffer.writeLengthPrefixed(self.nonce)
        buffer.writeInteger(UInt8(self.authRequired ? 1 : 0))
        buffer.writeInteger(self.sealedIndex)
        buffer.writeInteger(self.keyCount)
        buffer.writeInteger(self.clientPort)
    }

    public static func decode(_ payload: ByteBuffer) throws -> ReplicationChallenge {
        var buffer = payload
        guard buffer.readInteger(as: UInt16.self) != nil, let cluster = try buffer.readLengthPrefixed(),
            let node = try buffer.readLengthPrefixed(), let epoch = buffer.readInteger(as: UInt64.self),
            let nonce = try buffer.readLengthPrefixed(), let auth = buffer.readInteger(as: UInt8.self),
            let sealed = buffer.readInteger(as: UInt64.self), let keys = buffer.readInteger(as: UInt64.self)
        else { throw ReplicationFrameError("a CHALLENGE payload does not parse") }
        let clientPort = buffer.readInteger(as: UInt16.self) ?? 0
        guard buffer.readableBytes == 0 else { throw ReplicationFrameError("a CHALLENGE payload does not parse") }
        var challenge = ReplicationChallenge(
            clusterID: String(decoding: cluster, as: UTF8.self), nodeID: String(decoding: node, as: UTF8.self),
            epoch: epoch, nonce: nonce, authRequired: auth != 0, sealedIndex: sealed, keyCount: keys)
        challenge.clientPort = clientPort
        return challenge
    }
}

/// SNAPSHOT: the primary sends `snapshot-<index>.snap` (`totalBytes` long) from `offset` on,
/// then streams from `index + 1`. `offset` > 0 continues a transfer that broke off.
public struct ReplicationSnapshotBegin: Sendable, Equatable {
    public var index: UInt64
    public var totalBytes: UInt64
    public var offset: UInt64

    public init(index: UInt64, totalBytes: UInt64, offset: UInt64) {
        self.index = index
        self.totalBytes = totalBytes
        self.offset = offset
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(self.index)
        buffer.writeInteger(self.totalBytes)
        buffer.writeInteger(self.offset)
    }

    public static func decode(_ payload: ByteBuffer) throws -> ReplicationSnapshotBegin {
        var buffer = payload
        guard let index = buffer.readInteger(as: UInt64.self), let total = buffer.readInteger(as: UInt64.self),
            let offset = buffer.readInteger(as: UInt64.self), buffer.readableBytes == 0, offset <= total
        else { throw ReplicationFrameError("a SNAPSHOT payload does not parse") }
        return ReplicationSnapshotBegin(index: index, totalBytes: total, offset: offset)
    }
}

/// SNAPSHOT-CHUNK: bytes of the snapshot file at `offset` (the frame's CRC checks each chunk).
public struct ReplicationSnapshotChunk: Sendable, Equatable {
    public var offset: UInt64
    public var bytes: ByteBuffer

    public init(offset: UInt64, bytes: ByteBuffer) {
        self.offset = offset
        self.bytes = bytes
    }

    public func encode(into buffer: inout ByteBuffer) {
        Self.encodeHeader(offset: self.offset, into: &buffer)
        buffer.writeImmutableBuffer(self.bytes)
    }

    /// The field before the bytes (a sender reads the file straight after it).
    public static func encodeHeader(offset: UInt64, into buffer: inout ByteBuffer) {
        buffer.writeInteger(offset)
    }

    public static func decode(_ payload: ByteBuffer) throws -> ReplicationSnapshotChunk {
        var buffer = payload
        guard let offset = buffer.readInteger(as: UInt64.self) else {
            throw ReplicationFrameError("a SNAPSHOT-CHUNK payload does not parse")
        }
        return ReplicationSnapshotChunk(offset: offset, bytes: buffer)
    }
}

extension ByteBuffer {
    /// A u32 length, then the bytes.
    mutating func writeLengthPrefixed(_ bytes: [UInt8]) {
        self.writeInteger(UInt32(bytes.count))
        self.writeBytes(bytes)
    }

    /// A u32 length, then the bytes; nil if incomplete; throws if the length overruns the buffer.
    mutating func readLengthPrefixed() throws -> [UInt8]? {
        guard let length = self.readInteger(as: UInt32.self) else { return nil }
        guard Int(length) <= self.readableBytes else {
            throw ReplicationFrameError("a field claims \(length) bytes, more than the frame holds")
        }
        return self.readBytes(length: Int(length))
    }
}
