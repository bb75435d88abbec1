import Foundation
public import Logging
import NIOCore
import NIOPosix
public import ServiceLifecycle
import WALCore

/// The control socket: a Unix stream socket (mode 0660), one JSON request per line, one JSON reply
/// per line. Each connection's peer credentials (SO_PEERCRED) are checked: root, the daemon's own
/// uid, or a member of the socket's group; anyone else is refused and logged.
public final class ControlSocketService: Service, Sendable {
    let path: String
    let commands: ControlCommands
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    let onBound: @Sendable () -> Void

    /// - Parameter onBound: called once the socket is listening (readiness waits for it).
    public init(path: String, commands: ControlCommands, logger: Logger, onBound: @escaping @Sendable () -> Void = {}) {
        self.path = path
        self.commands = commands
        self.logger = logger
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.onBound = onBound
    }

    public func run() async throws {
        let commands = self.commands
        let logger = self.logger
        // The group that may use the socket is the socket file's group (the daemon's primary group,
        // or what the operator chgrp'ed the runtime directory to).
        let channel = try await ServerBootstrap(group: self.group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(ByteToMessageHandler(ControlLineDecoder(maxLineBytes: 64 * 1024)))
                    try sync.addHandler(ControlConnectionHandler(commands: commands, socketPath: self.path, logger: logger))
                }
            }
            .bind(unixDomainSocketPath: self.path, cleanupExistingSocketFile: true)
            .get()
        chmod(self.path, 0o660)
        self.logger.info("Control socket listening", metadata: ["control.path": "\(self.path)"])
        self.onBound()
        try? await gracefulShutdown()
        try? await channel.close()
        unlink(self.path)
        try? await self.group.shutdownGracefully()
    }
}

/// One control connection.
final class ControlConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let commands: ControlCommands
    let socketPath: String
    let logger: Logger
    private var allowed = false

    init(commands: ControlCommands, socketPath: String, logger: Logger) {
        self.commands = commands
        self.socketPath = socketPath
        self.logger = logger
    }

    func channelActive(context: ChannelHandlerContext) {
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
        let reply = Self.encode(["ok": false, "error": "Permission denied: \(why). Run walrusctl as root, as the daemon's user, or as a member of the control socket's group."])
        var buffer = context.channel.allocator.buffer(capacity: reply.count)
        buffer.writeBytes(reply)
        context.writeAndFlush(self.wrapOutboundOut(buffer)).whenComplete { [channel = context.channel] _ in channel.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard self.allowed else { return }
        let line = self.unwrapInboundIn(data)
        let bytes = Data(line.readableBytesView)
        let commands = self.commands
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        // Requests may block (a checkpoint writes a whole snapshot): run them off the event loop.
        let eventLoop = context.eventLoop
        Thread.detachNewThread {
            let reply: [String: Any]
            do {
                guard let request = try JSONSerialization.jsonObject(with: bytes) as? [String: Any] else {
                    throw ControlCommands.ControlError("The request is not a JSON object; send e.g. {\"verb\":\"status\"}.")
                }
                reply = ["ok": true, "result": try commands.run(request)]
            } catch let error as ControlCommands.ControlError {
                reply = ["ok": false, "error": error.message]
            } catch let error as any StoreErrorDescribable {
                reply = ["ok": false, "error": error.operatorMessage]
            } catch let error as NSError where error.domain == NSCocoaErrorDomain {
                reply = ["ok": false, "error": "The request is not valid JSON (\(error.localizedDescription)); send one JSON object per line."]
            } catch {
                reply = ["ok": false, "error": "\(error)"]
            }
            let encoded = Self.encode(reply)
            eventLoop.execute {
                let (handler, context) = bound.value
                var buffer = context.channel.allocator.buffer(capacity: encoded.count)
                buffer.writeBytes(encoded)
                context.writeAndFlush(handler.wrapOutboundOut(buffer), promise: nil)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is ControlLineDecoder.LineTooLong {
            let reply = Self.encode(["ok": false, "error": "The request line is longer than 64 KiB."])
            var buffer = context.channel.allocator.buffer(capacity: reply.count)
            buffer.writeBytes(reply)
            context.writeAndFlush(self.wrapOutboundOut(buffer)).whenComplete { [channel = context.channel] _ in channel.close(promise: nil) }
            return
        }
        context.close(promise: nil)
    }

    /// One JSON object and a newline.
    static func encode(_ object: [String: Any]) -> [UInt8] {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{\"ok\":false}".utf8)
        return Array(data) + [10]
    }
}

/// Errors that carry an operator-facing message (store and log errors).
protocol StoreErrorDescribable: Error {
    var operatorMessage: String { get }
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
