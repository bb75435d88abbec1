import Logging
import NIOCore
import WALCore
import WalrusProtocol
import WalrusReplication
import WalrusStore
#if canImport(Glibc)
import Glibc
#endif

/// Runs RESP commands against the store, by the command table: arity, the follower's READONLY
/// refusal and MULTI's queueing rules are checked here, from each command's entry, before its
/// handler runs. Reads answer at once; a write answers once it is as durable as the fsync mode
/// (and `sync-replicas`) promise, through `completion`, from the log's flusher thread.
final class CommandExecutor: Sendable {
    enum Outcome {
        /// The reply is ready.
        case reply(ByteBuffer)
        /// The reply is ready and the connection closes after it (QUIT).
        case replyAndClose(ByteBuffer)
        /// `completion` will be called with the reply.
        case pending
        /// The reply is ready but goes out only once the log is durable through its write: the
        /// caller asked to seal a read's writes with one commit (`batchCommits`).
        case replyAfterCommit(ByteBuffer)
    }

    let store: KeyValueStore
    let statistics: ServerStatistics
    let server: ServerConfiguration
    let logger: Logger
    let replication: ReplicationNode?
    /// The ports bound by the listeners (with `port = 0`, INFO and CONFIG GET show the real one).
    let ports: ListenerPorts
    let settings: ServerSettings
    /// INFO, ROLE and CONFIG read the node's state from here.
    let status: NodeStatusSource
    /// Stops the daemon as SIGTERM does (SHUTDOWN); nil where the process is not a daemon.
    let shutdown: (@Sendable () -> Void)?
    /// Where SAVE and BGSAVE write their snapshot (never an event loop).
    let background: BackgroundWork
    /// EVAL, EVALSHA and SCRIPT: the node's Lua state, script cache and script thread.
    let scripts: ScriptEngine
    /// Channels, patterns and their subscribers.
    let pubsub = PubSubHub()
    /// Every client connection (CLIENT LIST, CLIENT KILL).
    let clients = ClientRegistry()
    /// notify-keyspace-events.
    let keyspaceEvents: KeyspaceEvents
    let alwaysMode: Bool
    /// Each event loop's end-of-pass seal, in `always` mode.
    let sealers = LoopSealers()

    init(
        store: KeyValueStore, statistics: ServerStatistics, server: ServerConfiguration, logger: Logger,
        replication: ReplicationNode?, ports: ListenerPorts, settings: ServerSettings, status: NodeStatusSource,
        background: BackgroundWork, shutdown: (@Sendable () -> Void)? = nil
    ) {
        self.shutdown = shutdown
        self.background = background
        self.store = store
        self.statistics = statistics
        self.server = server
        self.logger = logger
        self.replication = replication
        self.ports = ports
        self.settings = settings
        self.status = status
        self.alwaysMode = store.configuration.wal.fsyncMode == .always
        self.keyspaceEvents = KeyspaceEvents(hub: self.pubsub, settings: settings, store: store)
        // Read at every script: cached until the settings change.
        let cached = LockedValue((generation: -1, busy: 0, memory: 0))
        self.scripts = ScriptEngine(store: store, logger: logger, version: ServerInfo.redisVersion) { [settings] in
            let generation = settings.generation
            return cached.withLock { cache in
                if cache.generation != generation {
                    let snapshot = settings.snapshot
                    cache = (generation, snapshot.busyReplyThreshold, snapshot.scriptMemoryBytes)
                }
                return (cache.busy, cache.memory)
            }
        }
    }

    /// Why writes are refused now (a follower, a fenced or paused primary), if they are.
    var writeRefusal: String? { self.replication?.writeRefusal }

    /// Whether a read that finds an expired key deletes it: only a primary that takes writes.
    var expiresKeys: Bool { self.writeRefusal == nil }

    /// Whether acknowledgements wait for followers (`sync-replicas` on a primary).
    var waitsForFollowers: Bool {
        guard let replication = self.replication else { return false }
        return replication.configuration.syncReplicas > 0 && !replication.isFollower
    }

    // MARK: Dispatch

    /// Run one command. The caller holds the store's gate (`ExclusiveGate.enter`), or knows no
    /// event loop shares the store. A script (or an EXEC holding one) answers `.pending`, runs
    /// on the script thread, calls `resumed` once it has run (the connection's next commands
    /// must see what it wrote) — with its reply when that is ready too, so one hop back to the
    /// event loop carries both — and otherwise `completion` with the reply once it is as
    /// durable as promised.
    func execute(
        _ command: RESPCommand, session: ClientSession, allocator: ByteBufferAllocator, insideGate: Bool = false,
        batchCommits: Bool = false, out reuse: consuming ByteBuffer? = nil, resumed: (@Sendable (ByteBuffer?) -> Void)? = nil,
        completion: @escaping @Sendable (ByteBuffer) -> Void
    ) -> Outcome {
        let arguments = command.arguments
        // An empty buffer of the caller's (the last reply's, kept), or a new one. Taken, not
        // borrowed: a borrowed one stays referenced by the caller's argument for the whole call,
        // so the command's first write into it copied it (an allocation and a copy per reply).
        var out: ByteBuffer
        if let kept = reuse.take() { out = kept } else { out = allocator.buffer(capacity: 64) }
        let spec: CommandSpec
        switch CommandTable.resolve(arguments) {
        case .failure(let error):
            // A command refused before it runs fails the MULTI it was sent in (EXECABORT).
            if session.inMulti { session.queueFailed = true }
            if let known = CommandTable.lookup(CommandTable.upper(arguments[0])) { self.statistics.commands.rejected(known) }
            out.writeErrorReply(error.message)
            self.statistics.countError(out)
            return .reply(out)
        case .success(let found):
            spec = found
        }
        if let entry = session.entry { entry.lastCommandSlot.store(spec.statisticsSlot, ordering: .relaxed) }
        if session.inSubscribedMode && !CommandTable.allowedWhileSubscribed(spec) {
            self.statistics.commands.rejected(spec)
            out.writeErrorReply(
                "ERR Can't execute '\(spec.fullName)': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context")
            self.statistics.countError(out)
            return .reply(out)
        }
        if session.inMulti && !CommandTable.runsInsideMulti(spec) {
            if let refusal = self.queueRefusal(spec) {
                session.queueFailed = true
                self.statistics.commands.rejected(spec)
                out.writeErrorReply(refusal)
                self.statistics.countError(out)
                return .reply(out)
            }
            session.queued!.append(QueuedCommand(spec: spec, arguments: arguments))
            out.writeStaticString("+QUEUED\r\n")
            return .reply(out)
        }
        if spec.flags.contains(.write), let refusal = self.writeRefusal {
            self.statistics.commands.rejected(spec)
            out.writeErrorReply(refusal)
            self.statistics.countError(out)
            return .reply(out)
        }
        let started = monotonicNanoseconds()
        // The reply buffer moves into the call (`consume`): a second reference to it would make
        // the command's first write copy it.
        let outcome = self.run(
            spec, arguments: arguments, out: consume out, session: session, allocator: allocator, insideGate: insideGate,
            batchCommits: batchCommits, resumed: resumed, completion: completion)
        let failed: Bool
        switch outcome {
        case .reply(let buffer), .replyAndClose(let buffer), .replyAfterCommit(let buffer):
            failed = buffer.readableBytesView.first == UInt8(ascii: "-")
            // A script's error is counted where it arose (a command's inside, or the script's own).
            if failed, !spec.isScript { self.statistics.countError(buffer) }
        case .pending: failed = false
        }
        self.statistics.commands.record(spec, nanoseconds: monotonicNanoseconds() - started, failed: failed)
        if !session.afterTransaction.isEmpty {
            let work = session.afterTransaction
            session.afterTransaction = []
            for item in work { item() }
        }
        // What other connections' CLIENT LIST shows of this one may have changed.
        if spec.changesClientInfo, let entry = session.entry {
            entry.refresh(from: session)
        }
        return outcome
    }

    private func run(
        _ spec: CommandSpec, arguments: [ByteBuffer], out: consuming ByteBuffer, session: ClientSession, allocator: ByteBufferAllocator,
        insideGate: Bool, batchCommits: Bool, resumed: (@Sendable (ByteBuffer?) -> Void)?,
        completion: @escaping @Sendable (ByteBuffer) -> Void
    ) -> Outcome {
        var call = CommandCall(
            spec: spec, arguments: arguments, out: consume out, session: session, executor: self, allocator: allocator,
            inTransaction: false)
        switch spec.handler {
        case .keyspace(let handler):
            // An EXEC that holds a script runs where scripts run, as one piece of exclusive work.
            // (The flag first: a String comparison per command costs a runtime call.)
            if spec.runsInsideMulti, spec.name == "exec", let queued = session.queued,
                queued.contains(where: { if case .script = $0.spec.handler { return true } else { return false } })
            {
                return self.runExclusive(handler, call: call, resumed: resumed, completion: completion)
            }
            return self.runKeyspace(handler, call: &call, batchCommits: batchCommits, completion: completion)
        case .script(let handler):
            // Most scripts take microseconds: run here, on the event loop, unless it outlasts
            // the inline budget — then it runs again on the script thread (see runInline).
            if insideGate, let outcome = self.runInline(handler, call: &call, batchCommits: batchCommits, completion: completion) {
                return outcome
            }
            return self.runExclusive(handler, call: call, resumed: resumed, completion: completion)
        case .plain(let handler):
            do {
                switch try handler(&call) {
                case .reply: return .reply(call.out)
                case .close: return .replyAndClose(call.out)
                case .pending(let start):
                    start { [statistics] reply in
                        statistics.countError(reply)
                        completion(reply)
                    }
                    return .pending
                }
            } catch {
                return .reply(Self.errorReply(error, allocator: allocator))
            }
        case .container:
            preconditionFailure("CommandTable.resolve returns subcommands, never a container")
        }
    }

    /// Why `spec` may not be queued in a MULTI, if it may not.
    private func queueRefusal(_ spec: CommandSpec) -> String? {
        if spec.flags.contains(.noMulti) { return "ERR Command not allowed inside a transaction" }
        if spec.flags.contains(.write), let refusal = self.writeRefusal { return refusal }
        return nil
    }

    /// A keyspace command in a transaction of its own: one record if it writes. Unless the
    /// command is read-only, its reply waits for the durability a write promises once it has
    /// written (EXEC and scripts wait when their commands wrote). A read that deleted an expired
    /// key answers at once: whatever happens to that delete, the key reads as gone.
    private func runKeyspace(
        _ handler: @Sendable (inout CommandCall, inout StoreTransaction) throws -> Void, call: inout CommandCall,
        batchCommits: Bool, completion: @escaping @Sendable (ByteBuffer) -> Void
    ) -> Outcome {
        let waits = !call.spec.flags.contains(.readonly) && (self.alwaysMode || self.waitsForFollowers)
        // The connection seals its read's writes with one commit: no callback per write. (Not
        // with sync-replicas, which waits for each write's index on the followers.)
        if waits && batchCommits && !self.waitsForFollowers {
            do {
                let index = try self.store.perform(expiresKeys: self.expiresKeys) { transaction in try handler(&call, &transaction) }
                return index == nil ? .reply(call.out) : .replyAfterCommit(call.out)
            } catch {
                if let storeError = error as? StoreError, storeError.code == .tooLarge {
                    self.logger.notice("Refused a write over a limit", metadata: ["limit.error": "\(storeError.message)"])
                }
                return .reply(Self.errorReply(error, allocator: call.allocator))
            }
        }
        let pending = waits ? WriteCompletion(executor: self, allocator: call.allocator, completion: completion) : nil
        let index: UInt64?
        do {
            index = try self.store.perform(expiresKeys: self.expiresKeys, onDurable: pending.map { $0.sealed }) { transaction in
                try handler(&call, &transaction)
            }
        } catch {
            pending?.abandon()
            if let storeError = error as? StoreError, storeError.code == .tooLarge {
                self.logger.notice("Refused a write over a limit", metadata: ["limit.error": "\(storeError.message)"])
            }
            return .reply(Self.errorReply(error, allocator: call.allocator))
        }
        guard let pending else { return .reply(call.out) }
        if let ready = pending.ran(reply: call.out, index: index) { return .reply(ready) }
        return .pending
    }

    /// A script run inline: the caller (an event loop inside the gate) upgrades to exclusive
    /// for the run; nil when it cannot (other exclusive work is under way) or when the script
    /// outlasted `ScriptEngine.inlineBudgetNanoseconds` — then nothing of this run was applied
    /// or logged, and the caller hands it to the script thread.
    private func runInline(
        _ handler: @Sendable (inout CommandCall, inout StoreTransaction) throws -> Void, call: inout CommandCall,
        batchCommits: Bool, completion: @escaping @Sendable (ByteBuffer) -> Void
    ) -> Outcome? {
        guard self.scripts.beginInline() else { return nil }
        defer { self.scripts.endInline() }
        call.inlineScript = true
        defer { call.inlineScript = false }
        let mark = call.out.writerIndex
        let waits = !call.spec.flags.contains(.readonly) && (self.alwaysMode || self.waitsForFollowers)
        let batched = waits && batchCommits && !self.waitsForFollowers
        let pending =
            waits && !batched
            ? WriteCompletion(executor: self, allocator: call.allocator, countsErrors: !call.spec.isScript, completion: completion) : nil
        let index: UInt64?
        do {
            index = try self.store.perform(expiresKeys: self.expiresKeys, onDurable: pending.map { $0.sealed }) { transaction in
                try handler(&call, &transaction)
            }
        } catch is ScriptEngine.InlineAbort {
            pending?.abandon()
            call.out.moveWriterIndex(to: mark)
            return nil
        } catch {
            pending?.abandon()
            let reply = Self.errorReply(error, allocator: call.allocator)
            self.statistics.countError(reply)
            return .reply(reply)
        }
        if batched { return index == nil ? .reply(call.out) : .replyAfterCommit(call.out) }
        guard let pending else { return .reply(call.out) }
        if let ready = pending.ran(reply: call.out, index: index) { return .reply(ready) }
        return .pending
    }

    /// A script, or an EXEC holding one: on the script thread with the store's gate closed, in
    /// one transaction (one record). `resumed` is called once it has run, `completion` with the
    /// reply once durable.
    private func runExclusive(
        _ handler: @escaping @Sendable (inout CommandCall, inout StoreTransaction) throws -> Void, call: CommandCall,
        resumed: (@Sendable (ByteBuffer?) -> Void)?, completion: @escaping @Sendable (ByteBuffer) -> Void
    ) -> Outcome {
        let waits = !call.spec.flags.contains(.readonly) && (self.alwaysMode || self.waitsForFollowers)
        let pending = waits ? WriteCompletion(executor: self, allocator: call.allocator, countsErrors: !call.spec.isScript, completion: completion) : nil
        let expiresKeys = self.expiresKeys
        // The call (and its session) is handed to the script thread; the connection waits for
        // `resumed` before it touches its session again.
        call.session.awaitingScript = true
        nonisolated(unsafe) let job = call
        self.scripts.exclusive { [self] in
            var call = job
            var index: UInt64?
            var failure: ByteBuffer?
            do {
                index = try self.store.perform(expiresKeys: expiresKeys, onDurable: pending.map { $0.sealed }) { transaction in
                    try handler(&call, &transaction)
                }
            } catch {
                pending?.abandon()
                failure = Self.errorReply(error, allocator: call.allocator)
                self.statistics.countError(failure!)
            }
            let ready: ByteBuffer?
            if let failure {
                ready = failure
            } else if let pending {
                ready = pending.ran(reply: call.out, index: index)
            } else {
                ready = call.out
            }
            self.scripts.scriptEnded()
            if let resumed { return resumed(ready) }
            if let ready { completion(ready) }
        }
        return .pending
    }

    /// What to do with a command that arrives while a script (exclusive work) runs.
    enum ExclusiveOutcome {
        /// Answered (-BUSY, an error, or a command that may run meanwhile).
        case done(Outcome)
        /// Wait: until the script passes the busy threshold or ends, or (`untilEnd`) until it ends.
        case park(untilEnd: Bool)
    }

    /// Redis's rules while a script is busy (processCommand): nothing runs until it passes
    /// `busy-reply-threshold`; past it, commands answer -BUSY except SCRIPT KILL, SHUTDOWN and
    /// the connection's own bookkeeping (MULTI, HELLO, QUIT; WATCH, UNWATCH, DISCARD and RESET,
    /// which touch the store, wait for the end). A refused command fails its MULTI; a refused
    /// EXEC aborts it. The caller could not enter the store's gate.
    func executeWhileExclusive(
        _ command: RESPCommand, session: ClientSession, allocator: ByteBufferAllocator,
        completion: @escaping @Sendable (ByteBuffer) -> Void
    ) -> ExclusiveOutcome {
        guard case .success(let spec) = CommandTable.resolve(command.arguments) else {
            // Unknown commands and arity errors answer at once, as on Redis.
            return .done(self.execute(command, session: session, allocator: allocator, completion: completion))
        }
        guard self.scripts.timedOut else { return .park(untilEnd: false) }
        if spec.flags.contains(.allowBusy) {
            if case .plain = spec.handler, spec.name != "reset" {
                return .done(self.execute(command, session: session, allocator: allocator, completion: completion))
            }
            return .park(untilEnd: true)
        }
        self.statistics.commands.rejected(spec)
        let busy = "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
        var out = allocator.buffer(capacity: 128)
        if spec.name == "exec" && spec.container == nil && session.inMulti {
            session.endMulti()
            session.unwatchPending = true
            out.writeErrorReply("EXECABORT Transaction discarded because of: " + busy)
        } else {
            if session.inMulti { session.queueFailed = true }
            out.writeErrorReply(busy)
        }
        self.statistics.countError(out)
        return .done(.reply(out))
    }

    /// One command inside EXEC or a script: its reply (or its error, which fails it alone)
    /// goes into `call.out`; its writes join the enclosing transaction.
    func runInside(_ call: inout CommandCall, transaction: inout StoreTransaction) {
        let mark = call.out.writerIndex
        do {
            switch call.spec.handler {
            case .keyspace(let handler), .script(let handler):
                // (A script here runs inside its EXEC, which is on the script thread already.)
                try handler(&call, &transaction)
            case .plain(let handler):
                switch try handler(&call) {
                case .reply, .close: break
                case .pending:
                    // A blocking command inside a transaction answers at once (its handler saw
                    // `inTransaction`); nothing may wait here.
                    break
                }
            case .container:
                break
            }
        } catch {
            call.out.moveWriterIndex(to: mark)
            call.out.writeErrorReply(Self.commandError(error).message)
            self.statistics.countError(call.out.getSlice(at: mark, length: call.out.writerIndex - mark) ?? call.out)
        }
    }

    // MARK: Errors

    /// A thrown error as Redis words it.
    static func commandError(_ error: any Error) -> CommandError {
        if let command = error as? CommandError { return command }
        return CommandError(Self.clientMessage(error))
    }

    static func errorReply(_ error: any Error, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 64)
        buffer.writeErrorReply(Self.commandError(error).message)
        return buffer
    }

    /// One line an operator can act on, with a Redis-style error code.
    static func clientMessage(_ error: any Error) -> String {
        if let store = error as? StoreError {
            if let wal = store.walError {
                switch wal.code {
                case .diskFull: return "MISCONF " + wal.message
                case .failed: return "MISCONF " + wal.message
                case .closed: return "ERR the server is shutting down; retry against the new process"
                default: return "ERR " + wal.message
                }
            }
            return "ERR " + store.message
        }
        if let command = error as? CommandError { return command.message }
        return "ERR \(error)"
    }
}

/// A write's acknowledgement: released once the reply is rendered, the record's index known and
/// its seal reported — and, with `sync-replicas`, once enough followers hold it. The seal may
/// come first (interval mode calls back inside the append), so whichever arrives last goes on.
final class WriteCompletion: Sendable {
    private struct State {
        var reply: ByteBuffer?
        var index: UInt64?
        var hasRun = false
        var seal: WALError??
        /// The executor has not returned yet: a result now is returned, not sent.
        var inline = true
        var inlineResult: ByteBuffer?
        var finished = false
    }

    private let state = LockedValue(State())
    private let executor: CommandExecutor
    private let allocator: ByteBufferAllocator
    private let completion: @Sendable (ByteBuffer) -> Void
    /// Count an error reply in INFO errorstats (a script's errors are counted where they arise).
    private let countsErrors: Bool

    init(
        executor: CommandExecutor, allocator: ByteBufferAllocator, countsErrors: Bool = true,
        completion: @escaping @Sendable (ByteBuffer) -> Void
    ) {
        self.countsErrors = countsErrors
        self.executor = executor
        self.allocator = allocator
        self.completion = completion
    }

    /// The log's seal callback (flusher thread, or inline).
    var sealed: WriteAheadLog.SealCallback {
        { [self] error in
            self.state.withLock { $0.seal = .some(error) }
            self.advance()
        }
    }

    /// The handler ran: its reply and record index (nil: it wrote nothing). Returns the reply
    /// to send at once if everything is already known.
    func ran(reply: ByteBuffer, index: UInt64?) -> ByteBuffer? {
        self.state.withLock { state in
            state.reply = reply
            state.index = index
            state.hasRun = true
            // Nothing written: nothing to wait for (the log calls back at once then, too).
            if index == nil && state.seal == nil { state.seal = .some(nil) }
        }
        self.advance()
        return self.state.withLock { state in
            state.inline = false
            return state.inlineResult
        }
    }

    /// The write failed before it was logged: no callback will come.
    func abandon() { self.state.withLock { $0.finished = true } }

    private func advance() {
        let allocator = self.allocator
        let step: (ByteBuffer, UInt64?)? = self.state.withLock { state in
            guard !state.finished, state.hasRun, let seal = state.seal, let reply = state.reply else { return nil }
            state.finished = true
            if let error = seal {
                var buffer = allocator.buffer(capacity: 128)
                buffer.writeErrorReply(CommandExecutor.clientMessage(StoreError(error)))
                return (buffer, nil)
            }
            return (reply, state.index)
        }
        guard let (buffer, index) = step else { return }
        guard let index, index > 0, self.executor.waitsForFollowers, let replication = self.executor.replication else {
            return self.deliver(buffer)
        }
        let needed = replication.configuration.syncReplicas
        let timeout = replication.configuration.syncTimeoutMilliseconds
        replication.primary.waitForReplicas(index: index, needed: needed, timeoutMilliseconds: timeout) { count, timedOut in
            guard timedOut && count < needed else { return self.deliver(buffer) }
            var refusal = allocator.buffer(capacity: 256)
            refusal.writeErrorReply(
                "NOREPLICAS Not enough good replicas to write: \(count) of \(needed) follower(s) reported record "
                    + "\(index) durable within \(timeout) ms (sync-replicas). The write is NOT acknowledged, but it "
                    + "is in the primary's log and reaches the followers when they catch up; see 'walrusctl replicas'.")
            self.deliver(refusal)
        }
    }

    private func deliver(_ buffer: ByteBuffer) {
        let now = self.state.withLock { state -> Bool in
            if state.inline {
                state.inlineResult = buffer
                return false
            }
            return true
        }
        if now {
            if self.countsErrors { self.executor.statistics.countError(buffer) }
            self.completion(buffer)
        }
    }
}

/// The sealer of each event loop, made on first use.
final class LoopSealers: Sendable {
    private let sealers = LockedValue<[ObjectIdentifier: LoopCommits]>([:])

    func commits(
        for loop: any EventLoop, store: KeyValueStore, settings: ServerSettings, statistics: ServerStatistics
    ) -> LoopCommits {
        self.sealers.withLock { sealers in
            let key = ObjectIdentifier(loop as AnyObject)
            if let commits = sealers[key] { return commits }
            let commits = LoopCommits(loop: loop, store: store, settings: settings, statistics: statistics)
            sealers[key] = commits
            return commits
        }
    }
}
