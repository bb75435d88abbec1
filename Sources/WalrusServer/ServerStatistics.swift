public import Synchronization

/// Counters for INFO and `walrusctl status`, shared by every connection.
public final class ServerStatistics: Sendable {
    /// Clients connected now.
    public let connectedClients = Atomic<Int>(0)
    /// Connections accepted since start.
    public let totalConnections = Atomic<Int>(0)
    /// Connections refused because of `maxClients`.
    public let rejectedConnections = Atomic<Int>(0)
    /// Commands processed since start.
    public let totalCommands = Atomic<Int>(0)
    /// Requests refused as malformed.
    public let protocolErrors = Atomic<Int>(0)
    /// When the server started (monotonic ns).
    public let startedNanoseconds: UInt64

    public init(startedNanoseconds: UInt64) { self.startedNanoseconds = startedNanoseconds }
}
