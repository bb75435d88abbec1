import NIOCore

/// COMMAND and its subcommands, in Redis 7.0's reply shapes, from the command table.
enum IntrospectionCommands {
    /// COMMAND: every command's details.
    @Sendable static func command(_ call: inout CommandCall) throws -> CommandOutcome {
        call.array(CommandTable.commands.count)
        for spec in CommandTable.commands { Self.writeInfo(spec, &call) }
        return .reply
    }

    /// COMMAND COUNT
    @Sendable static func count(_ call: inout CommandCall) throws -> CommandOutcome {
        call.integer(reply: CommandTable.commands.count)
        return .reply
    }

    /// COMMAND INFO [name …]: null for names it does not know.
    @Sendable static func info(_ call: inout CommandCall) throws -> CommandOutcome {
        if call.count == 2 { return try Self.command(&call) }
        call.array(call.count - 2)
        for index in 2..<call.count {
            if let spec = CommandTable.lookup(call.string(index)) { Self.writeInfo(spec, &call) } else { call.nullArray() }
        }
        return .reply
    }

    /// COMMAND LIST [FILTERBY ACLCAT cat | PATTERN glob | MODULE name]
    @Sendable static func list(_ call: inout CommandCall) throws -> CommandOutcome {
        var names = CommandTable.commands.flatMap { spec in [spec.name] + spec.subcommands.values.map(\.fullName).sorted() }
        if call.count > 2 {
            guard call.count == 5, call.isOption(2, "FILTERBY") else { throw CommandError.syntax }
            let value = call.string(4).lowercased()
            if call.isOption(3, "PATTERN") {
                names = names.filter { Array($0.utf8).withUnsafeBytes { GlobPattern.matches(Array(value.utf8), $0) } }
            } else if call.isOption(3, "ACLCAT") {
                names = names.filter { CommandTable.lookup($0)?.categories.contains("@" + value) ?? false }
            } else if call.isOption(3, "MODULE") {
                names = []
            } else {
                throw CommandError.syntax
            }
        }
        call.array(names.count)
        for name in names { call.bulk(name) }
        return .reply
    }

    /// COMMAND DOCS [name …]: summary, since and group per command (redis-cli's hints).
    @Sendable static func docs(_ call: inout CommandCall) throws -> CommandOutcome {
        let specs =
            call.count == 2 ? CommandTable.commands : (2..<call.count).compactMap { CommandTable.lookup(call.string($0)) }
        call.map(specs.count)
        for spec in specs {
            call.bulk(spec.fullName)
            Self.writeDocs(spec, &call)
        }
        return .reply
    }

    /// COMMAND GETKEYS command [arg …]: the keys the command would touch.
    @Sendable static func getkeys(_ call: inout CommandCall) throws -> CommandOutcome {
        let request = Array(call.arguments.dropFirst(2))
        guard case .success(let spec) = CommandTable.resolve(request) else {
            if CommandTable.lookup(call.string(2)) == nil { throw CommandError("ERR Invalid command specified") }
            throw CommandError("ERR Invalid number of arguments specified for command")
        }
        let keys = spec.keys(in: request)
        guard !keys.isEmpty else { throw CommandError("ERR The command has no key arguments") }
        call.array(keys.count)
        for key in keys { call.bulk(Array(key.readableBytesView)) }
        return .reply
    }

    /// One command's COMMAND INFO array: name, arity, flags, first/last key and step, ACL
    /// categories, tips, key specs, subcommands.
    static func writeInfo(_ spec: CommandSpec, _ call: inout CommandCall) {
        call.array(10)
        call.bulk(spec.fullName)
        call.integer(reply: spec.arity)
        let flags = CommandFlags.names.filter { spec.flags.contains($0.0) }.map(\.1)
        call.array(flags.count)
        for flag in flags { call.status(flag) }
        call.integer(reply: spec.firstKey)
        call.integer(reply: spec.lastKey)
        call.integer(reply: spec.keyStep)
        call.array(spec.categories.count)
        for category in spec.categories { call.status(category) }
        call.array(0)
        if spec.firstKey > 0 {
            call.array(1)
            call.map(3)
            call.bulk("flags")
            let access = spec.flags.contains(.write) ? ["RW", "UPDATE"] : ["RO", "ACCESS"]
            call.array(access.count)
            for flag in access { call.status(flag) }
            call.bulk("begin_search")
            call.map(2)
            call.bulk("type")
            call.bulk("index")
            call.bulk("spec")
            call.map(1)
            call.bulk("index")
            call.integer(reply: spec.firstKey)
            call.bulk("find_keys")
            call.map(2)
            call.bulk("type")
            call.bulk("range")
            call.bulk("spec")
            call.map(3)
            call.bulk("lastkey")
            call.integer(reply: spec.lastKey < 0 ? spec.lastKey : spec.lastKey - spec.firstKey)
            call.bulk("keystep")
            call.integer(reply: spec.keyStep)
            call.bulk("limit")
            call.integer(reply: 0)
        } else {
            call.array(0)
        }
        let subcommands = spec.subcommands.values.sorted { $0.name < $1.name }
        call.array(subcommands.count)
        for sub in subcommands { Self.writeInfo(sub, &call) }
    }

    static func writeDocs(_ spec: CommandSpec, _ call: inout CommandCall) {
        let subcommands = spec.subcommands.values.sorted { $0.name < $1.name }
        call.map(subcommands.isEmpty ? 3 : 4)
        call.bulk("summary")
        call.bulk(spec.summary)
        call.bulk("since")
        call.bulk(spec.since)
        call.bulk("group")
        call.bulk(spec.group)
        if !subcommands.isEmpty {
            call.bulk("subcommands")
            call.map(subcommands.count)
            for sub in subcommands {
                call.bulk(sub.fullName)
                Self.writeDocs(sub, &call)
            }
        }
    }
}
