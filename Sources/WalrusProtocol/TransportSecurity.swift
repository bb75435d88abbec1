public import NIOCore

/// TLS for a listener or an outgoing link, handed in by the daemon (the `WalrusTLS` module, on
/// swift-nio-ssl), so that the server and replication layers — and the fuzz and embedding builds
/// that use them — link no TLS library.
public protocol TransportSecurity: Sendable {
    /// Put the server side of TLS at the front of a freshly accepted channel's pipeline, with the
    /// certificates in force now (a reload changes what later connections get). `listener` names
    /// the port in logs ("client", "replication").
    /// `onHandshake` gets the peer certificate's subject (nil: it sent none) once the handshake
    /// is done, on the channel's event loop.
    func addServerHandlers(to channel: any Channel, listener: String, onHandshake: (@Sendable (String?) -> Void)?) throws

    /// Put the client side at the front of an outgoing channel's pipeline, verifying that the
    /// peer's certificate names `host` (a DNS name, or an IP address checked against the
    /// certificate's IP addresses).
    func addClientHandlers(to channel: any Channel, host: String, link: String, onHandshake: (@Sendable (String?) -> Void)?) throws

    /// What the certificates in force are, for INFO, `walrusctl status` and /metrics.
    var summary: TransportSecuritySummary { get }
}

/// The certificates in force and the TLS settings they were loaded with.
public struct TransportSecuritySummary: Sendable, Codable, Equatable {
    /// The server certificate's subject (`CN=…`), its expiry (Unix seconds), and its issuer.
    public var certificateSubject: String
    public var certificateExpires: Int64
    public var certificateIssuer: String
    /// The certificate outgoing links present (the client certificate, else the server's).
    public var clientCertificateSubject: String
    public var clientCertificateExpires: Int64
    /// `yes`, `no` or `optional`.
    public var authClients: String
    /// `TLSv1.2 TLSv1.3`.
    public var protocols: String
    /// Whether the replication listener and the follower's link speak TLS.
    public var replication: Bool
    /// Successful certificate reloads since the start, and when the last one happened (Unix seconds).
    public var reloads: Int
    public var loadedAt: Int64

    public init(
        certificateSubject: String, certificateExpires: Int64, certificateIssuer: String, clientCertificateSubject: String,
        clientCertificateExpires: Int64, authClients: String, protocols: String, replication: Bool, reloads: Int, loadedAt: Int64
    ) {
        self.certificateSubject = certificateSubject
        self.certificateExpires = certificateExpires
        self.certificateIssuer = certificateIssuer
        self.clientCertificateSubject = clientCertificateSubject
        self.clientCertificateExpires = clientCertificateExpires
        self.authClients = authClients
        self.protocols = protocols
        self.replication = replication
        self.reloads = reloads
        self.loadedAt = loadedAt
    }
}
