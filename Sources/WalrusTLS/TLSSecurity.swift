public import Logging
public import NIOCore
import NIOSSL
import Synchronization
public import WalrusProtocol
#if canImport(Glibc)
import Glibc
#endif

/// walrusd's TLS: the certificates in force for the client listener (`tls-port`), the replication
/// listener and the follower's link (`tls-replication`), and their reload. Each new connection
/// takes the contexts in force when it is accepted or dialled; a reload swaps them for the next
/// ones and leaves open connections as they are.
public final class TLSSecurity: TransportSecurity {
    private let state: Mutex<(material: TLSMaterial, reloads: Int, loadedAt: Int64)>
    private let logger: Logger

    /// Load what `options` names; throws (saying which file and why) if anything is unusable.
    public init(options: TLSOptions, logger: Logger) throws {
        let material = try TLSMaterial.load(options)
        self.state = Mutex((material, 0, Int64(time(nil))))
        self.logger = logger
        self.warnIfExpiring()
    }

    private var material: TLSMaterial { self.state.withLock { $0.material } }

    /// Load `options` anew (a reload). On any failure nothing changes, and the error says why.
    public func reload(_ options: TLSOptions) throws {
        // (The caller says it failed: walrusd's reload logs it, CONFIG SET answers the error.)
        let material = try TLSMaterial.load(options)
        self.state.withLock { state in
            state.material = material
            state.reloads += 1
            state.loadedAt = Int64(time(nil))
        }
        self.logger.notice(
            "TLS certificates reloaded: new connections use them",
            metadata: [
                "tls.subject": "\(material.serverCertificate?.subjectText ?? "")",
                "tls.notAfter": "\(Self.date(material.serverCertificate?.notValidAfter ?? 0))",
            ])
        self.warnIfExpiring()
    }

    /// A warning when a certificate in force expires within 14 days (at start, on reload, and
    /// whenever the daemon's daily check calls this).
    public func warnIfExpiring(now: Int64? = nil) {
        let now = now ?? Int64(time(nil))
        let material = self.material
        var seen: Set<String> = []
        for (role, certificate) in [("server", material.serverCertificate), ("client", material.clientCertificate)] {
            guard let certificate else { continue }
            let notAfter = Int64(certificate.notValidAfter)
            let key = "\(certificate.subjectText)|\(notAfter)"
            guard seen.insert(key).inserted else { continue }
            let days = Double(notAfter - now) / 86_400
            let metadata: Logger.Metadata = [
                "tls.certificate": "\(role)", "tls.subject": "\(certificate.subjectText)", "tls.notAfter": "\(Self.date(Int(notAfter)))",
            ]
            if notAfter <= now {
                self.logger.error("A TLS certificate in force has EXPIRED: peers will refuse it; replace it and reload", metadata: metadata)
            } else if days < 14 {
                self.logger.warning(
                    "A TLS certificate in force expires in \(String(format: "%.1f", days)) days: replace it and reload (walrusctl reload)",
                    metadata: metadata)
            }
        }
    }

    public var summary: TransportSecuritySummary {
        let (material, reloads, loadedAt) = self.state.withLock { ($0.material, $0.reloads, $0.loadedAt) }
        return TransportSecuritySummary(
            certificateSubject: material.serverCertificate?.subjectText ?? "",
            certificateExpires: Int64(material.serverCertificate?.notValidAfter ?? 0),
            certificateIssuer: material.serverCertificate?.issuerText ?? "",
            clientCertificateSubject: material.clientCertificate?.subjectText ?? "",
            clientCertificateExpires: Int64(material.clientCertificate?.notValidAfter ?? 0),
            authClients: material.options.authClients, protocols: material.protocols, replication: material.options.replication,
            reloads: reloads, loadedAt: loadedAt)
    }

    public func addServerHandlers(to channel: any Channel, listener: String, onHandshake: (@Sendable (String?) -> Void)?) throws {
        let material = self.material
        guard let context = material.server else { throw TLSSetupError("no server certificate is loaded") }
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(NIOSSLServerHandler(context: context), position: .first)
        try sync.addHandler(
            TLSHandshakeGuard(
                side: .server(listener), logger: self.logger, timeoutMilliseconds: material.options.handshakeTimeoutMilliseconds,
                authClients: material.options.authClients, onHandshake: onHandshake),
            position: .after(try sync.handler(type: NIOSSLServerHandler.self)))
    }

    public func addClientHandlers(to channel: any Channel, host: String, link: String, onHandshake: (@Sendable (String?) -> Void)?) throws {
        let material = self.material
        guard let context = material.client else { throw TLSSetupError("no client certificate is loaded") }
        let sync = channel.pipeline.syncOperations
        // An IP address is checked against the certificate's IP addresses (it cannot go in SNI).
        let hostname = Self.isIPAddress(host) ? nil : host
        let handler = try NIOSSLClientHandler(context: context, serverHostname: hostname)
        try sync.addHandler(handler, position: .first)
        try sync.addHandler(
            TLSHandshakeGuard(
                side: .client(link: link, host: host), logger: self.logger,
                timeoutMilliseconds: material.options.handshakeTimeoutMilliseconds, authClients: material.options.authClients,
                onHandshake: onHandshake),
            position: .after(handler))
    }

    static func isIPAddress(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return host.withCString { inet_pton(AF_INET, $0, &v4) == 1 || inet_pton(AF_INET6, $0, &v6) == 1 }
    }

    /// `2027-01-31 12:00:00 UTC`.
    public static func date(_ seconds: Int) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        let count = strftime(&buffer, buffer.count, "%Y-%m-%d %H:%M:%S UTC", &parts)
        return String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
