import Foundation
import WalrusClient

/// walrusd's `tls-port` beside redis-server's `tls-port`, both with client certificates
/// (tls-auth-clients yes), driven by `redis-benchmark --tls` in one run; and the same workloads in
/// clear, for what TLS costs each. Durability is the periodic pair (fsync=interval 1 s ↔
/// everysec), so the figures are the TLS path's, not the disk's. Also a follower's catch-up over
/// TLS replication beside one in clear.
struct TLSBenchmarks {
    let directory: String
    let walrusd: String
    let quick: Bool
    let repetitions: Int

    /// A CA, a server certificate for 127.0.0.1 and a client certificate, made by openssl.
    static func makeCertificates(_ directory: String) throws {
        let script = """
            set -e
            cd '\(directory)'
            q() { "$@" >/dev/null 2>&1; }
            q openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=walrus-bench CA"
            printf "subjectAltName=IP:127.0.0.1\\n" > server.ext
            q openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=walrus-bench server"
            q openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile server.ext
            q openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/CN=walrus-bench client"
            q openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2
            """
        let result = try Bench.run("/bin/sh", ["-c", script], errorsToo: true)
        guard FileManager.default.fileExists(atPath: directory + "/client.crt") else {
            throw RESPBenchmarks.BenchError("openssl could not make the benchmark's certificates: \(result.text.suffix(300))")
        }
    }

    func run() throws {
        print("## walrus-bench tls — \(Bench.machine())")
        print("")
        let certificates = Bench.scratch(self.directory, "tls-certificates")
        try Self.makeCertificates(certificates)
        let files = ["--tls-cert-file", certificates + "/server.crt", "--tls-key-file", certificates + "/server.key",
                     "--tls-ca-cert-file", certificates + "/ca.crt"]
        let client = ["--tls", "--cacert", certificates + "/ca.crt", "--cert", certificates + "/client.crt", "--key", certificates + "/client.key"]
        print("redis-benchmark --tls drives walrusd's and redis-server's tls-port (RSA-2048 certificates, client certificates required, TLS 1.3), -c 50, 100-byte values; runs interleaved, medians of \(self.repetitions). \(RESPBenchmarks.redisVersion())")

        let walrusTLS = RESPBenchmarks.freePort()
        let redisTLS = RESPBenchmarks.freePort()
        let walrus = try RESPBenchmarks(directory: self.directory, requests: 0, repetitions: 1).startWalrusd(
            self.walrusd, ["--fsync", "interval", "--fsync-interval", "1000", "--tls-port", String(walrusTLS)] + files)
        let redis = try RESPBenchmarks.startRedis(
            directory: self.directory, name: "tls-redis",
            ["--appendonly", "yes", "--appendfsync", "everysec", "--tls-port", String(redisTLS)] + files)
        defer {
            for server in [walrus, redis] {
                kill(server.process.processIdentifier, SIGKILL)
                server.process.waitUntilExit()
            }
        }
        let requests = self.quick ? 5000 : 100_000
        let runner = RESPBenchmarks(directory: self.directory, requests: requests, repetitions: 1)
        var rows: [[String]] = []
        for command in ["set", "get"] {
            for tls in [true, false] {
                var ours: [RESPBenchmarks.Sample] = []
                var theirs: [RESPBenchmarks.Sample] = []
                let words = ["-t", command, "-c", "50"] + (tls ? client : [])
                for _ in 0..<self.repetitions {
                    ours.append(try runner.measure(
                        RESPBenchmarks.Server(process: walrus.process, port: tls ? walrusTLS : walrus.port), follower: nil, words,
                        requests: requests, countsSyscalls: false))
                    theirs.append(try runner.measure(
                        RESPBenchmarks.Server(process: redis.process, port: tls ? redisTLS : redis.port), follower: nil, words,
                        requests: requests, countsSyscalls: false))
                }
                let (w, r) = (Bench.median(ours.map(\.rate)), Bench.median(theirs.map(\.rate)))
                let (wc, rc) = (Bench.median(ours.map(\.cpu)), Bench.median(theirs.map(\.cpu)))
                let name = "\(command.uppercased()) -c 50" + (tls ? " over TLS" : " in clear")
                rows.append([name, Bench.format(w), Bench.format(r), Bench.ratio(w, r), String(format: "%.1f", wc), String(format: "%.1f", rc)])
                Report.add(
                    section: "TLS (tls-port, client certificates; fsync=interval 1 s ↔ everysec)", workload: name, walrus: w, peer: r,
                    peerName: "redis-server", unit: "ops/s", goal: tls ? .atLeast(1.0) : nil,
                    limit: tls ? "the TLS record layer (BoringSSL through swift-nio-ssl vs Redis's OpenSSL)" : "")
                Report.add(
                    section: "TLS (tls-port, client certificates; fsync=interval 1 s ↔ everysec)", workload: name + ", server CPU",
                    walrus: wc, peer: rc, peerName: "redis-server", unit: "CPU-µs/op", lowerIsBetter: true)
            }
        }
        Bench.table(
            "TLS client port vs redis-server tls-port (and each in clear)",
            ["workload", "walrusd ops/s", "redis-server ops/s", "walrus ÷ redis", "walrusd CPU-µs/op", "redis-server CPU-µs/op"], rows)
        try self.catchUp(files: files)
    }

    /// A new follower streams the same log over TLS replication and in clear.
    private func catchUp(files: [String]) throws {
        let records = self.quick ? 100_000 : 1_000_000
        let data = Bench.scratch(self.directory, "tls-catchup-primary")
        try ReplicationBenchmarks.fill(directory: data, keys: records, checkpoint: false)
        let logBytes = try FileManager.default.contentsOfDirectory(atPath: data).filter { $0.hasPrefix("wal-") }
            .reduce(Int64(0)) { $0 + ((try? FileManager.default.attributesOfItem(atPath: data + "/" + $1)[.size] as? Int64) ?? 0) }
        var rows: [[String]] = []
        var rates: [Bool: Double] = [:]
        for tls in [false, true] {
            let extra = tls ? files + ["--tls-replication", "yes"] : []
            let primary = try RESPBenchmarks.launchWalrusd(self.walrusd, data: data, ["--fsync", "always"] + extra)
            defer { kill(primary.process.processIdentifier, SIGKILL); primary.process.waitUntilExit() }
            let started = Bench.now()
            let follower = try RESPBenchmarks.launchWalrusd(
                self.walrusd, data: Bench.scratch(self.directory, "tls-catchup-follower-\(tls)"),
                extra + ["--follow", "127.0.0.1:\(primary.replicationPort)"])
            defer { kill(follower.process.processIdentifier, SIGKILL); follower.process.waitUntilExit() }
            let reached = try ReplicationBenchmarks.waitForOffset(port: follower.port, UInt64(records), seconds: 300)
            let seconds = Bench.now() - started
            let rate = reached ? Double(logBytes) / seconds / 1e6 : .nan
            rates[tls] = rate
            rows.append([tls ? "over TLS" : "in clear", String(format: "%.0f", rate), String(format: "%.2f", seconds)])
        }
        Report.add(
            section: "TLS (tls-port, client certificates; fsync=interval 1 s ↔ everysec)",
            workload: "follower catch-up over TLS vs in clear, \(Bench.format(Double(records))) records", walrus: rates[true] ?? .nan,
            peer: rates[false], peerName: "walrusd in clear", unit: "MB/s")
        Bench.table(
            "follower catch-up over TLS replication vs in clear (\(records) records, \(Bench.format(Double(logBytes) / 1_048_576)) MiB of log)",
            ["link", "MB/s", "seconds"], rows)
    }
}
