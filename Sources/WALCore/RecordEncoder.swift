/// Frames records into bytes: header, CRC, data. No I/O.
public enum RecordEncoder {
    /// The size of `Data` for a key and value of these lengths.
    @inlinable
    public static func dataSize(keyCount: Int, valueCount: Int) -> Int {
        RecordFormat.dataHeaderSize + keyCount + valueCount
    }

    /// The size of the whole frame for a key and value of these lengths.
    @inlinable
    public static func frameSize(keyCount: Int, valueCount: Int) -> Int {
        RecordFormat.headerSize + dataSize(keyCount: keyCount, valueCount: valueCount)
    }

    /// Write one `Data` encoding (op, lengths, key, value) at `destination`; returns bytes written.
    @inline(__always)
    public static func writeData(
        op: RecordOp,
        key: UnsafeRawBufferPointer,
        value: UnsafeRawBufferPointer,
        to destination: UnsafeMutableRawPointer
    ) -> Int {
        destination.storeBytes(of: op.rawValue, as: UInt8.self)
        storeBigEndianUInt32(UInt32(key.count), destination, 1)
        storeBigEndianUInt32(UInt32(value.count), destination, 5)
        if key.count > 0 { (destination + 9).copyMemory(from: key.baseAddress!, byteCount: key.count) }
        if value.count > 0 {
            (destination + 9 + key.count).copyMemory(from: value.baseAddress!, byteCount: value.count)
        }
        return RecordFormat.dataHeaderSize + key.count + value.count
    }

    /// Write the 12-byte frame header for the `dataCount` bytes that follow it, checksumming them.
    @inline(__always)
    public static func sealFrame(at frame: UnsafeMutableRawPointer, dataCount: Int) {
        let crc = CRC32.checksum(UnsafeRawBufferPointer(start: frame + RecordFormat.headerSize, count: dataCount))
        storeBigEndianUInt32(RecordFormat.magic, frame, 0)
        storeBigEndianUInt32(UInt32(dataCount), frame, 4)
        storeBigEndianUInt32(crc, frame, 8)
    }

    /// Append one framed record to `buffer`; returns the frame size.
    @discardableResult
    public static func append(
        op: RecordOp,
        key: UnsafeRawBufferPointer,
        value: UnsafeRawBufferPointer,
        to buffer: RecordBuffer
    ) -> Int {
        let frameSize = frameSize(keyCount: key.count, valueCount: value.count)
        let frame = buffer.reserve(frameSize)
        let dataCount = writeData(op: op, key: key, value: value, to: frame + RecordFormat.headerSize)
        sealFrame(at: frame, dataCount: dataCount)
        buffer.commit(frameSize)
        return frameSize
    }

    /// Append one framed record around `data`, an encoded `Data` (op, lengths, key, value);
    /// returns the frame size.
    @discardableResult
    public static func append(data: UnsafeRawBufferPointer, to buffer: RecordBuffer) -> Int {
        let frameSize = RecordFormat.headerSize + data.count
        let frame = buffer.reserve(frameSize)
        (frame + RecordFormat.headerSize).copyMemory(from: data.baseAddress!, byteCount: data.count)
        sealFrame(at: frame, dataCount: data.count)
        buffer.commit(frameSize)
        return frameSize
    }

    /// Append one framed record from byte arrays; returns the frame size.
    @discardableResult
    public static func append(op: RecordOp, key: [UInt8], value: [UInt8], to buffer: RecordBuffer) -> Int {
        key.withUnsafeBytes { k in value.withUnsafeBytes { v in append(op: op, key: k, value: v, to: buffer) } }
    }

    /// One whole frame as a new array (tests and tools; the write path uses `append`).
    public static func encode(op: RecordOp, key: [UInt8], value: [UInt8]) -> [UInt8] {
        let buffer = RecordBuffer(capacity: frameSize(keyCount: key.count, valueCount: value.count))
        append(op: op, key: key, value: value, to: buffer)
        return Array(buffer.bytes)
    }

    /// The value of an epoch record: the epoch as 8 bytes big-endian.
    public static func epochValue(_ epoch: UInt64) -> [UInt8] {
        withUnsafeBytes(of: epoch.bigEndian) { Array($0) }
    }
}
