import Logging
import NIOCore
import NIOSSL
import NIOTLS
#if canImport(Glibc)
import Glibc
#endif

/// Sits behind the TLS handler until the handshake is done: drops a handshake that does not
/// finish in time (a stalled or slowloris peer), and turns a failed one into one log line that
/// says what went wrong and what to do. Then it takes itself out of the pipeline.
final class TLSHandshakeGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    enum Side {
        /// Accepting on the named listener ("client", "replication").
        case server(String)
        /// Dialling `host` for the named link ("replication", "REPLICAOF probe").
        case client(link: String, host: String)
    }

    private let side: Side
    private let logger: Logger
    private let timeoutMilliseconds: Int
    private let authClients: String
    private var deadline: Scheduled<Void>?
    private var done = false
    private let onHandshake: (@Sendable (String?) -> Void)?

    init(side: Side, logger: Logger, timeoutMilliseconds: Int, authClients: String, onHandshake: (@Sendable (String?) -> Void)?) {
        self.onHandshake = onHandshake
        self.side = side
        self.logger = logger
        self.timeoutMilliseconds = timeoutMilliseconds
        self.authClients = authClients
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        self.deadline = context.eventLoop.scheduleTask(in: .milliseconds(Int64(self.timeoutMilliseconds))) {
            let (handler, context) = bound.value
            guard !handler.done else { return }
            handler.done = true
            handler.log("TLS handshake did not finish in \(handler.timeoutMilliseconds) ms: closing the connection", context: context)
            context.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.deadline?.cancel()
        self.deadline = nil
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event, !self.done {
            self.done = true
            self.deadline?.cancel()
            if let onHandshake = self.onHandshake {
                let peer = try? context.pipeline.syncOperations.handler(type: NIOSSLHandler.self).peerCertificate
                onHandshake(peer?.subjectText)
            }
            context.fireUserInboundEventTriggered(event)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard !self.done else { return context.fireErrorCaught(error) }
        self.done = true
        self.deadline?.cancel()
        let peer = try? context.pipeline.syncOperations.handler(type: NIOSSLHandler.self).peerCertificate
        self.log("TLS handshake failed: " + self.explain(error, peer: peer), context: context)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !self.done {
            self.done = true
            self.deadline?.cancel()
            self.log("TLS handshake failed: the peer closed the connection before it finished", context: context)
        }
        context.fireChannelInactive()
    }

    private func log(_ message: String, context: ChannelHandlerContext) {
        var metadata: Logger.Metadata = ["tls.peer": "\(context.remoteAddress?.description ?? "?")"]
        switch self.side {
        case .server(let listener): metadata["tls.listener"] = "\(listener)"
        case .client(let link, let host):
            metadata["tls.link"] = "\(link)"
            metadata["tls.host"] = "\(host)"
        }
        self.logger.warning("\(message)", metadata: metadata)
    }

    /// What BoringSSL's reason means here, and what to do about it.
    func explain(_ error: any Error, peer: NIOSSLCertificate?) -> String {
        let text = "\(error)"
        let serverSide: Bool
        if case .server = self.side { serverSide = true } else { serverSide = false }
        let peerName = serverSide ? "the client" : "the server"
        if let extra = error as? NIOSSLExtraError, extra == .failedToValidateHostname, case .client(_, let host) = self.side {
            return "the server's certificate does not name \(host) (\(peer?.subjectText ?? "no subject")): dial the name or address its certificate was made for, or reissue it with that name in its subjectAltName"
        }
        if text.contains("WRONG_VERSION_NUMBER") || text.contains("HTTP_REQUEST") || text.contains("UNKNOWN_PROTOCOL")
            || text.contains("HTTPS_PROXY_REQUEST") || text.contains("RECORD_TOO_LARGE") || text.contains("DECODE_ERROR")
        {
            return serverSide
                ? "the client does not speak TLS (plaintext sent to a TLS port?): connect with TLS (redis-cli --tls), or to the plaintext port"
                : "the server does not speak TLS on that port: is tls-replication yes on the primary too?"
        }
        if text.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE") || text.contains("CERTIFICATE_REQUIRED") {
            return serverSide
                ? "the client sent no certificate, and tls-auth-clients is \(self.authClients): give it a certificate signed by tls-ca-cert-file (redis-cli --cert --key), or set tls-auth-clients optional"
                : "the server wants a client certificate: set tls-client-cert-file and tls-client-key-file (or tls-cert-file) to one its CA signed"
        }
        if text.contains("CERTIFICATE_VERIFY_FAILED") {
            let now = time(nil)
            if let peer {
                if peer.notValidAfter < now {
                    return "\(peerName)'s certificate (\(peer.subjectText)) expired at \(TLSSecurity.date(Int(peer.notValidAfter))): it must renew it"
                }
                if peer.notValidBefore > now {
                    return "\(peerName)'s certificate (\(peer.subjectText)) is not valid until \(TLSSecurity.date(Int(peer.notValidBefore))): check its clock"
                }
                return "\(peerName)'s certificate (\(peer.subjectText), issued by \(peer.issuerText)) is not signed by a CA in tls-ca-cert-file or tls-ca-cert-dir"
            }
            return "\(peerName)'s certificate did not verify against tls-ca-cert-file / tls-ca-cert-dir (unknown CA, expired or not yet valid)"
        }
        if text.contains("ALERT_UNKNOWN_CA") || text.contains("ALERT_BAD_CERTIFICATE") || text.contains("ALERT_CERTIFICATE_EXPIRED")
            || text.contains("ALERT_CERTIFICATE_UNKNOWN") || text.contains("ALERT_CERTIFICATE_REQUIRED")
        {
            return "\(peerName) refused this node's certificate (\(text)): it must trust the CA that signed it, and the certificate must be valid"
        }
        if text.contains("NO_SHARED_CIPHER") || text.contains("UNSUPPORTED_PROTOCOL") || text.contains("PROTOCOL_VERSION") {
            return "no TLS version or cipher in common with \(peerName) (\(text)): compare tls-protocols and tls-ciphers on both sides"
        }
        if text.contains("EOF during handshake") {
            if case .server(let listener) = self.side, listener == "replication" {
                return "the follower closed the connection without a TLS handshake: set tls-replication yes on it too"
            }
            return "\(peerName) closed the connection during the handshake"
        }
        if let ssl = error as? NIOSSLError, case .uncleanShutdown = ssl {
            return "\(peerName) closed the connection during the handshake"
        }
        return text
    }
}
