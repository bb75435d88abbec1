/// A binary-safe key: its bytes, hashed in one call over the whole buffer.
///
/// `Array<UInt8>`'s own `Hashable` feeds the hasher one byte at a time; keys are hashed on every
/// read and write, so this wrapper hashes the contiguous bytes at once.
public struct ByteKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The key's bytes.
    public var bytes: [UInt8]

    @inlinable
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// A key from a string's UTF-8 bytes.
    @inlinable
    public init(_ string: String) { self.bytes = Array(string.utf8) }

    @inlinable
    public func hash(into hasher: inout Hasher) {
        self.bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    @inlinable
    public static func == (lhs: ByteKey, rhs: ByteKey) -> Bool { lhs.bytes == rhs.bytes }

    /// Byte-wise order (for sorted listings).
    public static func < (lhs: ByteKey, rhs: ByteKey) -> Bool { lhs.bytes.lexicographicallyPrecedes(rhs.bytes) }

    /// The key as text (invalid UTF-8 shown with replacement characters).
    public var description: String { String(decoding: self.bytes, as: UTF8.self) }
}
