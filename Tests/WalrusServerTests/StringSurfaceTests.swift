import Foundation
import Testing
import WalrusClient
import WalrusTestKit
#if canImport(Glibc)
import Glibc
#endif

/// What the Redis surface promises beyond single replies: an EXEC is one record (all or none
/// after kill -9, on every follower), expiry follows Redis's replicated model, and a MULTI dropped
/// by a disconnect writes nothing.
struct StringSurfaceTests {
    let helpers = ReplicationTests()

    /// EXECs of two SETs under load, the primary killed -9 mid-stream: after the restart every
    /// pair is whole or absent, and the follower holds the same state.
    @Test(.serverTest) func execIsAllOrNothingAcrossKillAndFollowers() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var primary = try DaemonProcess(data: directory.file("p"))
        let follower = try DaemonProcess(data: directory.file("f"), arguments: primary.followArguments)
        defer { follower.stop() }
        let client = try primary.connect()
        var acknowledged = 0
        func send(_ i: Int) throws {
            for command in [["MULTI"], ["SET", "a\(i)", "\(i)"], ["SET", "b\(i)", "\(i)"], ["EXEC"]] {
                try client.send(command.map { Array($0.utf8) })
            }
        }
        for i in 0..<250 {
            try send(i)
            for _ in 0..<3 { _ = try client.readReply() }
            if case .array(let replies?) = try client.readReply(), replies.count == 2 { acknowledged = i + 1 }
        }
        // Fifty more pipelined, unanswered: the kill lands while they are in flight.
        for i in 250..<300 { try send(i) }
        primary.stop(signal: SIGKILL)
        primary = try DaemonProcess(data: directory.file("p"), arguments: ["--repl-port", "\(primary.replicationPort)"])
        defer { primary.stop() }
        let after = try primary.connect()
        for i in 0..<300 {
            let a = try after.command("GET", "a\(i)")
            let b = try after.command("GET", "b\(i)")
            #expect(a == b, "EXEC \(i) is half there after kill -9: a=\(a) b=\(b)")
            if i < acknowledged { #expect(a == .bulk(Array("\(i)".utf8)), "acknowledged EXEC \(i) is gone") }
        }
        // The follower reconnects to the restarted primary and converges on the same state.
        #expect(try self.helpers.converged(primary, [follower]))
    }

    /// A key past its deadline: hidden at once on the follower (which never deletes it), deleted
    /// by the primary's expiry (a record the follower applies); a promoted follower expires at once.
    @Test(.serverTest) func expiryFollowsThePrimary() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let primary = try DaemonProcess(data: directory.file("p"))
        let follower = try DaemonProcess(data: directory.file("f"), arguments: primary.followArguments)
        defer { follower.stop() }
        let writer = try primary.connect()
        let reader = try follower.connect()
        #expect(try writer.command("SET", "soon", "v", "PX", "400") == .simple("OK"))
        #expect(try writer.command("SET", "later", "v", "EX", "3600") == .simple("OK"))
        #expect(try self.helpers.eventually { try reader.command("GET", "soon") == .bulk(Array("v".utf8)) })
        let ttl = try reader.command("TTL", "later")
        // The deadline travels as an absolute time: the follower's TTL is the primary's less the
        // seconds since the SET (a few, on a loaded machine or under a sanitizer).
        guard case .integer(let seconds) = ttl else { Issue.record("TTL answered \(ttl)"); return }
        #expect((3590...3600).contains(seconds), "TTL on the follower: \(seconds)")
        // Gone for readers once the deadline passes; the primary's cycle deletes it, and the
        // follower's key count follows its delete record.
        #expect(try self.helpers.eventually(5) { try reader.command("GET", "soon") == .bulk(nil) })
        #expect(try self.helpers.eventually(5) { try reader.command("DBSIZE") == .integer(1) })
        #expect(try reader.command("EXISTS", "soon") == .integer(0))

        // The primary goes away before it can expire a key: the follower hides it but keeps it
        // (it never deletes on its own) until promoted, then expires it at once, with a record.
        #expect(try writer.command("SET", "orphan", "v", "PX", "300") == .simple("OK"))
        #expect(try self.helpers.eventually { try reader.command("DBSIZE") == .integer(2) })
        primary.stop(signal: SIGKILL)
        usleep(500_000)
        #expect(try reader.command("GET", "orphan") == .bulk(nil))
        #expect(try reader.command("DBSIZE") == .integer(2))
        let promoted = try self.helpers.walrusctl(["promote", "--socket", follower.controlSocket])
        #expect(promoted.status == 0, "\(promoted.output)")
        #expect(try self.helpers.eventually(5) { try reader.command("DBSIZE") == .integer(1) })
    }

    /// An expired key never comes back: not after a restart (replay keeps it, reads hide it, the
    /// primary deletes it), not once its delete is logged.
    @Test func expiredKeysStayGoneAfterARestart() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var daemon = try DaemonProcess(data: directory.path)
        let client = try daemon.connect()
        #expect(try client.command("SET", "k", "v", "PX", "200") == .simple("OK"))
        #expect(try client.command("SET", "j", "v", "PX", "200") == .simple("OK"))
        usleep(300_000)
        #expect(try client.command("GET", "k") == .bulk(nil))
        daemon.stop(signal: SIGKILL)
        daemon = try DaemonProcess(data: directory.path)
        defer { daemon.stop() }
        let again = try daemon.connect()
        #expect(try again.command("GET", "k") == .bulk(nil))
        #expect(try again.command("GET", "j") == .bulk(nil))
        #expect(try self.helpers.eventually(5) { try again.command("DBSIZE") == .integer(0) })
    }

    /// A client that disconnects inside MULTI: its queued writes are dropped; nothing is logged.
    @Test func disconnectInsideMultiWritesNothing() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let daemon = try DaemonProcess(data: directory.path)
        defer { daemon.stop() }
        let before = try daemon.connect().command("INFO", "persistence").text ?? ""
        do {
            let client = try daemon.connect()
            #expect(try client.command("MULTI") == .simple("OK"))
            #expect(try client.command("SET", "x", "1") == .simple("QUEUED"))
            #expect(try client.command("MULTI") == .error("ERR MULTI calls can not be nested"))
            #expect(try client.command("WATCH", "x") == .error("ERR WATCH inside MULTI is not allowed"))
        }
        usleep(200_000)
        let other = try daemon.connect()
        #expect(try other.command("EXISTS", "x") == .integer(0))
        let after = try other.command("INFO", "persistence").text ?? ""
        func lastIndex(_ info: String) -> String? { info.split(separator: "\r\n").first { $0.hasPrefix("walrus_last_index:") }.map(String.init) }
        #expect(lastIndex(before) == lastIndex(after), "a dropped MULTI wrote a record")
    }
}
