import NIOCore
import WALCore
import WalrusProtocol

/// Builds replication frames in one buffer: the header is reserved first, the payload written
/// after it, then the header filled in (no second copy of a megabyte STREAM payload).
enum FrameBuilder {
    static func frame(
        _ kind: ReplicationFrame.Kind, epoch: UInt64, allocator: ByteBufferAllocator, capacity: Int = 64,
        _ body: (inout ByteBuffer) -> Void = { _ in }
    ) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: ReplicationFrame.headerSize + capacity)
        buffer.writeRepeatingByte(0, count: ReplicationFrame.headerSize)
        body(&buffer)
        let length = buffer.readableBytes - ReplicationFrame.headerSize
        let crc = buffer.withUnsafeReadableBytes { raw in
            CRC32.checksum(UnsafeRawBufferPointer(rebasing: raw[ReplicationFrame.headerSize...]))
        }
        let start = buffer.readerIndex
        buffer.setInteger(UInt8(0x57), at: start)
        buffer.setInteger(UInt8(0x52), at: start + 1)
        buffer.setInteger(ReplicationFrame.version, at: start + 2)
        buffer.setInteger(kind.rawValue, at: start + 3)
        buffer.setInteger(epoch, at: start + 4)
        buffer.setInteger(UInt32(length), at: start + 12)
        buffer.setInteger(crc, at: start + 16)
        return buffer
    }

    static let checksum: @Sendable (UnsafeRawBufferPointer) -> UInt32 = { CRC32.checksum($0) }
}
