/// The TLS settings walrusd was given: Redis's keys (`tls-cert-file`, `tls-auth-clients`, …),
/// as text, checked when the certificates are loaded.
public struct TLSOptions: Sendable, Equatable {
    public var certFile = ""
    public var keyFile = ""
    public var keyFilePass = ""
    public var clientCertFile = ""
    public var clientKeyFile = ""
    public var clientKeyFilePass = ""
    public var caCertFile = ""
    public var caCertDir = ""
    /// `yes`, `no` or `optional` (Redis's default: yes).
    public var authClients = "yes"
    /// Whether the replication listener and the follower's link speak TLS.
    public var replication = false
    /// `TLSv1.2 TLSv1.3` by default; any of TLSv1 TLSv1.1 TLSv1.2 TLSv1.3.
    public var protocols = ""
    /// TLS 1.2 and older: an OpenSSL cipher list (Redis's `tls-ciphers`).
    public var ciphers = ""
    /// TLS 1.3 (Redis's `tls-ciphersuites`).
    public var ciphersuites = ""
    /// A handshake not finished after this long is dropped (a slow or stalled peer).
    public var handshakeTimeoutMilliseconds = 10_000

    public init() {}

    /// The TLS versions `protocols` names, lowest first.
    func versionRange() throws -> (minimum: TLSVersionName, maximum: TLSVersionName) {
        let words = self.protocols.split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init)
        if words.isEmpty { return (.tls12, .tls13) }
        var versions: [TLSVersionName] = []
        for word in words {
            guard let version = TLSVersionName(rawValue: word.lowercased()) else {
                throw TLSSetupError(
                    "tls-protocols names '\(word)', which is not a TLS version: use TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3 (e.g. \"TLSv1.2 TLSv1.3\")")
            }
            versions.append(version)
        }
        return (versions.min()!, versions.max()!)
    }

    /// The TLS 1.3 suites BoringSSL offers; it cannot be told to offer fewer.
    static let tls13Suites: Set<String> = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]

    func checkCiphersuites() throws {
        guard !self.ciphersuites.isEmpty else { return }
        let names = Set(self.ciphersuites.split(separator: ":").map(String.init))
        if let unknown = names.first(where: { !Self.tls13Suites.contains($0) }) {
            throw TLSSetupError(
                "tls-ciphersuites names '\(unknown)', which is not a TLS 1.3 suite: use TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384 and TLS_CHACHA20_POLY1305_SHA256, separated by ':'")
        }
        if names != Self.tls13Suites {
            throw TLSSetupError(
                "tls-ciphersuites lists \(names.count) of the 3 TLS 1.3 suites, but walrusd's TLS library (BoringSSL, through swift-nio-ssl) always offers all three: leave tls-ciphersuites empty or list all three; to keep to a narrower set, leave TLSv1.3 out of tls-protocols and choose TLS 1.2 suites with tls-ciphers")
        }
    }
}

/// A TLS version as `tls-protocols` spells it.
enum TLSVersionName: String, Comparable {
    case tls10 = "tlsv1"
    case tls11 = "tlsv1.1"
    case tls12 = "tlsv1.2"
    case tls13 = "tlsv1.3"

    private var order: Int {
        switch self {
        case .tls10: 0
        case .tls11: 1
        case .tls12: 2
        case .tls13: 3
        }
    }
    static func < (lhs: Self, rhs: Self) -> Bool { lhs.order < rhs.order }

    var display: String {
        switch self {
        case .tls10: "TLSv1"
        case .tls11: "TLSv1.1"
        case .tls12: "TLSv1.2"
        case .tls13: "TLSv1.3"
        }
    }
}

/// Why certificates could not be loaded or a TLS context built: what and what to do.
public struct TLSSetupError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}
