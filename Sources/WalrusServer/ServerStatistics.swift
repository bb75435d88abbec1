public import Synchronization
import NIOCore
public import NIOPosix
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

/// Where the commands that block for a while (SAVE, BGSAVE: a snapshot's write) run: the
/// daemon's thread pool, a thread of their own for an embedded server, or the caller's thread
/// for `CommandRunner` (which blocks its caller anyway, and must not leave work running behind
/// a store it closes).
public struct BackgroundWork: Sendable {
    let run: @Sendable (_ work: @escaping @Sendable () -> Void) -> Void

    /// On `pool` (the daemon's).
    public static func pool(_ pool: NIOThreadPool) -> Self {
        Self { work in
            pool.submit { state in
                if state == .active { work() }
            }
        }
    }

    /// On a new thread each time (an embedded server without a pool).
    public static let ownThread = Self { work in _ = DedicatedThread(name: "walrus-save", detached: true, work) }

    /// On the calling thread, before `run` returns.
    public static let inPlace = Self { work in work() }
}
