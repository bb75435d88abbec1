import Foundation
import Testing
import WalrusClient
import WalrusTestKit
#if canImport(Glibc)
import Glibc
#endif

/// Redis Sentinel (redis-server 7.0 in sentinel mode, unchanged) drives walrusd: three nodes with
/// sync-replicas 1, three Sentinels with quorum 2 on loopback, a redis-py Sentinel client writing
/// through `master_for`. The primary is killed -9 under load: Sentinel promotes a follower
/// (MULTI; SLAVEOF NO ONE; CONFIG REWRITE; CLIENT KILL …; EXEC), the client finds it, writes
/// resume, and every acknowledged write is on the new primary. The old primary, restarted, is
/// turned into a follower by Sentinel and its config file says so.
struct SentinelTests {
    let helpers = ReplicationTests()

    final class Sentinel {
        let process = Process()
        let port: Int

        init(directory: TemporaryDirectory, index: Int, primaryPort: Int) throws {
            self.port = TestEnvironment.freePort()
            let file = directory.file("sentinel-\(index).conf")
            let text = """
                port \(self.port)
                bind 127.0.0.1
                daemonize no
                dir \(directory.path)
                sentinel monitor mymaster 127.0.0.1 \(primaryPort) 2
                sentinel down-after-milliseconds mymaster 1000
                sentinel failover-timeout mymaster 6000
                sentinel parallel-syncs mymaster 2

                """
            try text.write(toFile: file, atomically: true, encoding: .utf8)
            self.process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
            self.process.arguments = [file, "--sentinel"]
            self.process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
            self.process.standardError = FileHandle(forWritingAtPath: "/dev/null")
            try self.process.run()
        }

        deinit { kill(self.process.processIdentifier, SIGKILL) }
    }

    private func configFile(_ directory: TemporaryDirectory, _ name: String, follow: Int?) throws -> String {
        let path = directory.file("\(name).toml")
        var text = "sync-replicas = 1\nsync-replicas-timeout = 2000\n"
        if let follow { text += "follow = \"127.0.0.1:\(follow)\"\n" }
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test(.serverTest) func killedPrimaryIsReplacedLosingNothing() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let aConfig = try self.configFile(directory, "a", follow: nil)
        var a = try DaemonProcess(data: directory.file("a"), arguments: ["--config", aConfig])
        let b = try DaemonProcess(
            data: directory.file("b"), arguments: ["--config", try self.configFile(directory, "b", follow: a.replicationPort)])
        defer { b.stop() }
        let c = try DaemonProcess(
            data: directory.file("c"), arguments: ["--config", try self.configFile(directory, "c", follow: a.replicationPort)])
        defer { c.stop() }
        #expect(try self.helpers.converged(a, [b, c]))
        let sentinels = try (0..<3).map { try Sentinel(directory: directory, index: $0, primaryPort: a.port) }
        let script = """
            import redis, redis.sentinel, time, threading, os, signal, sys
            sentinel = redis.sentinel.Sentinel([("127.0.0.1", p) for p in \(sentinels.map(\.port))], socket_timeout=1)
            # Sentinel has found both followers.
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    if len(sentinel.discover_slaves("mymaster")) == 2: break
                except Exception: pass
                time.sleep(0.2)
            assert len(sentinel.discover_slaves("mymaster")) == 2, sentinel.discover_slaves("mymaster")
            master = sentinel.master_for("mymaster", socket_timeout=1)
            acked = []
            failures = 0
            first_after_kill = None
            killed_at = None
            i = 0
            started = time.time()
            while time.time() - started < 40:
                if killed_at is None and len(acked) >= 300:
                    os.kill(\(a.process.processIdentifier), signal.SIGKILL)
                    killed_at = time.time()
                try:
                    master.set("w:%d" % i, str(i))
                    acked.append(i)
                    if killed_at is not None and first_after_kill is None:
                        first_after_kill = time.time() - killed_at
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ReadOnlyError,
                        redis.exceptions.ResponseError):
                    failures += 1
                    time.sleep(0.05)
                i += 1
                if first_after_kill is not None and len(acked) >= 600: break
            assert first_after_kill is not None, "writes never resumed after the kill"
            host, port = sentinel.discover_master("mymaster")
            assert port != \(a.port), "Sentinel still names the killed primary"
            new = redis.Redis(host=host, port=port)
            lost = [k for k in acked if new.get("w:%d" % k) != str(k).encode()]
            assert not lost, "acknowledged writes lost: %d of %d (first %s)" % (len(lost), len(acked), lost[:5])
            print("ok", port, len(acked), failures, int(first_after_kill * 1000))
            """
        let result = try run("/usr/bin/env", ["python3", "-c", script], seconds: 120)
        #expect(result.status == 0 && result.output.hasPrefix("ok"), "\(result.output)")
        let words = result.output.split(separator: " ")
        guard result.status == 0, words.count >= 5, let newPort = Int(words[1]) else { return }
        print("Sentinel failover: \(words[2]) writes acknowledged, 0 lost, \(words[3]) failed attempts, first write on the new primary \(words[4].trimmingCharacters(in: .whitespacesAndNewlines)) ms after the kill")
        _ = a.stop(signal: SIGKILL)
        // The promoted node's file no longer follows; the new primary is b or c.
        let promoted = newPort == b.port ? "b" : "c"
        let promotedText = try String(contentsOfFile: directory.file("\(promoted).toml"), encoding: .utf8)
        #expect(promotedText.contains("# follow: removed by CONFIG REWRITE"), "\(promotedText)")
        // The old primary comes back on its port: Sentinel makes it a follower of the new one,
        // and CONFIG REWRITE puts that in its file.
        a = try DaemonProcess(data: directory.file("a"), arguments: ["--config", aConfig, "--port", "\(a.port)"])
        defer { a.stop() }
        // (Under load Sentinel may have failed over once more meanwhile: the primary to follow is
        // the one it names now.)
        let rejoined = try self.helpers.eventually(30) {
            guard case .array(let role?) = try a.connect().command("ROLE"),
                case .array(let named?) = try RESPConnection(host: "127.0.0.1", port: sentinels[0].port)
                    .command("SENTINEL", "get-master-addr-by-name", "mymaster"),
                named.count == 2, let current = named[1].text.flatMap({ Int($0) })
            else { return false }
            return role.first == .bulk(Array("slave".utf8)) && role.count > 2 && role[2] == .integer(current) && current != a.port
        }
        let named = try? RESPConnection(host: "127.0.0.1", port: sentinels[0].port).command("SENTINEL", "get-master-addr-by-name", "mymaster")
        #expect(
            rejoined,
            "the old primary did not become a follower: ROLE \(String(describing: try? a.connect().command("ROLE"))), Sentinel names \(String(describing: named)); \(a.log.suffix(2000))")
        #expect(try self.helpers.eventually(10) {
            (try String(contentsOfFile: aConfig, encoding: .utf8)).contains("follow = \"127.0.0.1:")
        })
        withExtendedLifetime(sentinels) {}
    }
}
