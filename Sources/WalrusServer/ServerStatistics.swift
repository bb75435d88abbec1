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
    /// The last CLIENT ID handed out (IDs are never reused, and survive CONFIG RESETSTAT).
    public let clientIDs = Atomic<Int>(0)
    /// Requests refused as malformed.
    public let protocolErrors = Atomic<Int>(0)
    /// Per-command counters (INFO commandstats).
    let commands = CommandStatistics()
    /// When the server started (monotonic ns).
    public let startedNanoseconds: UInt64

    public init(startedNanoseconds: UInt64) { self.startedNanoseconds = startedNanoseconds }

    /// CONFIG RESETSTAT: the cumulative counters start over (connected clients is a gauge).
    public func reset() {
        self.totalConnections.store(0, ordering: .relaxed)
        self.rejectedConnections.store(0, ordering: .relaxed)
        self.totalCommands.store(0, ordering: .relaxed)
        self.protocolErrors.store(0, ordering: .relaxed)
        self.commands.reset()
    }
}
