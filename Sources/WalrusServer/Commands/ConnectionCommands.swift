import NIOCore
import WalrusStore

/// The connection commands: PING, ECHO, HELLO, SELECT, QUIT, RESET and CLIENT's own-connection
/// subcommands.
enum ConnectionCommands {
    /// PING [message]
    @Sendable static func ping(_ call: inout CommandCall) throws -> CommandOutcome {
        guard call.count <= 2 else { throw call.arityError }
        if call.count == 2 { call.bulk(call.bytes(1)) } else { call.status("PONG") }
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

    /// CLIENT REPLY ON (OFF and SKIP are not supported: every command is answered).
    @Sendable static func clientReply(_ call: inout CommandCall) throws -> CommandOutcome {
        guard call.isOption(2, "ON") else {
            guard call.isOption(2, "OFF") || call.isOption(2, "SKIP") else { throw CommandError.syntax }
            throw CommandError("ERR CLIENT REPLY OFF and SKIP are not supported by walrus; every command is answered")
        }
        call.ok()
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
