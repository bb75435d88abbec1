public import NIOCore
import WALCore
import WalrusProtocol
public import WalrusStore
#if canImport(Glibc)
import Glibc
#endif

/// Runs Redis commands against a store without a socket: one client's session (its MULTI and
/// WATCH state), replies as RESP bytes. For programs that embed walrus and want Redis's
/// semantics in-process, and for the command layer's fuzz target.
public final class CommandRunner {
    private let executor: CommandExecutor
    private let session: ClientSession
    private let allocator = ByteBufferAllocator()

    /// A runner over `store`, as a primary that takes writes. A script running longer than
    /// `scriptTimeLimitMilliseconds` (0: no limit) is stopped and its writes discarded — a
    /// runner has no second client to send SCRIPT KILL.
    public init(store: KeyValueStore, scriptTimeLimitMilliseconds: Int = 0) {
        let statistics = ServerStatistics(startedNanoseconds: monotonicNanoseconds())
        let server = ServerConfiguration()
        let ports = ListenerPorts()
        let settings = ServerSettings(server: server, store: store)
        self.executor = CommandExecutor(
            store: store, statistics: statistics, server: server, logger: store.logger, replication: nil, ports: ports,
            settings: settings,
            // BGSAVE's snapshot is written before its reply: nothing runs on after the caller closes the store.
            status: NodeStatusSource(
                store: store, statistics: statistics, replication: nil, ports: ports, settings: settings, logLevel: { .info }),
            background: .inPlace)
        self.session = ClientSession(id: 1)
        self.executor.scripts.setHardLimit(milliseconds: scriptTimeLimitMilliseconds)
    }

    /// Run one command (its words, the name first); returns the reply's RESP bytes once the
    /// write is as durable as the store's fsync mode promises. Blocks the calling thread.
    public func run(_ words: [[UInt8]]) -> [UInt8] {
        guard !words.isEmpty else { return [] }
        let command = RESPCommand(arguments: words.map { ByteBuffer(bytes: $0) })
        let semaphore = BlockingSemaphore()
        let box = ReplyBox()
        let outcome = self.executor.execute(command, session: self.session, allocator: self.allocator) { reply in
            box.reply = reply
            semaphore.signal()
        }
        switch outcome {
        case .reply(let buffer), .replyAndClose(let buffer), .replyAfterCommit(let buffer): return Array(buffer.readableBytesView)
        case .pending:
            semaphore.wait()
            return box.reply.map { Array($0.readableBytesView) } ?? []
        }
    }

    /// The client's session ended (a disconnect): a MULTI is dropped, watches end.
    public func end() {
        self.session.endMulti()
        if self.session.watch.isWatching { self.executor.store.unwatch(self.session.watch) }
    }

    private final class ReplyBox: @unchecked Sendable {
        var reply: ByteBuffer?
    }
}
