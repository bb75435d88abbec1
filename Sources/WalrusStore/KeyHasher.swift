/// SipHash-1-3 over a key's bytes with a random per-process key, as Redis hashes its dict keys:
/// fast on short keys, and a client cannot pick keys that collide (hash flooding).
///
/// `Hasher` computes the same function but re-seeds a hasher object per call, which costs more
/// than the hashing itself on 10–20-byte keys.
struct KeyHasher: Sendable {
    private let k0: UInt64
    private let k1: UInt64

    /// A hasher with a random key.
    init() {
        var generator = SystemRandomNumberGenerator()
        self.k0 = generator.next()
        self.k1 = generator.next()
    }

    /// A hasher with a fixed key (tests).
    init(k0: UInt64, k1: UInt64) {
        self.k0 = k0
        self.k1 = k1
    }

    @inline(__always)
    private static func rotl(_ x: UInt64, _ b: UInt64) -> UInt64 { (x << b) | (x >> (64 &- b)) }

    @inline(__always)
    private static func round(_ v0: inout UInt64, _ v1: inout UInt64, _ v2: inout UInt64, _ v3: inout UInt64) {
        v0 = v0 &+ v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32)
        v2 = v2 &+ v3; v3 = rotl(v3, 16); v3 ^= v2
        v0 = v0 &+ v3; v3 = rotl(v3, 21); v3 ^= v0
        v2 = v2 &+ v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32)
    }

    /// The 64-bit hash of `bytes`.
    @inline(__always)
    func hash(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var v0: UInt64 = 0x736f_6d65_7073_6575 ^ self.k0
        var v1: UInt64 = 0x646f_7261_6e64_6f6d ^ self.k1
        var v2: UInt64 = 0x6c79_6765_6e65_7261 ^ self.k0
        var v3: UInt64 = 0x7465_6462_7974_6573 ^ self.k1
        let count = bytes.count
        var offset = 0
        if let base = bytes.baseAddress {
            while offset + 8 <= count {
                let m = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
                v3 ^= m
                Self.round(&v0, &v1, &v2, &v3)
                v0 ^= m
                offset += 8
            }
        }
        var last = UInt64(truncatingIfNeeded: count) << 56
        var shift: UInt64 = 0
        while offset < count {
            last |= UInt64(bytes[offset]) << shift
            shift += 8
            offset += 1
        }
        v3 ^= last
        Self.round(&v0, &v1, &v2, &v3)
        v0 ^= last
        v2 ^= 0xff
        Self.round(&v0, &v1, &v2, &v3)
        Self.round(&v0, &v1, &v2, &v3)
        Self.round(&v0, &v1, &v2, &v3)
        return v0 ^ v1 ^ v2 ^ v3
    }
}
