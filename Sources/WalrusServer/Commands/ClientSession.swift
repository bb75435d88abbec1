import NIOCore
import WalrusStore

/// One client connection's state, as commands see and change it: the protocol it speaks, its
/// name, a MULTI in progress and the keys it WATCHes.
///
/// - Important: lives on its connection's event loop; only that loop touches it (a write's
///   completion hops back there before it reads the session).
final class ClientSession {
    /// CLIENT ID: unique for the server's lifetime, in connection order.
    let id: Int
    /// 2 (RESP2) until a client asks for 3 with HELLO 3 (redis-py 8 does, by default).
    var protocolVersion = 2
    /// CLIENT SETNAME.
    var name: String?
    /// CLIENT SETINFO LIB-NAME / LIB-VER.
    var libraryName: String?
    var libraryVersion: String?
    /// The commands queued since MULTI; nil outside a transaction.
    var queued: [QueuedCommand]?
    /// A command was refused while queueing: EXEC answers EXECABORT (Redis's CLIENT_DIRTY_EXEC).
    var queueFailed = false
    /// WATCH: dirty once a watched key changes.
    let watch = WatchToken()
    /// The watches must end, but a script held the store when the MULTI was aborted: the next
    /// command that can reach the store ends them first.
    var unwatchPending = false
    /// A script this connection sent runs on the script thread: its next commands wait for it.
    var awaitingScript = false
    /// Its channels and patterns (nil until the first SUBSCRIBE or PSUBSCRIBE).
    var pubsub: PubSubSubscriptions?
    /// How a published message reaches this connection (set by its handler; nil for a session
    /// with no connection, as a script's).
    var pushDelivery: (@Sendable (PubSubSubscriber.Delivery) -> Void)?
    /// Inside this connection's own PUBLISH (on its event loop): a message to itself is delivered
    /// there and then, in order before the PUBLISH's reply.
    var publishing = false
    /// The connection in CLIENT LIST (nil for a session with no connection).
    var entry: ClientEntry?
    /// CLIENT REPLY OFF: no replies until ON.
    var repliesOff = false
    /// CLIENT REPLY SKIP: the next command's reply is dropped.
    var skipNextReply = false
    /// The command running now answers nothing (SKIP itself, and the one after it).
    var silenceCurrentReply = false
    /// The command running now answered with pub/sub confirmations, which CLIENT REPLY OFF
    /// does not silence (Redis's CLIENT_PUSHING, in RESP2 as in RESP3).
    var repliedWithPush = false
    /// Work a command inside EXEC left for after the transaction (a role change must not run
    /// under the store's lock: promotion writes an epoch record).
    var afterTransaction: [@Sendable () -> Void] = []
    /// Every reply goes out (the in-place path answers only then).
    var repliesNormally: Bool { !self.repliesOff && !self.skipNextReply }

    init(id: Int) { self.id = id }

    var resp3: Bool { self.protocolVersion == 3 }
    /// Subscribed in RESP2: only (P)(UN)SUBSCRIBE, PING, QUIT and RESET may run (Redis's rule).
    var inSubscribedMode: Bool { !self.resp3 && (self.pubsub?.count ?? 0) > 0 }
    var inMulti: Bool { self.queued != nil }

    /// Leave MULTI (EXEC, DISCARD, or a reset).
    func endMulti() {
        self.queued = nil
        self.queueFailed = false
    }
}

/// A command waiting in a MULTI for its EXEC.
struct QueuedCommand {
    let spec: CommandSpec
    let arguments: [ByteBuffer]
}
