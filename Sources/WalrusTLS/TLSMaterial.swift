import NIOSSL
#if canImport(Glibc)
import Glibc
#endif

/// Certificates, keys and the two TLS contexts built from them (the server side for the client
/// and replication listeners, the client side for the follower's link and REPLICAOF's probe).
/// Made whole or not at all: a reload that fails leaves the running material in force.
struct TLSMaterial: @unchecked Sendable {
    // NIOSSLContext is thread-safe once made (swift-nio-ssl shares one between connections).
    let server: NIOSSLContext?
    let client: NIOSSLContext?
    let serverCertificate: NIOSSLCertificate?
    let clientCertificate: NIOSSLCertificate?
    let options: TLSOptions
    let protocols: String

    /// Load everything `options` names and build the contexts. Every failure says which file and why.
    static func load(_ options: TLSOptions) throws -> TLSMaterial {
        let (minimum, maximum) = try options.versionRange()
        try options.checkCiphersuites()
        guard ["yes", "no", "optional"].contains(options.authClients) else {
            throw TLSSetupError("tls-auth-clients must be yes, no or optional, not '\(options.authClients)'")
        }
        guard !options.certFile.isEmpty, !options.keyFile.isEmpty else {
            throw TLSSetupError(
                "TLS needs a certificate and its key: set tls-cert-file and tls-key-file (PEM files; the key may be encrypted, with tls-key-file-pass)")
        }
        let chain = try Self.certificates(options.certFile, key: "tls-cert-file")
        let key = try Self.privateKey(options.keyFile, pass: options.keyFilePass, key: "tls-key-file")
        var roots: [NIOSSLCertificate] = []
        if !options.caCertFile.isEmpty { roots += try Self.certificates(options.caCertFile, key: "tls-ca-cert-file") }
        if !options.caCertDir.isEmpty { roots += try Self.directoryCertificates(options.caCertDir) }
        let needsRoots = options.authClients != "no" || options.replication
        if needsRoots && roots.isEmpty {
            throw TLSSetupError(
                "set tls-ca-cert-file or tls-ca-cert-dir: the CA that signed the clients' certificates (tls-auth-clients \(options.authClients)) and the primary's (tls-replication); or set tls-auth-clients no")
        }

        var server = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        Self.apply(options, minimum: minimum, maximum: maximum, to: &server)
        switch options.authClients {
        case "yes": server.certificateVerification = .noHostnameVerification
        case "optional": server.certificateVerification = .optionalVerification
        default: server.certificateVerification = .none
        }
        if !roots.isEmpty {
            server.trustRoots = .certificates(roots)
            server.sendCANameList = true
        }
        let serverContext: NIOSSLContext
        do {
            serverContext = try NIOSSLContext(configuration: server)
        } catch {
            throw TLSSetupError(
                "cannot use tls-cert-file \(options.certFile) with tls-key-file \(options.keyFile): \(Self.explain(error))")
        }

        // Outgoing links present the client certificate if there is one, else the server's (as Redis).
        var clientChain = chain
        var clientKey = key
        if !options.clientCertFile.isEmpty || !options.clientKeyFile.isEmpty {
            guard !options.clientCertFile.isEmpty, !options.clientKeyFile.isEmpty else {
                throw TLSSetupError("set both tls-client-cert-file and tls-client-key-file, or neither")
            }
            clientChain = try Self.certificates(options.clientCertFile, key: "tls-client-cert-file")
            clientKey = try Self.privateKey(options.clientKeyFile, pass: options.clientKeyFilePass, key: "tls-client-key-file")
        }
        var client = TLSConfiguration.makeClientConfiguration()
        client.certificateChain = clientChain.map { .certificate($0) }
        client.privateKey = .privateKey(clientKey)
        Self.apply(options, minimum: minimum, maximum: maximum, to: &client)
        client.trustRoots = roots.isEmpty ? .default : .certificates(roots)
        client.certificateVerification = .fullVerification
        let clientContext: NIOSSLContext
        do {
            clientContext = try NIOSSLContext(configuration: client)
        } catch {
            throw TLSSetupError("cannot use the client certificate with its key: \(Self.explain(error))")
        }
        return TLSMaterial(
            server: serverContext, client: clientContext, serverCertificate: chain.first, clientCertificate: clientChain.first,
            options: options, protocols: minimum == maximum ? minimum.display : "\(minimum.display)–\(maximum.display)")
    }

    private static func apply(_ options: TLSOptions, minimum: TLSVersionName, maximum: TLSVersionName, to configuration: inout TLSConfiguration) {
        configuration.minimumTLSVersion = minimum.nio
        configuration.maximumTLSVersion = maximum.nio
        if !options.ciphers.isEmpty { configuration.cipherSuites = options.ciphers }
        // A peer that vanishes mid-close does not hold the connection.
        configuration.shutdownTimeout = .seconds(2)
    }

    static func certificates(_ path: String, key: String) throws -> [NIOSSLCertificate] {
        try Self.checkReadable(path, key: key)
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMFile(path)
        } catch {
            throw TLSSetupError("\(key) \(path) holds no PEM certificate (\(Self.explain(error))): give the certificate in PEM form (-----BEGIN CERTIFICATE-----)")
        }
        guard !certificates.isEmpty else {
            throw TLSSetupError("\(key) \(path) holds no PEM certificate: give the certificate in PEM form (-----BEGIN CERTIFICATE-----)")
        }
        return certificates
    }

    static func privateKey(_ path: String, pass: String, key: String) throws -> NIOSSLPrivateKey {
        try Self.checkReadable(path, key: key)
        do {
            if pass.isEmpty { return try NIOSSLPrivateKey(file: path, format: .pem) }
            let bytes = Array(pass.utf8)
            return try NIOSSLPrivateKey(file: path, format: .pem) { (setter: NIOSSLPassphraseSetter<[UInt8]>) in setter(bytes) }
        } catch {
            throw TLSSetupError(
                "\(key) \(path) is not a usable PEM private key (\(Self.explain(error))): an encrypted key needs its passphrase in \(key)-pass")
        }
    }

    /// Every PEM certificate in the files of `directory` (as OpenSSL's CApath, hashed or not).
    static func directoryCertificates(_ directory: String) throws -> [NIOSSLCertificate] {
        guard let handle = opendir(directory) else {
            throw TLSSetupError("tls-ca-cert-dir \(directory) cannot be read (\(String(cString: strerror(errno))))")
        }
        defer { closedir(handle) }
        var found: [NIOSSLCertificate] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasPrefix(".") { continue }
            if let certificates = try? NIOSSLCertificate.fromPEMFile(directory + "/" + name) { found += certificates }
        }
        guard !found.isEmpty else { throw TLSSetupError("tls-ca-cert-dir \(directory) holds no PEM certificate") }
        return found
    }

    private static func checkReadable(_ path: String, key: String) throws {
        guard access(path, R_OK) == 0 else {
            throw TLSSetupError("\(key) \(path) cannot be read (\(String(cString: strerror(errno)))): check the path and that walrusd's user may read it")
        }
    }

    /// BoringSSL's reasons, in words where they are common.
    static func explain(_ error: any Error) -> String {
        let text = "\(error)"
        // The key itself loaded (it is read on its own first): the pair does not match.
        if text.contains("KEY_VALUES_MISMATCH") || text == "failedToLoadPrivateKey" { return "the private key does not belong to the certificate (KEY_VALUES_MISMATCH)" }
        if text.contains("BAD_DECRYPT") || text.contains("DECODE_ERROR") { return "wrong passphrase, or not a key (\(text))" }
        if text.contains("NO_CIPHER_MATCH") { return "tls-ciphers names no cipher this library knows (NO_CIPHER_MATCH)" }
        return text
    }
}

extension TLSVersionName {
    var nio: TLSVersion {
        switch self {
        case .tls10: .tlsv1
        case .tls11: .tlsv11
        case .tls12: .tlsv12
        case .tls13: .tlsv13
        }
    }
}

extension NIOSSLCertificate {
    /// `CN=walrus-1,O=Example` (the subject's name entries in order).
    var subjectText: String { Self.render(self.subjectName) }
    var issuerText: String { Self.render(self.issuerName) }

    private static func render(_ names: [SSLCertificateName]) -> String {
        names.map { "\($0.type.shortName)=\($0.value)" }.joined(separator: ",")
    }
}

extension SSLCertificateNameType {
    var shortName: String {
        switch self {
        case .commonName: "CN"
        case .organization: "O"
        case .organizationalUnit: "OU"
        case .country: "C"
        case .city: "L"
        case .state: "ST"
        case .emailAddress: "emailAddress"
        case .userId: "UID"
        default: "?"
        }
    }
}
