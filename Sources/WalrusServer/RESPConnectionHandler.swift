import Logging
import NIOCore
import WALCore
import WalrusProtocol
import WalrusReplication
import WalrusStore

/// One client connection: runs its commands against the store and writes the replies in request
/// order, also when a pipelined SET waits for its fdatasync while a GET behind it is ready at once.
///
/// It decodes the requests itself (not a ByteToMessageHandler in front): a command handed between
/// two handlers travels boxed in `NIOAny` (an allocation and a dynamic cast per command), which
/// cost a tenth of the CPU of a pipelined GET.
///
/// GET and SET — what pipelining clients send by the thousand — are read in place
/// (`RESPQuickRequest`) and answered into one buffer per read, written once: no command object,
/// argument array, reply buffer or callback per request. In `always` mode the SETs of one read
/// share one commit callback (the log seals in index order, so one seal covers them all).
/// Everything else goes through `CommandExecutor`.
final class RESPConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// A reply slot: filled at once, or when the write it answers is durable.
    final class Reply {
        var buffer: ByteBuffer?
        var closeAfter = false
        /// Set when metrics are on: which command, and when it arrived.
        var metric: CommandMetrics.Entry?
        var startedNanoseconds: UInt64 = 0
        /// A write in `always` mode (a quick SET, or an executor write with `batchCommits`):
        /// answered when the read's commit is durable.
        var awaitingCommit = false
        /// The reply to send then (nil: +OK).
        var held: ByteBuffer?
        /// A pub/sub message: completed once the socket took it.
        var pushPromise: EventLoopPromise<Void>?
        /// CLIENT REPLY OFF or SKIP: dropped instead of written.
        var silent = false
        /// The handler a commit's callback answers, from `finishQuick` until the callback ran (the
        /// callback then holds only this reply: a closure of one reference needs no allocation).
        var committer: RESPConnectionHandler?
        init(_ buffer: ByteBuffer? = nil) { self.buffer = buffer }

        /// Back to a fresh reply's state, for `LoopCommits.makeReply` to hand out again.
        func reset() {
            self.buffer = nil
            self.closeAfter = false
            self.metric = nil
            self.startedNanoseconds = 0
            self.awaitingCommit = false
            self.held = nil
            self.pushPromise = nil
            self.silent = false
            self.committer = nil
        }
    }

    /// One reply handed to a commit's callback, which may run on the flusher's thread; only the
    /// reply's loop touches it (the callback hops there first). A one-field struct, so the
    /// callback's closure holds a single reference.
    fileprivate struct LoopReply: @unchecked Sendable {
        let reply: Reply

        /// An executor's completion (any thread): the reply, delivered on the handler's loop —
        /// here and now when sealed by this loop at the end of its pass (unless still inside
        /// `execute`, whose reply slot is not settled yet), after a hop back otherwise.
        func complete(_ result: ByteBuffer) {
            let handler = self.reply.committer!
            if handler.commitLoop.inEventLoop, !handler.executing {
                self.deliver(result)
            } else {
                handler.commitLoop.execute { self.deliver(result) }
            }
        }

        private func deliver(_ result: ByteBuffer) {
            let handler = self.reply.committer.take()!
            self.reply.buffer = result
            handler.drain(flush: true)
        }

        /// On the reply's loop: its commit is done.
        func answer(_ error: WALError?) {
            // Moved out, not copied and cleared: no retain and release.
            let handler = self.reply.committer.take()!
            handler.committed(through: self.reply, error: error)
        }
    }

    private let executor: CommandExecutor
    // Read several times per request, and held strongly elsewhere for longer than this handler
    // (by `executor`, which it holds, for the server's life). A strong reference read from a
    // class property is retained and released around its use (two atomics, ~40 instructions;
    // unowned(unsafe) properties too): these are used through `_withUnsafeGuaranteedRef`, which
    // does neither.
    private let storeRef: Unmanaged<KeyValueStore>
    private let gateRef: Unmanaged<ExclusiveGate>
    private let keyspaceEventsRef: Unmanaged<KeyspaceEvents>
    private let statistics: ServerStatistics
    private let logger: Logger
    // The handler lives on one event loop: the runtime's exclusivity checks on these (a call
    // each, several per request) buy nothing.
    @exclusivity(unchecked) private var replies = CircularBuffer<Reply>(initialCapacity: 16)
    /// From `handlerAdded` to `handlerRemoved` (the pipeline holds it meanwhile), unretained as
    /// `storeRef` is: read at every read and reply.
    private var contextRef: Unmanaged<ChannelHandlerContext>?
    private var context: ChannelHandlerContext? { self.contextRef?.takeUnretainedValue() }
    @exclusivity(unchecked) private var closing = false
    private let session: ClientSession

    private let metrics: CommandMetrics?
    /// This loop's end-of-pass seal and the durable SETs waiting for it (`always` mode); held by
    /// `executor.sealers` for the server's life, so unretained as `storeRef` is.
    private var commitsRef: Unmanaged<LoopCommits>?
    /// This connection's CLIENT LIST entry (held by `session` for its life), stamped at every
    /// read; unretained as `storeRef` is.
    private var clientEntryRef: Unmanaged<ClientEntry>?
    @exclusivity(unchecked) private var decoder: RESPCommandDecoder
    /// Bytes of a request that has not fully arrived.
    @exclusivity(unchecked) private var pending: ByteBuffer?

    private let limits: RESPLimits
    /// GET and SET read in place (off when metrics are on: those count every command by name).
    private let quick: Bool
    private let alwaysMode: Bool
    /// Replies of quick requests answered in order during this read, written once at its end.
    @exclusivity(unchecked) private var batch: ByteBuffer
    /// The last quick SET of this read waiting for the read's commit (`always` mode).
    @exclusivity(unchecked) private var lastUncommitted: Reply?
    /// This connection's loop, for commit callbacks that may run on another thread (set once,
    /// when the handler is added, before any commit).
    private var commitLoop: (any EventLoop)!
    /// Replies written since the last flush. A read whose replies wait for the pass's seal writes
    /// nothing, and its read-complete then skips an empty flush (~1,000 instructions of NIO's).
    @exclusivity(unchecked) private var unflushed = false
    /// The last loop pass (`LoopCommits`) this connection wrote durable SETs in.
    @exclusivity(unchecked) fileprivate var commitPass = -2
    /// This read waits in `pending` for the end of the loop's reads (`LoopCommits.deferRead`).
    @exclusivity(unchecked) fileprivate var readDeferred = false
    /// The first request of the deferred read in `pending`, as `deferredKey` parsed it to prefetch
    /// its key — parsed once, not again when the read runs. With the readable byte count it was
    /// parsed from, checked again before use.
    private var deferredParse: (first: FirstRequest, readable: Int)?

    /// The request at the start of a read, as far as the quick parser is concerned.
    fileprivate enum FirstRequest {
        /// Not looked at yet.
        case unparsed
        /// Looked at: not a GET or SET the quick path answers (the decoder reads it).
        case other
        /// A quick GET or SET, and the bytes it takes.
        case quick(RESPQuickRequest, Int)
    }
    /// Inside `executor.execute` (its completion must not write the reply yet).
    @exclusivity(unchecked) fileprivate var executing = false
    /// Reply slots and a reply buffer of commands answered at once, for the next command.
    @exclusivity(unchecked) private var spareReplies: [Reply] = []
    @exclusivity(unchecked) private var spareOut: ByteBuffer?
    /// The last batch handed to NIO, kept (when small) so the next read writes into its storage
    /// once NIO has sent it and let it go, instead of allocating a batch per read — as Redis keeps
    /// each client's 16 KiB reply buffer.
    @exclusivity(unchecked) private var writtenBatch: ByteBuffer?
    /// The channel's allocator, read once: `context.channel.allocator` is two getters through
    /// NIO's existentials, four retains and releases, on every use.
    private var allocator = ByteBufferAllocator()

    /// Whether TLS is in front (the `tls-port` listener).
    private let tls: Bool
    /// Until the first bytes came: a TLS ClientHello on the plaintext port is told apart.
    @exclusivity(unchecked) private var firstRead = true

    init(
        executor: CommandExecutor, statistics: ServerStatistics, logger: Logger, limits: RESPLimits, metrics: CommandMetrics? = nil,
        tls: Bool = false
    ) {
        self.tls = tls
        self.executor = executor
        self.storeRef = .passUnretained(executor.store)
        self.gateRef = .passUnretained(executor.store.gate)
        self.keyspaceEventsRef = .passUnretained(executor.keyspaceEvents)
        self.statistics = statistics
        self.logger = logger
        self.metrics = metrics
        self.decoder = RESPCommandDecoder(limits: limits)
        self.limits = limits
        self.quick = metrics == nil
        self.alwaysMode = executor.store.configuration.wal.fsyncMode == .always
        self.batch = ByteBuffer()
        self.session = ClientSession(id: statistics.clientIDs.add(1, ordering: .relaxed).newValue)
    }

    /// Why this connection runs no command now.
    private enum Parked {
        case no
        /// Its own script runs on the script thread: the commands behind it must see its writes.
        case ownScript
        /// Another client's script holds the store (`executeWhileExclusive` said wait).
        case behindScript
    }

    @exclusivity(unchecked) private var parked = Parked.no
    /// A command decoded but not yet run when the connection parked behind a script.
    private var parkedCommand: RESPCommand?
    /// Called (from the script thread) once this connection's script has run, and when a
    /// script it waits behind passes the busy threshold or ends.
    private var resumeCallback: (@Sendable (ByteBuffer?) -> Void)?
    private var wakeCallback: (@Sendable () -> Void)?
    /// Bytes of pub/sub messages written but not yet taken by the socket.
    @exclusivity(unchecked) private var unsentPushBytes = 0

    func handlerAdded(context: ChannelHandlerContext) {
        if self.executor.alwaysMode && PassSealer.enabled {
            self.commitsRef = .passUnretained(
                self.executor.sealers.commits(
                    for: context.eventLoop, store: self.executor.store, settings: self.executor.settings, statistics: self.statistics))
        }
        self.contextRef = .passUnretained(context)
        self.allocator = context.channel.allocator
        self.commitLoop = context.eventLoop
        let eventLoop = context.eventLoop
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        self.resumeCallback = { reply in
            eventLoop.execute {
                let handler = bound.value
                handler.session.awaitingScript = false
                // The script's reply slot is the last one: nothing was queued behind it.
                if let reply, let slot = handler.replies.last { slot.buffer = reply }
                if handler.parked == .ownScript { handler.unpark() } else { handler.drain(flush: true) }
            }
        }
        self.wakeCallback = {
            eventLoop.execute {
                let handler = bound.value
                if handler.parked == .behindScript { handler.unpark() }
            }
        }
        self.session.pushDelivery = { delivery in
            if eventLoop.inEventLoop, bound.value.session.publishing {
                bound.value.push(delivery)
            } else {
                eventLoop.execute { bound.value.push(delivery) }
            }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.contextRef = nil
        self.resumeCallback = nil
        self.wakeCallback = nil
        self.session.pushDelivery = nil
        // A reply still waiting holds this handler (`committer`) until answered; the queue
        // holding it back would keep both for good if no answer comes.
        self.replies.removeAll()
        self.spareReplies.removeAll()
    }

    /// A published message for this subscriber: in order behind the replies before it. A
    /// subscriber that does not read is disconnected once its unsent messages pass
    /// `pubsub-output-limit-bytes` (Redis's `client-output-buffer-limit pubsub` hard limit).
    private func push(_ delivery: PubSubSubscriber.Delivery) {
        guard let context = self.context, !self.closing, self.session.pubsub != nil else { return }
        var buffer = self.allocator.buffer(capacity: 64)
        buffer.writeDelivery(delivery, resp3: self.session.resp3)
        let size = buffer.readableBytes
        self.unsentPushBytes += size
        if self.unsentPushBytes > 1 << 20 {
            let limit = self.executor.settings.snapshot.pubsubOutputLimitBytes
            if limit > 0 && self.unsentPushBytes > limit {
                self.logger.warning(
                    "Disconnecting a subscriber that does not read its messages",
                    metadata: [
                        "client.address": "\(context.remoteAddress?.description ?? "?")", "client.id": "\(self.session.id)",
                        "pubsub.unsentBytes": "\(self.unsentPushBytes)", "pubsub.limit": "\(limit)",
                    ])
                self.closing = true
                context.close(promise: nil)
                return
            }
        }
        let promise = context.eventLoop.makePromise(of: Void.self)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        promise.futureResult.whenComplete { _ in bound.value.unsentPushBytes -= size }
        if self.replies.isEmpty {
            // Behind the replies batched so far (a PUBLISH to its own channel answers after the
            // message it sent itself, and after the replies before it).
            self.writeBatch(context: context)
            context.writeAndFlush(self.wrapOutboundOut(buffer), promise: promise)
        } else {
            // Behind a reply still waiting (a durable write): keep the order.
            let reply = Reply(buffer)
            reply.pushPromise = promise
            self.replies.append(reply)
            self.drain(flush: true)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.closing else { return }
        self.clientEntryRef?._withUnsafeGuaranteedRef { $0.lastRead.store(monotonicNanoseconds(), ordering: .relaxed) }
        var buffer = self.unwrapInboundIn(data)
        if self.firstRead {
            self.firstRead = false
            // A TLS record header (handshake, TLS 1.x): a TLS client on the plaintext port.
            if !self.tls, buffer.readableBytes >= 3, buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) == 0x16,
                buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self) == 0x03
            {
                let tlsPort = self.executor.ports.tlsPort
                self.logger.warning(
                    "A client started a TLS handshake on the plaintext client port: closing it",
                    metadata: [
                        "client.address": "\(context.remoteAddress?.description ?? "?")",
                        "hint": "\(tlsPort > 0 ? "connect with TLS to tls-port \(tlsPort), or without TLS to this port" : "this node has no tls-port: connect without TLS, or set tls-port")",
                    ])
                self.statistics.protocolErrors.add(1, ordering: .relaxed)
                self.closing = true
                context.close(promise: nil)
                return
            }
        }
        if var pending = self.pending {
            self.pending = nil
            pending.writeBuffer(&buffer)
            buffer = pending
        }
        if self.parked != .no {
            self.pending = buffer
            return
        }
        if let commits = self.commitsRef, commits._withUnsafeGuaranteedRef({ $0.deferringReads }) {
            // The loop's first read of this connection in this turn waits until every socket
            // is read: then the keys of all of them are prefetched at once (`LoopCommits`). A
            // later read in the same turn (a long pipeline) runs at once, behind the first; the
            // flush still waits for the end of the turn (`runDeferredRead`).
            if !self.readDeferred {
                self.readDeferred = true
                // Moved, not copied: a retain and a release fewer per read.
                self.pending = consume buffer
                commits._withUnsafeGuaranteedRef { $0.deferRead(self) }
                return
            }
        }
        self.process(buffer, context: context)
    }

    /// The first request's key of the read waiting in `pending`, for `LoopCommits` to prefetch.
    fileprivate func deferredKey(_ each: (UnsafeRawBufferPointer) -> Void) {
        guard self.readDeferred, let pending = self.pending else { return }
        pending.withUnsafeReadableBytes { bytes in
            guard let (request, consumed) = RESPQuickRequest.parse(bytes, limits: self.limits) else {
                // Not parsed again when the read runs (an INCR's ~100 instructions).
                self.deferredParse = (.other, bytes.count)
                return
            }
            self.deferredParse = (.quick(request, consumed), bytes.count)
            switch request {
            case .get(let key), .set(let key, _): each(UnsafeRawBufferPointer(rebasing: bytes[key]))
            }
        }
    }

    /// Run what waited for the end of the loop's reads, and flush what this turn's reads wrote
    /// (their read-complete did not). A no-op for a connection not deferred this turn.
    fileprivate func runDeferredRead() {
        guard self.readDeferred else { return }
        self.readDeferred = false
        let parsed = self.deferredParse
        self.deferredParse = nil
        guard let contextRef = self.contextRef, !self.closing else { return }
        contextRef._withUnsafeGuaranteedRef { context in
            if self.parked == .no, let buffer = self.pending.take() {
                let first = parsed.flatMap { $0.readable == buffer.readableBytes ? $0.first : nil } ?? .unparsed
                self.process(buffer, context: context, first: first)
            }
            self.flush(context)
        }
    }

    /// Go on with the requests that waited (on the event loop).
    private func unpark() {
        guard let context = self.context, !self.closing else { return }
        if self.parked == .behindScript { context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in } }
        self.parked = .no
        // The script's reply, if it came with the resume, goes before what follows.
        self.drain(flush: false)
        let buffer = self.pending ?? self.allocator.buffer(capacity: 0)
        self.pending = nil
        self.process(buffer, context: context)
        self.flush(context)
    }

    /// Run the requests in `input`. In `always` mode what they append is sealed by this loop at
    /// the end of its pass (one fdatasync for every connection it read), not handed to the flusher.
    private func process(_ input: ByteBuffer, context: ChannelHandlerContext, first: FirstRequest = .unparsed) {
        guard let commits = self.commitsRef else { return self.processRequests(input, context: context, first: first) }
        let (_, appended) = InlineSeal.deferringWakes { self.processRequests(input, context: context, first: first) }
        if appended { commits._withUnsafeGuaranteedRef { $0.sealer.schedule() } }
    }

    /// Run the requests in `input` — unless a script holds the store, when they wait or get
    /// -BUSY (`processWhileExclusive`). `first`: the request at the start of `input`, if the quick
    /// parser has looked at it already (`deferredKey`).
    private func processRequests(_ input: ByteBuffer, context: ChannelHandlerContext, first: FirstRequest = .unparsed) {
        var buffer = input
        var first = first
        guard self.gateRef._withUnsafeGuaranteedRef({ $0.enter() }) else { return self.processWhileExclusive(buffer, context: context) }
        defer { self.gateRef._withUnsafeGuaranteedRef { $0.exit() } }
        if self.session.unwatchPending {
            self.session.unwatchPending = false
            self.executor.store.unwatch(self.session.watch)
        }
        if let command = self.parkedCommand {
            self.parkedCommand = nil
            self.handle(command, context: context)
            if self.parked != .no {
                self.writeBatch(context: context)
                self.pending = buffer
                return
            }
        }
        var quickCount = 0
        if self.batch.capacity == 0 {
            // Room for the replies this read will likely produce (a GET of a 100-byte value
            // answers about four times its request's size), so the batch rarely grows.
            let room = min(max(buffer.readableBytes * 4, 1024), 256 * 1024)
            // The last batch: its storage again if NIO has written it and let it go (`clear`
            // gives it fresh storage of the same size while NIO still holds the old).
            if var kept = self.writtenBatch.take(), kept.capacity >= room {
                kept.clear()
                self.batch = kept
            } else {
                self.batch = self.allocator.buffer(capacity: room)
            }
        }
        // Only a command through the executor can change this (MULTI, SUBSCRIBE, CLIENT REPLY,
        // CONFIG SET notify-keyspace-events): decided here and again after each such command.
        var inPlace = self.inPlaceAllowed
        do {
            while !self.closing {
                if inPlace && self.decoder.isIdle && buffer.readableBytes >= 4 {
                    let consumed = buffer.withUnsafeReadableBytes { bytes -> Int in
                        let quick: (RESPQuickRequest, Int)?
                        switch first {
                        case .unparsed: quick = RESPQuickRequest.parse(bytes, limits: self.limits)
                        case .other: quick = nil
                        case .quick(let request, let consumed): quick = (request, consumed)
                        }
                        first = .unparsed
                        guard let (request, consumed) = quick,
                            self.storeRef._withUnsafeGuaranteedRef({ self.answer(request, bytes, context: context, store: $0) })
                        else { return 0 }
                        return consumed
                    }
                    if consumed > 0 {
                        buffer.moveReaderIndex(forwardBy: consumed)
                        quickCount += 1
                        continue
                    }
                }
                // Parsed for the start of the read: stale once the decoder takes the bytes.
                first = .unparsed
                // Nothing left (a read of quick requests only): no command can come of no bytes.
                if buffer.readableBytes == 0 { break }
                guard let command = try self.decoder.decode(buffer: &buffer) else { break }
                // Its reply joins the batch if it is ready with nothing queued ahead; otherwise
                // `handle` writes the batch first (its replies answer earlier requests).
                self.handle(command, context: context)
                inPlace = self.inPlaceAllowed
                // Its own script dispatched: the rest waits until it has run.
                if self.parked != .no { break }
            }
        } catch {
            self.finishQuick(quickCount, context: context)
            self.errorCaught(context: context, error: error)
            return
        }
        self.finishQuick(quickCount, context: context)
        self.keep(&buffer)
    }

    /// Whether GET and SET may be answered in place now: not inside MULTI (there they are queued
    /// like every command), not while subscribed in RESP2, not with replies silenced, not while
    /// keyspace notifications are on (every write must be announced).
    private var inPlaceAllowed: Bool {
        self.quick && !self.session.inMulti && !self.session.inSubscribedMode && self.session.repliesNormally
            && !self.keyspaceEventsRef._withUnsafeGuaranteedRef { $0.enabled }
    }

    /// Keep what was not handled of `buffer` for later.
    private func keep(_ buffer: inout ByteBuffer) {
        if buffer.readableBytes > 0 && !self.closing {
            if buffer.readerIndex > 64 * 1024 { buffer.discardReadBytes() }
            self.pending = buffer
        }
    }

    /// A script holds the store: each request waits, runs (SCRIPT KILL, SHUTDOWN …) or gets
    /// -BUSY, by `CommandExecutor.executeWhileExclusive`.
    private func processWhileExclusive(_ input: ByteBuffer, context: ChannelHandlerContext) {
        var buffer = input
        while !self.closing {
            let command: RESPCommand
            if let parked = self.parkedCommand {
                self.parkedCommand = nil
                command = parked
            } else {
                do {
                    guard let decoded = try self.decoder.decode(buffer: &buffer) else { break }
                    command = decoded
                } catch {
                    self.errorCaught(context: context, error: error)
                    return
                }
            }
            guard !command.arguments.isEmpty else { continue }
            let reply = Reply()
            let eventLoop = context.eventLoop
            let bound = NIOLoopBound((self, reply), eventLoop: eventLoop)
            let outcome = self.executor.executeWhileExclusive(command, session: self.session, allocator: self.allocator) {
                result in
                eventLoop.execute {
                    let (handler, reply) = bound.value
                    reply.buffer = result
                    handler.drain(flush: true)
                }
            }
            switch outcome {
            case .done(let result):
                self.statistics.totalCommands.add(1, ordering: .relaxed)
                self.replies.append(reply)
                self.settle(reply, result)
                self.drain(flush: false)
            case .park(let untilEnd):
                self.parkedCommand = command
                switch self.executor.scripts.park(untilEnd: untilEnd, wake: self.wakeCallback ?? {}) {
                case .parked:
                    self.parked = .behindScript
                    context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
                    self.keep(&buffer)
                    return
                case .notBusy, .timedOut:
                    // It ended (or passed the threshold) meanwhile: start over.
                    return self.process(buffer, context: context)
                }
            }
        }
        self.keep(&buffer)
    }

    /// File an executor outcome into its reply slot.
    private func settle(_ reply: Reply, _ outcome: CommandExecutor.Outcome) {
        switch outcome {
        case .reply(let buffer):
            reply.buffer = buffer
        case .replyAndClose(let buffer):
            reply.buffer = buffer
            reply.closeAfter = true
            self.closing = true
        case .pending:
            break
        case .replyAfterCommit(let buffer):
            reply.held = buffer
            reply.awaitingCommit = true
            self.lastUncommitted = reply
        }
    }

    // MARK: Quick GET and SET

    /// Answer a quick request; false leaves it to the full decoder and executor (a SET that must
    /// wait for followers or is refused for a reason the executor words; a GET of a key past its
    /// deadline on a primary, whose delete the executor logs).
    private func answer(
        _ request: RESPQuickRequest, _ bytes: UnsafeRawBufferPointer, context: ChannelHandlerContext, store: KeyValueStore
    ) -> Bool {
        switch request {
        case .get(let keyRange):
            let key = UnsafeRawBufferPointer(rebasing: bytes[keyRange])
            let resp3 = self.session.resp3
            if self.replies.isEmpty {
                let live = store.readValue(key: key) { value in
                    if let value { self.batch.writeBulkReply(value) } else { self.batch.writeNullReply(resp3: resp3) }
                }
                if !live {
                    // Expired: a primary deletes it (a record) through the executor; a follower
                    // only hides it.
                    if self.executor.expiresKeys { return false }
                    self.batch.writeNullReply(resp3: resp3)
                }
            } else {
                // Behind a reply still waiting for its fdatasync: queue in order.
                var buffer = self.allocator.buffer(capacity: 64)
                let live = store.readValue(key: key) { value in
                    if let value { buffer.writeBulkReply(value) } else { buffer.writeNullReply(resp3: resp3) }
                }
                if !live {
                    if self.executor.expiresKeys { return false }
                    buffer.writeNullReply(resp3: resp3)
                }
                self.replies.append(Reply(buffer))
            }
            return true
        case .set(let keyRange, let valueRange):
            // The table's word on SET: a write, so refused where writes are (the executor words it).
            if CommandTable.set.flags.contains(.write) && self.executor.writeRefusal != nil { return false }
            if self.executor.waitsForFollowers { return false }
            do {
                try store.set(key: UnsafeRawBufferPointer(rebasing: bytes[keyRange]), value: UnsafeRawBufferPointer(rebasing: bytes[valueRange]))
            } catch {
                if let storeError = error as? StoreError, storeError.code == .tooLarge {
                    self.logger.notice("Refused a write over a limit", metadata: ["limit.error": "\(storeError.message)"])
                }
                self.reply(context: context) { $0.writeErrorReply(CommandExecutor.clientMessage(error)) }
                return true
            }
            if self.alwaysMode {
                let reply = self.commitsRef?._withUnsafeGuaranteedRef { $0.makeReply() } ?? Reply()
                reply.awaitingCommit = true
                self.replies.append(reply)
                self.lastUncommitted = reply
            } else {
                self.reply(context: context) { $0.writeStaticString("+OK\r\n") }
            }
            return true
        }
    }

    /// A ready reply: into this read's batch, or queued behind one still waiting.
    private func reply(context: ChannelHandlerContext, _ body: (inout ByteBuffer) -> Void) {
        if self.replies.isEmpty {
            body(&self.batch)
        } else {
            var buffer = self.allocator.buffer(capacity: 64)
            body(&buffer)
            self.replies.append(Reply(buffer))
        }
    }

    /// End of a read: count the quick requests, ask for one seal covering its SETs, write the batch.
    private func finishQuick(_ count: Int, context: ChannelHandlerContext) {
        if count > 0 { self.statistics.totalCommands.add(count, ordering: .relaxed) }
        // The batch first: the commit's callback may run before `commit` returns.
        self.writeBatch(context: context)
        if let last = self.lastUncommitted {
            self.lastUncommitted = nil
            // The callback captures one reference (the reply, which holds this handler until
            // then): a callback holding the handler, the reply and the loop was an allocation
            // per commit — per SET at -c 1. `commitLoop` is set before any commit and never after.
            last.committer = self
            // Registered at the end of the loop's pass, with every other connection's (`LoopCommits`).
            if let commits = self.commitsRef { return commits._withUnsafeGuaranteedRef { $0.await(last, from: self) } }
            self.executor.store.commit(onDurable: Self.commitCallback(LoopReply(reply: last)))
        }
    }

    /// The commit callback of one connection's read: answers `target`'s handler on its loop —
    /// here and now when sealed by this loop at the end of its pass (always mode), after a hop
    /// back when sealed by the flusher or another loop.
    fileprivate static func commitCallback(_ target: LoopReply) -> WriteAheadLog.SealCallback {
        { error in
            let loop = target.reply.committer!.commitLoop!
            if loop.inEventLoop {
                target.answer(error)
            } else {
                loop.execute { target.answer(error) }
            }
        }
    }

    /// The reply of every durable quick SET (one buffer, shared).
    private static let okReply: ByteBuffer = {
        var buffer = ByteBufferAllocator().buffer(capacity: 5)
        buffer.writeStaticString("+OK\r\n")
        return buffer
    }()

    /// Every quick SET queued up to `last` is durable (or failed with `error`).
    fileprivate func committed(through last: Reply, error: WALError?) {
        var ok = Self.okReply
        if let error {
            ok = ByteBuffer()
            ok.writeErrorReply(CommandExecutor.clientMessage(StoreError(error)))
        }
        guard Self.fill(&self.replies, committedThrough: last, with: ok, failed: error != nil) else { return }
        self.drain(flush: true)
    }

    /// Fill every reply in `replies` that waits for a commit, up to `last`, with `ok` (or, for a
    /// write that answers with something else once durable, what it holds) — unless `last` was
    /// answered already: false then, and nothing is touched.
    ///
    /// Callbacks can come out of order: an earlier read's, sealed by the flusher, hops back to the
    /// loop while a later read's runs in place from the loop's own seal, which answers both. When
    /// the late one runs, the replies still queued belong to later writes, not yet durable: filling
    /// them, as the loop below would with `last` gone from the queue, acknowledged writes before
    /// their fdatasync.
    ///
    /// `replies` is not changed (the replies in it are): inout only so that the handler's queue
    /// is passed without a copy, which retained and released its storage per commit.
    static func fill(_ replies: inout CircularBuffer<Reply>, committedThrough last: Reply, with ok: ByteBuffer, failed: Bool) -> Bool {
        guard last.buffer == nil else { return false }
        var index = replies.startIndex
        while index != replies.endIndex {
            let reply = replies[index]
            if reply.awaitingCommit && reply.buffer == nil { reply.buffer = failed ? ok : (reply.held ?? ok) }
            if reply === last { break }
            index = replies.index(after: index)
        }
        return true
    }

    private func writeBatch(context: ChannelHandlerContext) {
        guard self.batch.readableBytes > 0 else { return }
        context.write(self.wrapOutboundOut(self.batch), promise: nil)
        self.unflushed = true
        // Kept for the next read, which reuses it if NIO has let it go (`processRequests`).
        self.writtenBatch = self.batch.capacity <= Self.keptBatchCapacity ? self.batch : nil
        self.batch = ByteBuffer()  // at the next read: the kept one, or one sized by the read
    }

    // MARK: Everything else

    private func handle(_ command: RESPCommand, context: ChannelHandlerContext) {
        guard !command.arguments.isEmpty, !self.closing else { return }
        self.statistics.totalCommands.add(1, ordering: .relaxed)
        // A spare slot: this connection's (a command answered at once gave it back), or the loop's
        // (a durable write's, once its commit answered it).
        var reply = self.spareReplies.popLast() ?? self.commitsRef?._withUnsafeGuaranteedRef { $0.makeReply() } ?? Reply()
        if let metrics = self.metrics {
            reply.metric = metrics.entry(for: command.arguments[0])
            reply.startedNanoseconds = monotonicNanoseconds()
        }
        // The completion holds the reply alone, which holds this handler until it is answered (a
        // closure of one reference needs no allocation; one of the handler, the reply and the
        // loop was an allocation per command).
        reply.committer = self
        self.session.silenceCurrentReply = self.session.skipNextReply
        self.session.skipNextReply = false
        self.executing = true
        var outcome = self.run(command, answering: reply)
        self.executing = false
        let silent = (self.session.repliesOff || self.session.silenceCurrentReply) && !self.session.repliedWithPush
        self.session.silenceCurrentReply = false
        self.session.repliedWithPush = false
        if self.session.awaitingScript { self.parked = .ownScript }
        if case .reply(var buffer) = outcome, self.replies.isEmpty, reply.metric == nil {
            // Ready, with nothing ahead of it: into this read's batch, written once with the rest
            // (and its buffer and slot kept for the next command).
            if !silent { self.batch.writeImmutableBuffer(buffer) }
            // The outcome's reference dropped: cleared while shared, the buffer would be copied.
            outcome = .pending
            if buffer.capacity <= Self.keptOutCapacity {
                buffer.clear()
                self.spareOut = buffer
            }
            reply.committer = nil
            // (Unless the completion, never to be called now, is still held somewhere.)
            if self.spareReplies.count < Self.spareRepliesLimit && isKnownUniquelyReferenced(&reply) {
                self.spareReplies.append(reply)
            }
            return
        }
        // Queued: what the batch holds answers earlier requests and goes first.
        self.writeBatch(context: context)
        self.replies.append(reply)
        self.settle(reply, outcome)
        // Only a pending reply is answered through the completion (a durable one through the
        // read's commit, `finishQuick`, which sets its handler again).
        if case .pending = outcome {} else { reply.committer = nil }
        reply.silent = silent
        self.drain(flush: false)
    }

    /// `command` through the executor, its completion answering `reply`. A function of its own so
    /// that the completion, and its reference to `reply`, are gone when it returns: `handle` keeps
    /// the slot for the next command only when nothing else holds it (with the closure still in
    /// scope there, no slot was ever kept — an allocation and a deallocation per command).
    @inline(never)
    private func run(_ command: RESPCommand, answering reply: Reply) -> CommandExecutor.Outcome {
        let target = LoopReply(reply: reply)
        return self.executor.execute(
            command, session: self.session, allocator: self.allocator, insideGate: true, batchCommits: true,
            out: self.spareOut.take(), resumed: self.resumeCallback
        ) { result in target.complete(result) }
    }

    /// The largest reply buffer kept for the next command's reply (a larger one is freed).
    static let keptOutCapacity = 4096
    /// The largest written batch kept for the next read's replies.
    static let keptBatchCapacity = 16 * 1024
    /// Reply slots of commands answered at once, for the next ones (a slot is an allocation).
    static let spareRepliesLimit = 4

    func channelReadComplete(context: ChannelHandlerContext) {
        // A deferred read flushes once it has run.
        if self.readDeferred { return }
        self.flush(context)
    }

    /// Flush what this handler wrote (handlers in front of it, TLS, flush their own writes).
    ///
    /// Not while the first reply queued waits for this loop's commit (a durable write): what was
    /// written before it goes out with it when the commit answers (`drain(flush: true)`) — one
    /// write and one wake-up of the client instead of two, as Redis writes a pass's replies once
    /// its fsync is done. (A MULTI's +OK and +QUEUED replies went out ahead of its EXEC's.)
    private func flush(_ context: ChannelHandlerContext) {
        guard self.unflushed else { return }
        if let first = self.replies.first, first.awaitingCommit, first.buffer == nil { return }
        self.unflushed = false
        context.flush()
    }

    /// Write every reply at the front of the queue that is ready. The last one goes with the
    /// flush in one `writeAndFlush`: one trip through the pipeline instead of two.
    private func drain(flush: Bool) {
        guard let contextRef = self.contextRef else { return }
        contextRef._withUnsafeGuaranteedRef { self.drain(flush: flush, context: $0) }
    }

    /// Replies up to this size are copied into one buffer when several are ready at once (a
    /// pipeline's durable writes, answered by one commit): one write through the pipeline for
    /// all of them instead of one each (~1,000 instructions and ~20 retains per write, against a
    /// copy of a few bytes). Larger ones are written as they are.
    static let coalescedReplyLimit = 4096

    private func drain(flush: Bool, context: ChannelHandlerContext) {
        var held: (buffer: ByteBuffer, promise: EventLoopPromise<Void>?)?
        // Whether `held` is a buffer of this drain's own, replies copied into it.
        var gathered = false
        while let first = self.replies.first, let buffer = first.buffer {
            self.replies.removeFirst()
            if let metric = first.metric { self.metrics?.record(metric, reply: buffer, startedNanoseconds: first.startedNanoseconds) }
            if first.silent && !first.closeAfter { continue }
            if !first.closeAfter, first.pushPromise == nil, buffer.readableBytes <= Self.coalescedReplyLimit,
                var into = held?.buffer, held!.promise == nil, into.readableBytes <= Self.coalescedReplyLimit
            {
                held = nil
                if !gathered {
                    var fresh = self.allocator.buffer(capacity: max(256, 2 * (into.readableBytes + buffer.readableBytes)))
                    fresh.writeImmutableBuffer(into)
                    into = fresh
                    gathered = true
                }
                into.writeImmutableBuffer(buffer)
                held = (into, nil)
                continue
            }
            if let (buffer, promise) = held { context.write(self.wrapOutboundOut(buffer), promise: promise) }
            held = nil
            gathered = false
            if first.closeAfter {
                // QUIT or a protocol error: the reply goes out, then the connection closes.
                let promise = context.eventLoop.makePromise(of: Void.self)
                context.writeAndFlush(self.wrapOutboundOut(buffer), promise: promise)
                promise.futureResult.whenComplete { [channel = context.channel] _ in channel.close(promise: nil) }
                self.unflushed = false
                self.replies.removeAll()
                return
            }
            held = (buffer, first.pushPromise)
        }
        guard let (buffer, promise) = held else {
            // Only silenced replies were ready: what was written before them still goes out.
            if flush && self.unflushed {
                self.unflushed = false
                context.flush()
            }
            return
        }
        if flush {
            self.unflushed = false
            context.writeAndFlush(self.wrapOutboundOut(buffer), promise: promise)
        } else {
            self.unflushed = true
            context.write(self.wrapOutboundOut(buffer), promise: promise)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let protocolError = error as? RESPProtocolError {
            // Malformed input: answer like Redis, then close this connection only.
            self.statistics.protocolErrors.add(1, ordering: .relaxed)
            self.logger.notice(
                "Closing a client connection after a protocol error",
                metadata: [
                    "client.address": "\(context.remoteAddress?.description ?? "?")", "client.error": "\(protocolError.message)",
                ])
            var buffer = self.allocator.buffer(capacity: 64)
            buffer.writeErrorReply("ERR \(protocolError.message)")
            let reply = Reply(buffer)
            reply.closeAfter = true
            self.closing = true
            self.replies.append(reply)
            self.drain(flush: true)
            return
        }
        if let ioError = error as? IOError, ioError.errnoCode == ECONNRESET || ioError.errnoCode == EPIPE {
            context.close(promise: nil)
            return
        }
        self.logger.debug("Client connection error", metadata: ["client.error": "\(error)"])
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            self.logger.info(
                "Closing an idle client connection", metadata: ["client.address": "\(context.remoteAddress?.description ?? "?")"])
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelActive(context: ChannelHandlerContext) {
        self.statistics.connectedClients.add(1, ordering: .relaxed)
        self.statistics.totalConnections.add(1, ordering: .relaxed)
        let channel = context.channel
        let entry = ClientEntry(
            id: self.session.id, address: Self.format(context.remoteAddress), localAddress: Self.format(context.localAddress),
            // Deferred to the loop's next turn: a client that kills itself gets its reply first.
            kill: { channel.eventLoop.execute { channel.close(promise: nil) } })
        self.session.entry = entry
        self.clientEntryRef = .passUnretained(entry)
        self.executor.clients.add(entry)
        context.fireChannelActive()
    }

    /// An address as CLIENT LIST writes it: `ip:port`.
    private static func format(_ address: SocketAddress?) -> String {
        guard let address, let ip = address.ipAddress, let port = address.port else { return "?" }
        return DaemonAddress.format(ip, port)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Requests that came with the close run first, as they would have without the wait.
        self.runDeferredRead()
        self.statistics.connectedClients.subtract(1, ordering: .relaxed)
        self.executor.clients.remove(self.session.id)
        PubSubCommands.unsubscribeAll(self.session, hub: self.executor.pubsub)
        // A MULTI in progress is dropped (nothing of it was logged); watches end — once no
        // script holds the store (the event loop never waits for one). While this connection's
        // own script (or EXEC) is queued on the script thread, the session is that job's: the
        // cleanup goes behind it there.
        if self.session.awaitingScript {
            let session = self.session
            let store = self.executor.store
            nonisolated(unsafe) let owned = session
            self.executor.scripts.submit {
                owned.endMulti()
                if owned.watch.isWatching { store.unwatch(owned.watch) }
            }
            context.fireChannelInactive()
            return
        }
        self.session.endMulti()
        if self.session.watch.isWatching {
            let store = self.executor.store
            let token = self.session.watch
            if store.gate.enter() {
                store.unwatch(token)
                store.gate.exit()
            } else {
                self.executor.scripts.submit { store.unwatch(token) }
            }
        }
        context.fireChannelInactive()
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// One event loop's end-of-pass seal (`always` mode) and the durable quick SETs waiting for it.
/// The first connection of a pass registers its own commit callback; the others register at the
/// end of the pass as one waiter, so the seal answers them with one callback (one hop back when
/// the flusher sealed) instead of a waiter, a lock pair and a callback each.
///
/// (Handing a large pass's fdatasync to the flusher, so the loop reads the next pass meanwhile,
/// measured worse: at -c 50 it split the batches — 5,200-5,500 instead of ~3,000 fdatasyncs per
/// 100,000 SETs — and cost 2-5 CPU-µs more per SET for fewer SETs per second.)
final class LoopCommits: @unchecked Sendable {
    typealias Reply = RESPConnectionHandler.Reply

    let sealer: PassSealer
    private let loop: any EventLoop
    private let wal: WriteAheadLog
    private let store: KeyValueStore

    // Prefetching a turn's keys. Nearly every key of a large keyspace is two cache misses (its
    // table slot, then its entry), paid one after the other while each connection's requests
    // run as its socket is read. Instead each connection's first read of the turn waits until
    // the loop has read every socket; then the keys of all of them are prefetched at once — the
    // misses overlap — and the reads run in the order they came (`runReads`).
    /// `WALRUS_PREFETCH=0` runs every read at once instead (for A/B runs).
    static let prefetching = getenv("WALRUS_PREFETCH").map { String(cString: $0) } != "0"
    let deferringReads = LoopCommits.prefetching
    /// Connections whose read waits for the end of this turn's reads, in the order read. Each
    /// retained once by hand until run: walking a list of strong references retains and releases
    /// each element at every walk (two walks, ~80 instructions per read).
    private var reads: [Unmanaged<RESPConnectionHandler>] = []
    /// The list being run (kept, with its storage, for the next turn).
    private var running: [Unmanaged<RESPConnectionHandler>] = []
    private var runReadsTask: (@Sendable () -> Void)!
    /// This pass's replies (the last durable SET of each connection's read), on the loop.
    private var current: [Reply] = []
    /// Passes registered with the log and not yet answered, oldest first (the log seals in
    /// index order, so each callback answers the oldest), on the loop.
    private var groups = CircularBuffer<[Reply]>(initialCapacity: 4)
    /// Emptied groups, whose storage the next passes reuse.
    private var spares: [[Reply]] = []
    /// Answered replies of durable quick SETs that nothing else held, for the next ones: a reply
    /// allocated and freed per SET cost ~600 user-space instructions (alloc, deinit, free); kept
    /// and reset, ~170 fewer per durable SET in all at -c 200 (callgrind: 11,448 → 11,280).
    private var spareReplies: [Reply] = []
    static let spareRepliesLimit = 1024
    /// Whether this pass's first connection has registered its own callback (`await`).
    private var passRegistered = false
    /// Made once (a closure per pass would be an allocation per pass); written in `init` only.
    private var sealed: WriteAheadLog.SealCallback!
    private var deliverOK: (@Sendable () -> Void)!

    // Gathering a pass's writers (PostgreSQL's commit_delay and commit_siblings, measured rather
    // than configured): every connection answered at the end of a pass sends its next request a
    // few microseconds later, and some of those arrive just after the loop read its sockets. Sealed
    // at once, they wait a whole fdatasync for the next pass — the clients split into cohorts, one
    // fdatasync each. Held back until they came (or `gatherWindow` passed), one fdatasync serves
    // them all.
    //
    // (Measured and left: a window that restarts with each writer back — hold while they keep
    // coming — made -c 50 passes whole, 49.6 SETs per fdatasync against ~41, but at -c 200 the
    // returns never stop: holds ran 8 windows and the loop woke for every arrival; primary CPU
    // 10.0-11.5 against 9.1-11.3 µs per SET without holding and ops/s below in 6 rounds of 7.
    // Counted from the hold's start, the window bounds what a hold can waste.)
    /// The pass being read (numbered, so a connection knows whether it wrote in the one before).
    private var pass = 0
    /// Connections with durable SETs in the pass before this one.
    private var previousWriters = 0
    /// Connections with durable SETs in this pass.
    private var writers = 0
    /// Of this pass's connections, how many wrote in the one before as well.
    private var returned = 0
    private enum Gather { case no, waiting, resuming }
    private var gathering = Gather.no
    /// Which held-back pass a window's timer belongs to.
    private var gatherGeneration = 0
    /// The longest a pass is held back for writers still to come (0: never): `commit-gather`,
    /// read again when the settings change (a reload, CONFIG SET).
    private var gatherWindow = TimeAmount.zero
    private let settings: ServerSettings
    private var settingsGeneration = -1
    private let statistics: ServerStatistics
    private var resumeNow: (@Sendable () -> Void)!

    init(loop: any EventLoop, store: KeyValueStore, settings: ServerSettings, statistics: ServerStatistics) {
        self.loop = loop
        self.settings = settings
        self.statistics = statistics
        self.wal = store.wal
        self.store = store
        self.sealer = PassSealer(wal: store.wal) { loop.execute($0) }
        // Unowned: the sealer and the callbacks belong to this object, and each registered group
        // retains it by hand until answered (`passEnded` / `deliver`).
        self.sealer.passEnded = { [unowned(unsafe) self] in self.passEnded() }
        self.sealer.gather = { [unowned(unsafe) self] in self.holdBack() }
        self.resumeNow = { [unowned(unsafe) self] in self.sealer.resume() }
        self.deliverOK = { [unowned(unsafe) self] in self.deliver(nil) }
        self.runReadsTask = { [unowned(unsafe) self] in self.runReads() }
        self.sealed = { [unowned(unsafe) self] error in
            if self.loop.inEventLoop {
                self.deliver(error)
            } else if let error {
                self.loop.execute { self.deliver(error) }
            } else {
                self.loop.execute(self.deliverOK)
            }
        }
    }

    /// `handler` (`reply.committer`) wrote durable SETs this pass; it is answered once the pass is
    /// sealed. On the loop.
    func await(_ reply: Reply, from handler: RESPConnectionHandler) {
        if handler.commitPass != self.pass {
            self.writers += 1
            if handler.commitPass == self.pass - 1 {
                self.returned += 1
                // The last one the held-back pass waited for: seal after this read.
                if self.gathering == .waiting && self.returned == self.previousWriters {
                    self.gathering = .resuming
                    self.loop.execute(self.resumeNow)
                }
            }
            handler.commitPass = self.pass
        }
        guard self.passRegistered else {
            // The pass's first connection registers its own callback at once, as every
            // connection did before: a pass of one (-c 1) costs nothing more.
            self.passRegistered = true
            self.wal.commit(onSealed: RESPConnectionHandler.commitCallback(RESPConnectionHandler.LoopReply(reply: reply)))
            return self.sealer.schedule()
        }
        if self.current.capacity == 0, let spare = self.spares.popLast() { self.current = spare }
        self.current.append(reply)
        self.sealer.schedule()
    }

    /// Move into `spares` (up to `spareRepliesLimit`) the replies of an answered `group` that
    /// nothing else holds: they have been written. One still queued behind a reply that is not
    /// ready (its connection's SAVE, say) is left alone: reset, it would be lost from that queue.
    static func keepAnswered(_ group: inout [Reply], in spares: inout [Reply]) {
        for index in group.indices where spares.count < Self.spareRepliesLimit {
            guard isKnownUniquelyReferenced(&group[index]) else { continue }
            group[index].reset()
            spares.append(group[index])
        }
    }

    /// A reply for a durable quick SET: an answered one again when one is spare. On the loop.
    func makeReply() -> Reply {
        self.spareReplies.popLast() ?? Reply()
    }

    /// `handler` read this turn: run its requests once the loop has read every socket (on the
    /// loop, which runs tasks after its reads and before the pass's seal, queued behind this).
    func deferRead(_ handler: RESPConnectionHandler) {
        self.reads.append(.passRetained(handler))
        guard self.reads.count == 1 else { return }
        // Retained for the task by hand, as the seal's task is (see `PassSealer.schedule`).
        _ = Unmanaged.passRetained(self)
        self.loop.execute(self.runReadsTask)
    }

    /// Prefetch the keys of this turn's reads, then run them in order.
    private func runReads() {
        defer { Unmanaged.passUnretained(self).release() }
        swap(&self.reads, &self.running)
        if self.running.count > 1, self.store.gate.enter() {
            self.store.prefetch { each in
                for handler in self.running { handler._withUnsafeGuaranteedRef { $0.deferredKey(each) } }
            }
            self.store.gate.exit()
        }
        for handler in self.running { handler._withUnsafeGuaranteedRef { $0.runDeferredRead() } }
        for handler in self.running { handler.release() }
        self.running.removeAll(keepingCapacity: true)
    }

    /// End of a pass, just before its seal: register the rest of its connections as one waiter.
    private func passEnded() {
        self.passRegistered = false
        self.previousWriters = self.writers
        self.pass += 1
        self.writers = 0
        self.returned = 0
        self.gathering = .no
        guard !self.current.isEmpty else { return }
        self.groups.append(self.current)
        self.current = []
        _ = Unmanaged.passRetained(self)
        self.wal.commitSealedByCaller(onSealed: self.sealed)
    }

    /// The pass is read: hold its seal back while writers of the pass before have yet to return
    /// (`gatherWindow` at most), or seal it now (false).
    private func holdBack() -> Bool {
        switch self.gathering {
        case .resuming:
            return false
        case .waiting:
            return true
        case .no:
            guard self.returned < self.previousWriters else { return false }
            let generation = self.settings.generation
            if generation != self.settingsGeneration {
                self.settingsGeneration = generation
                self.gatherWindow = .microseconds(Int64(self.settings.snapshot.commitGather))
            }
            guard self.gatherWindow > .zero else { return false }
            self.statistics.commitGathers.add(1, ordering: .relaxed)
            self.gathering = .waiting
            self.gatherGeneration &+= 1
            let held = self.gatherGeneration
            // The timer holds this object until it fires: it outlives a pass resumed early, and
            // may outlive the server (which shares its event loops with others, in tests).
            self.loop.scheduleTask(in: self.gatherWindow) { [self] in
                guard self.gathering == .waiting, self.gatherGeneration == held else { return }
                self.statistics.commitGatherTimeouts.add(1, ordering: .relaxed)
                self.gathering = .resuming
                self.sealer.resume()
            }
            return true
        }
    }

    /// The oldest group is durable (or failed with `error`): answer its connections. On the loop.
    private func deliver(_ error: WALError?) {
        defer { Unmanaged.passUnretained(self).release() }
        guard var group = self.groups.popFirst() else { return }
        for reply in group {
            let handler = reply.committer.take()!
            handler.committed(through: reply, error: error)
        }
        Self.keepAnswered(&group, in: &self.spareReplies)
        group.removeAll(keepingCapacity: true)
        self.spares.append(group)
    }
}
