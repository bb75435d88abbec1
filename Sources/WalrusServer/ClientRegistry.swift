import NIOCore
import Synchronization
import WALCore

/// Every client connection on the client port, for CLIENT LIST and CLIENT KILL. A connection's
/// session lives on its event loop; what other connections may read of it is copied here when
/// it changes (name, protocol, subscriptions, MULTI) — and, cheaply, at each read and command.
final class ClientRegistry: Sendable {
    private let entries = LockedValue([Int: ClientEntry]())

    func add(_ entry: ClientEntry) { self.entries.withLock { $0[entry.id] = entry } }

    func remove(_ id: Int) { self.entries.withLock { _ = $0.removeValue(forKey: id) } }

    /// Every connection, in id order.
    var all: [ClientEntry] { self.entries.withLock { $0.values.sorted { $0.id < $1.id } } }
}

/// One connection as CLIENT LIST shows it.
final class ClientEntry: Sendable {
    struct Details: Sendable {
        var name = ""
        var protocolVersion = 2
        var channels = 0
        var patterns = 0
        /// Commands queued in a MULTI (-1: none).
        var multi = -1
        var libraryName = ""
        var libraryVersion = ""
    }

    let id: Int
    let address: String
    let localAddress: String
    let createdNanoseconds = monotonicNanoseconds()
    /// Monotonic time of the last read (CLIENT LIST's idle).
    let lastRead = Atomic<UInt64>(monotonicNanoseconds())
    /// The last command's statistics slot (CLIENT LIST's cmd; -1: none yet).
    let lastCommandSlot = Atomic<Int>(-1)
    let details = LockedValue(Details())
    /// Closes the connection (from any thread; its event loop does it).
    let kill: @Sendable () -> Void

    init(id: Int, address: String, localAddress: String, kill: @escaping @Sendable () -> Void) {
        self.id = id
        self.address = address
        self.localAddress = localAddress
        self.kill = kill
    }

    /// Copy what CLIENT LIST shows from the session (on its event loop).
    func refresh(from session: ClientSession) {
        self.details.withLock { details in
            details.name = session.name ?? ""
            details.protocolVersion = session.protocolVersion
            details.channels = session.pubsub?.channels.count ?? 0
            details.patterns = session.pubsub?.patterns.count ?? 0
            details.multi = session.queued?.count ?? -1
            details.libraryName = session.libraryName ?? ""
            details.libraryVersion = session.libraryVersion ?? ""
        }
    }

    /// Subscribed to anything (CLIENT KILL TYPE pubsub).
    var isSubscriber: Bool { self.details.withLock { $0.channels + $0.patterns > 0 } }

    /// The line CLIENT LIST and CLIENT INFO print, in Redis 7.0's field order (memory and
    /// buffer fields walrus does not track are 0).
    func line(now: UInt64 = monotonicNanoseconds(), commandName: (Int) -> String) -> String {
        let details = self.details.withLock { $0 }
        let age = (now &- self.createdNanoseconds) / 1_000_000_000
        let idle = (now &- self.lastRead.load(ordering: .relaxed)) / 1_000_000_000
        let slot = self.lastCommandSlot.load(ordering: .relaxed)
        var flags = ""
        if details.channels + details.patterns > 0 { flags += "P" }
        if details.multi >= 0 { flags += "x" }
        if flags.isEmpty { flags = "N" }
        return "id=\(self.id) addr=\(self.address) laddr=\(self.localAddress) fd=-1 name=\(details.name) age=\(age) idle=\(idle) "
            + "flags=\(flags) db=0 sub=\(details.channels) psub=\(details.patterns) ssub=0 multi=\(details.multi) qbuf=0 qbuf-free=0 "
            + "argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=\(slot < 0 ? "NULL" : commandName(slot)) "
            + "user=default redir=-1 resp=\(details.protocolVersion) lib-name=\(details.libraryName) lib-ver=\(details.libraryVersion)"
    }
}
