import NIOCore
import WalrusStore

/// EVAL, EVALSHA, EVAL_RO, EVALSHA_RO and SCRIPT, with Redis 7.0's semantics (eval.c): a
/// script's writes are one transaction, so one log record — followers and recovery apply
/// exactly what it wrote, and a kill -9 leaves all of them or none.
enum ScriptCommands {
    static let noScript = CommandError("NOSCRIPT No matching script. Please use EVAL.")

    /// EVAL script numkeys [key …] [arg …] and its kin. Runs on the script thread.
    static func eval(bySHA: Bool, readOnly: Bool) -> @Sendable (inout CommandCall, inout StoreTransaction) throws -> Void {
        { call, transaction in
            let engine = call.executor.scripts
            // EVALSHA of a word that is no SHA1 cannot match (Redis checks the length first).
            if bySHA && call.arguments[1].readableBytes != 40 { throw Self.noScript }
            let keyCount = try call.integer(2)
            if keyCount > Int64(call.count - 3) { throw CommandError("ERR Number of keys can't be greater than number of args") }
            if keyCount < 0 { throw CommandError("ERR Number of keys can't be negative") }
            let sha: String
            let script: CachedScript
            if bySHA {
                // Lower-cased as it is copied: one String, not two.
                sha = call.arguments[1].withUnsafeReadableBytes { bytes in
                    String(unsafeUninitializedCapacity: bytes.count) { out in
                        for (i, byte) in bytes.enumerated() { out[i] = byte >= 65 && byte <= 90 ? byte + 32 : byte }
                        return bytes.count
                    }
                }
                guard let cached = engine.cached(sha) else { throw Self.noScript }
                script = cached
            } else {
                let body = call.bytes(1)
                sha = body.withUnsafeBytes { ScriptEngine.sha1Hex($0) }
                if let cached = engine.cached(sha) {
                    script = cached
                } else {
                    script = try Self.compile(body, sha: sha, engine: engine)
                }
            }
            // A script that declares flags is checked before it runs (scriptPrepareForRun).
            if !script.flags.contains(.evalCompat) && !script.flags.contains(.noWrites) {
                if let refusal = call.executor.writeRefusal {
                    if call.executor.replication?.isFollower == true {
                        throw CommandError("READONLY Can not run script with write flag on readonly replica")
                    }
                    throw CommandError(refusal)
                }
                if readOnly { throw CommandError("ERR Can not execute a script with write flag using *_ro command.") }
            }
            let first = 3
            let split = first + Int(keyCount)
            try engine.execute(
                sha: sha, script: script, keys: call.arguments[first..<split], args: call.arguments[split...], readOnly: readOnly,
                call: &call, transaction: &transaction)
        }
    }

    /// Parse a new script's shebang and compile it (on the script thread); cached once it compiles.
    private static func compile(_ body: [UInt8], sha: String, engine: ScriptEngine) throws -> CachedScript {
        let (flags, shebang) = try ScriptFlags.parse(body).get()
        let script = CachedScript(body: body, flags: flags, shebangLength: shebang)
        if let error = engine.define(sha, script) { throw CommandError(error) }
        engine.remember(sha, script)
        return script
    }

    /// SCRIPT LOAD script: compiled on the script thread, its SHA1 answered.
    @Sendable static func load(_ call: inout CommandCall) throws -> CommandOutcome {
        let body = call.bytes(2)
        let engine = call.executor.scripts
        let allocator = call.allocator
        return .pending { completion in
            engine.submit {
                var out = allocator.buffer(capacity: 64)
                let sha = body.withUnsafeBytes { ScriptEngine.sha1Hex($0) }
                do {
                    if engine.cached(sha) == nil { _ = try Self.compile(body, sha: sha, engine: engine) }
                    out.writeBulkReply(sha)
                } catch {
                    out.writeErrorReply(CommandExecutor.commandError(error).message)
                }
                completion(out)
            }
        }
    }

    /// SCRIPT EXISTS sha [sha …]
    @Sendable static func exists(_ call: inout CommandCall) throws -> CommandOutcome {
        let engine = call.executor.scripts
        call.array(call.count - 2)
        for index in 2..<call.count { call.integer(reply: engine.cached(call.string(index).lowercased()) == nil ? 0 : 1) }
        return .reply
    }

    /// SCRIPT FLUSH [ASYNC | SYNC]: the cache emptied, a fresh Lua state.
    @Sendable static func flush(_ call: inout CommandCall) throws -> CommandOutcome {
        if call.count > 3 || (call.count == 3 && !call.isOption(2, "SYNC") && !call.isOption(2, "ASYNC")) {
            throw CommandError("ERR SCRIPT FLUSH only support SYNC|ASYNC option")
        }
        let engine = call.executor.scripts
        let allocator = call.allocator
        return .pending { completion in
            engine.submit {
                engine.flush()
                var out = allocator.buffer(capacity: 8)
                out.writeStaticString("+OK\r\n")
                completion(out)
            }
        }
    }

    /// SCRIPT KILL: stops a script that has not written; one that has runs to its end.
    @Sendable static func kill(_ call: inout CommandCall) throws -> CommandOutcome {
        switch call.executor.scripts.kill() {
        case .killed:
            call.ok()
        case .notBusy:
            throw CommandError("NOTBUSY No scripts in execution right now.")
        case .unkillable:
            throw CommandError(
                "UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the "
                    + "script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.")
        }
        return .reply
    }

    /// SCRIPT DEBUG: Redis's Lua debugger is not built.
    @Sendable static func debug(_ call: inout CommandCall) throws -> CommandOutcome {
        if call.isOption(2, "NO") {
            call.ok()
            return .reply
        }
        guard call.isOption(2, "YES") || call.isOption(2, "SYNC") else {
            throw CommandError("ERR Use SCRIPT DEBUG YES/SYNC/NO")
        }
        throw CommandError("ERR SCRIPT DEBUG is not available: walrus does not have Redis's Lua debugger (ldb)")
    }

    /// SCRIPT HELP
    @Sendable static func help(_ call: inout CommandCall) throws -> CommandOutcome {
        ServerCommands.help(
            &call, "SCRIPT",
            [
                "DEBUG (YES|SYNC|NO)", "    Set the debug mode for subsequent scripts executed (walrus: only NO).",
                "EXISTS <sha1> [<sha1> ...]", "    Return information about the existence of the scripts in the script cache.",
                "FLUSH [ASYNC|SYNC]", "    Flush the Lua scripts cache.", "KILL",
                "    Kill the currently executing Lua script.", "LOAD <script>",
                "    Load a script into the scripts cache without executing it.", "HELP", "    Print this help.",
            ])
        return .reply
    }
}
