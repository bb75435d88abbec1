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

    public init(
        protocolVersion: UInt16, clusterID: String, nodeID: String, epoch: UInt64, durableEpoch: UInt64,
        durableIndex: UInt64, authProof: [UInt8]
    ) {
        self.protocolVersion = protocolVersion
        self.clusterID = clusterID
        self.nodeID = nodeID
        self.epoch = epoch
        self.durableEpoch = durableEpoch
        self.durableIndex = durableIndex
        self.authProof = authProof
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(self.protocolVersion)
        buffer.writeLengthPrefixed(Array(self.clusterID.utf8))
        buffer.writeLengthPrefixed(Array(self.nodeID.utf8))
        buffer.writeInteger(self.epoch)
        buffer.writeInteger(self.durableEpoch)
        buffer.writeInteger(self.durableIndex)
        buffer.writeLengthPrefixed(self.authProof)
    }

    public static func decode(_ payload: ByteBuffer) throws -> ReplicationHello {
        var buffer = payload
        guard let version = buffer.readInteger(as: UInt16.self), let cluster = try buffer.readLengthPrefixed(),
            let node = try buffer.readLengthPrefixed(), let epoch = buffer.readInteger(as: UInt64.self),
            let durableEpoch = buffer.readInteger(as: UInt64.self), let durableIndex = buffer.readInteger(as: UInt64.self),
            let proof = try buffer.readLengthPrefixed(), buffer.readableBytes == 0
        else { throw ReplicationFrameError("a HELLO payload does not parse") }
        return ReplicationHello(
            protocolVersion: version, clusterID: String(decoding: cluster, as: UTF8.self),
            nodeID: String(decoding: node, as: UTF8.self), epoch: epoch, durableEpoch: durableEpoch,
            durableIndex: durableIndex, authProof: proof)
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

/// REJECT: why the primary refuses the handshake, for both sides' logs.
public struct ReplicationReject: Sendable, Equatable {
    /// Why, as a code a follower can act on.
    public enum Reason: UInt8, Sendable {
        case otherCluster = 1, staleEpoch = 2, badAuth = 3, unsupportedVersion = 4
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
        buffer.writeInteger(self.firstIndex)
        buffer.writeInteger(self.count)
        buffer.writeImmutableBuffer(self.frames)
    }

    public static func decode(_ payload: ByteBuffer) throws -> ReplicationStream {
        var buffer = payload
        guard let first = buffer.readInteger(as: UInt64.self), let count = buffer.readInteger(as: UInt32.self) else {
            throw ReplicationFrameError("a STREAM payload does not parse")
        }
        return ReplicationStream(firstIndex: first, count: count, frames: buffer)
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
