/// The on-disk record frame, byte for byte the original walrus format (big-endian):
///
/// ```
/// [Magic 0xCAFEBABE: 4B][Length: 4B][CRC-32 IEEE of Data: 4B][Data: Length bytes]
/// Data = [Op: 1B][KeyLen: 4B][ValLen: 4B][Key][Value]
/// ```
///
/// See `Docs.docc/RecordFormat.md` for the full specification and the recovery cut rule.
public enum RecordFormat {
    /// The magic number that starts every frame.
    public static let magic: UInt32 = 0xCAFE_BABE
    /// Bytes before `Data`: magic, length, CRC.
    public static let headerSize = 12
    /// Bytes of `Data` before the key: op, key length, value length.
    public static let dataHeaderSize = 9
    /// The smallest legal frame (an empty key and value).
    public static let minimumFrameSize = headerSize + dataHeaderSize
}

/// The operation a record carries.
///
/// 1 and 2 are the original's; new operations take new numbers, and a reader that meets a number it
/// does not know refuses to go on instead of skipping the record.
public struct RecordOp: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Set key to value (the original's OpSet).
    public static let set = RecordOp(rawValue: 1)
    /// Delete key (the original's OpDelete).
    public static let delete = RecordOp(rawValue: 2)
    /// A new epoch starts at this record's index; the value is the epoch as 8 bytes big-endian.
    public static let epoch = RecordOp(rawValue: 3)
    /// Several operations sealed and applied together (a MULTI/EXEC, a script, a multi-key
    /// command): the value is their Data encodings back to back, the key is empty. One frame, one
    /// CRC: all or nothing. Entries may be any op but `.epoch` and `.batch`.
    public static let batch = RecordOp(rawValue: 4)
    /// Set key to value with a deadline: the value is the deadline (ms since the Unix epoch, 8
    /// bytes big-endian) followed by the value's bytes. Relative expiries (SET EX, SETEX) are
    /// logged as this absolute form, as Redis logs SET EX as SET PXAT.
    public static let setExpiring = RecordOp(rawValue: 5)
    /// Give an existing key a deadline (EXPIRE and its family, logged as PEXPIREAT): the value is
    /// the deadline, 8 bytes big-endian. A key that is absent stays absent.
    public static let expireAt = RecordOp(rawValue: 6)
    /// Remove a key's deadline (PERSIST); key only.
    public static let persist = RecordOp(rawValue: 7)
    /// Remove every key (FLUSHALL, FLUSHDB); empty key and value.
    public static let flushAll = RecordOp(rawValue: 8)

    /// Whether this version of walrus knows the operation.
    public var isKnown: Bool { self.rawValue >= 1 && self.rawValue <= 8 }

    /// Whether the operation may stand inside a batch record.
    public var isBatchEntry: Bool { self.isKnown && self != .epoch && self != .batch }

    public var description: String {
        switch self {
        case .set: "set"
        case .delete: "delete"
        case .epoch: "epoch"
        case .batch: "batch"
        case .setExpiring: "set-expiring"
        case .expireAt: "expire-at"
        case .persist: "persist"
        case .flushAll: "flush-all"
        default: "op\(self.rawValue)"
        }
    }

    /// Whether a `Data` of this op with a value of `valueCount` bytes (and a key of `keyCount`)
    /// is well formed: the fixed-size values and empty keys the op requires.
    @inlinable
    public func acceptsLayout(keyCount: Int, valueCount: Int) -> Bool {
        switch self {
        case .epoch: valueCount == 8
        case .setExpiring: valueCount >= 8
        case .expireAt: valueCount == 8
        case .persist: valueCount == 0
        case .flushAll: keyCount == 0 && valueCount == 0
        default: true
        }
    }
}

/// Big-endian loads and stores on raw memory (the format is big-endian, the machine is not).
@inlinable
func loadBigEndianUInt32(_ base: UnsafeRawPointer, _ offset: Int) -> UInt32 {
    UInt32(bigEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
}

@inlinable
func storeBigEndianUInt32(_ value: UInt32, _ base: UnsafeMutableRawPointer, _ offset: Int) {
    base.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
}

@inlinable
func loadBigEndianUInt64(_ base: UnsafeRawPointer, _ offset: Int) -> UInt64 {
    UInt64(bigEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
}

@inlinable
func storeBigEndianUInt64(_ value: UInt64, _ base: UnsafeMutableRawPointer, _ offset: Int) {
    base.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt64.self)
}
