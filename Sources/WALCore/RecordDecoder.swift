/// A decoded record, pointing into the buffer it was decoded from.
///
/// - Important: the pointers are valid only as long as that buffer; copy what you keep.
public struct RecordView {
    /// The operation.
    public var op: RecordOp
    /// The key bytes.
    public var key: UnsafeRawBufferPointer
    /// The value bytes.
    public var value: UnsafeRawBufferPointer
    /// The whole frame, header included, exactly as on disk.
    public var frame: UnsafeRawBufferPointer

    /// The epoch carried by an `.epoch` record.
    public var epoch: UInt64? {
        guard self.op == .epoch, self.value.count == 8 else { return nil }
        return loadBigEndianUInt64(self.value.baseAddress!, 0)
    }

    /// The operations inside a `.batch` record, in order (the same view type, no frame).
    public func forEachBatchEntry(_ body: (RecordOp, UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Void) rethrows {
        guard self.op == .batch else { return try body(self.op, self.key, self.value) }
        var offset = 0
        let payload = self.value
        while offset + RecordFormat.dataHeaderSize <= payload.count {
            let base = payload.baseAddress! + offset
            let op = RecordOp(rawValue: base.load(as: UInt8.self))
            let keyCount = Int(loadBigEndianUInt32(base, 1))
            let valueCount = Int(loadBigEndianUInt32(base, 5))
            let key = UnsafeRawBufferPointer(start: base + 9, count: keyCount)
            let value = UnsafeRawBufferPointer(start: base + 9 + keyCount, count: valueCount)
            try body(op, key, value)
            offset += 9 + keyCount + valueCount
        }
    }
}

/// Decodes one frame at a time from a buffer. No I/O; the caller decides what a failure means
/// (a torn tail or corruption) from where in the log it happened.
public enum RecordDecoder {
    /// Why bytes are not a valid frame.
    public enum Damage: Hashable, Sendable, CustomStringConvertible {
        /// The first 4 bytes are not 0xCAFEBABE.
        case badMagic(UInt32)
        /// The length field is larger than the configured maximum record size.
        case lengthTooLarge(UInt32)
        /// The length field is too small to hold op, key length and value length.
        case lengthTooSmall(UInt32)
        /// The CRC of the data does not match the header.
        case checksumMismatch(expected: UInt32, actual: UInt32)
        /// The key and value lengths inside the data do not add up to the frame length.
        case badLayout
        /// The op byte is one this version does not know.
        case unknownOp(UInt8)
        /// A batch record's entries do not fill its value exactly, or hold an op a batch cannot.
        case badBatch

        public var description: String {
            switch self {
            case .badMagic(let m): "bad magic 0x\(String(m, radix: 16, uppercase: true)) (expected 0xCAFEBABE)"
            case .lengthTooLarge(let n): "record length \(n) exceeds the configured maximum"
            case .lengthTooSmall(let n): "record length \(n) is too small for a record"
            case .checksumMismatch(let e, let a):
                "CRC mismatch (header 0x\(String(e, radix: 16)), data 0x\(String(a, radix: 16)))"
            case .badLayout: "key and value lengths do not match the record length"
            case .unknownOp(let op):
                "unknown operation \(op) (written by a newer walrus? this version knows 1-8)"
            case .badBatch: "batch record entries do not parse"
            }
        }
    }

    /// The outcome of decoding at one offset.
    public enum Result {
        /// A valid frame of `frameLength` bytes.
        case record(RecordView, frameLength: Int)
        /// The bytes so far are a valid prefix of a frame that needs `frameLength` bytes in all
        /// (nil while the header itself is incomplete).
        case needMoreBytes(frameLength: Int?)
        /// The bytes cannot be a frame.
        case damaged(Damage)
    }

    /// Decode the frame starting at `offset` in `buffer`.
    ///
    /// The length is checked against `maxRecordBytes` before anything else looks at the data, so a
    /// 4 GiB claim costs nothing.
    @inline(__always)
    public static func decode(_ buffer: UnsafeRawBufferPointer, at offset: Int, maxRecordBytes: Int) -> Result {
        let available = buffer.count - offset
        guard available >= RecordFormat.headerSize else {
            // A header prefix is a valid torn write only if the magic bytes present match.
            guard magicPrefixMatches(buffer, offset, available) else {
                return .damaged(.badMagic(partialMagic(buffer, offset, available)))
            }
            if available >= 8 {
                let length = loadBigEndianUInt32(buffer.baseAddress!, offset + 4)
                if let damage = lengthDamage(length, maxRecordBytes) { return .damaged(damage) }
                return .needMoreBytes(frameLength: RecordFormat.headerSize + Int(length))
            }
            return .needMoreBytes(frameLength: nil)
        }
        let base = buffer.baseAddress! + offset
        let magic = loadBigEndianUInt32(base, 0)
        guard magic == RecordFormat.magic else { return .damaged(.badMagic(magic)) }
        let length = loadBigEndianUInt32(base, 4)
        if let damage = lengthDamage(length, maxRecordBytes) { return .damaged(damage) }
        let frameLength = RecordFormat.headerSize + Int(length)
        guard available >= frameLength else { return .needMoreBytes(frameLength: frameLength) }
        let expected = loadBigEndianUInt32(base, 8)
        let data = UnsafeRawBufferPointer(start: base + RecordFormat.headerSize, count: Int(length))
        let actual = CRC32.checksum(data)
        guard actual == expected else { return .damaged(.checksumMismatch(expected: expected, actual: actual)) }
        let op = RecordOp(rawValue: data.load(as: UInt8.self))
        let keyCount = Int(loadBigEndianUInt32(data.baseAddress!, 1))
        let valueCount = Int(loadBigEndianUInt32(data.baseAddress!, 5))
        guard RecordFormat.dataHeaderSize + keyCount + valueCount == Int(length) else { return .damaged(.badLayout) }
        guard op.isKnown else { return .damaged(.unknownOp(op.rawValue)) }
        let view = RecordView(
            op: op,
            key: UnsafeRawBufferPointer(start: data.baseAddress! + 9, count: keyCount),
            value: UnsafeRawBufferPointer(start: data.baseAddress! + 9 + keyCount, count: valueCount),
            frame: UnsafeRawBufferPointer(start: base, count: frameLength)
        )
        if op == .batch, !batchIsWellFormed(view.value) { return .damaged(.badBatch) }
        guard op.acceptsLayout(keyCount: keyCount, valueCount: valueCount) else { return .damaged(.badLayout) }
        return .record(view, frameLength: frameLength)
    }

    @inline(__always)
    static func lengthDamage(_ length: UInt32, _ maxRecordBytes: Int) -> Damage? {
        if Int(length) > maxRecordBytes { return .lengthTooLarge(length) }
        if Int(length) < RecordFormat.dataHeaderSize { return .lengthTooSmall(length) }
        return nil
    }

    static func magicPrefixMatches(_ buffer: UnsafeRawBufferPointer, _ offset: Int, _ available: Int) -> Bool {
        let magicBytes: [UInt8] = [0xCA, 0xFE, 0xBA, 0xBE]
        for i in 0..<min(available, 4) where buffer[offset + i] != magicBytes[i] { return false }
        return true
    }

    static func partialMagic(_ buffer: UnsafeRawBufferPointer, _ offset: Int, _ available: Int) -> UInt32 {
        var value: UInt32 = 0
        for i in 0..<min(available, 4) { value = value << 8 | UInt32(buffer[offset + i]) }
        return value
    }

    static func batchIsWellFormed(_ payload: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset < payload.count {
            guard payload.count - offset >= RecordFormat.dataHeaderSize else { return false }
            let base = payload.baseAddress! + offset
            let op = RecordOp(rawValue: base.load(as: UInt8.self))
            guard op.isBatchEntry else { return false }
            let keyCount = Int(loadBigEndianUInt32(base, 1))
            let valueCount = Int(loadBigEndianUInt32(base, 5))
            let size = RecordFormat.dataHeaderSize + keyCount + valueCount
            guard size <= payload.count - offset, op.acceptsLayout(keyCount: keyCount, valueCount: valueCount) else { return false }
            offset += size
        }
        return true
    }
}
