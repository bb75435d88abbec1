public import NIOCore

/// One client request: the command name and its arguments, as byte buffers.
public struct RESPCommand: Sendable, Equatable {
    /// Every word of the request, the command name first.
    public var arguments: [ByteBuffer]

    public init(arguments: [ByteBuffer]) { self.arguments = arguments }

    /// The command name, upper-cased (command names are ASCII).
    public var name: String {
        guard let first = self.arguments.first else { return "" }
        // ASCII upper-casing in place (command names are ASCII; `uppercased()` goes through
        // Unicode tables and showed in profiles).
        return first.withUnsafeReadableBytes { bytes in
            String(unsafeUninitializedCapacity: bytes.count) { out in
                for (i, byte) in bytes.enumerated() { out[i] = byte >= 97 && byte <= 122 ? byte - 32 : byte }
                return bytes.count
            }
        }
    }
}

/// Limits that bound what a client can make the server allocate (Redis's proto-max-bulk-len and
/// its multibulk limit), checked before anything is allocated.
public struct RESPLimits: Sendable, Equatable {
    /// The largest bulk string (default 32 MiB: a value up to the store's 16 MiB limit fits, a
    /// 4 GiB claim does not).
    public var maxBulkBytes: Int = 32 * 1024 * 1024
    /// The most arguments in one request (default 1,048,576, as Redis).
    public var maxArguments: Int = 1024 * 1024
    /// The longest inline command line (default 64 KiB, as Redis).
    public var maxInlineBytes: Int = 64 * 1024

    public init() {}
}

/// A request that is not RESP. The message is the one Redis sends, so clients show something
/// familiar; the connection is closed after it.
public struct RESPProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Text after `-ERR ` in the reply.
    public var message: String

    public init(_ message: String) { self.message = message }

    public var description: String { self.message }
}
