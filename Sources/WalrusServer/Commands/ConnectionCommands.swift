import NIOCore
import WALCore
import WalrusStore

/// The connection commands: PING, ECHO, HELLO, SELECT, QUIT, RESET and CLIENT's own-connection
/// subcommands.
enum ConnectionCommands {
    /// PING [message]
    @Sendable static func ping(_ call: inout CommandCall) throws -> CommandOutcome {
        guard call.count <= 2 else { throw call.arityError }
        if call.session.inSubscribedMode {
            PubSubCommands.subscribedPing(&call)
        } else if call.count == 2 {
            call.bulk(call.bytes(1))
        } else {
            call.status("PONG")
        }
        return .reply
    }

    /// ECHO message
    @Sendable static func echo(_ call: inout CommandCall) throws -> CommandOutcome {
        call.bulk(call.bytes(1))
        return .reply
    }

    /// SELECT index: walrus has one database, 0 (as Redis with `databases 1`).
    @Sendable static func select(_ call: inout CommandCall) throws -> CommandOutcome {
        let index = try call.integer(1)
        guard index == 0 else { throw CommandError("ERR DB index is out of range") }
        call.ok()
        return .reply
    }

    /// QUIT: +OK, then the connection closes.
    @Sendable static func quit(_ call: inout CommandCall) throws -> CommandOutcome {
        call.ok()
        return .close
    }

    /// RESET: back to a fresh connection (no MULTI, no WATCH, RESP2, no name).
    @Sendable static func reset(_ call: inout CommandCall) throws -> CommandOutcome {
        let session = call.session
        session.endMulti()
        call.executor.store.unwatch(session.watch)
        PubSubCommands.unsubscribeAll(session, hub: call.executor.pubsub)
        session.protocolVersion = 2
        session.name = nil
        call.status("RESET")
        return .reply
    }

    /// HELLO [protover [AUTH username password] [SETNAME name]]
    @Sendable static func hello(_ call: inout CommandCall) throws -> CommandOutcome {
        var version = call.session.protocolVersion
        var name: String?
        if call.count >= 2 {
            guard let asked = try? call.integer(1) else {
                throw CommandError("ERR Protocol version is not an integer or out of range")
            }
            guard asked == 2 || asked == 3 else { throw CommandError("NOPROTO unsupported protocol version") }
            version = Int(asked)
            var index = 2
            while index < call.count {
                if call.isOption(index, "AUTH") && index + 2 < call.count {
                    // walrus has no users: the default user takes any password, as Redis's
                    // `nopass` default user does.
                    guard call.string(index + 1) == "default" else {
                        throw CommandError("WRONGPASS invalid username-password pair or user is disabled.")
                    }
                    index += 3
                } else if call.isOption(index, "SETNAME") && index + 1 < call.count {
                    name = try Self.validName(call, index + 1)
                    index += 2
                } else {
                    throw CommandError("ERR Syntax error in HELLO option '\(call.string(index))'")
                }
            }
        }
        call.session.protocolVersion = version
        if let name { call.session.name = name.isEmpty ? nil : name }
        let role = call.executor.replication?.isFollower == true ? "replica" : "master"
        call.map(7)
        call.bulk("server")
        call.bulk("redis")
        call.bulk("version")
        call.bulk(ServerInfo.redisVersion)
        call.bulk("proto")
        call.integer(reply: version)
        call.bulk("id")
        call.integer(reply: call.session.id)
        call.bulk("mode")
        call.bulk("standalone")
        call.bulk("role")
        call.bulk(role)
        call.bulk("modules")
        call.array(0)
        return .reply
    }

    /// A connection name: no spaces, newlines or other special characters (Redis's rule).
    static func validName(_ call: CommandCall, _ index: Int) throws -> String {
        let bytes = call.bytes(index)
        guard bytes.allSatisfy({ $0 > 32 && $0 < 127 }) else {
            throw CommandError("ERR Client names cannot contain spaces, newlines or special characters.")
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: CLIENT

    /// CLIENT ID
    @Sendable static func clientID(_ call: inout CommandCall) throws -> CommandOutcome {
        call.integer(reply: call.session.id)
        return .reply
    }

    /// CLIENT SETNAME name ("" clears it)
    @Sendable static func clientSetName(_ call: inout CommandCall) throws -> CommandOutcome {
        let name = try Self.validName(call, 2)
        call.session.name = name.isEmpty ? nil : name
        call.ok()
        return .reply
    }

    /// CLIENT GETNAME
    @Sendable static func clientGetName(_ call: inout CommandCall) throws -> CommandOutcome {
        if let name = call.session.name { call.bulk(name) } else { call.null() }
        return .reply
    }

    /// CLIENT SETINFO LIB-NAME name | LIB-VER version
    @Sendable static func clientSetInfo(_ call: inout CommandCall) throws -> CommandOutcome {
        let value = call.string(3)
        guard value.utf8.allSatisfy({ $0 > 32 && $0 < 127 }) else {
            throw CommandError("ERR \(call.string(2)) cannot contain spaces, newlines or special characters.")
        }
        if call.isOption(2, "LIB-NAME") {
            call.session.libraryName = value
        } else if call.isOption(2, "LIB-VER") {
            call.session.libraryVersion = value
        } else {
            throw CommandError("ERR Unrecognized option '\(call.string(2))'")
        }
        call.ok()
        return .reply
    }

    /// CLIENT NO-EVICT / NO-TOUCH on|off: accepted (walrus evicts nothing, tracks no access times).
    @Sendable static func clientOnOff(_ call: inout CommandCall) throws -> CommandOutcome {
        guard call.isOption(2, "ON") || call.isOption(2, "OFF") else { throw CommandError.syntax }
        call.ok()
        return .reply
    }

    /// CLIENT REPLY ON | OFF | SKIP: OFF silences this and every later reply, SKIP this one and
    /// the next; ON answers +OK. Pub/sub messages arrive either way (Redis's rules).
    @Sendable static func clientReply(_ call: inout CommandCall) throws -> CommandOutcome {
        let session = call.session
        if call.isOption(2, "ON") {
            session.repliesOff = false
            session.skipNextReply = false
            session.silenceCurrentReply = false
            call.ok()
        } else if call.isOption(2, "OFF") {
            session.repliesOff = true
        } else if call.isOption(2, "SKIP") {
            if !session.repliesOff {
                session.silenceCurrentReply = true
                session.skipNextReply = true
            }
        } else {
            throw CommandError.syntax
        }
        return .reply
    }

    /// CLIENT INFO: this connection, in CLIENT LIST's format.
    @Sendable static func clientInfo(_ call: inout CommandCall) throws -> CommandOutcome {
        let session = call.session
        call.bulk(
            "id=\(session.id) name=\(session.name ?? "") db=0 multi=\(session.queued.map { $0.count } ?? -1) "
                + "resp=\(session.protocolVersion) lib-name=\(session.libraryName ?? "") lib-ver=\(session.libraryVersion ?? "")\n")
        return .reply
    }
}

extension ConnectionCommands {
    private static func commandName(_ slot: Int) -> String {
        slot < CommandTable.allEntries.count ? CommandTable.allEntries[slot].fullName : "NULL"
    }

    /// CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id ...]: one line per connection.
    /// (Followers use the replication port, so no client here is of TYPE master or replica.)
    @Sendable static func clientList(_ call: inout CommandCall) throws -> CommandOutcome {
        var entries = call.executor.clients.all
        var index = 2
        while index < call.count {
            if call.isOption(index, "TYPE") && index + 1 < call.count {
                let type = call.upper(index + 1)
                switch type {
                case "NORMAL": entries = entries.filter { !$0.isSubscriber }
                case "PUBSUB": entries = entries.filter { $0.isSubscriber }
                case "MASTER", "REPLICA", "SLAVE": entries = []
                default: throw CommandError("ERR Unknown client type '\(call.string(index + 1))'")
                }
                index += 2
            } else if call.isOption(index, "ID") && index + 1 < call.count {
                var ids = Set<Int>()
                index += 1
                while index < call.count {
                    // (Zero and negative ids are accepted and match nobody, as on Redis.)
                    guard let id = call.withBytes(index, RedisNumbers.int64) else { throw CommandError("ERR Invalid client ID") }
                    ids.insert(Int(id))
                    index += 1
                }
                entries = entries.filter { ids.contains($0.id) }
            } else {
                throw CommandError.syntax
            }
        }
        let now = monotonicNanoseconds()
        call.bulk(entries.map { $0.line(now: now, commandName: Self.commandName) + "\n" }.joined())
        return .reply
    }

    /// CLIENT KILL ip:port, or CLIENT KILL [ID id] [TYPE type] [ADDR ip:port] [LADDR ip:port]
    /// [SKIPME yes|no] [USER name] (Redis 7.0's filters): closes the matching connections (each after
    /// the reply it is writing). The old form answers OK or "No such client"; the new one the
    /// number closed.
    @Sendable static func clientKill(_ call: inout CommandCall) throws -> CommandOutcome {
        let entries = call.executor.clients.all
        let me = call.session.id
        if call.count == 3 {
            let address = call.string(2)
            guard let entry = entries.first(where: { $0.address == address }) else { throw CommandError("ERR No such client") }
            entry.kill()
            call.ok()
            return .reply
        }
        guard call.count >= 4, call.count % 2 == 0 else { throw CommandError.syntax }
        var filters: [(ClientEntry) -> Bool] = []
        var skipMe = true
        for index in stride(from: 2, to: call.count, by: 2) {
            let value = call.string(index + 1)
            switch call.upper(index) {
            case "ID":
                guard let id = call.withBytes(index + 1, RedisNumbers.int64), id > 0 else {
                    throw CommandError("ERR client-id should be greater than 0")
                }
                filters.append { $0.id == Int(id) }
            case "TYPE":
                switch call.upper(index + 1) {
                case "NORMAL": filters.append { !$0.isSubscriber }
                case "PUBSUB": filters.append { $0.isSubscriber }
                case "MASTER", "REPLICA", "SLAVE": filters.append { _ in false }
                default: throw CommandError("ERR Unknown client type '\(value)'")
                }
            case "ADDR": filters.append { $0.address == value }
            case "LADDR": filters.append { $0.localAddress == value }
            case "USER":
                // One user, "default" (walrus has no ACLs).
                guard value == "default" else { throw CommandError("ERR No such user '\(value)'") }
            case "SKIPME":
                switch call.upper(index + 1) {
                case "YES": skipMe = true
                case "NO": skipMe = false
                default: throw CommandError.syntax
                }
            default:
                throw CommandError.syntax
            }
        }
        var killed = 0
        for entry in entries where !(skipMe && entry.id == me) && filters.allSatisfy({ $0(entry) }) {
            entry.kill()
            killed += 1
        }
        call.integer(reply: killed)
        return .reply
    }
}
