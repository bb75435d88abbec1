import NIOCore
import NIOPosix
import WalrusProtocol

/// One `INFO server` over TLS to another node's client port (REPLICAOF with TLS replication, to
/// learn the target's replication port). Runs on the thread pool: it blocks until the reply, a
/// failure, or two seconds.
enum TLSProbe {
    struct ProbeError: Error, CustomStringConvertible {
        var description: String
    }

    static func info(host: String, port: Int, security: any TransportSecurity, group: any EventLoopGroup) throws -> [UInt8] {
        let eventLoop = group.next()
        let promise = eventLoop.makePromise(of: [UInt8].self)
        let channel = try ClientBootstrap(group: eventLoop)
            .connectTimeout(.seconds(2))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(BulkReplyCollector(promise: promise))
                    try security.addClientHandlers(to: channel, host: host, link: "REPLICAOF probe", onHandshake: nil)
                }
            }
            .connect(host: host, port: port).wait()
        var request = channel.allocator.buffer(capacity: 32)
        request.writeString("*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
        channel.writeAndFlush(request, promise: nil)
        let timeout = eventLoop.scheduleTask(in: .seconds(2)) {
            promise.fail(ProbeError(description: "no reply within 2 s"))
        }
        defer {
            timeout.cancel()
            channel.close(promise: nil)
        }
        return try promise.futureResult.wait()
    }

    /// Reads one RESP bulk reply (or error) and fulfils the promise with its bytes.
    final class BulkReplyCollector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        private let promise: EventLoopPromise<[UInt8]>
        private var received = ByteBuffer()

        init(promise: EventLoopPromise<[UInt8]>) { self.promise = promise }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = self.unwrapInboundIn(data)
            self.received.writeBuffer(&buffer)
            let view = self.received.readableBytesView
            guard let newline = view.firstIndex(of: UInt8(ascii: "\n")) else { return }
            let header = String(decoding: view[view.startIndex..<newline], as: UTF8.self).trimmingSuffix("\r")
            if header.hasPrefix("-") { return self.promise.fail(ProbeError(description: String(header.dropFirst()))) }
            guard header.hasPrefix("$"), let length = Int(header.dropFirst()), length >= 0 else {
                return self.promise.fail(ProbeError(description: "an unexpected reply: \(header.prefix(40))"))
            }
            let start = newline + 1
            guard view.endIndex - start >= length else { return }
            self.promise.succeed(Array(view[start..<(start + length)]))
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            self.promise.fail(error)
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.promise.fail(ProbeError(description: "the connection closed before a reply (TLS refused? see the log)"))
            context.fireChannelInactive()
        }
    }
}

extension String {
    fileprivate func trimmingSuffix(_ suffix: String) -> String {
        self.hasSuffix(suffix) ? String(self.dropLast(suffix.count)) : self
    }
}
