import CZlib

/// CRC-32 (IEEE 802.3, the polynomial of Go's `crc32.ChecksumIEEE`) through zlib.
public enum CRC32 {
    /// The checksum of `bytes`, continuing from `seed` (0 to start).
    public static func checksum(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return seed }
        // zlib takes a 32-bit length; split anything larger (records never are, snapshots may be).
        var crc = UInt(seed)
        var pointer = base.assumingMemoryBound(to: UInt8.self)
        var remaining = bytes.count
        while remaining > 0 {
            let step = min(remaining, 1 << 30)
            crc = crc32(crc, pointer, UInt32(step))
            pointer += step
            remaining -= step
        }
        return UInt32(truncatingIfNeeded: crc)
    }

    /// The checksum of a byte array.
    public static func checksum(_ bytes: [UInt8], seed: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0, seed: seed) }
    }
}
