import Foundation
import Testing
import WalrusClient
import WalrusTestKit
#if canImport(Glibc)
import Glibc
#endif

/// promote, follow and fencing between real walrusd processes on 127.0.0.1.
@Suite(.serialized)
struct FailoverTests {
    let helpers = ReplicationTests()

    func ctl(_ arguments: [String]) throws -> (output: String, status: Int32) {
        try run(DaemonProcess.binaryDirectory + "/walrusctl", arguments)
    }

    func keys(_ daemon: DaemonProcess, _ pattern: String) throws -> Set<String> {
        guard case .array(let values?) = try daemon.connect().command("KEYS", pattern) else { return [] }
        return Set(values.compactMap(\.text))
    }

    /// sync-replicas = 0: the primary dies holding acknowledged writes its follower never got; the
    /// follower is promoted (epoch 2); the old primary rejoins with --follow and moves exactly those
    /// writes into diverged-1-201-250.log (dump-able), then matches the new primary's digest.
    @Test func rejoiningPrimaryMovesDivergedWritesAside() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var primary = try DaemonProcess(data: directory.file("p"))
        var follower = try DaemonProcess(data: directory.file("f"), arguments: primary.followArguments)
        try helpers.load(primary, prefix: "a", count: 200)
        #expect(try helpers.converged(primary, [follower]))
        follower.stop()
        #expect(try helpers.load(primary, prefix: "lost", count: 50) == 50)
        let oldReplicationPort = primary.replicationPort
        primary.stop(signal: SIGKILL)

        // The follower comes back (its primary is gone) and is promoted.
        follower = try DaemonProcess(data: directory.file("f"), arguments: ["--follow", "127.0.0.1:\(oldReplicationPort)"])
        defer { follower.stop() }
        let promoted = try self.ctl(["promote", "--socket", follower.controlSocket])
        #expect(promoted.status == 0 && promoted.output.contains("primary of epoch 2"), "\(promoted.output)")
        #expect(try follower.connect().command("SET", "new", "1") == .simple("OK"))
        let role = try follower.connect().command("ROLE")
        guard case .array(let fields?) = role else { Issue.record("\(role)"); return }
        #expect(fields.first == .bulk(Array("master".utf8)))

        // The old primary rejoins as a follower of the new one.
        primary = try DaemonProcess(data: directory.file("p"), arguments: follower.followArguments)
        defer { primary.stop() }
        #expect(try helpers.converged(follower, [primary]), "\(helpers.describe([("new primary", follower), ("rejoined", primary)]))")
        #expect(primary.log.contains("records past the cut were moved aside"), "\(primary.log)")
        let diverged = try FileManager.default.contentsOfDirectory(atPath: directory.file("p")).filter { $0.hasPrefix("diverged-") }
        #expect(diverged == ["diverged-1-201-250.log"], "\(diverged)")
        let dump = try self.ctl(["wal", "dump", "--file", directory.file("p") + "/" + (diverged.first ?? "?")])
        let moved = Set(dump.output.split(separator: "\n").compactMap { line in line.split(separator: " ").dropFirst(2).first.map(String.init) })
        // Exactly the acknowledged writes the new primary lacks.
        let lost = Set((0..<50).map { "lost\($0)" })
        #expect(moved == lost, "\(dump.output.prefix(300))")
        #expect(try self.keys(follower, "lost*").isEmpty)
        #expect(try self.keys(primary, "lost*").isEmpty)
        #expect(try primary.connect().command("SET", "x", "1") == .error("READONLY You can't write against a read only replica."))
        let status = try self.ctl(["status", "--socket", primary.controlSocket]).output
        #expect(status.contains("diverged-1-201-250.log") && status.contains("2 from 201"), "\(status)")

        // The operator decides to re-apply them to the new primary; they reach every node.
        let replay = try self.ctl(["wal", "replay", directory.file("p") + "/diverged-1-201-250.log", "--to", "127.0.0.1:\(follower.port)"])
        #expect(replay.status == 0 && replay.output.contains("sent 50 command(s)"), "\(replay.output)")
        #expect(try self.keys(follower, "lost*") == lost)
        #expect(try helpers.converged(follower, [primary]), "\(helpers.describe([("new primary", follower), ("rejoined", primary)]))")
    }

    /// sync-replicas = 1: kill -9 the primary under load, promote the follower: every write the
    /// primary acknowledged is on the new primary.
    @Test func syncReplicasLosesNothingOnFailover() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let primary = try DaemonProcess(data: directory.file("p"), arguments: ["--sync-replicas", "1", "--sync-replicas-timeout", "2000"])
        let follower = try DaemonProcess(data: directory.file("f"), arguments: primary.followArguments)
        defer { follower.stop() }
        #expect(try helpers.eventually { try primary.connect().command("WAIT", "1", "100") == .integer(1) })
        let acknowledged = Acknowledged()
        let writer = Thread {
            guard let connection = try? primary.connect() else { return }
            for i in 0..<100_000 {
                guard let reply = try? connection.command("SET", "k\(i)", "v") else { return }
                if reply == .simple("OK") { acknowledged.add("k\(i)") }
            }
        }
        writer.start()
        #expect(helpers.eventually { acknowledged.count > 300 })
        primary.stop(signal: SIGKILL)
        // The follower may know of records the primary sealed but never got to send (none of them
        // acknowledged): then promote refuses, naming the gap, and --force accepts it.
        var promoted = try self.ctl(["promote", "--socket", follower.controlSocket])
        if promoted.status != 0 {
            #expect(promoted.output.contains("behind the primary it last saw"), "\(promoted.output)")
            promoted = try self.ctl(["promote", "--force", "--socket", follower.controlSocket])
        }
        #expect(promoted.status == 0, "\(promoted.output)")
        let present = try self.keys(follower, "k*")
        let missing = acknowledged.all.subtracting(present)
        #expect(missing.isEmpty, "acknowledged but lost: \(missing.prefix(10))")
        #expect(acknowledged.count > 300)
    }

    /// Split brain forced with --force: a second primary at epoch 2 beside the old one at epoch 1. A
    /// follower that has seen epoch 2 refuses the old primary, and the old primary, told of epoch 2
    /// by that follower's HELLO, stops taking writes (fenced).
    @Test func followerRefusesALowerEpochAndTheStalePrimaryIsFenced() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let old = try DaemonProcess(data: directory.file("p"))
        defer { old.stop() }
        let usurper = try DaemonProcess(data: directory.file("f1"), arguments: old.followArguments)
        defer { usurper.stop() }
        let witness = try DaemonProcess(data: directory.file("f2"), arguments: old.followArguments)
        defer { witness.stop() }
        try helpers.load(old, prefix: "a", count: 100)
        #expect(try helpers.converged(old, [usurper, witness]))

        #expect(try self.ctl(["promote", "--force", "--socket", usurper.controlSocket]).status == 0)
        #expect(try usurper.connect().command("SET", "epoch2", "yes") == .simple("OK"))
        // The old primary does not know yet: it still takes writes (this is the split brain).
        #expect(try old.connect().command("SET", "epoch1", "yes") == .simple("OK"))

        // The witness moves to epoch 2, then is pointed back at the old primary: refused.
        #expect(try self.ctl(["follow", "127.0.0.1:\(usurper.replicationPort)", "--socket", witness.controlSocket]).status == 0)
        #expect(try helpers.eventually { try witness.connect().command("EXISTS", "epoch2") == .integer(1) })
        #expect(try self.ctl(["follow", "127.0.0.1:\(old.replicationPort)", "--socket", witness.controlSocket]).status == 0)
        #expect(helpers.eventually { witness.log.contains("it is a stale primary") })
        #expect(try witness.connect().command("EXISTS", "epoch1") == .integer(0), "a record of the lower epoch was applied")

        // The old primary learned of epoch 2 from that HELLO: fenced.
        #expect(helpers.eventually { old.log.contains("Fenced: a newer epoch exists") })
        let refused = try old.connect().command("SET", "late", "1")
        guard case .error(let message) = refused else { Issue.record("a fenced primary took a write: \(refused)"); return }
        #expect(message.hasPrefix("READONLY This node was the primary of epoch 1"), "\(message)")
        let status = try self.ctl(["status", "--json", "--socket", old.controlSocket]).output
        #expect(status.contains("\"fenced\" : true"), "\(status)")
    }
}

extension FailoverTests {
    enum Handover: String, CaseIterable, Sendable {
        /// `walrusctl switchover` on the primary.
        case walrusctl
        /// REPLICAOF NO ONE on the follower (sync-replicas 0): it asks the primary to hand over.
        case replicaof
        /// The same inside MULTI … EXEC, as Sentinel sends it: EXEC answers at once.
        case replicaofInMulti
    }

    /// switchover under a write load: writes pause (TRYAGAIN), the follower takes over at epoch 2,
    /// the old primary follows it; a client that retries on TRYAGAIN and moves on READONLY loses
    /// no acknowledged write, and both nodes end with the same digest. Started by the operator on
    /// the primary, or by REPLICAOF NO ONE on the follower (what Sentinel's planned failover
    /// sends) — which Redis answers by promoting at once, losing what its primary acknowledged
    /// meanwhile.
    @Test(arguments: Handover.allCases) func switchoverUnderLoadLosesNothing(_ how: Handover) throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let primary = try DaemonProcess(data: directory.file("p"))
        defer { primary.stop() }
        let follower = try DaemonProcess(data: directory.file("f"), arguments: primary.followArguments)
        defer { follower.stop() }
        try helpers.load(primary, prefix: "a", count: 100)
        #expect(try helpers.converged(primary, [follower]))

        let acknowledged = Acknowledged()
        let retried = Acknowledged()
        let finished = Acknowledged()
        let writer = Thread {
            defer { finished.add("done") }
            guard var connection = try? primary.connect() else { return }
            var i = 0
            while i < 3000 {
                guard let reply = try? connection.command("SET", "k\(i)", "v") else { return }
                switch reply {
                case .simple("OK"):
                    acknowledged.add("k\(i)")
                    i += 1
                case .error(let message) where message.hasPrefix("TRYAGAIN"):
                    retried.add("k\(i)")
                    usleep(1000)
                case .error(let message) where message.hasPrefix("READONLY"):
                    guard let moved = try? follower.connect() else { return }
                    connection = moved
                default:
                    return
                }
            }
        }
        writer.start()
        #expect(helpers.eventually { acknowledged.count > 300 })
        switch how {
        case .walrusctl:
            let result = try self.ctl(["switchover", "127.0.0.1:\(follower.port)", "--socket", primary.controlSocket])
            #expect(result.status == 0 && result.output.contains("new primary"), "\(result.output)")
        case .replicaof:
            // The answer comes once the follower takes writes.
            #expect(try follower.connect().command("REPLICAOF", "NO", "ONE") == .simple("OK"))
            guard case .array(let role?) = try follower.connect().command("ROLE") else { Issue.record("ROLE"); return }
            #expect(role.first == .bulk(Array("master".utf8)))
        case .replicaofInMulti:
            let connection = try follower.connect()
            #expect(try connection.command("MULTI") == .simple("OK"))
            #expect(try connection.command("REPLICAOF", "NO", "ONE") == .simple("QUEUED"))
            #expect(try connection.command("EXEC") == .array([.simple("OK")]))
            #expect(try helpers.eventually(10) {
                guard case .array(let role?) = try follower.connect().command("ROLE") else { return false }
                return role.first == .bulk(Array("master".utf8))
            })
        }
        #expect(helpers.eventually(60) { finished.count == 1 })
        #expect(acknowledged.count == 3000)

        guard case .array(let newRole?) = try follower.connect().command("ROLE"),
            case .array(let oldRole?) = try primary.connect().command("ROLE")
        else { Issue.record("ROLE"); return }
        #expect(newRole.first == .bulk(Array("master".utf8)) && oldRole.first == .bulk(Array("slave".utf8)))
        #expect(try helpers.converged(follower, [primary]))
        let missing = acknowledged.all.subtracting(try self.keys(follower, "k*"))
        #expect(missing.isEmpty, "acknowledged but lost: \(missing.prefix(10))")
        #expect(primary.log.contains("Switchover done"))
        if how != .walrusctl {
            #expect(primary.log.contains("A follower asks to take over"), "\(primary.log.suffix(2000))")
            #expect(!follower.log.contains("Promoting without a handover"), "\(follower.log.suffix(2000))")
        }
        let status = try self.ctl(["status", "--json", "--socket", follower.controlSocket]).output
        #expect(status.contains("\"epoch\" : 2"), "\(status)")
    }
}

extension FailoverTests {
    /// A switchover whose target cannot catch up in time fails, says why, and writes resume on the
    /// old primary.
    @Test func failedSwitchoverResumesWrites() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let primary = try DaemonProcess(data: directory.file("p"))
        defer { primary.stop() }
        let follower = try DaemonProcess(data: directory.file("f"), arguments: primary.followArguments)
        defer { follower.stop() }
        try helpers.load(primary, prefix: "a", count: 10)
        #expect(try helpers.converged(primary, [follower]))
        kill(follower.process.processIdentifier, SIGSTOP)
        defer { kill(follower.process.processIdentifier, SIGCONT) }
        #expect(try primary.connect().command("SET", "b", "1") == .simple("OK"))
        let result = try self.ctl(["switchover", "127.0.0.1:\(follower.port)", "--timeout", "500", "--socket", primary.controlSocket])
        #expect(result.status != 0, "\(result.output)")
        #expect(result.output.contains("failed") && result.output.contains("still the primary"), "\(result.output)")
        #expect(try primary.connect().command("SET", "c", "1") == .simple("OK"))
        guard case .array(let role?) = try primary.connect().command("ROLE") else { Issue.record("ROLE"); return }
        #expect(role.first == .bulk(Array("master".utf8)))
    }
}

/// Keys a writer thread saw acknowledged.
final class Acknowledged: @unchecked Sendable {
    private let lock = NSLock()
    private var keys: Set<String> = []
    func add(_ key: String) {
        self.lock.lock()
        self.keys.insert(key)
        self.lock.unlock()
    }
    var all: Set<String> {
        self.lock.lock()
        defer { self.lock.unlock() }
        return self.keys
    }
    var count: Int { self.all.count }
}
