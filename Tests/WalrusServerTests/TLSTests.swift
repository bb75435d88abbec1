import Foundation
import Synchronization
import Testing
import WalrusClient
import WalrusTestKit
#if canImport(Glibc)
import Glibc
#endif

/// A private CA and certificates made by `openssl` for one test: the server's (for 127.0.0.1
/// only, not "localhost"), a client's, one from another CA, one that has expired.
struct TestCertificates {
    let directory: String
    var ca: String { self.directory + "/ca.crt" }
    var serverCert: String { self.directory + "/server.crt" }
    var serverKey: String { self.directory + "/server.key" }
    var clientCert: String { self.directory + "/client.crt" }
    var clientKey: String { self.directory + "/client.key" }

    init(_ directory: String) throws {
        self.directory = directory
        let script = """
            set -e
            cd '\(directory)'
            q() { "$@" >/dev/null 2>&1; }
            q openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj "/CN=walrus test CA"
            q openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.crt -days 30 -subj "/CN=someone else's CA"
            printf "subjectAltName=IP:127.0.0.1\\n" > server.ext
            sign() { # name CN ca days
                q openssl req -newkey rsa:2048 -nodes -keyout $1.key -out $1.csr -subj "/CN=$2"
                q openssl x509 -req -in $1.csr -CA $3.crt -CAkey $3.key -CAcreateserial -out $1.crt -days $4 $5
            }
            sign server walrus-server ca 10 "-extfile server.ext"
            sign server2 walrus-server-rotated ca 30 "-extfile server.ext"
            sign client walrus-client ca 30
            sign stranger stranger other-ca 30
            sign expired expired-client ca 0
            printf "subjectAltName=DNS:walrus-primary.example\n" > dns.ext
            sign dnsonly walrus-primary.example ca 30 "-extfile dns.ext"
            """
        let result = try run("/bin/sh", ["-c", script])
        guard result.status == 0 else { throw RESPConnection.ConnectionError(description: "openssl failed: \(result.output)") }
    }

    /// walrusd's flags for these certificates.
    var daemonArguments: [String] {
        ["--tls-cert-file", self.serverCert, "--tls-key-file", self.serverKey, "--tls-ca-cert-file", self.ca]
    }

    /// redis-cli's flags to reach a TLS port with the client certificate (or `cert`).
    func cliArguments(port: Int, cert: String = "client") -> [String] {
        var arguments = ["-p", "\(port)", "--tls", "--cacert", self.ca]
        if !cert.isEmpty { arguments += ["--cert", "\(self.directory)/\(cert).crt", "--key", "\(self.directory)/\(cert).key"] }
        return arguments
    }
}

/// TLS with real clients: redis-cli, redis-py and openssl s_client on the client port; a
/// follower over TLS; certificates rotated under load; every kind of bad handshake logged once.
@Suite(.serverTest)
struct TLSTests {
    static let redisCLI = "/usr/bin/redis-cli"

    func waitFor(
        _ what: String, seconds: Double = 10, sourceLocation location: SourceLocation = #_sourceLocation, _ condition: () throws -> Bool
    ) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return }
            usleep(50_000)
        }
        Issue.record("timed out waiting for \(what)", sourceLocation: location)
    }

    @Test func clientsAndBadHandshakes() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let certificates = try TestCertificates(directory.path)
        let tlsPort = TestEnvironment.freePort()
        let metricsPort = TestEnvironment.freePort()
        let daemon = try DaemonProcess(
            data: directory.path + "/data",
            arguments: ["--tls-port", "\(tlsPort)", "--metrics-port", "\(metricsPort)"] + certificates.daemonArguments)
        defer { daemon.stop() }
        #expect(daemon.log.contains("server.tlsPort=\(tlsPort)"))
        // Its certificate expires in 10 days: the start-up says so.
        #expect(daemon.log.contains("A TLS certificate in force expires in 10.0 days"), "\(daemon.log)")

        // A stalled handshake: a TCP connection that sends nothing is dropped after 10 s.
        let stalled = try RESPConnection(host: "127.0.0.1", port: tlsPort, timeoutMilliseconds: 15_000)
        let stalledSince = Date()

        // redis-cli with a client certificate: writes and reads.
        let set = try run(Self.redisCLI, certificates.cliArguments(port: tlsPort) + ["SET", "greeting", "hello over tls"])
        #expect(set.output.contains("OK"), "\(set.output)")
        let get = try run(Self.redisCLI, certificates.cliArguments(port: tlsPort) + ["GET", "greeting"])
        #expect(get.output.contains("hello over tls"), "\(get.output)")
        // The plaintext port serves the same data.
        #expect(try daemon.connect().command("GET", "greeting") == .bulk(Array("hello over tls".utf8)))

        // redis-py with ssl=True and a client certificate.
        let python = """
            import redis
            r = redis.Redis(host="127.0.0.1", port=\(tlsPort), ssl=True, ssl_ca_certs="\(certificates.ca)",
                            ssl_certfile="\(certificates.clientCert)", ssl_keyfile="\(certificates.clientKey)")
            r.set("py", "1"); r.incr("py")
            p = r.pipeline(transaction=True); p.set("a", "x"); p.get("a"); print("result", r.get("py"), p.execute())
            """
        let py = try run("/usr/bin/env", ["python3", "-c", python])
        #expect(py.output.contains("result b'2' [True, b'x']"), "\(py.output)")

        // openssl s_client: the certificate it sees, and a PING through it.
        let sClient = try run(
            "/bin/sh",
            [
                "-c",
                "(printf 'PING\\r\\n'; sleep 1) | timeout 10 openssl s_client -connect 127.0.0.1:\(tlsPort) -CAfile \(certificates.ca) "
                    + "-cert \(certificates.clientCert) -key \(certificates.clientKey) -verify_return_error -quiet -no_ign_eof",
            ], seconds: 20)
        #expect(sClient.output.contains("+PONG"), "\(sClient.output)")

        // Bad handshakes: one clear line each, the daemon unharmed.
        let noCert = try run(Self.redisCLI, certificates.cliArguments(port: tlsPort, cert: "") + ["PING"])
        #expect(!noCert.output.contains("PONG"))
        let stranger = try run(Self.redisCLI, certificates.cliArguments(port: tlsPort, cert: "stranger") + ["PING"])
        #expect(!stranger.output.contains("PONG"))
        // The expired certificate's notAfter was "now" when it was made: wait until openssl agrees it has passed.
        try self.waitFor("the certificate to be past its notAfter") {
            try run("/usr/bin/openssl", ["x509", "-checkend", "0", "-noout", "-in", certificates.directory + "/expired.crt"]).status != 0
        }
        let expired = try run(Self.redisCLI, certificates.cliArguments(port: tlsPort, cert: "expired") + ["PING"])
        #expect(!expired.output.contains("PONG"))
        let plaintextToTLS = try run(Self.redisCLI, ["-p", "\(tlsPort)", "PING"])
        #expect(!plaintextToTLS.output.contains("PONG"))
        let tlsToPlaintext = try run(Self.redisCLI, certificates.cliArguments(port: daemon.port) + ["PING"])
        #expect(!tlsToPlaintext.output.contains("PONG"))
        try self.waitFor("five handshake lines") {
            let log = daemon.log
            return log.contains("the client sent no certificate, and tls-auth-clients is yes")
                && log.contains("is not signed by a CA in tls-ca-cert-file")
                && log.contains("(CN=expired-client) expired at")
                && log.contains("the client does not speak TLS (plaintext sent to a TLS port?)")
                && log.contains("A client started a TLS handshake on the plaintext client port")
        }
        // The stalled connection is dropped by the handshake deadline (10 s), not before.
        try self.waitFor("the deadline line", seconds: 15) { daemon.log.contains("TLS handshake did not finish in 10000 ms") }
        #expect(Date().timeIntervalSince(stalledSince) >= 9.5)
        #expect(throws: (any Error).self) { _ = try stalled.command("PING") }
        // Each failure logged once: five connections, five lines (the stalled one aside).
        #expect(daemon.log.components(separatedBy: "TLS handshake failed").count - 1 <= 6, "\(daemon.log)")

        // A follower dialing this node's plaintext replication port with TLS: a line on each side.
        // (Its CA comes from a directory: tls-ca-cert-dir.)
        try FileManager.default.createDirectory(atPath: directory.path + "/cas", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: certificates.ca, toPath: directory.path + "/cas/ca.pem")
        let tlsFollower = try DaemonProcess(
            data: directory.path + "/tf",
            arguments: [
                "--tls-cert-file", certificates.serverCert, "--tls-key-file", certificates.serverKey, "--tls-ca-cert-dir",
                directory.path + "/cas", "--tls-replication", "yes",
            ] + daemon.followArguments)
        defer { tlsFollower.stop() }
        try self.waitFor("the mismatch lines") {
            tlsFollower.log.contains("the server does not speak TLS on that port: is tls-replication yes on the primary too?")
                && daemon.log.contains("a TLS handshake on a plaintext replication link")
        }

        // INFO says what is in force.
        guard case .bulk(let info?) = try daemon.connect().command("INFO", "server") else { throw RESPConnection.ConnectionError(description: "INFO") }
        let text = String(decoding: info, as: UTF8.self)
        #expect(text.contains("walrus_tls_port:\(tlsPort)") && text.contains("walrus_tls_cert_subject:CN=walrus-server"), "\(text)")
        #expect(text.contains("walrus_tls_auth_clients:yes"))
        // /metrics has the certificate's expiry.
        let metrics = try run(
            "/usr/bin/env", ["python3", "-c", "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:\(metricsPort)/metrics').read().decode())"])
        #expect(metrics.output.contains("walrus_tls_certificate_expiry_seconds{certificate=\"server\"}"), "\(metrics.output.suffix(2000))")

        // CONFIG SET of a key file that does not load is refused with the reason, and changes nothing.
        let client = try daemon.connect()
        guard case .error(let refused) = try client.command("CONFIG", "SET", "tls-key-file", certificates.directory + "/missing.key") else {
            throw RESPConnection.ConnectionError(description: "CONFIG SET of a missing key file was accepted")
        }
        #expect(refused.contains("tls-key-file") && refused.contains("cannot be read"), "\(refused)")
        #expect(try client.command("CONFIG", "GET", "tls-key-file") == .array([.bulk(Array("tls-key-file".utf8)), .bulk(Array(certificates.serverKey.utf8))]))
        #expect(try client.command("CONFIG", "SET", "tls-auth-clients", "optional") == .simple("OK"))
        let optional = try run(Self.redisCLI, certificates.cliArguments(port: tlsPort, cert: "") + ["PING"])
        #expect(optional.output.contains("PONG"), "tls-auth-clients optional lets a client without a certificate in: \(optional.output)")
        let after = try run(Self.redisCLI, certificates.cliArguments(port: tlsPort) + ["GET", "py"])
        #expect(after.output.contains("2"))
    }

    /// A follower over TLS (catching up, then streaming); certificates rotated under load by
    /// `walrusctl reload`; a reload to a mismatched pair changes nothing; a follower dialing a
    /// name the primary's certificate lacks is refused with the reason.
    @Test func followerOverTLSAndRotationUnderLoad() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let certificates = try TestCertificates(directory.path)
        let tls = certificates.daemonArguments + ["--tls-replication", "yes"]
        let primaryTLSPort = TestEnvironment.freePort()
        let primary = try DaemonProcess(data: directory.path + "/p", arguments: ["--tls-port", "\(primaryTLSPort)"] + tls)
        defer { primary.stop() }
        let writer = try primary.connect()
        for i in 0..<500 { _ = try writer.command("SET", "before\(i)", "v\(i)") }

        let followerTLSPort = TestEnvironment.freePort()
        let follower = try DaemonProcess(
            data: directory.path + "/f",
            arguments: ["--tls-port", "\(followerTLSPort)"] + tls + [
                "--tls-client-cert-file", certificates.clientCert, "--tls-client-key-file", certificates.clientKey,
            ] + primary.followArguments)
        defer { follower.stop() }
        for i in 0..<500 { _ = try writer.command("SET", "after\(i)", "v\(i)") }
        let reader = try follower.connect()
        try self.waitFor("the follower to have every key") {
            try reader.command("GET", "after499") == .bulk(Array("v499".utf8)) && reader.command("GET", "before0") == .bulk(Array("v0".utf8))
        }
        // Both ends name the other's certificate.
        let status = try run(DaemonProcess.binaryDirectory + "/walrusctl", ["--socket", follower.controlSocket, "status"])
        #expect(status.output.contains("link tls peer") && status.output.contains("CN=walrus-server"), "\(status.output)")
        let replicas = try run(DaemonProcess.binaryDirectory + "/walrusctl", ["--socket", primary.controlSocket, "replicas"])
        #expect(replicas.output.contains("TLS, certificate CN=walrus-client"), "\(replicas.output)")
        // The primary reports the follower's TLS port (Sentinel connects there).
        guard case .bulk(let info?) = try writer.command("INFO", "replication") else { throw RESPConnection.ConnectionError(description: "INFO") }
        #expect(String(decoding: info, as: UTF8.self).contains("port=\(followerTLSPort)"))

        // Rotation under load: a TLS client keeps writing while the files are replaced and reloaded.
        let stop = Atomic<Bool>(false)
        let written = Atomic<Int>(0)
        let failed = Atomic<Int>(0)
        let loadThread = Thread {
            // redis-cli over TLS, one long-lived connection, commands piped in batches.
            var batch = 0
            while !stop.load(ordering: .relaxed) && batch < 200 {
                let commands = (0..<50).map { "SET load\(batch)-\($0) x" }.joined(separator: "\n") + "\n"
                let result = try? run(Self.redisCLI, certificates.cliArguments(port: primaryTLSPort), input: commands, seconds: 30)
                if let result, result.status == 0, result.output.components(separatedBy: "OK").count - 1 == 50 {
                    written.add(50, ordering: .relaxed)
                } else {
                    failed.add(1, ordering: .relaxed)
                }
                batch += 1
            }
        }
        loadThread.start()
        try self.waitFor("load to start") { written.load(ordering: .relaxed) >= 100 }
        try FileManager.default.removeItem(atPath: certificates.serverCert)
        try FileManager.default.copyItem(atPath: directory.path + "/server2.crt", toPath: certificates.serverCert)
        try FileManager.default.removeItem(atPath: certificates.serverKey)
        try FileManager.default.copyItem(atPath: directory.path + "/server2.key", toPath: certificates.serverKey)
        let reload = try run(DaemonProcess.binaryDirectory + "/walrusctl", ["--socket", primary.controlSocket, "reload"])
        #expect(reload.output.contains("TLS certificates reloaded"), "\(reload.output)")
        let seen = try run(
            "/usr/bin/openssl",
            ["s_client", "-connect", "127.0.0.1:\(primaryTLSPort)", "-CAfile", certificates.ca, "-cert", certificates.clientCert,
             "-key", certificates.clientKey, "-no_ign_eof"], input: "", seconds: 20)
        #expect(seen.output.contains("CN = walrus-server-rotated"), "\(seen.output)")
        // A key that does not belong to the certificate: nothing changes, and the reply says why.
        try FileManager.default.removeItem(atPath: certificates.serverKey)
        try FileManager.default.copyItem(atPath: certificates.clientKey, toPath: certificates.serverKey)
        let bad = try run(DaemonProcess.binaryDirectory + "/walrusctl", ["--socket", primary.controlSocket, "reload"])
        #expect(bad.output.contains("nothing changed") && bad.output.contains("does not belong to the certificate"), "\(bad.output)")
        let before = written.load(ordering: .relaxed)
        try self.waitFor("load to go on after the reloads") { written.load(ordering: .relaxed) >= before + 200 }
        stop.store(true, ordering: .relaxed)
        while !loadThread.isFinished { usleep(20_000) }
        #expect(failed.load(ordering: .relaxed) == 0)
        // The follower link, made before the rotation, still streams.
        _ = try writer.command("SET", "last", "1")
        try self.waitFor("the follower to stream on") { try reader.command("GET", "last") == .bulk(Array("1".utf8)) }

        // A primary whose certificate names only walrus-primary.example: a follower dialing
        // 127.0.0.1 refuses it, saying so (swift-nio-ssl accepts an IP address in the certificate
        // that matches the connected address, so the name must be a DNS name to mismatch).
        let named = try DaemonProcess(
            data: directory.path + "/n",
            arguments: [
                "--tls-cert-file", directory.path + "/dnsonly.crt", "--tls-key-file", directory.path + "/dnsonly.key",
                "--tls-ca-cert-file", certificates.ca, "--tls-replication", "yes",
            ])
        defer { named.stop() }
        let wrongName = try DaemonProcess(
            data: directory.path + "/w",
            arguments: [
                "--tls-cert-file", directory.path + "/server2.crt", "--tls-key-file", directory.path + "/server2.key",
                "--tls-ca-cert-file", certificates.ca, "--tls-replication", "yes",
            ] + named.followArguments)
        defer { wrongName.stop() }
        try self.waitFor("the hostname refusal") { wrongName.log.contains("the server's certificate does not name 127.0.0.1") }
        // A follower without TLS on a TLS replication port: the primary waits for a handshake
        // that never comes, the follower for a CHALLENGE; both say what to set.
        // (Whichever gives up first — the follower's repl-timeout or the primary's 10 s handshake
        // deadline — the follower's line says what to set.)
        let plain = try DaemonProcess(data: directory.path + "/c", arguments: ["--repl-timeout", "3000"] + named.followArguments)
        defer { plain.stop() }
        try self.waitFor("the plaintext follower's line", seconds: 25) {
            plain.log.contains("if its replication port speaks TLS (tls-replication yes), set tls-replication yes here too")
        }
        try self.waitFor("the primary's line") {
            named.log.contains("the follower closed the connection without a TLS handshake") || named.log.contains("TLS handshake did not finish")
        }
    }
}
