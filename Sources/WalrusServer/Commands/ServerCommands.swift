import NIOCore
import NIOPosix
import WALCore
import WalrusClient
import WalrusReplication
import WalrusStore
import WalrusProtocol
#if canImport(Glibc)
import Glibc
#endif

/// INFO, ROLE, WAIT, CONFIG, TIME, and walrus's own COMMIT and DIGEST.
enum ServerCommands {
    /// INFO [section …]
    @Sendable static func info(_ call: inout CommandCall) throws -> CommandOutcome {
        let sections = (1..<max(call.count, 1)).map { call.string($0) }
        call.bulk(ServerInfo.render(sections: sections, executor: call.executor))
        return .reply
    }

    /// ROLE
    @Sendable static func role(_ call: inout CommandCall) throws -> CommandOutcome {
        call.executor.writeRole(&call.out)
        return .reply
    }

    /// WAIT numreplicas timeout: how many followers hold every write made so far (this client's
    /// included) durably, once `numreplicas` do or `timeout` ms pass (0: no timeout). Inside a
    /// transaction it answers at once, as Redis's does.
    @Sendable static func wait(_ call: inout CommandCall) throws -> CommandOutcome {
        let needed = try call.integer(1)
        let timeout = try call.integer(2)
        guard timeout >= 0 else { throw CommandError("ERR timeout is negative") }
        guard let replication = call.executor.replication else {
            call.integer(reply: 0)
            return .reply
        }
        if replication.isFollower { throw CommandError("ERR WAIT cannot be used with replica instances.") }
        let index = call.executor.store.wal.lastIndex
        if call.inTransaction || needed <= 0 {
            call.integer(reply: replication.primary.durableCount(atLeast: index))
            return .reply
        }
        let allocator = call.allocator
        return .pending { completion in
            replication.primary.waitForReplicas(
                index: index, needed: Int(clamping: needed), timeoutMilliseconds: Int(clamping: timeout)
            ) { count, _ in
                var buffer = allocator.buffer(capacity: 16)
                buffer.writeIntegerReply(count)
                completion(buffer)
            }
        }
    }

    /// COMMIT (the original walrus's word): seal every write made so far, answer once durable.
    @Sendable static func commit(_ call: inout CommandCall) throws -> CommandOutcome {
        if call.inTransaction {
            // The transaction's own record is sealed before EXEC answers.
            call.ok()
            return .reply
        }
        let store = call.executor.store
        let allocator = call.allocator
        return .pending { completion in
            store.commit { error in
                var buffer = allocator.buffer(capacity: 64)
                if let error { buffer.writeErrorReply(CommandExecutor.clientMessage(StoreError(error))) } else {
                    buffer.writeStaticString("+OK\r\n")
                }
                completion(buffer)
            }
        }
    }

    /// DIGEST: an order-independent checksum of every key, value and deadline (walrus's own;
    /// equal on nodes that hold the same state).
    @Sendable static func digest(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        call.bulk(store.digest().digest)
    }

    /// TIME: [seconds, microseconds] of the server's clock.
    @Sendable static func time(_ call: inout CommandCall) throws -> CommandOutcome {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        call.array(2)
        call.bulk(String(now.tv_sec))
        call.bulk(String(now.tv_nsec / 1000))
        return .reply
    }

    /// LASTSAVE: when the newest snapshot was written (0 when there is none).
    @Sendable static func lastsave(_ call: inout CommandCall) throws -> CommandOutcome {
        call.integer(reply: call.executor.store.lastCheckpointSeconds)
        return .reply
    }

    // MARK: Persistence

    /// SAVE: a checkpoint now (walrus's snapshot, `walrusctl checkpoint`), answered when written.
    /// The log already holds every write durably; the snapshot shortens the next recovery.
    @Sendable static func save(_ call: inout CommandCall) throws -> CommandOutcome {
        let store = call.executor.store
        let allocator = call.allocator
        let background = call.executor.background
        return .pending { completion in
            background.run {
                let result = Result { try store.checkpointBlocking() }
                var buffer = allocator.buffer(capacity: 64)
                switch result {
                case .success: buffer.writeStaticString("+OK\r\n")
                case .failure(let error as StoreError) where error.code == .checkpointRunning:
                    buffer.writeErrorReply("ERR Background save already in progress")
                case .failure(let error): buffer.writeErrorReply(CommandExecutor.clientMessage(error))
                }
                completion(buffer)
            }
        }
    }

    /// BGSAVE [SCHEDULE]: a checkpoint in the background.
    @Sendable static func bgsave(_ call: inout CommandCall) throws -> CommandOutcome {
        if call.count > 2 || (call.count == 2 && !call.isOption(1, "SCHEDULE")) { throw CommandError.syntax }
        let store = call.executor.store
        guard !store.checkpointInProgress else { throw CommandError("ERR Background save already in progress") }
        let logger = call.executor.logger
        call.executor.background.run {
            do {
                try store.checkpointBlocking()
            } catch {
                logger.error("BGSAVE failed", metadata: ["store.error": "\(error)"])
            }
        }
        call.status("Background saving started")
        return .reply
    }

    /// SHUTDOWN [NOSAVE | SAVE] [NOW] [FORCE] [ABORT]: the daemon stops as on SIGTERM (clients
    /// drained, the log sealed); nothing is ever lost by NOSAVE, every write is in the log.
    @Sendable static func shutdown(_ call: inout CommandCall) throws -> CommandOutcome {
        var abort = false
        for index in 1..<max(call.count, 1) {
            if call.isOption(index, "ABORT") {
                abort = true
            } else if !(call.isOption(index, "NOSAVE") || call.isOption(index, "SAVE") || call.isOption(index, "NOW")
                || call.isOption(index, "FORCE"))
            {
                throw CommandError.syntax
            }
        }
        if abort { throw CommandError("ERR No shutdown in progress.") }
        guard let shutdown = call.executor.shutdown else {
            throw CommandError("ERR SHUTDOWN is not available in this process; stop walrusd with SIGTERM or systemctl stop")
        }
        call.executor.logger.notice("Shutting down on a client's SHUTDOWN")
        // A script running now stops, whatever it wrote (Redis's SHUTDOWN NOSAVE during a busy
        // script); none of its writes was acknowledged, and none is logged.
        call.executor.scripts.stopForShutdown()
        shutdown()
        call.ok()
        return .close
    }

    // MARK: CONFIG

    /// CONFIG GET pattern [pattern …]: walrus's keys under their names and Redis's.
    @Sendable static func configGet(_ call: inout CommandCall) throws -> CommandOutcome {
        let patterns = (2..<call.count).map { call.bytes($0) }
        let ports = call.executor.ports
        let pairs = call.executor.settings.matching(patterns, fsync: call.executor.store.wal.fsyncMode).map { name, value in
            // With port 0 in the settings, show what was bound.
            switch name {
            case "port" where ports.clientPort != 0: (name, String(ports.clientPort))
            case "repl-port" where ports.replicationPort != 0: (name, String(ports.replicationPort))
            case "metrics-port" where ports.metricsPort != 0: (name, String(ports.metricsPort))
            default: (name, value)
            }
        }
        call.map(pairs.count)
        for (name, value) in pairs {
            call.bulk(name)
            call.bulk(value)
        }
        return .reply
    }

    /// CONFIG SET name value [name value …]: live keys only, all or none.
    @Sendable static func configSet(_ call: inout CommandCall) throws -> CommandOutcome {
        guard (call.count - 2) % 2 == 0 else { throw call.arityError }
        let pairs = stride(from: 2, to: call.count, by: 2).map { (call.string($0), call.string($0 + 1)) }
        try call.executor.settings.set(pairs)
        call.ok()
        return .reply
    }

    /// CONFIG RESETSTAT: the INFO counters start over.
    @Sendable static func configResetStat(_ call: inout CommandCall) throws -> CommandOutcome {
        call.executor.statistics.reset()
        call.ok()
        return .reply
    }

    /// CONFIG HELP
    @Sendable static func configHelp(_ call: inout CommandCall) throws -> CommandOutcome {
        Self.help(
            &call, "CONFIG",
            [
                "GET <pattern>", "    Return parameters matching the glob-like <pattern> and their values.",
                "SET <directive> <value>", "    Set the configuration <directive> to <value>.", "RESETSTAT",
                "    Reset statistics reported by the INFO command.", "HELP", "    Print this help.",
            ])
        return .reply
    }

    /// The HELP subcommands' reply: a title line, the entries, the last line.
    static func help(_ call: inout CommandCall, _ command: String, _ lines: [String]) {
        call.array(lines.count + 1)
        call.status("\(command) <subcommand> [<arg> [value] [opt] ...]. Subcommands are:")
        for line in lines { call.status(line) }
    }

    // MARK: FUNCTION

    /// FUNCTION FLUSH [ASYNC | SYNC]: walrus keeps no function libraries (Redis 7's FUNCTION
    /// LOAD); there is nothing to delete.
    @Sendable static func functionFlush(_ call: inout CommandCall) throws -> CommandOutcome {
        if call.count > 3 || (call.count == 3 && !call.isOption(2, "ASYNC") && !call.isOption(2, "SYNC")) {
            throw CommandError("ERR FUNCTION FLUSH only supports SYNC|ASYNC option")
        }
        call.ok()
        return .reply
    }

    /// FUNCTION LIST [LIBRARYNAME pattern] [WITHCODE]: no libraries.
    @Sendable static func functionList(_ call: inout CommandCall) throws -> CommandOutcome {
        call.array(0)
        return .reply
    }

    /// FUNCTION LOAD: refused with what to use instead.
    @Sendable static func functionLoad(_ call: inout CommandCall) throws -> CommandOutcome {
        throw CommandError("ERR walrus does not keep function libraries (FUNCTION LOAD); run scripts with EVAL or EVALSHA instead")
    }
}

extension ServerCommands {
    /// REPLICAOF / SLAVEOF host port | NO ONE, as Sentinel and operators send it.
    ///
    /// `host port` names the primary's **client** port, as in Redis. walrus replicates over its
    /// own port: writes are refused from this command on, and this node asks `host:port` — off
    /// the event loop, one second at most — for INFO's `walrus_replication_port`, then follows
    /// that. `NO ONE` makes this node the primary of a new epoch: its primary, if reachable,
    /// hands over first (nothing it acknowledged is left behind); if not, this node promotes
    /// itself as Redis's does, even knowing it is behind (the records it lacks are logged).
    /// Outside MULTI the reply comes once the role changed; inside MULTI the change starts once
    /// the EXEC's transaction is done, as Sentinel's reconfiguration sends it.
    @Sendable static func replicaof(_ call: inout CommandCall) throws -> CommandOutcome {
        guard let replication = call.executor.replication else {
            throw CommandError("ERR REPLICAOF needs replication: this server was started without it")
        }
        let logger = call.executor.logger
        let allocator = call.allocator
        @Sendable func reply(_ result: Result<some Sendable, any Error>) -> ByteBuffer {
            var buffer = allocator.buffer(capacity: 64)
            switch result {
            case .success: buffer.writeStaticString("+OK\r\n")
            case .failure(let error as CommandError): buffer.writeErrorReply(error.message)
            case .failure(let error): buffer.writeErrorReply("ERR \(error)")
            }
            return buffer
        }
        if call.isOption(1, "NO") && call.isOption(2, "ONE") {
            if case .joining = replication.role {
                // A REPLICAOF host port still finding its target: this word comes last and wins
                // (the node never left its epoch; the join, when it completes, is refused).
                _ = try? replication.promote(force: true)
            }
            guard replication.isFollower else {
                call.ok()
                return .reply
            }
            // With the primary reachable it hands over (nothing it acknowledged is left behind);
            // otherwise this node promotes itself, as Redis's does. Either way a new epoch.
            let promoted: @Sendable (Result<PromoteReply, any Error>) -> Void = { result in
                switch result {
                case .success(let promotion):
                    logger.notice("Promoted by REPLICAOF NO ONE", metadata: ["repl.epoch": "\(promotion.epoch)"])
                case .failure(let error):
                    logger.error("REPLICAOF NO ONE failed", metadata: ["repl.error": "\(error)"])
                }
            }
            if call.inTransaction {
                // Sentinel's MULTI … EXEC: the EXEC answers at once; Sentinel watches INFO's role.
                call.session.afterTransaction.append { replication.promoteByHandover(completion: promoted) }
                call.ok()
                return .reply
            }
            return .pending { completion in
                replication.promoteByHandover { result in
                    promoted(result)
                    completion(reply(result))
                }
            }
        }
        let host = call.string(1)
        guard let port = call.withBytes(2, RedisNumbers.int64), (1...65535).contains(port) else {
            throw CommandError("ERR Invalid master port")
        }
        // Redis's answer when nothing changes (the link's CHALLENGE named the primary's client port).
        if case .following = replication.role, let link = replication.link, link.primaryHost == host, link.primaryClientPort == Int(port) {
            call.status("OK Already connected to specified master")
            return .reply
        }
        let security = replication.configuration.security
        let group = replication.group
        let probe: @Sendable () throws -> Int = {
            try Self.replicationPort(host: host, clientPort: Int(port), security: security, group: group)
        }
        let logged: @Sendable (Result<FollowReply, any Error>) -> Void = { result in
            if case .failure(let error) = result {
                logger.error("REPLICAOF failed", metadata: ["repl.primary": "\(host):\(port)", "repl.error": "\(error)"])
            }
        }
        if call.inTransaction {
            call.session.afterTransaction.append { replication.join(host: host, clientPort: Int(port), probe: probe, completion: logged) }
            call.ok()
            return .reply
        }
        // Writes are refused from now on; the answer comes once the primary was asked for its
        // replication port (off the event loop) and the link is starting.
        return .pending { completion in
            replication.join(host: host, clientPort: Int(port), probe: probe) { result in
                logged(result)
                completion(reply(result))
            }
        }
    }

    /// The replication port of the walrusd whose client port is `host:clientPort`.
    /// With TLS replication (`security`) it asks over TLS, as Redis's replica dials its master's
    /// TLS port: Sentinel names that port in REPLICAOF.
    private static func replicationPort(
        host: String, clientPort: Int, security: (any TransportSecurity)?, group: any EventLoopGroup
    ) throws -> Int {
        let reply: RESPValue
        do {
            if let security {
                reply = .bulk(try TLSProbe.info(host: host, port: clientPort, security: security, group: group))
            } else {
                let connection = try RESPConnection(host: host, port: clientPort, timeoutMilliseconds: 1000)
                reply = try connection.command("INFO", "server")
            }
        } catch {
            throw CommandError("ERR cannot reach \(host):\(clientPort) to learn its replication port (\(error)); is walrusd running there?")
        }
        guard case .bulk(let bytes?) = reply,
            let line = String(decoding: bytes, as: UTF8.self).split(separator: "\r\n").first(where: { $0.hasPrefix("walrus_replication_port:") }),
            let port = Int(line.dropFirst("walrus_replication_port:".count)), port > 0
        else {
            throw CommandError("ERR \(host):\(clientPort) is not a walrusd primary with replication (no walrus_replication_port in its INFO)")
        }
        return port
    }
}

extension ServerCommands {
    /// CONFIG REWRITE: the config file takes the settings in force and the node's role (`follow`
    /// names the primary it follows now, or goes), so that a restart keeps what Sentinel or an
    /// operator changed.
    ///
    /// Inside MULTI it runs after the EXEC's transaction, behind a REPLICAOF queued before it
    /// (Sentinel sends MULTI, SLAVEOF, CONFIG REWRITE, CLIENT KILL …, EXEC): the file gets the new role.
    @Sendable static func configRewrite(_ call: inout CommandCall) throws -> CommandOutcome {
        let executor = call.executor
        let rewrite: @Sendable () throws -> Void = {
            var follow: String?
            if let role = executor.replication?.role, case .following(let host, let port) = role {
                follow = DaemonAddress.format(host, port)
            }
            let flagged = try executor.settings.rewrite(follow: follow)
            if flagged.contains("follow") {
                executor.logger.warning(
                    "CONFIG REWRITE wrote the role to the config file, but a --follow flag still overrides it at the next start",
                    metadata: ["config.file": "\(executor.settings.configFile ?? "")"])
            }
        }
        if call.inTransaction {
            guard executor.settings.configFile != nil else { throw CommandError("ERR The server is running without a config file") }
            call.session.afterTransaction.append {
                let run: @Sendable () -> Void = {
                    do { try rewrite() } catch { executor.logger.error("CONFIG REWRITE failed", metadata: ["config.error": "\(error)"]) }
                }
                // After the role change a REPLICAOF queued before it started (it completes off the loop).
                if let replication = executor.replication { replication.afterRoleChanges(run) } else { run() }
            }
        } else {
            try rewrite()
        }
        call.ok()
        return .reply
    }
}
