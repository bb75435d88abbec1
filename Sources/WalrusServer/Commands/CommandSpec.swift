import NIOCore
import WalrusStore

/// What a command is allowed to do and where: the facts dispatch, COMMAND INFO, a follower's
/// READONLY refusal, MULTI's queueing rules and the metrics labels all read (Valkey's
/// `commands.def`). Names are Redis 7.0's command flags.
struct CommandFlags: OptionSet, Sendable, Hashable {
    let rawValue: UInt32

    /// Changes the keyspace: refused on a follower, a fenced or paused primary.
    static let write = CommandFlags(rawValue: 1 << 0)
    /// Reads the keyspace only.
    static let readonly = CommandFlags(rawValue: 1 << 1)
    /// May grow memory (Redis refuses it under maxmemory; kept for COMMAND INFO).
    static let denyOOM = CommandFlags(rawValue: 1 << 2)
    /// An administrative command.
    static let admin = CommandFlags(rawValue: 1 << 3)
    /// A pub/sub command.
    static let pubsub = CommandFlags(rawValue: 1 << 4)
    /// May not run inside a script.
    static let noscript = CommandFlags(rawValue: 1 << 5)
    /// Runs while the dataset is loading.
    static let loading = CommandFlags(rawValue: 1 << 6)
    /// Runs on a follower whose link is down (walrus serves such reads always).
    static let stale = CommandFlags(rawValue: 1 << 7)
    /// O(1) or O(log N).
    static let fast = CommandFlags(rawValue: 1 << 8)
    /// May not be queued inside MULTI.
    static let noMulti = CommandFlags(rawValue: 1 << 9)
    /// Runs while a script is busy.
    static let allowBusy = CommandFlags(rawValue: 1 << 10)
    /// Works without AUTH.
    static let noAuth = CommandFlags(rawValue: 1 << 11)
    /// Also a Sentinel command.
    static let sentinel = CommandFlags(rawValue: 1 << 12)
    /// Touches keys not named in its arguments (SCAN, RANDOMKEY, KEYS).
    static let touchesArbitraryKeys = CommandFlags(rawValue: 1 << 13)
    /// May write (EVAL): a follower runs it, and refuses its writes one by one.
    static let mayReplicate = CommandFlags(rawValue: 1 << 14)
    /// Takes no mandatory keys (EVAL with numkeys 0).
    static let noMandatoryKeys = CommandFlags(rawValue: 1 << 15)

    /// The names COMMAND INFO prints, in Redis's order.
    static let names: [(CommandFlags, String)] = [
        (.write, "write"), (.readonly, "readonly"), (.denyOOM, "denyoom"), (.admin, "admin"), (.pubsub, "pubsub"),
        (.noscript, "noscript"), (.loading, "loading"), (.stale, "stale"), (.fast, "fast"), (.noMulti, "no_multi"),
        (.allowBusy, "allow_busy"), (.noAuth, "no_auth"), (.sentinel, "sentinel"),
        (.touchesArbitraryKeys, "touches_arbitrary_keys"), (.mayReplicate, "may_replicate"),
        (.noMandatoryKeys, "no_mandatory_keys"),
    ]
}

/// A command's answer when it is not simply the reply already written.
enum CommandOutcome {
    /// The reply is in `CommandCall.out`.
    case reply
    /// The reply is in `out`; the connection closes after it (QUIT).
    case close
    /// The reply comes later: `start` is called with the completion to call with it (WAIT).
    case pending(start: @Sendable (@escaping @Sendable (ByteBuffer) -> Void) -> Void)
}

/// A refusal with Redis's words: the text after `-` (it starts with its code: `ERR`, `WRONGTYPE`,
/// `READONLY`, …). Thrown by handlers, written as the command's error reply.
struct CommandError: Error, Sendable, Equatable {
    var message: String
    init(_ message: String) { self.message = message }

    static let syntax = CommandError("ERR syntax error")
    static let notInteger = CommandError("ERR value is not an integer or out of range")
    static let notFloat = CommandError("ERR value is not a valid float")
    static let noSuchKey = CommandError("ERR no such key")
    static let sameObject = CommandError("ERR source and destination objects are the same")
    static let outOfRange = CommandError("ERR index out of range")

    /// Redis's arity error, with the command's full name (`config|get`).
    static func arity(_ name: String) -> CommandError {
        CommandError("ERR wrong number of arguments for '\(name)' command")
    }
}

/// How a command runs.
enum CommandHandler: Sendable {
    /// Reads or writes the keyspace: runs inside a store transaction (its own, or its EXEC's or
    /// script's), whose writes become one log record.
    case keyspace(@Sendable (inout CommandCall, inout StoreTransaction) throws -> Void)
    /// A script (EVAL and its kin): runs on the script thread as exclusive work, inside a store
    /// transaction of its own or its EXEC's, whose writes become one log record.
    case script(@Sendable (inout CommandCall, inout StoreTransaction) throws -> Void)
    /// Everything else (connection state, server information, replication).
    case plain(@Sendable (inout CommandCall) throws -> CommandOutcome)
    /// A container (CONFIG, CLIENT, COMMAND …): dispatch goes on to a subcommand.
    case container
}

/// One entry of the command table. A class: every command's dispatch hands its entry around,
/// and a reference is one retain where the struct's copy was a dozen.
final class CommandSpec: @unchecked Sendable {
    /// Lower-case, as COMMAND INFO prints it (`get`, or `get` under `config` for `config|get`).
    let name: String
    /// Redis's convention: n means exactly n words (the name included), -n at least n.
    let arity: Int
    let flags: CommandFlags
    /// Key positions (first, last, step; last -1 means "to the end"; 0,0,0 for none).
    let firstKey: Int
    let lastKey: Int
    let keyStep: Int
    /// Redis's command group (`string`, `generic`, `server`, …) and ACL categories.
    let group: String
    let categories: [String]
    /// One line, as COMMAND DOCS gives it.
    let summary: String
    /// The Redis version that introduced it.
    let since: String
    let handler: CommandHandler
    /// Subcommands, by upper-case name.
    let subcommands: [String: CommandSpec]
    /// The container's name for a subcommand (`config`), nil for a top-level command.
    let container: String?
    /// A connection, pub/sub or transaction command: what CLIENT LIST shows of the connection may
    /// have changed after it (decided once, not per request).
    let changesClientInfo: Bool
    /// EXEC, DISCARD, MULTI, WATCH, QUIT, RESET: run at once inside MULTI, not queued (decided
    /// once, not per queued command).
    let runsInsideMulti: Bool
    /// Where this entry's counters are in `CommandStatistics` (set once the table is built).
    private(set) var statisticsSlot = -1

    /// Number the entries (the table's builder, once).
    func assignSlot(_ slot: Int) { self.statisticsSlot = slot }

    init(
        name: String, arity: Int, flags: CommandFlags, firstKey: Int, lastKey: Int, keyStep: Int, group: String,
        categories: [String], summary: String, since: String, handler: CommandHandler, subcommands: [String: CommandSpec],
        container: String?
    ) {
        self.name = name
        self.arity = arity
        self.flags = flags
        self.firstKey = firstKey
        self.lastKey = lastKey
        self.keyStep = keyStep
        self.group = group
        self.changesClientInfo = group == "connection" || group == "pubsub" || group == "transactions"
        self.runsInsideMulti = container == nil && ["exec", "discard", "multi", "watch", "quit", "reset"].contains(name)
        self.categories = categories
        self.summary = summary
        self.since = since
        self.handler = handler
        self.subcommands = subcommands
        self.container = container
    }

    /// EVAL and its kin.
    var isScript: Bool {
        if case .script = self.handler { return true }
        return false
    }

    /// `config|get` for a subcommand, else the name.
    var fullName: String { self.container.map { "\($0)|\(self.name)" } ?? self.name }

    /// Whether `count` words (the name, and the subcommand's, included) satisfy the arity.
    func accepts(wordCount count: Int) -> Bool {
        self.arity >= 0 ? count == self.arity : count >= -self.arity
    }

    /// The keys of a request (COMMAND GETKEYS, key extraction), from the key positions.
    func keys(in arguments: [ByteBuffer]) -> [ByteBuffer] {
        guard self.firstKey > 0, self.firstKey < arguments.count else { return [] }
        let last = self.lastKey < 0 ? arguments.count + self.lastKey : min(self.lastKey, arguments.count - 1)
        guard last >= self.firstKey else { return [] }
        return stride(from: self.firstKey, through: last, by: max(self.keyStep, 1)).map { arguments[$0] }
    }
}
