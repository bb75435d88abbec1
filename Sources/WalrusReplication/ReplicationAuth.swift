import CCrypto
import WALCore
#if canImport(Glibc)
import Glibc
#endif

/// The shared-secret challenge–response: the primary sends a fresh nonce, the follower answers
/// HMAC-SHA256(secret, "walrus-replication-v1" ‖ cluster id ‖ nonce). The secret never crosses the wire.
public enum ReplicationAuth {
    /// 32 random bytes.
    static func nonce() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }

    /// The proof a follower sends for `nonce`.
    public static func proof(secret: [UInt8], nonce: [UInt8], clusterID: String) -> [UInt8] {
        let message = Array("walrus-replication-v1".utf8) + Array(clusterID.utf8) + nonce
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        secret.withUnsafeBytes { key in
            message.withUnsafeBytes { data in
                digest.withUnsafeMutableBytes { out in
                    _ = HMAC(
                        EVP_sha256(), key.baseAddress, Int32(key.count), data.baseAddress?.assumingMemoryBound(to: UInt8.self),
                        data.count, out.baseAddress?.assumingMemoryBound(to: UInt8.self), &length)
                }
            }
        }
        return Array(digest.prefix(Int(length)))
    }

    /// Compare two proofs in constant time.
    static func matches(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count, !a.isEmpty else { return false }
        return a.withUnsafeBytes { x in b.withUnsafeBytes { y in CRYPTO_memcmp(x.baseAddress, y.baseAddress, a.count) == 0 } }
    }

    /// Read a key file: its bytes, without a trailing newline. Refuses a missing, empty or
    /// world-readable file with what to do.
    public static func loadKeyFile(_ path: String) throws -> [UInt8] {
        let bytes: [UInt8]
        do {
            bytes = try FileIO.readFile(path)
        } catch let error as WALError {
            throw ReplicationError("Cannot read the replication key file \(path): \(error.message)")
        }
        var secret = bytes
        while let last = secret.last, last == 0x0A || last == 0x0D { secret.removeLast() }
        guard secret.count >= 16 else {
            throw ReplicationError(
                "The replication key file \(path) holds \(secret.count) bytes; use at least 16 random bytes "
                    + "(e.g. 'openssl rand -hex 32 > \(path)'), the same file on every node.")
        }
        var info = stat()
        if stat(path, &info) == 0, info.st_mode & 0o004 != 0 {
            throw ReplicationError("The replication key file \(path) is readable by everyone; run 'chmod 600 \(path)'.")
        }
        return secret
    }
}

/// A replication problem, said so an operator can act on it.
public struct ReplicationError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { self.message }
}
