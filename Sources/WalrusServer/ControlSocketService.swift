import Foundation
public import Logging
public import NIOCore
import NIOPosix
import Synchronization
public import ServiceLifecycle
import WALCore
import WalrusProtocol

/// The control socket: a Unix stream socket (mode 0660), one JSON request per line, one JSON reply
/// per line. Each connection's peer credentials (SO_PEERCRED) are checked: root, the daemon's own
/// uid, or a member of the socket's group; anyone else is refused and logged.
public final class ControlSocketService: Service, Sendable {
    let path: String
    let commands: ControlCommands
    let logger: Logger
    /// The daemon's one event-loop group (not owned).
    let group: any EventLoopGroup
    let onBound: @Sendable () -> Void

    /// - Parameter onBound: called once the socket is listening (readiness waits for it).
    public init(
        path: String, commands: ControlCommands, logger: Logger, group: any EventLoopGroup, onBound: @escaping @Sendable () -> Void = {}
    ) {
        self.path = path
        self.commands = commands
        self.logger = logger
        self.group = group
        self.onBound = onBound
    }

    private let listener = LockedValue<(any Channel)?>(nil)

    /// Bind the socket (before the daemon serves); `run` binds if this was not called.
    public func bind() async throws {
        guard self.listener.withLock({ $0 }) == nil else { return }
        let commands = self.commands
        let logger = self.logger
        // The group that may use the socket is the socket file's group (the daemon's primary group,
        // or what the operator chgrp'ed the runtime directory to).
        let connections = ControlConnectionHandler.Connections()
        let channel = try await ServerBootstrap(group: self.group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(IdleStateHandler(readTimeout: .seconds(ControlConnectionHandler.idleSeconds)))
                    try sync.addHandler(ByteToMessageHandler(ControlLineDecoder(maxLineBytes: 64 * 1024)))
                    try sync.addHandler(
                        ControlConnectionHandler(commands: commands, socketPath: self.path, logger: logger, connections: connections))
                }
            }
            .bind(unixDomainSocketPath: self.path, cleanupExistingSocketFile: true)
            .get()
        chmod(self.path, 0o660)
        self.listener.withLock { $0 = channel }
        self.logger.info("Control socket listening", metadata: ["control.path": "\(self.path)"])
        self.onBound()
    }

    public func run() async throws {
        try await self.bind()
        guard let channel = self.listener.withLock({ $0 }) else { return }
        try? await gracefulShutdown()
        try? await channel.close()
        unlink(self.path)
    }
}

/// One control connection.
final class ControlConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let commands: ControlCommands
    let socketPath: String
    let logger: Logger
    let connections: Connections
    private var allowed = false
    private var counted = false
    /// Requests are run one at a time per connection, in order (so a client cannot start a
    /// thread per line): lines that arrive while one runs wait here. Past `maxQueued` the socket
    /// is not read until the queue drains (TCP pushes back on the client; memory stays bounded).
    private var queued = CircularBuffer<Data>()
    private var running = false
    /// A last reply (the line was too long) to send once the queued requests are answered.
    private var finalReply: [UInt8]?
    static let maxQueued = 64
    /// A connection that sends nothing for this long while no request runs is closed.
    static let idleSeconds: Int64 = 60
    /// Open control connections, at most `Connections.limit`.
    final class Connections: Sendable {
        static let limit = 64
        let count = LockedValue(0)
    }

    init(commands: ControlCommands, socketPath: String, logger: Logger, connections: Connections) {
        self.commands = commands
        self.socketPath = socketPath
        self.logger = logger
        self.connections = connections
    }

    func channelInactive(context: ChannelHandlerContext) {
        if self.counted {
            self.counted = false
            self.connections.count.withLock { $0 -= 1 }
        }
        context.fireChannelInactive()
    }

    func channelActive(context: ChannelHandlerContext) {
        let admitted = self.connections.count.withLock { count -> Bool in
            guard count < Connections.limit else { return false }
            count += 1
            return true
        }
        guard admitted else {
            self.logger.warning("Refused a control connection: too many open", metadata: ["control.limit": "\(Connections.limit)"])
            let reply = ControlCommands.encode(
                ControlReply<ReloadReply>(
                    error: "Too many control connections are open (\(Connections.limit)); close idle walrusctl sessions and retry."))
            var buffer = context.channel.allocator.buffer(capacity: reply.count)
            buffer.writeBytes(reply)
            context.writeAndFlush(self.wrapOutboundOut(buffer)).whenComplete { [channel = context.channel] _ in channel.close(promise: nil) }
            return
        }
        self.counted = true
        // Peer credentials of a Unix socket are fixed at connect time; check them once.
        guard let provider = context.channel as? any SocketOptionProvider else {
            self.refuse(context: context, why: "cannot read the peer's credentials")
            return
        }
        let credentials: EventLoopFuture<PeerCredentials> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(PeerCredentials.option))
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        credentials.whenComplete { result in
            let (handler, context) = bound.value
            switch result {
            case .success(let peer):
                if let reason = handler.refusal(for: peer) {
                    handler.logger.warning(
                        "Refused a control connection",
                        metadata: ["control.peerUID": "\(peer.uid)", "control.peerPID": "\(peer.pid)", "control.reason": "\(reason)"])
                    handler.refuse(context: context, why: reason)
                } else {
                    handler.allowed = true
                    context.read()
                }
            case .failure(let error):
                handler.refuse(context: context, why: "cannot read the peer's credentials: \(error)")
            }
        }
        context.fireChannelActive()
    }

    /// Why `peer` may not use the socket, or nil if it may.
    func refusal(for peer: PeerCredentials) -> String? {
        if peer.uid == 0 || peer.uid == getuid() { return nil }
        var info = stat()
        guard stat(self.socketPath, &info) == 0 else { return "cannot stat \(self.socketPath)" }
        if peer.gid == info.st_gid { return nil }
        // Supplementary groups of the peer's user.
        if let entry = getpwuid(peer.uid) {
            var count: Int32 = 64
            var groups = [gid_t](repeating: 0, count: 64)
            if getgrouplist(entry.pointee.pw_name, entry.pointee.pw_gid, &groups, &count) >= 0,
                groups.prefix(Int(count)).contains(info.st_gid)
            {
                return nil
            }
        }
        return "uid \(peer.uid) is not root, not the daemon's user (\(getuid())), and not in the socket's group (\(info.st_gid))"
    }

    private func refuse(context: ChannelHandlerContext, why: String) {
        let reply = ControlCommands.encode(
            ControlReply<ReloadReply>(
                error:
                    "Permission denied: \(why). Run walrusctl as root, as the daemon's user, or as a member of the control socket's group."))
        var buffer = context.channel.allocator.buffer(capacity: reply.count)
        buffer.writeBytes(reply)
        context.writeAndFlush(self.wrapOutboundOut(buffer)).whenComplete { [channel = context.channel] _ in channel.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard self.allowed else { return }
        let line = self.unwrapInboundIn(data)
        self.queued.append(Data(line.readableBytesView))
        if self.queued.count >= Self.maxQueued { context.channel.setOption(.autoRead, value: false).whenComplete { _ in } }
        self.runNext(context: context)
    }

    /// Start the oldest waiting request unless one is running.
    private func runNext(context: ChannelHandlerContext) {
        guard !self.running else { return }
        guard !self.queued.isEmpty else {
            if let reply = self.finalReply {
                self.finalReply = nil
                var buffer = context.channel.allocator.buffer(capacity: reply.count)
                buffer.writeBytes(reply)
                context.writeAndFlush(self.wrapOutboundOut(buffer)).whenComplete { [channel = context.channel] _ in channel.close(promise: nil) }
            }
            return
        }
        self.running = true
        let bytes = self.queued.removeFirst()
        if self.queued.count == Self.maxQueued / 2 && self.allowed {
            context.channel.setOption(.autoRead, value: true).whenComplete { _ in }
        }
        let commands = self.commands
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        // A request may take a while (a checkpoint, a switchover): it runs as a task (blocking
        // parts on the thread pool), and its reply comes back to this connection's loop.
        Task {
            let encoded = await commands.answer(bytes)
            eventLoop.execute {
                let (handler, context) = bound.value
                var buffer = context.channel.allocator.buffer(capacity: encoded.count)
                buffer.writeBytes(encoded)
                context.writeAndFlush(handler.wrapOutboundOut(buffer), promise: nil)
                handler.running = false
                if context.channel.isActive { handler.runNext(context: context) }
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is ControlLineDecoder.LineTooLong {
            // Answer what came before the long line, then say why and close.
            self.allowed = false
            self.finalReply = ControlCommands.encode(ControlReply<ReloadReply>(error: "The request line is longer than 64 KiB."))
            self.runNext(context: context)
            return
        }
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            // Silent while nothing runs (a long switchover keeps its client waiting, not idle).
            if !self.running && self.queued.isEmpty { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

}

/// `struct ucred` (pid, uid, gid), which the Glibc module does not import without _GNU_SOURCE;
/// the same three 32-bit fields, so SO_PEERCRED fills it as it is.
struct PeerCredentials: Sendable {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
    /// SO_PEERCRED on Linux.
    static let option: Int32 = 17
}
