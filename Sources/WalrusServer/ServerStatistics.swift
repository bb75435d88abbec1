public import Synchronization
import NIOCore
import WALCore

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
    /// Error replies sent (INFO total_error_replies) and by code (INFO errorstats).
    public let errorReplies = Atomic<Int>(0)
    /// Passes whose fdatasync `commit-gather` held back for writers still to come, and how many
    /// of those were sealed because the window ran out (INFO walrus_commit_gathers, …_timeouts).
    public let commitGathers = Atomic<Int>(0)
    public let commitGatherTimeouts = Atomic<Int>(0)
    private let errorCodes = LockedValue<[String: Int]>([:])
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
        self.errorReplies.store(0, ordering: .relaxed)
        self.commitGathers.store(0, ordering: .relaxed)
        self.commitGatherTimeouts.store(0, ordering: .relaxed)
        self.errorCodes.withLock { $0.removeAll() }
    }

    /// Count `reply` if it is an error: its code is the word after `-` (Redis's afterErrorReply:
    /// ERR when there is no space in its first 32 bytes; at most 128 codes are kept).
    func countError(_ reply: ByteBuffer) {
        reply.withUnsafeReadableBytes { bytes in
            guard bytes.first == UInt8(ascii: "-") else { return }
            self.errorReplies.add(1, ordering: .relaxed)
            var code = "ERR"
            if let space = bytes.prefix(32).firstIndex(of: UInt8(ascii: " ")), space > 1 {
                code = String(decoding: bytes[1..<space], as: UTF8.self)
            }
            self.errorCodes.withLock { codes in
                if codes[code] != nil || codes.count < 128 { codes[code, default: 0] += 1 }
            }
        }
    }

    /// INFO errorstats: `errorstat_<CODE>` → `count=N`, by code.
    var errorStatistics: [(String, String)] {
        self.errorCodes.withLock { $0 }.sorted { $0.key < $1.key }.map { ("errorstat_\($0.key)", "count=\($0.value)") }
    }
}

