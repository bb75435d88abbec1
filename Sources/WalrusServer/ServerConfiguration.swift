import NIOCore

/// How the client port behaves. Every field has walrusd's default.
public struct ServerConfiguration: Sendable {
    /// The address to listen on (default 127.0.0.1).
    public var bindAddress = "127.0.0.1"
    /// The client port (default 7379; 0 picks a free one).
    public var port = 7379
    /// A TLS client port beside `port` (nil: none; 0 picks a free one); needs a `TransportSecurity`.
    public var tlsPort: Int? = nil
    /// Connections beyond this are told `-ERR max number of clients reached` and closed (default 10000).
    public var maxClients = 10_000
    /// Close a connection idle this many seconds (default 0: never, as Redis's `timeout 0`).
    public var idleTimeoutSeconds = 0
    /// Bulk and argument limits of the protocol decoder.
    public var maxBulkBytes = 32 * 1024 * 1024
    /// The most arguments in one request.
    public var maxArguments = 1024 * 1024
    /// Event loop threads for a server that makes its own group (tests; walrusd passes its group).
    public var eventLoopThreads = max(1, System.coreCount / 2)

    public init() {}
}
