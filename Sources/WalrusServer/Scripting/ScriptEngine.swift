import CCrypto
import CLuaBridge
import Logging
import NIOCore
import WALCore
import WalrusStore

/// What a script declares in its first line (`#!lua flags=no-writes,allow-stale`), Redis 7's
/// script flags. A script without a shebang runs in compatibility mode (`evalCompat`): it may
/// write, and each of its commands is checked as it runs.
struct ScriptFlags: OptionSet, Sendable {
    let rawValue: UInt8
    static let evalCompat = ScriptFlags(rawValue: 1 << 0)
    static let noWrites = ScriptFlags(rawValue: 1 << 1)
    static let allowOOM = ScriptFlags(rawValue: 1 << 2)
    static let allowStale = ScriptFlags(rawValue: 1 << 3)
    static let noCluster = ScriptFlags(rawValue: 1 << 4)
    static let allowCrossSlotKeys = ScriptFlags(rawValue: 1 << 5)

    static let names: [(String, ScriptFlags)] = [
        ("no-writes", .noWrites), ("allow-oom", .allowOOM), ("allow-stale", .allowStale), ("no-cluster", .noCluster),
        ("allow-cross-slot-keys", .allowCrossSlotKeys),
    ]

    /// The flags of `body`'s shebang and the shebang's length (the line without its newline,
    /// which stays so line numbers match), or Redis's error text.
    static func parse(_ body: [UInt8]) -> Result<(ScriptFlags, Int), CommandError> {
        guard body.count >= 2, body[0] == UInt8(ascii: "#"), body[1] == UInt8(ascii: "!") else { return .success((.evalCompat, 0)) }
        guard let end = body.firstIndex(of: UInt8(ascii: "\n")) else { return .failure(CommandError("ERR Invalid script shebang")) }
        let line = String(decoding: body[..<end], as: UTF8.self)
        let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).map(String.init)
        guard let engine = parts.first else { return .failure(CommandError("ERR Invalid engine in script shebang")) }
        guard engine == "#!lua" else { return .failure(CommandError("ERR Unexpected engine in script shebang: \(engine)")) }
        var flags: ScriptFlags = []
        for part in parts.dropFirst() {
            guard part.hasPrefix("flags=") else { return .failure(CommandError("ERR Unknown lua shebang option: \(part)")) }
            for name in part.dropFirst(6).split(separator: ",", omittingEmptySubsequences: false) {
                guard let flag = Self.names.first(where: { $0.0 == name })?.1 else {
                    return .failure(CommandError("ERR Unexpected flag in script shebang: \(name)"))
                }
                flags.insert(flag)
            }
        }
        return .success((flags, end))
    }
}

/// One script of the cache: its text and what it declared.
struct CachedScript: Sendable {
    let body: [UInt8]
    let flags: ScriptFlags
    /// Bytes of the shebang line (kept out of what Lua compiles; its newline stays).
    let shebangLength: Int
}

/// Runs Lua scripts for one node, as Redis does: one Lua state, one script at a time, the
/// script cache per node (EVALSHA after a failover answers NOSCRIPT and clients send EVAL).
///
/// Everything Lua does happens on one dedicated thread. A script runs there as exclusive work:
/// the store's gate is closed first (commands on the event loops finish and new ones park), so
/// no other client's command runs between a script's commands and no event loop ever waits on
/// the store's lock while a script runs. Past `busy-reply-threshold` the parked connections are
/// woken and answer `-BUSY`, except for SCRIPT KILL and SHUTDOWN, which run.
final class ScriptEngine: @unchecked Sendable {
    struct Waiter {
        let untilEnd: Bool
        let wake: @Sendable () -> Void
    }

    private struct Busy {
        /// Exclusive work holds the gate.
        var exclusive = false
        /// A script (Lua) is running inside it.
        var script = false
        var started: UInt64 = 0
        var timedOut = false
        var killRequested = false
        var shutdown = false
        /// The running script has called a write command: SCRIPT KILL refuses.
        var dirty = false
        /// It ran past the hard limit (`setHardLimit`).
        var overHardLimit = false
        var sha = ""
        var waiters: [Waiter] = []
    }

    private struct Job {
        /// Set for exclusive work: the engine whose gate the job closes.
        let exclusive: ScriptEngine?
        let body: @Sendable () -> Void
    }

    private struct Jobs {
        var queue: [Job] = []
        var stopped = false
    }

    let store: KeyValueStore
    private let logger: Logger
    /// The busy threshold (ms; 0: never) and Lua's memory bound, read at each script's start.
    private let limits: @Sendable () -> (busyMilliseconds: Int, memoryBytes: Int)
    private let cache = LockedValue<[String: CachedScript]>([:])
    /// Held while Lua runs or compiles: on the script thread, or inline on an event loop (a
    /// long run only ever happens on the script thread, with the gate closed, when no event loop
    /// can be inside to want the lock).
    private let luaLock = LockedValue(())
    private let busy = LockedValue(Busy())
    private let jobs: ConditionLock<Jobs>
    private let started = LockedValue(false)

    // The script thread's own: the Lua state and the run in progress.
    private var lua: OpaquePointer?
    private var run: ScriptRun?
    private var reply: UnsafeMutableRawPointer?
    private var replyCapacity = 0
    /// redis.call's words (slices of `callBytes`, which holds all their bytes) and the buffer
    /// its command replies into: kept from call to call. New ones per call — a ByteBuffer per
    /// argument, a reply buffer and a spare one for refusals — were ~15 allocations per
    /// rate-limiter script (callgrind).
    @exclusivity(unchecked) private var callWords: [ByteBuffer] = []
    @exclusivity(unchecked) private var callBytes = ByteBuffer()
    @exclusivity(unchecked) private var callReply = ByteBuffer()
    /// A run's KEYS and ARGV for the C side: where each word's bytes are, and how many.
    @exclusivity(unchecked) private var runPointers: [UnsafePointer<CChar>?] = []
    @exclusivity(unchecked) private var runLengths: [Int] = []
    private var memoryLimit = 0
    private let lookup = CommandLookup()
    /// The session commands from scripts run in (one at a time, under the Lua lock).
    private let scriptSession = ClientSession(id: 0)
    private let version: String
    /// Stop any script running longer than this (ms; 0: never), discarding its writes: for
    /// embedders and the fuzz target, which have no other client to send SCRIPT KILL.
    private let hardLimit = LockedValue(0)

    func setHardLimit(milliseconds: Int) { self.hardLimit.withLock { $0 = milliseconds } }

    init(store: KeyValueStore, logger: Logger, version: String, limits: @escaping @Sendable () -> (busyMilliseconds: Int, memoryBytes: Int)) {
        self.store = store
        self.logger = logger
        self.limits = limits
        self.version = version
        self.jobs = ConditionLock(Jobs())
    }

    deinit {
        self.jobs.withLock { $0.stopped = true }
        self.jobs.broadcast()
        // No job holds the engine any more, so the script thread is not in Lua.
        if let lua = self.lua { walrus_lua_close(lua) }
        free(self.reply)
    }

    // MARK: The cache (any thread)

    func cached(_ sha: String) -> CachedScript? { self.cache.withLock { $0[sha] } }

    var cachedCount: Int { self.cache.withLock { $0.count } }

    /// Bytes the cached scripts' text takes (INFO used_memory_scripts_eval).
    var cachedBytes: Int { self.cache.withLock { $0.values.reduce(0) { $0 + $1.body.count + 40 } } }

    /// Lua's heap after the last script (INFO used_memory_lua).
    var luaMemory: Int { self.luaMemoryValue.withLock { $0 } }

    private let luaMemoryValue = LockedValue(0)

    static func sha1Hex(_ bytes: UnsafeRawBufferPointer) -> String {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        _ = EVP_Digest(bytes.baseAddress, bytes.count, &digest, &length, EVP_sha1(), nil)
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(40)
        for byte in digest.prefix(20) {
            out.append(hex[Int(byte >> 4)])
            out.append(hex[Int(byte & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    // MARK: The script thread

    /// Run `job` on the script thread, after the jobs before it.
    func submit(_ job: @escaping @Sendable () -> Void) { self.enqueue(Job(exclusive: nil, body: job)) }

    /// Run `body` on the script thread as exclusive work: with the gate closed (no command runs
    /// meanwhile). Exclusive jobs queued together run under one closing of the gate (under load
    /// the scripts of many clients wait together); parked connections are woken when they end.
    func exclusive(_ body: @escaping @Sendable () -> Void) { self.enqueue(Job(exclusive: self, body: body)) }

    private func enqueue(_ job: Job) {
        let start = self.started.withLock { started -> Bool in
            defer { started = true }
            return !started
        }
        if start {
            let jobs = self.jobs
            // The thread holds the engine only while it runs a job's closure (which does).
            _ = DedicatedThread(name: "walrus-scripts", detached: true) {
                while true {
                    jobs.wait(while: { $0.queue.isEmpty && !$0.stopped }, untilMonotonicNanoseconds: nil)
                    let (batch, stop) = jobs.withLock { state -> ([Job], Bool) in
                        let batch = state.queue
                        state.queue.removeAll(keepingCapacity: true)
                        return (batch, batch.isEmpty && state.stopped)
                    }
                    if stop { return }
                    var index = 0
                    while index < batch.count {
                        guard let engine = batch[index].exclusive else {
                            batch[index].body()
                            index += 1
                            continue
                        }
                        var end = index
                        while end < batch.count && batch[end].exclusive != nil { end += 1 }
                        engine.beginExclusive()
                        for job in batch[index..<end] {
                            engine.nextExclusiveJob()
                            job.body()
                        }
                        engine.endExclusive()
                        index = end
                    }
                }
            }
        }
        self.jobs.withLock { $0.queue.append(job) }
        self.jobs.signal()
    }

    private func beginExclusive() {
        self.busy.withLock { busy in
            busy = Busy(exclusive: true, waiters: busy.waiters)
        }
        self.store.gate.close()
    }

    /// The next job of a group starts: the last one's timing and kill state go.
    private func nextExclusiveJob() {
        self.busy.withLock { busy in
            busy.timedOut = false
            busy.killRequested = false
            busy.dirty = false
        }
    }

    /// The running script has ended (its reply is about to go out): commands that arrive from
    /// now on wait for the gate to open instead of answering -BUSY, as on Redis, where the next
    /// command after a script's reply finds it gone.
    func scriptEnded() {
        self.busy.withLock { $0.timedOut = false }
    }

    private func endExclusive() {
        self.store.gate.open()
        let waiters = self.busy.withLock { busy -> [Waiter] in
            let waiters = busy.waiters
            busy = Busy()
            return waiters
        }
        for waiter in waiters { waiter.wake() }
    }

    // MARK: Busy state (any thread)

    enum Parking {
        /// Nothing exclusive runs now: go on.
        case notBusy
        /// Parked: `wake` is called when it ends (or, unless `untilEnd`, when it times out).
        case parked
        /// It has run past the busy threshold: answer -BUSY, or run what may run.
        case timedOut
    }

    /// Park a connection behind the exclusive work running now.
    func park(untilEnd: Bool, wake: @escaping @Sendable () -> Void) -> Parking {
        self.busy.withLock { busy in
            guard busy.exclusive else { return .notBusy }
            if busy.timedOut && !untilEnd { return .timedOut }
            busy.waiters.append(Waiter(untilEnd: untilEnd, wake: wake))
            return .parked
        }
    }

    /// Whether exclusive work has run past the busy threshold.
    var timedOut: Bool { self.busy.withLock { $0.exclusive && $0.timedOut } }

    enum KillOutcome { case killed, notBusy, unkillable }

    /// SCRIPT KILL.
    func kill() -> KillOutcome {
        self.busy.withLock { busy in
            guard busy.script else { return .notBusy }
            if busy.dirty { return .unkillable }
            busy.killRequested = true
            return .killed
        }
    }

    /// SHUTDOWN while a script runs: stop it whatever it wrote; its writes are discarded (none
    /// was acknowledged).
    func stopForShutdown() {
        self.busy.withLock { $0.shutdown = true }
    }

    var shuttingDown: Bool { self.busy.withLock { $0.shutdown } }

    // MARK: Running scripts (the script thread)

    /// Compile `script` into the Lua state if it is not there yet; nil or the error reply text.
    func define(_ sha: String, _ script: CachedScript) -> String? {
        self.luaLock.withLock { _ in self.defineLocked(sha, script) }
    }

    private func defineLocked(_ sha: String, _ script: CachedScript) -> String? {
        guard let lua = self.openLua() else { return "ERR the Lua interpreter could not start (see the log)" }
        if sha.withCString({ walrus_lua_defined(lua, $0) }) != 0 { return nil }
        var error = walrus_buffer()
        defer { walrus_buffer_free(&error) }
        let failed = script.body.withUnsafeBytes { body -> Int32 in
            sha.withCString { name in
                let text = UnsafeRawBufferPointer(rebasing: body[script.shebangLength...])
                return walrus_lua_define(lua, name, text.baseAddress?.assumingMemoryBound(to: CChar.self), text.count, &error)
            }
        }
        guard failed != 0 else { return nil }
        let message = error.data.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: error.length), as: UTF8.self) } ?? "?"
        return "ERR Error compiling script (new function): " + message.replacingOccurrences(of: "\n", with: " ")
    }

    /// Add a script to the cache (after it compiled).
    func remember(_ sha: String, _ script: CachedScript) {
        self.cache.withLock { $0[sha] = script }
    }

    /// SCRIPT FLUSH: a new Lua state and an empty cache (Redis's scriptingReset).
    func flush() {
        self.luaLock.withLock { _ in
            self.cache.withLock { $0.removeAll() }
            if let lua = self.lua { walrus_lua_close(lua) }
            self.lua = nil
            self.luaMemoryValue.withLock { $0 = 0 }
        }
    }

    // MARK: Inline runs

    /// A script tried inline that needs longer than `inlineBudgetNanoseconds`: its transaction
    /// is dropped (nothing of it was applied or logged) and it runs again on the script thread.
    struct InlineAbort: Error {}

    /// How long a script may run inline on its event loop before it moves to the script thread.
    static let inlineBudgetNanoseconds: UInt64 = 2_000_000

    /// From an event loop inside the gate: run the next script right here, exclusively, if no
    /// other exclusive work holds or wants the gate. Pair with `endInline`.
    func beginInline() -> Bool {
        guard self.store.gate.tryUpgrade() else { return false }
        self.busy.withLock { busy in
            busy = Busy(exclusive: true, waiters: busy.waiters)
        }
        return true
    }

    func endInline() {
        let waiters = self.busy.withLock { busy -> [Waiter] in
            let waiters = busy.waiters
            busy = Busy()
            return waiters
        }
        self.store.gate.downgrade()
        for waiter in waiters { waiter.wake() }
    }

    private func openLua() -> OpaquePointer? {
        if let lua = self.lua { return lua }
        var host = walrus_lua_host()
        host.context = Unmanaged.passUnretained(self).toOpaque()
        host.call = { context, resp, argc, argv, lengths, replyLength in
            let engine = Unmanaged<ScriptEngine>.fromOpaque(context!).takeUnretainedValue()
            return engine.call(resp: Int(resp), argc: Int(argc), argv: argv!, lengths: lengths!, replyLength: replyLength!)
        }
        host.interrupt = { context in
            Unmanaged<ScriptEngine>.fromOpaque(context!).takeUnretainedValue().interrupt() ? 1 : 0
        }
        host.log = { context, level, message, length in
            let engine = Unmanaged<ScriptEngine>.fromOpaque(context!).takeUnretainedValue()
            let text = String(decoding: UnsafeRawBufferPointer(start: message, count: length), as: UTF8.self)
            let logLevel: Logger.Level = [.debug, .info, .notice, .warning][Int(min(max(level, 0), 3))]
            engine.logger.log(level: logLevel, "\(text)", metadata: ["script.sha": "\(engine.run?.sha ?? "")"])
        }
        host.sha1hex = { data, length, out in
            let hex = ScriptEngine.sha1Hex(UnsafeRawBufferPointer(start: data, count: length))
            hex.utf8.withContiguousStorageIfAvailable { bytes in
                for (i, byte) in bytes.enumerated() { out![i] = CChar(bitPattern: byte) }
            }
        }
        host.command_exists = { _, name, length in
            let word = ByteBuffer(bytes: UnsafeRawBufferPointer(start: name, count: length))
            return CommandTable.byName[CommandTable.upper(word)] != nil ? 1 : 0
        }
        self.memoryLimit = self.limits().memoryBytes
        let lua = self.version.withCString { walrus_lua_open(host, self.memoryLimit, $0, 0x0007_0000) }
        if lua == nil { self.logger.error("The Lua interpreter could not start: scripts answer with an error") }
        self.lua = lua
        if let lua { self.luaMemoryValue.withLock { $0 = walrus_lua_memory(lua) } }
        return lua
    }

    /// Run the cached script `sha` inside `transaction` (the script's own, or its EXEC's):
    /// its reply goes into `call.out`. On the script thread, with the gate closed.
    func execute(
        sha: String, script: CachedScript, keys: ArraySlice<ByteBuffer>, args: ArraySlice<ByteBuffer>, readOnly: Bool,
        call: inout CommandCall, transaction: inout StoreTransaction
    ) throws {
        try self.luaLock.withLock { _ in
            try self.executeLocked(
                sha: sha, script: script, keys: keys, args: args, readOnly: readOnly, call: &call, transaction: &transaction)
        }
    }

    private func executeLocked(
        sha: String, script: CachedScript, keys: ArraySlice<ByteBuffer>, args: ArraySlice<ByteBuffer>, readOnly: Bool,
        call: inout CommandCall, transaction: inout StoreTransaction
    ) throws {
        if let error = self.defineLocked(sha, script) { throw CommandError(error) }
        let lua = self.lua!
        let inline = call.inlineScript
        let limits = self.limits()
        let threshold = limits.busyMilliseconds
        if limits.memoryBytes != self.memoryLimit {
            self.memoryLimit = limits.memoryBytes
            walrus_lua_set_memory_limit(lua, limits.memoryBytes)
        }
        let hardLimit = UInt64(max(self.hardLimit.withLock { $0 }, 0)) * 1_000_000
        self.busy.withLock { busy in
            busy.script = true
            busy.started = monotonicNanoseconds()
            busy.sha = sha
            busy.dirty = false
            busy.killRequested = false
            busy.overHardLimit = false
        }
        var out = walrus_buffer()
        defer { walrus_buffer_free(&out) }
        let session = self.scriptSession
        session.protocolVersion = 2
        var status: Int32 = 0
        var aborted = false
        withUnsafeMutablePointer(to: &transaction) { pointer in
            let run = ScriptRun(
                sha: sha, readOnly: readOnly || script.flags.contains(.noWrites), executor: call.executor, session: session,
                allocator: call.allocator, transaction: pointer, thresholdNanoseconds: UInt64(max(threshold, 0)) * 1_000_000,
                hardLimitNanoseconds: hardLimit,
                inlineDeadlineNanoseconds: inline ? monotonicNanoseconds() + Self.inlineBudgetNanoseconds : 0,
                lookup: self.lookup)
            self.run = run
            defer {
                self.run = nil
                aborted = run.abortedInline
            }
            // Kept from run to run (runs take the Lua lock one at a time): three arrays built per
            // script were allocations of their own.
            self.runPointers.removeAll(keepingCapacity: true)
            self.runLengths.removeAll(keepingCapacity: true)
            // The words' storage lives as long as `keys` and `args`; the pointers are read inside the run.
            func add(_ words: ArraySlice<ByteBuffer>) {
                for word in words {
                    word.withUnsafeReadableBytes { bytes in
                        self.runPointers.append(bytes.baseAddress?.assumingMemoryBound(to: CChar.self) ?? UnsafePointer(bitPattern: 1))
                        self.runLengths.append(bytes.count)
                    }
                }
            }
            add(keys)
            add(args)
            withExtendedLifetime((keys, args)) {
                self.runPointers.withUnsafeBufferPointer { p in
                    self.runLengths.withUnsafeBufferPointer { l in
                        status = sha.withCString { name in
                            walrus_lua_run(
                                lua, name, Int32(call.session.protocolVersion), Int32(keys.count), p.baseAddress, l.baseAddress,
                                Int32(args.count), p.baseAddress.map { $0 + keys.count }, l.baseAddress.map { $0 + keys.count },
                                inline ? 10_000 : 100_000, &out)
                        }
                    }
                }
            }
        }
        let (shutdown, overLimit) = self.busy.withLock { busy -> (Bool, Bool) in
            busy.script = false
            return (busy.shutdown, busy.overHardLimit)
        }
        self.luaMemoryValue.withLock { $0 = walrus_lua_memory(lua) }
        // (Whatever the script answered: a pcall may have caught the stop.)
        if aborted { throw InlineAbort() }
        if shutdown {
            throw CommandError("ERR the server is shutting down: the script was stopped and its writes discarded")
        }
        if overLimit {
            throw CommandError("ERR the script ran past its time limit: it was stopped and its writes discarded")
        }
        guard let data = out.data else { return }
        let reply = UnsafeRawBufferPointer(start: data, count: out.length)
        if status == 1 {
            // The script's own error (a command's error passed on was counted when it happened).
            var counted = call.allocator.buffer(capacity: min(reply.count, 64))
            counted.writeBytes(reply.prefix(64))
            call.executor.statistics.countError(counted)
        }
        call.out.writeBytes(reply)
    }

    /// The Lua hook: whether to stop the script; past the threshold, parked clients are woken
    /// to answer -BUSY.
    private func interrupt() -> Bool {
        guard let run = self.run else { return false }
        let now = monotonicNanoseconds()
        var wake: [Waiter] = []
        var warn: UInt64?
        if run.inlineDeadlineNanoseconds > 0 && now >= run.inlineDeadlineNanoseconds {
            run.abortedInline = true
            return true
        }
        let stop = self.busy.withLock { busy -> Bool in
            if busy.killRequested || busy.shutdown || busy.overHardLimit { return true }
            if run.hardLimitNanoseconds > 0 && now - busy.started >= run.hardLimitNanoseconds {
                busy.overHardLimit = true
                return true
            }
            if !busy.timedOut && run.thresholdNanoseconds > 0 && now - busy.started >= run.thresholdNanoseconds {
                busy.timedOut = true
                warn = (now - busy.started) / 1_000_000
                wake = busy.waiters.filter { !$0.untilEnd }
                busy.waiters.removeAll { !$0.untilEnd }
            }
            return false
        }
        if let warn {
            self.logger.warning(
                "Slow script detected: still in execution after \(warn) milliseconds. You can try killing the script using the SCRIPT KILL command.",
                metadata: ["script.sha": "\(run.sha)"])
        }
        for waiter in wake { waiter.wake() }
        if stop && !run.abortedInline {
            let why = self.busy.withLock { $0.shutdown ? "by SHUTDOWN" : $0.overHardLimit ? "past its time limit" : "by user with SCRIPT KILL" }
            self.logger.warning("Lua script killed \(why).", metadata: ["script.sha": "\(run.sha)"])
        }
        return stop
    }

    /// redis.call: one command inside the script's transaction; its RESP reply.
    private func call(
        resp: Int, argc: Int, argv: UnsafePointer<UnsafePointer<CChar>?>, lengths: UnsafePointer<Int>,
        replyLength: UnsafeMutablePointer<Int>
    ) -> UnsafePointer<CChar>? {
        guard let run = self.run else { return self.setReply("-ERR no script is running\r\n", replyLength) }
        // Every argument's bytes into one buffer first, then the words as slices of it (a write
        // after a slice was taken would copy the buffer).
        var total = 0
        for i in 0..<argc { total += lengths[i] }
        self.callWords.removeAll(keepingCapacity: true)
        self.callBytes.clear(minimumCapacity: total)
        for i in 0..<argc where lengths[i] > 0 {
            self.callBytes.writeBytes(UnsafeRawBufferPointer(start: argv[i], count: lengths[i]))
        }
        var at = 0
        for i in 0..<argc {
            self.callWords.append(self.callBytes.getSlice(at: at, length: lengths[i])!)
            at += lengths[i]
        }
        run.session.protocolVersion = resp
        self.callReply.clear()
        run.call(self.callWords, out: &self.callReply, markDirty: { self.busy.withLock { $0.dirty = true } })
        // The slices go, so the next call's writes find `callBytes` unshared.
        self.callWords.removeAll(keepingCapacity: true)
        let reply = self.callReply.withUnsafeReadableBytes { bytes in
            self.setReply(bytes, replyLength)
        }
        // Not kept past its call: the room a multi-megabyte value or reply took.
        if self.callBytes.capacity > Self.keptCallBytes { self.callBytes = ByteBuffer() }
        if self.callReply.capacity > Self.keptCallBytes { self.callReply = ByteBuffer() }
        return reply
    }

    /// The most room `callBytes` and `callReply` keep between calls.
    static let keptCallBytes = 1 << 20

    private func setReply(_ text: String, _ length: UnsafeMutablePointer<Int>) -> UnsafePointer<CChar>? {
        var text = text
        return text.withUTF8 { self.setReply(UnsafeRawBufferPointer($0), length) }
    }

    /// Copy a reply where the C side can read it until the next call.
    private func setReply(_ bytes: UnsafeRawBufferPointer, _ length: UnsafeMutablePointer<Int>) -> UnsafePointer<CChar>? {
        if self.replyCapacity < bytes.count || self.reply == nil {
            let capacity = max(bytes.count, 4096)
            self.reply = realloc(self.reply, capacity)
            self.replyCapacity = capacity
        }
        if bytes.count > 0 { memcpy(self.reply!, bytes.baseAddress!, bytes.count) }
        length.pointee = bytes.count
        return UnsafePointer(self.reply!.assumingMemoryBound(to: CChar.self))
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// One script run's view of the server, for redis.call.
final class ScriptRun {
    let sha: String
    let readOnly: Bool
    let executor: CommandExecutor
    let session: ClientSession
    let allocator: ByteBufferAllocator
    let transaction: UnsafeMutablePointer<StoreTransaction>
    let thresholdNanoseconds: UInt64
    let hardLimitNanoseconds: UInt64
    let lookup: CommandLookup
    /// Run inline on an event loop until then (0: on the script thread, no budget).
    let inlineDeadlineNanoseconds: UInt64
    /// The inline budget ran out: the run is void.
    var abortedInline = false
    /// A write command has run: later writes skip the role checks (Redis's SCRIPT_WRITE_DIRTY).
    private var dirty = false

    init(
        sha: String, readOnly: Bool, executor: CommandExecutor, session: ClientSession, allocator: ByteBufferAllocator,
        transaction: UnsafeMutablePointer<StoreTransaction>, thresholdNanoseconds: UInt64, hardLimitNanoseconds: UInt64,
        inlineDeadlineNanoseconds: UInt64, lookup: CommandLookup
    ) {
        self.lookup = lookup
        self.hardLimitNanoseconds = hardLimitNanoseconds
        self.inlineDeadlineNanoseconds = inlineDeadlineNanoseconds
        self.sha = sha
        self.readOnly = readOnly
        self.executor = executor
        self.session = session
        self.allocator = allocator
        self.transaction = transaction
        self.thresholdNanoseconds = thresholdNanoseconds
    }

    /// Run one command from the script, with Redis's checks (scriptCall); its reply into `out`
    /// (empty, the engine's to keep between calls).
    func call(_ words: [ByteBuffer], out: inout ByteBuffer, markDirty: () -> Void) {
        let spec: CommandSpec
        switch self.lookup.resolve(words) {
        case .success(let found):
            spec = found
        case .failure:
            let name = CommandTable.upper(words[0])
            let known = CommandTable.byName[CommandTable.aliases[name] ?? name]
            let unknown = known == nil || (!(known!.subcommands.isEmpty) && words.count >= 2 && known!.subcommands[CommandTable.upper(words[1])] == nil)
            out.writeErrorReply(
                unknown ? "ERR Unknown Redis command called from script" : "ERR Wrong number of args calling Redis command from script")
            return
        }
        func reject(_ text: String, _ out: inout ByteBuffer) {
            self.executor.statistics.commands.rejected(spec)
            out.writeErrorReply(text)
            self.executor.statistics.countError(out)
        }
        if spec.flags.contains(.noscript) { return reject("ERR This Redis command is not allowed from script", &out) }
        if self.readOnly && !spec.flags.isDisjoint(with: [.write, .mayReplicate]) {
            return reject("ERR Write commands are not allowed from read-only scripts.", &out)
        }
        if spec.flags.contains(.write) {
            if !self.dirty, let refusal = self.executor.writeRefusal { return reject(refusal, &out) }
            self.dirty = true
            markDirty()
        }
        let started = monotonicNanoseconds()
        // `out` is swapped in, so the command writes to the only reference to it (a second one
        // would make its first write copy the buffer), and swapped back out.
        var inner = CommandCall(
            spec: spec, arguments: words, out: ByteBuffer(), session: self.session, executor: self.executor,
            allocator: self.allocator, inTransaction: true)
        swap(&inner.out, &out)
        self.executor.runInside(&inner, transaction: &self.transaction.pointee)
        swap(&inner.out, &out)
        let failed = out.readableBytesView.first == UInt8(ascii: "-")
        self.executor.statistics.commands.record(spec, nanoseconds: monotonicNanoseconds() - started, failed: failed)
    }
}

/// The command table entries scripts called lately, found by comparing bytes: a script calls
/// the same few commands over and over, and the table's lookup builds a String per call.
final class CommandLookup {
    private var recent: [(name: [UInt8], spec: CommandSpec)] = []

    func resolve(_ words: [ByteBuffer]) -> Result<CommandSpec, CommandError> {
        let hit = words[0].withUnsafeReadableBytes { name -> CommandSpec? in
            for entry in self.recent where entry.name.count == name.count {
                var same = true
                for i in 0..<name.count where (name[i] >= 97 && name[i] <= 122 ? name[i] - 32 : name[i]) != entry.name[i] {
                    same = false
                    break
                }
                if same { return entry.spec }
            }
            return nil
        }
        if let hit {
            return hit.accepts(wordCount: words.count) ? .success(hit) : .failure(.arity(hit.fullName))
        }
        let result = CommandTable.resolve(words)
        if case .success(let spec) = result, spec.container == nil, self.recent.count < 16 {
            self.recent.append((Array(CommandTable.upper(words[0]).utf8), spec))
        }
        return result
    }
}
