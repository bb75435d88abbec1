import Foundation
import Testing
import WalrusClient
import WalrusTestKit
#if canImport(Glibc)
import Glibc
#endif

/// Replication between real walrusd processes on 127.0.0.1, ports picked at run time.
@Suite(.serialized)
struct ReplicationTests {
    /// Poll `condition` every 50 ms for up to `seconds`.
    func eventually(_ seconds: Double = 20, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return true }
            usleep(50_000)
        }
        return try condition()
    }

    func digest(_ daemon: DaemonProcess) throws -> String {
        try daemon.connect().command("DIGEST").text ?? "?"
    }

    /// What each daemon says about its state, for a failed expectation's message: DIGEST, DBSIZE,
    /// INFO replication and the end of its log.
    func describe(_ daemons: [(String, DaemonProcess)]) -> String {
        daemons.map { name, daemon in
            let connection = try? daemon.connect()
            let digest = (try? connection?.command("DIGEST").text) ?? "?"
            let keys = (try? connection?.command("DBSIZE"))?.description ?? "?"
            let info = (try? connection?.command("INFO", "replication").text) ?? "?"
            let log = daemon.log.split(separator: "\n").suffix(25).joined(separator: "\n")
            return "== \(name): digest \(digest), dbsize \(keys)\n\(info)\n-- log (last 25 lines):\n\(log)"
        }.joined(separator: "\n")
    }

    /// Both hold the same state (the follower has caught up and its digest equals the primary's).
    func converged(_ primary: DaemonProcess, _ followers: [DaemonProcess], seconds: Double = 30) throws -> Bool {
        try self.eventually(seconds) {
            let expected = try self.digest(primary)
            return try followers.allSatisfy { try self.digest($0) == expected }
        }
    }

    func walrusctl(_ arguments: [String]) throws -> (output: String, status: Int32) {
        try run(DaemonProcess.binaryDirectory + "/walrusctl", arguments)
    }

    /// Write `count` keys `prefix0…` through one pipelined connection; returns the keys acknowledged.
    @discardableResult
    func load(_ daemon: DaemonProcess, prefix: String, count: Int, valueBytes: Int = 64) throws -> Int {
        let connection = try daemon.connect()
        let value = [UInt8](repeating: UInt8(ascii: "v"), count: valueBytes)
        var acknowledged = 0
        var start = 0
        while start < count {
            let end = min(start + 200, count)
            for i in start..<end { try connection.send([Array("SET".utf8), Array("\(prefix)\(i)".utf8), value]) }
            for _ in start..<end where try connection.readReply() == .simple("OK") { acknowledged += 1 }
            start = end
        }
        return acknowledged
    }

    /// Primary + 2 followers: writes, deletes and batches on the primary reach both followers;
    /// their digests equal the primary's; followers refuse writes with Redis's READONLY (through
    /// redis-cli); INFO, ROLE and walrusctl show the topology.
    @Test func primaryAndTwoFollowers() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let primary = try DaemonProcess(data: directory.file("primary"))
        defer { primary.stop() }
        let first = try DaemonProcess(data: directory.file("f1"), arguments: primary.followArguments)
        defer { first.stop() }
        // The second announces another address and port (replica-announce-ip/-port, behind NAT).
        let second = try DaemonProcess(
            data: directory.file("f2"), arguments: primary.followArguments + ["--replica-announce-ip", "10.9.8.7", "--replica-announce-port", "6390"])
        defer { second.stop() }

        #expect(try self.load(primary, prefix: "k", count: 3000) == 3000)
        let connection = try primary.connect()
        #expect(try connection.command("DEL", "k1", "k2", "missing") == .integer(2))
        #expect(try connection.command("MSET", "a", "1", "b", "2") == .simple("OK"))
        #expect(try self.converged(primary, [first, second]))
        #expect(try first.connect().command("GET", "a").text == "1")
        #expect(try second.connect().command("GET", "k1") == .bulk(nil))
        #expect(try second.connect().command("DBSIZE") == .integer(3000))

        // The follower refuses writes exactly as a Redis replica does.
        let refused = try run("/usr/bin/redis-cli", ["-p", String(first.port), "SET", "x", "1"])
        #expect(refused.output.trimmingCharacters(in: .newlines) == "READONLY You can't write against a read only replica.")
        #expect(try first.connect().command("DEL", "a") == .error("READONLY You can't write against a read only replica."))

        let info = try primary.connect().command("INFO", "replication").text ?? ""
        #expect(info.contains("role:master") && info.contains("connected_slaves:2"), "\(info)")
        #expect(info.contains("ip=127.0.0.1,port=\(first.port),state=online"), "\(info)")
        #expect(info.contains("ip=10.9.8.7,port=6390,state=online"), "\(info)")
        let followerInfo = try first.connect().command("INFO", "replication").text ?? ""
        #expect(followerInfo.contains("role:slave") && followerInfo.contains("master_link_status:up"), "\(followerInfo)")
        // master_port is the primary's client port (from its CHALLENGE), as Sentinel and Redis
        // clients expect; walrus_replication_port on the primary names the other one.
        #expect(followerInfo.contains("master_port:\(primary.port)\r\n"), "\(followerInfo)")
        guard case .array(let role?) = try first.connect().command("ROLE") else { Issue.record("ROLE"); return }
        #expect(role.first == .bulk(Array("slave".utf8)) && role[3] == .bulk(Array("connected".utf8)))
        #expect(role[2] == .integer(primary.port))
        // REPLICAOF naming the primary it follows changes nothing, in Redis's words.
        #expect(try first.connect().command("REPLICAOF", "127.0.0.1", String(primary.port)) == .simple("OK Already connected to specified master"))

        // One row per follower, both streaming with no lag; the digest verb agrees with DIGEST.
        #expect(try self.eventually { try self.walrusctl(["replicas", "--socket", primary.controlSocket]).output.components(separatedBy: "streaming").count == 3 })
        let table = try self.walrusctl(["replicas", "--socket", primary.controlSocket]).output
        #expect(table.hasPrefix("NODE") && table.contains("DATA AGE"), "\(table)")
        let status = try self.walrusctl(["status", "--socket", first.controlSocket]).output
        #expect(status.contains("127.0.0.1:\(primary.replicationPort)") && status.contains("up, streaming"), "\(status)")
        let ctlDigest = try self.walrusctl(["digest", "--socket", second.controlSocket]).output
        #expect(ctlDigest.hasPrefix(try self.digest(primary)), "\(ctlDigest)")
        // WAIT counts followers that have every write so far durable.
        #expect(try primary.connect().command("WAIT", "2", "5000") == .integer(2))
    }

    /// kill -9 a follower mid-stream, restart it: it resumes from its own durable index (no
    /// snapshot is sent) and converges while the primary keeps taking writes.
    @Test func killedFollowerResumesFromItsDurableIndex() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let primary = try DaemonProcess(data: directory.file("primary"))
        defer { primary.stop() }
        var follower = try DaemonProcess(data: directory.file("f1"), arguments: primary.followArguments)
        try self.load(primary, prefix: "before", count: 2000)
        #expect(try self.converged(primary, [follower]))

        // Writes keep arriving while the follower dies.
        let writer = Thread { _ = try? self.load(primary, prefix: "during", count: 20_000, valueBytes: 200) }
        writer.start()
        #expect(try self.eventually { try primary.connect().command("EXISTS", "during5000") == .integer(1) })
        follower.stop(signal: SIGKILL)
        follower = try DaemonProcess(data: directory.file("f1"), arguments: primary.followArguments)
        defer { follower.stop() }
        #expect(try self.eventually(60) { try primary.connect().command("EXISTS", "during19999") == .integer(1) })
        try self.load(primary, prefix: "after", count: 100)
        #expect(try self.converged(primary, [follower]))

        #expect(!primary.log.contains("Sending a snapshot"), "\(primary.log)")
        #expect(follower.log.contains("Replication link up"))
        let link = follower.log.components(separatedBy: "\n").first { $0.contains("Replication link up") } ?? ""
        #expect(!link.contains("repl.durable=0 "), "the restarted follower must resume past index 0: \(link)")
        let replicas = try self.walrusctl(["replicas", "--json", "--socket", primary.controlSocket]).output
        #expect(replicas.contains("\"snapshotsSent\" : 0"), "\(replicas)")
    }

    /// A follower started after the primary checkpointed and dropped old segments is bootstrapped
    /// from a snapshot; when the transfer is cut (kill -9) it resumes where it broke off.
    @Test func snapshotBootstrapResumesAfterACut() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let config = directory.file("primary.toml")
        // Small segments and no retention budget: a checkpoint drops every covered segment.
        try "segment-size = 262144\nretention-bytes = 0\nretention-seconds = 0\n".write(toFile: config, atomically: true, encoding: .utf8)
        // ~6 MB of snapshot, paced at 2 MB/s: about three seconds to cut into.
        let primary = try DaemonProcess(
            data: directory.file("primary"), arguments: ["--config", config, "--repl-snapshot-rate", "2000000"])
        defer { primary.stop() }
        try self.load(primary, prefix: "key", count: 6000, valueBytes: 1000)
        let checkpoint = try self.walrusctl(["checkpoint", "--socket", primary.controlSocket])
        #expect(checkpoint.status == 0 && checkpoint.output.contains("wal-0001.log"), "\(checkpoint.output)")

        var follower = try DaemonProcess(data: directory.file("f1"), arguments: primary.followArguments)
        // Wait until part of the snapshot is here, then cut the transfer.
        #expect(try self.eventually {
            let status = try self.walrusctl(["status", "--json", "--socket", follower.controlSocket]).output
            guard let range = status.range(of: #""snapshotPercent" : (\d+)"#, options: .regularExpression) else { return false }
            return (Int(status[range].split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) ?? 0) >= 25
        })
        follower.stop(signal: SIGKILL)
        let partial = try FileManager.default.contentsOfDirectory(atPath: directory.file("f1")).filter { $0.hasSuffix(".partial") }
        #expect(partial.count == 1, "\(partial)")
        follower = try DaemonProcess(data: directory.file("f1"), arguments: primary.followArguments)
        defer { follower.stop() }
        #expect(try self.converged(primary, [follower], seconds: 60))
        #expect(follower.log.contains("Resuming a snapshot transfer where it broke off"), "\(follower.log)")
        let resumed = primary.log.components(separatedBy: "\n").first { $0.contains("Resuming a snapshot transfer") } ?? ""
        #expect(resumed.contains("repl.offset=") && !resumed.contains("repl.offset=0 "), "\(resumed)")
        // The follower's directory is a valid walrus directory: it restarts on its own.
        follower.stop()
        let again = try DaemonProcess(data: directory.file("f1"), arguments: primary.followArguments)
        defer { again.stop() }
        #expect(try self.converged(primary, [again]))
    }

    /// A follower of another cluster and a follower with the wrong key are refused, with the
    /// reason in both logs; the right key is accepted.
    @Test func wrongClusterAndBadAuthAreRefused() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let key = directory.file("key")
        let wrongKey = directory.file("wrong-key")
        try "0123456789abcdef0123456789abcdef\n".write(toFile: key, atomically: true, encoding: .utf8)
        try "fedcba9876543210fedcba9876543210\n".write(toFile: wrongKey, atomically: true, encoding: .utf8)
        chmod(key, 0o600)
        chmod(wrongKey, 0o600)
        let clusterA = try DaemonProcess(data: directory.file("a"), arguments: ["--repl-auth-file", key])
        defer { clusterA.stop() }
        let clusterB = try DaemonProcess(data: directory.file("b"))
        defer { clusterB.stop() }
        try self.load(clusterA, prefix: "a", count: 10)

        // The right key: accepted, and the follower joins cluster A.
        var follower = try DaemonProcess(data: directory.file("f"), arguments: clusterA.followArguments + ["--repl-auth-file", key])
        #expect(try self.converged(clusterA, [follower]))
        follower.stop()

        // Now pointed at cluster B: refused as another cluster, on both sides.
        follower = try DaemonProcess(data: directory.file("f"), arguments: clusterB.followArguments)
        #expect(self.eventually { follower.log.contains("The primary refused this follower") })
        #expect(follower.log.contains("belongs to cluster"), "\(follower.log)")
        #expect(clusterB.log.contains("Refused a follower") && clusterB.log.contains("repl.reason=otherCluster"))
        let status = try self.walrusctl(["status", "--socket", follower.controlSocket]).output
        #expect(status.contains("refused") && status.contains("belongs to cluster"), "\(status)")
        follower.stop()

        // A new follower with the wrong key, and one with none: refused for auth.
        let stranger = try DaemonProcess(data: directory.file("s"), arguments: clusterA.followArguments + ["--repl-auth-file", wrongKey])
        defer { stranger.stop() }
        #expect(self.eventually { stranger.log.contains("The primary refused this follower") })
        #expect(stranger.log.contains("repl.reason=badAuth") && stranger.log.contains("differs from the primary"), "\(stranger.log)")
        #expect(clusterA.log.contains("repl.reason=badAuth"))
        let keyless = try DaemonProcess(data: directory.file("n"), arguments: clusterA.followArguments)
        defer { keyless.stop() }
        #expect(self.eventually { keyless.log.contains("requires authentication") })
        #expect(try stranger.connect().command("DBSIZE") == .integer(0))

        // A key file anyone can read is refused at start.
        let open = directory.file("open-key")
        try "0123456789abcdef0123456789abcdef".write(toFile: open, atomically: true, encoding: .utf8)
        chmod(open, 0o644)
        #expect(throws: (any Error).self) { try DaemonProcess(data: directory.file("o"), arguments: ["--repl-auth-file", open]) }
    }

    /// sync-replicas = 1: with the only follower stopped, writes fail after the timeout saying
    /// they were not acknowledged; with it back they succeed; no acknowledged write is missing.
    @Test func syncReplicasRefusesToPretend() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let primary = try DaemonProcess(
            data: directory.file("primary"), arguments: ["--sync-replicas", "1", "--sync-replicas-timeout", "500"])
        defer { primary.stop() }
        var follower = try DaemonProcess(data: directory.file("f1"), arguments: primary.followArguments)
        #expect(try self.eventually { try primary.connect().command("WAIT", "1", "100") == .integer(1) })
        var acknowledged: [String] = []
        let connection = try primary.connect()
        for i in 0..<50 where try connection.command("SET", "one\(i)", "v") == .simple("OK") { acknowledged.append("one\(i)") }
        #expect(acknowledged.count == 50)

        follower.stop()
        let refused = try connection.command("SET", "lonely", "v")
        guard case .error(let message) = refused else { Issue.record("accepted without a follower: \(refused)"); return }
        #expect(message.hasPrefix("NOREPLICAS") && message.contains("NOT acknowledged") && message.contains("primary's log"), "\(message)")
        #expect(try connection.command("WAIT", "1", "200") == .integer(0))

        follower = try DaemonProcess(data: directory.file("f1"), arguments: primary.followArguments)
        defer { follower.stop() }
        #expect(try self.eventually { try connection.command("SET", "back", "v") == .simple("OK") })
        acknowledged.append("back")
        for key in acknowledged {
            #expect(try follower.connect().command("EXISTS", key) == .integer(1), "\(key) missing on the follower")
        }
        // The refused write is in the primary's log (as the error said) and reached the follower.
        #expect(try follower.connect().command("EXISTS", "lonely") == .integer(1))
    }

    /// Garbage, truncated frames and huge length claims on the replication port close that
    /// connection only; the daemon serves on and a real follower keeps streaming.
    @Test func garbageOnTheReplicationPort() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let primary = try DaemonProcess(data: directory.file("primary"))
        defer { primary.stop() }
        let follower = try DaemonProcess(data: directory.file("f1"), arguments: primary.followArguments)
        defer { follower.stop() }
        try self.load(primary, prefix: "a", count: 100)
        #expect(try self.converged(primary, [follower]))

        var header: [UInt8] = [0x57, 0x52, 1, 1] + [UInt8](repeating: 0, count: 8)
        let huge = header + [0xFF, 0xFF, 0xFF, 0xF0, 0, 0, 0, 0]
        header += [0, 0, 0, 10, 0, 0, 0, 0]
        let inputs: [[UInt8]] = [
            Array("GET foo\r\n".utf8),
            Array("*1\r\n$4\r\nPING\r\n".utf8),
            huge,
            header + [1, 2, 3],  // truncated, then the sender goes away
            header + [UInt8](repeating: 7, count: 10),  // a HELLO whose CRC is wrong
            [0x57, 0x52, 9, 1] + [UInt8](repeating: 0, count: 16),  // another protocol version
            (0..<4096).map { _ in UInt8.random(in: 0...255) },
        ]
        for input in inputs {
            let raw = try RESPConnection(host: "127.0.0.1", port: primary.replicationPort, timeoutMilliseconds: 1000)
            try raw.sendRaw(input)
            // The primary answers the connection with CHALLENGE, then closes it on the bad frame
            // (the truncated one waits for the rest: we hang up instead).
            _ = try? raw.readReply()
        }
        try self.load(primary, prefix: "b", count: 100)
        #expect(try primary.connect().command("PING") == .simple("PONG"))
        #expect(try self.converged(primary, [follower]))
        #expect(primary.log.contains("Dropped a replication connection"))
        #expect(primary.log.contains("bad magic") && primary.log.contains("over the"), "\(primary.log)")
    }
}

extension ReplicationTests {
    func statusJSON(_ daemon: DaemonProcess) throws -> [String: Any] {
        let output = try self.walrusctl(["status", "--json", "--socket", daemon.controlSocket]).output
        return (try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any]) ?? [:]
    }

    /// A follower that went away keeps the log it needs through a checkpoint (within
    /// repl-retention-bytes) and resumes without a snapshot; past the budget the primary warns,
    /// lets the log go, and the follower is bootstrapped from a snapshot instead.
    @Test func retentionKeepsTheLogAFollowerNeeds() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let config = directory.file("primary.toml")
        try "segment-size = 65536\nretention-bytes = 0\nretention-seconds = 0\n".write(toFile: config, atomically: true, encoding: .utf8)
        for (name, budget) in [("roomy", "1000000000"), ("tight", "20000")] {
            let primary = try DaemonProcess(
                data: directory.file(name), arguments: ["--config", config, "--repl-retention-bytes", budget])
            defer { primary.stop() }
            var follower = try DaemonProcess(data: directory.file(name + "-f"), arguments: primary.followArguments)
            try self.load(primary, prefix: "a", count: 500, valueBytes: 200)
            #expect(try self.converged(primary, [follower]))
            let durable = (try self.statusJSON(follower)["durableIndex"] as? NSNumber)?.uint64Value ?? 0
            follower.stop()
            try self.load(primary, prefix: "b", count: 3000, valueBytes: 200)
            let replicas = try self.walrusctl(["replicas", "--socket", primary.controlSocket]).output
            #expect(replicas.contains("disconnected"), "\(replicas)")
            _ = try self.walrusctl(["checkpoint", "--socket", primary.controlSocket])
            let first = (try self.statusJSON(primary)["firstIndex"] as? NSNumber)?.uint64Value ?? 0
            follower = try DaemonProcess(data: directory.file(name + "-f"), arguments: primary.followArguments)
            defer { follower.stop() }
            #expect(try self.converged(primary, [follower]))
            if name == "roomy" {
                #expect(first <= durable + 1, "the log the follower needs (from \(durable + 1)) was dropped: starts at \(first)")
                #expect(!primary.log.contains("Sending a snapshot"))
            } else {
                #expect(replicas.contains("warning:") && replicas.contains("fall off the retained log"), "\(replicas)")
                #expect(first > durable + 1)
                #expect(primary.log.contains("too far behind to keep the log for it"))
                #expect(primary.log.contains("Sending a snapshot"))
            }
        }
    }
}
