import Logging
import NIOCore
import WALCore
import WalrusProtocol
import WalrusStore

/// One client connection: runs its commands against the store and writes the replies in request
/// order, also when a pipelined SET waits for its fdatasync while a GET behind it is ready at once.
///
/// It decodes the requests itself (not a ByteToMessageHandler in front): a command handed between
/// two handlers travels boxed in `NIOAny` (an allocation and a dynamic cast per command), which
/// cost a tenth of the CPU of a pipelined GET.
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
        init(_ buffer: ByteBuffer? = nil) { self.buffer = buffer }
    }

    private let executor: CommandExecutor
    private let statistics: ServerStatistics
    private let logger: Logger
    private var replies = CircularBuffer<Reply>(initialCapacity: 16)
    private var context: ChannelHandlerContext?
    private var closing = false
    private var session = CommandExecutor.Session()

    private let metrics: CommandMetrics?
    private var decoder: RESPCommandDecoder
    /// Bytes of a request that has not fully arrived.
    private var pending: ByteBuffer?

    init(executor: CommandExecutor, statistics: ServerStatistics, logger: Logger, limits: RESPLimits, metrics: CommandMetrics? = nil) {
        self.executor = executor
        self.statistics = statistics
        self.logger = logger
        self.metrics = metrics
        self.decoder = RESPCommandDecoder(limits: limits)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.closing else { return }
        var buffer = self.unwrapInboundIn(data)
        if var pending = self.pending {
            self.pending = nil
            pending.writeBuffer(&buffer)
            buffer = pending
        }
        do {
            while !self.closing, let command = try self.decoder.decode(buffer: &buffer) {
                self.handle(command, context: context)
            }
        } catch {
            self.errorCaught(context: context, error: error)
            return
        }
        if buffer.readableBytes > 0 && !self.closing {
            if buffer.readerIndex > 64 * 1024 { buffer.discardReadBytes() }
            self.pending = buffer
        }
    }

    private func handle(_ command: RESPCommand, context: ChannelHandlerContext) {
        guard !command.arguments.isEmpty, !self.closing else { return }
        self.statistics.totalCommands.add(1, ordering: .relaxed)
        let reply = Reply()
        if let metrics = self.metrics {
            reply.metric = metrics.entry(for: command.arguments[0])
            reply.startedNanoseconds = monotonicNanoseconds()
        }
        self.replies.append(reply)
        let eventLoop = context.eventLoop
        let bound = NIOLoopBound((self, reply), eventLoop: eventLoop)
        let allocator = context.channel.allocator
        let outcome = self.executor.execute(command, session: &self.session, allocator: allocator) { result in
            // Called from the log's flusher thread once the write is durable: hop back.
            eventLoop.execute {
                let (handler, reply) = bound.value
                reply.buffer = result
                handler.drain(flush: true)
            }
        }
        switch outcome {
        case .reply(let buffer):
            reply.buffer = buffer
        case .replyAndClose(let buffer):
            reply.buffer = buffer
            reply.closeAfter = true
            self.closing = true
        case .pending:
            break
        }
        self.drain(flush: false)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    /// Write every reply at the front of the queue that is ready.
    private func drain(flush: Bool) {
        guard let context = self.context else { return }
        var wrote = false
        while let first = self.replies.first, let buffer = first.buffer {
            self.replies.removeFirst()
            if let metric = first.metric { self.metrics?.record(metric, reply: buffer, startedNanoseconds: first.startedNanoseconds) }
            if first.closeAfter {
                // QUIT or a protocol error: the reply goes out, then the connection closes.
                let promise = context.eventLoop.makePromise(of: Void.self)
                context.writeAndFlush(self.wrapOutboundOut(buffer), promise: promise)
                promise.futureResult.whenComplete { [channel = context.channel] _ in channel.close(promise: nil) }
                self.replies.removeAll()
                return
            }
            context.write(self.wrapOutboundOut(buffer), promise: nil)
            wrote = true
        }
        if wrote && flush { context.flush() }
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
            var buffer = context.channel.allocator.buffer(capacity: 64)
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
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.statistics.connectedClients.subtract(1, ordering: .relaxed)
        context.fireChannelInactive()
    }
}

#if canImport(Glibc)
import Glibc
#endif
