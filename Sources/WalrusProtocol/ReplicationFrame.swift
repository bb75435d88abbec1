public import NIOCore

/// One frame of the replication protocol (primary ↔ follower, on its own TCP port).
///
/// Big-endian, 20-byte header, then the payload:
/// ```
/// [Magic "WR": 2B][Version: 1B][Type: 1B][Sender's epoch: 8B][Length: 4B][CRC-32 IEEE of payload: 4B]
/// [Payload: Length bytes]
/// ```
/// Every frame carries the sender's epoch, so a node can refuse a stream from a lower epoch at
/// the first byte of it (fencing). The length is checked against a limit before anything is
/// allocated, and a payload is handed on only after its CRC checks out.
public struct ReplicationFrame: Sendable, Equatable {
    /// What a frame carries.
    public struct Kind: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }

        /// Follower → primary: who I am and what I have (`ReplicationHello`).
        public static let hello = Kind(rawValue: 1)
        /// Primary → follower: sealed WAL frames, byte for byte as on disk (`ReplicationStream`).
        public static let stream = Kind(rawValue: 2)
        /// Follower → primary: received, durable and applied indexes (`ReplicationAck`).
        public static let ack = Kind(rawValue: 3)
        /// Either way: still here (empty payload).
        public static let heartbeat = Kind(rawValue: 4)
        /// Primary → follower: the handshake is refused (`ReplicationReject`).
        public static let reject = Kind(rawValue: 5)
        /// Primary → follower, first on a connection: who I am and a nonce to prove the secret
        /// over (`ReplicationChallenge`).
        public static let challenge = Kind(rawValue: 6)
        /// Primary → follower: a snapshot follows, then the stream (`ReplicationSnapshotBegin`).
        public static let snapshotBegin = Kind(rawValue: 7)
        /// Primary → follower: one piece of the snapshot file (`ReplicationSnapshotChunk`).
        public static let snapshotChunk = Kind(rawValue: 8)
        /// Primary → follower: your log left mine after `index`; move the rest aside, cut, and
        /// say HELLO again (`ReplicationDiverged`).
        public static let diverged = Kind(rawValue: 9)
        /// Primary → follower (switchover): become the primary of the next epoch (`ReplicationPromotion`).
        public static let promote = Kind(rawValue: 10)
        /// Follower → primary: promoted (`ReplicationPromotion`).
        public static let promoted = Kind(rawValue: 11)
        /// Primary → follower: a PUBLISH for the follower's own subscribers, as Redis propagates
        /// it to replicas (`ReplicationPublish`). Not a record: nothing of it is stored.
        public static let publish = Kind(rawValue: 12)
        /// Follower → primary: this follower was told to become the primary (REPLICAOF NO ONE,
        /// Sentinel's failover); hand over to it as a switchover does, so that nothing the
        /// primary acknowledged is left behind (empty payload).
        public static let handover = Kind(rawValue: 13)

        /// Whether this version knows the kind.
        public var isKnown: Bool { (1...13).contains(self.rawValue) }

        public var description: String {
            switch self {
            case .hello: "HELLO"
            case .stream: "STREAM"
            case .ack: "ACK"
            case .heartbeat: "HEARTBEAT"
            case .reject: "REJECT"
            case .challenge: "CHALLENGE"
            case .snapshotBegin: "SNAPSHOT"
            case .snapshotChunk: "SNAPSHOT-CHUNK"
            case .diverged: "DIVERGED"
            case .promote: "PROMOTE"
            case .promoted: "PROMOTED"
            case .publish: "PUBLISH"
            case .handover: "HANDOVER"
            default: "kind \(self.rawValue)"
            }
        }
    }

    /// The protocol version this build speaks.
    public static let version: UInt8 = 1
    /// The handshake's protocol version (in HELLO and CHALLENGE).
    public static let protocolVersion: UInt16 = 1
    /// Bytes before the payload.
    public static let headerSize = 20
    static let magic: (UInt8, UInt8) = (0x57, 0x52)  // "WR"

    /// What the frame carries.
    public var kind: Kind
    /// The sender's epoch.
    public var epoch: UInt64
    /// The payload.
    public var payload: ByteBuffer

    public init(kind: Kind, epoch: UInt64, payload: ByteBuffer) {
        self.kind = kind
        self.epoch = epoch
        self.payload = payload
    }

    /// How many more bytes the frame that starts at `buffer`'s reader index needs before it is
    /// whole: the rest of its header while that is cut, then (from the length the header gives)
    /// the rest of its payload; 0 once whole. A reader that keeps a frame spanning reads copies
    /// just these bytes into it, and reserves room for all of them at once.
    public static func bytesMissing(in buffer: ByteBuffer) -> Int {
        let have = buffer.readableBytes
        guard have >= Self.headerSize else { return Self.headerSize - have }
        let length = Int(buffer.getInteger(at: buffer.readerIndex + Header.length, as: UInt32.self)!)
        return max(0, Self.headerSize + length - have)
    }

    /// Byte offsets of the header's fields: the encoder and the decoder below share them.
    enum Header {
        static let magic = 0
        static let version = 2
        static let kind = 3
        static let epoch = 4
        static let length = 12
        static let crc = 16
    }

    /// Append the encoded frame to `buffer`; `checksum` computes CRC-32 IEEE over bytes (the
    /// protocol module does not link the CRC library; callers pass WALCore's).
    public func encode(into buffer: inout ByteBuffer, checksum: (UnsafeRawBufferPointer) -> UInt32) {
        buffer.writeImmutableBuffer(
            Self.make(self.kind, epoch: self.epoch, allocator: ByteBufferAllocator(), capacity: self.payload.readableBytes, checksum: checksum) {
                $0.writeImmutableBuffer(self.payload)
            })
    }

    /// A frame built in one buffer: room for the header first, `body` writes the payload after
    /// it, then the header is filled in — a megabyte STREAM payload is written once, not copied
    /// into a frame afterwards.
    public static func make(
        _ kind: Kind, epoch: UInt64, allocator: ByteBufferAllocator, capacity: Int = 64,
        checksum: (UnsafeRawBufferPointer) -> UInt32, _ body: (inout ByteBuffer) throws -> Void = { _ in }
    ) rethrows -> ByteBuffer {
        var buffer = allocator.buffer(capacity: Self.headerSize + capacity)
        try Self.make(kind, epoch: epoch, reusing: &buffer, capacity: capacity, checksum: checksum, body)
        return buffer
    }

    /// `make` into `buffer`, reusing its storage when nothing else holds it (a sender's last
    /// frame, once the socket took it): no allocation per frame.
    public static func make(
        _ kind: Kind, epoch: UInt64, reusing buffer: inout ByteBuffer, capacity: Int,
        checksum: (UnsafeRawBufferPointer) -> UInt32, _ body: (inout ByteBuffer) throws -> Void
    ) rethrows {
        buffer.clear(minimumCapacity: Self.headerSize + capacity)
        buffer.moveWriterIndex(forwardBy: Self.headerSize)  // filled in by seal below
        try body(&buffer)
        Self.seal(&buffer, kind: kind, epoch: epoch, checksum: checksum)
    }

    /// Fill in the header of a frame whose payload follows the header's room in `buffer`.
    public static func seal(_ buffer: inout ByteBuffer, kind: Kind, epoch: UInt64, checksum: (UnsafeRawBufferPointer) -> UInt32) {
        let length = UInt32(buffer.readableBytes - Self.headerSize)
        // One access for the checksum and the whole header (big-endian, as the decoder reads
        // it): seven setInteger calls, each checking the storage is unique, cost ~1,700
        // instructions per frame — a frame per replicated SET at -c 1 (callgrind).
        buffer.withUnsafeMutableReadableBytes { bytes in
            let crc = checksum(UnsafeRawBufferPointer(rebasing: bytes[Self.headerSize...]))
            bytes.storeBytes(of: Self.magic.0, toByteOffset: Header.magic, as: UInt8.self)
            bytes.storeBytes(of: Self.magic.1, toByteOffset: Header.magic + 1, as: UInt8.self)
            bytes.storeBytes(of: Self.version, toByteOffset: Header.version, as: UInt8.self)
            bytes.storeBytes(of: kind.rawValue, toByteOffset: Header.kind, as: UInt8.self)
            bytes.storeBytes(of: epoch.bigEndian, toByteOffset: Header.epoch, as: UInt64.self)
            bytes.storeBytes(of: length.bigEndian, toByteOffset: Header.length, as: UInt32.self)
            bytes.storeBytes(of: crc.bigEndian, toByteOffset: Header.crc, as: UInt32.self)
        }
    }
}

/// A replication frame that fails its checks; the connection is dropped with this as the
/// logged reason, never the process.
public struct ReplicationFrameError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { self.message }
}

/// Decodes replication frames, checking magic, version, kind and length from the header alone
/// (so a 4 GiB claim costs nothing) and the CRC before a payload is passed on.
public struct ReplicationFrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = ReplicationFrame

    private let maxPayloadBytes: Int
    private let checksum: @Sendable (UnsafeRawBufferPointer) -> UInt32

    /// - Parameters:
    ///   - maxPayloadBytes: the largest payload accepted (a STREAM batch or a snapshot chunk).
    ///   - checksum: CRC-32 IEEE (WALCore's `CRC32.checksum`).
    public init(maxPayloadBytes: Int, checksum: @escaping @Sendable (UnsafeRawBufferPointer) -> UInt32) {
        self.maxPayloadBytes = maxPayloadBytes
        self.checksum = checksum
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> ReplicationFrame? {
        guard buffer.readableBytes >= ReplicationFrame.headerSize else {
            // Even a partial header can already be wrong: check the magic as soon as it is here.
            if let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self), first != ReplicationFrame.magic.0 {
                if first == 0x16 {
                    // A TLS record (a ClientHello, or a ServerHello for a follower dialling with TLS).
                    throw ReplicationFrameError(
                        "a TLS handshake on a plaintext replication link: set tls-replication yes on both the primary and its followers, or on neither")
                }
                throw ReplicationFrameError("not a walrus replication frame (bad magic); is this a client on the replication port?")
            }
            return nil
        }
        let start = buffer.readerIndex
        typealias Header = ReplicationFrame.Header
        guard buffer.getInteger(at: start + Header.magic, as: UInt8.self) == ReplicationFrame.magic.0,
            buffer.getInteger(at: start + Header.magic + 1, as: UInt8.self) == ReplicationFrame.magic.1
        else {
            if buffer.getInteger(at: start + Header.magic, as: UInt8.self) == 0x16 {
                throw ReplicationFrameError(
                    "a TLS handshake on a plaintext replication link: set tls-replication yes on both the primary and its followers, or on neither")
            }
            throw ReplicationFrameError("not a walrus replication frame (bad magic); is this a client on the replication port?")
        }
        let version = buffer.getInteger(at: start + Header.version, as: UInt8.self)!
        guard version == ReplicationFrame.version else {
            throw ReplicationFrameError(
                "replication protocol version \(version) is not supported (this walrusd speaks \(ReplicationFrame.version)); run the same walrus version on both nodes")
        }
        let kind = ReplicationFrame.Kind(rawValue: buffer.getInteger(at: start + Header.kind, as: UInt8.self)!)
        guard kind.isKnown else { throw ReplicationFrameError("unknown replication frame kind \(kind.rawValue)") }
        let epoch = buffer.getInteger(at: start + Header.epoch, as: UInt64.self)!
        let length = Int(buffer.getInteger(at: start + Header.length, as: UInt32.self)!)
        guard length <= self.maxPayloadBytes else {
            throw ReplicationFrameError("a \(kind) frame claims \(length) bytes, over the \(self.maxPayloadBytes)-byte limit")
        }
        guard buffer.readableBytes >= ReplicationFrame.headerSize + length else { return nil }
        let expected = buffer.getInteger(at: start + Header.crc, as: UInt32.self)!
        let payload = buffer.getSlice(at: start + ReplicationFrame.headerSize, length: length)!
        let actual = payload.withUnsafeReadableBytes(self.checksum)
        guard actual == expected else {
            throw ReplicationFrameError("a \(kind) frame of \(length) bytes fails its CRC (damaged on the wire)")
        }
        buffer.moveReaderIndex(forwardBy: ReplicationFrame.headerSize + length)
        return ReplicationFrame(kind: kind, epoch: epoch, payload: payload)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> ReplicationFrame? {
        try self.decode(buffer: &buffer)
    }
}
