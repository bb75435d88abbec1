import Foundation
import Testing
import WalrusClient
import WalrusTestKit
#if canImport(Glibc)
import Glibc
#endif

/// walrusd as a process, driven by the real clients people use with Redis.
@Suite(.serialized)
struct DaemonTests {
    /// redis-cli: the commands, binary-safe values, and the exact replies it prints.
    @Test func redisCLI() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let daemon = try DaemonProcess(data: directory.file("data"))
        defer { daemon.stop() }
        let port = String(daemon.port)
        func cli(_ arguments: String...) throws -> String {
            let result = try run("/usr/bin/redis-cli", ["-p", port] + arguments)
            #expect(result.status == 0, "\(result.output)")
            return result.output.trimmingCharacters(in: .newlines)
        }
        #expect(try cli("PING") == "PONG")
        #expect(try cli("SET", "name", "jerk") == "OK")
        #expect(try cli("GET", "name") == "jerk")
        #expect(try cli("SET", "empty", "") == "OK")
        #expect(try cli("GET", "empty") == "")
        #expect(try cli("MSET", "a", "1", "b", "2") == "OK")
        #expect(try cli("MGET", "a", "b", "nope") == "1\n2")
        #expect(try cli("EXISTS", "a", "nope") == "1")
        #expect(try cli("DBSIZE") == "4")
        #expect(Set(try cli("KEYS", "*").split(separator: "\n").map(String.init)) == ["name", "empty", "a", "b"])
        #expect(try cli("DEL", "a", "b") == "2")
        #expect(try cli("GET", "nope") == "")
        // Values with spaces, quotes and non-UTF-8 bytes go through redis-cli's escapes.
        #expect(try cli("SET", "bin", "a\u{1}b\r\nc") == "OK")
        #expect(try cli("--no-raw", "GET", "bin") == "\"a\\x01b\\r\\nc\"")
        // The interactive-mode start (COMMAND DOCS) and INFO work.
        #expect(try cli("INFO", "replication").contains("role:master"))
    }

    /// redis-py drives SET/GET/DEL/EXISTS/KEYS/DBSIZE/MSET/MGET, a pipeline and binary values, in
    /// its default protocol (RESP3 since redis-py 8, via HELLO 3) and in RESP2.
    @Test(arguments: ["", ", protocol=2"])
    func redisPy(protocol: String) throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let daemon = try DaemonProcess(data: directory.file("data"))
        defer { daemon.stop() }
        let script = """
            import redis, sys
            r = redis.Redis(host="127.0.0.1", port=\(daemon.port)\(`protocol`))
            assert r.ping()
            assert r.set("k", "v")
            assert r.get("k") == b"v"
            assert r.mset({"a": "1", "b": "2"})
            assert r.mget(["a", "b", "nope"]) == [b"1", b"2", None]
            assert r.exists("a", "b", "nope") == 2
            assert sorted(r.keys("*")) == [b"a", b"b", b"k"]
            assert r.dbsize() == 3
            assert r.delete("a", "nope") == 1
            blob = bytes(range(256)) * 4
            assert r.set(b"\\x00bin", blob)
            assert r.get(b"\\x00bin") == blob
            assert r.set("empty", b"")
            assert r.get("empty") == b""
            p = r.pipeline(transaction=False)
            for i in range(500):
                p.set(f"p{i}", i)
                p.get(f"p{i}")
            out = p.execute()
            assert out == [x for i in range(500) for x in (True, str(i).encode())], out[:6]
            info = r.info("persistence")
            assert info["aof_enabled"] == 1
            assert r.config_get("appendfsync") == {"appendfsync": "always"}
            assert r.get("missing") is None
            print("ok")
            """
        let result = try run("/usr/bin/env", ["python3", "-c", script])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("ok"))
    }

    /// `walrus --connect` talks to the daemon with the shell's words and replies.
    @Test func shellConnectsToTheDaemon() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let daemon = try DaemonProcess(data: directory.file("data"))
        defer { daemon.stop() }
        let walrus = DaemonProcess.binaryDirectory + "/walrus"
        let result = try run(
            walrus, ["--connect", "127.0.0.1:\(daemon.port)"],
            input: "SET name jerk\nSET k a b c\nGET k\nKEYS\nLEN\nHAS name\nDELETE name\nGET name\nCOMMIT\n")
        #expect(result.status == 0, "\(result.output)")
        #expect(
            result.output == """
                OK (set 'name' = 'jerk')
                OK (set 'k' = 'a b c')
                a b c
                Keys (2 total):
                  1. k
                  2. name
                Total keys: 2
                Key 'name' exists
                OK (deleted 'name')
                Key 'name' not found
                OK (all writes flushed to disk)

                """)
        let client = try daemon.connect()
        #expect(try client.command("GET", "k") == .bulk(Array("a b c".utf8)))
        let refused = try run(walrus, ["--connect", "127.0.0.1:1"], input: "")
        #expect(refused.status == 2 && refused.output.contains("Cannot connect to 127.0.0.1:1"))
    }

    /// redis-benchmark -t set,get completes with no errors (figures are walrus-bench's job).
    @Test func redisBenchmarkCompletes() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let daemon = try DaemonProcess(data: directory.file("data"))
        defer { daemon.stop() }
        let result = try run("/usr/bin/redis-benchmark", ["-p", String(daemon.port), "-t", "set,get", "-n", "20000", "-q"])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("SET: "), "\(result.output)")
        #expect(result.output.contains("GET: "), "\(result.output)")
        #expect(!result.output.lowercased().contains("error"), "\(result.output)")
        let client = try daemon.connect()
        #expect(try client.command("DBSIZE") != .integer(0))
    }

    /// walrusd allocates from glibc's main arena alone (set before main, so before any thread):
    /// a per-thread arena grows by mprotect one page at a time, which cost a catching-up
    /// follower half its link thread's time. An operator's GLIBC_TUNABLES arena setting wins.
    /// (Left to the plain run: ThreadSanitizer brings its own allocator and shadow mappings.)
    @Test(.enabled(if: ProcessInfo.processInfo.environment["TSAN_OPTIONS"] == nil))
    func oneMallocArenaUnlessTheOperatorSaysOtherwise() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        // glibc reserves each extra arena as 64 MiB of PROT_NONE address space (the heap's
        // unused part); the main arena grows by brk and reserves none.
        func arenaReservations(_ daemon: DaemonProcess) throws -> Int {
            let maps = try String(contentsOfFile: "/proc/\(daemon.process.processIdentifier)/maps", encoding: .utf8)
            return maps.split(separator: "\n").filter { line in
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count == 5, fields[1] == "---p" else { return false }
                let bounds = fields[0].split(separator: "-").compactMap { UInt64($0, radix: 16) }
                return bounds.count == 2 && bounds[1] - bounds[0] >= 1 << 20
            }.count
        }
        func load(_ daemon: DaemonProcess) throws {
            // Load, so that the daemon's threads allocate side by side (each would get an arena of its own).
            let result = try run("/usr/bin/redis-benchmark", ["-p", String(daemon.port), "-t", "set,get", "-n", "5000", "-c", "20", "-q"])
            #expect(result.status == 0, "\(result.output)")
        }
        do {
            let daemon = try DaemonProcess(data: directory.file("one"))
            defer { daemon.stop() }
            try load(daemon)
            #expect(daemon.log.contains("malloc.arenaMax=1"), "\(daemon.log)")
            #expect(try arenaReservations(daemon) == 0)
        }
        let tuned = try DaemonProcess(data: directory.file("tuned")) { commandLine in
            ("/usr/bin/env", ["GLIBC_TUNABLES=glibc.malloc.arena_max=4"] + commandLine)
        }
        defer { tuned.stop() }
        try load(tuned)
        #expect(tuned.log.contains("malloc.arenaMax=0"), "\(tuned.log)")
        #expect(try arenaReservations(tuned) > 0)
    }

    /// SIGTERM drains and exits 0; everything acknowledged is there after a restart.
    @Test func sigtermDrainsAndRestartRecovers() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var daemon = try DaemonProcess(data: directory.file("data"))
        let client = try daemon.connect()
        for i in 0..<100 { #expect(try client.command("SET", "k\(i)", "v\(i)") == .simple("OK")) }
        #expect(daemon.stop(signal: SIGTERM) == 0)
        #expect(daemon.log.contains("Stopped cleanly"))
        daemon = try DaemonProcess(data: directory.file("data"))
        defer { daemon.stop() }
        let again = try daemon.connect()
        #expect(try again.command("DBSIZE") == .integer(100))
        #expect(try again.command("GET", "k99") == .bulk(Array("v99".utf8)))
    }

    /// kill -9 during a write load in fsync=always mode: every write a client saw acknowledged is
    /// there after the restart, with its value.
    @Test func killDashNineLosesNoAcknowledgedWrite() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var daemon = try DaemonProcess(data: directory.file("data"))
        let port = daemon.port
        let acknowledged = AcknowledgedKeys()
        let group = DispatchGroup()
        for writer in 0..<8 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                guard let client = try? RESPConnection(host: "127.0.0.1", port: port, timeoutMilliseconds: 5000) else { return }
                for i in 0..<100_000 {
                    let key = "w\(writer)-\(i)"
                    guard (try? client.command("SET", key, "value-\(key)")) == .simple("OK") else { return }
                    acknowledged.add(key)
                }
            }
        }
        // Let the load run until a good number of writes are acknowledged (bounded), then kill.
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if acknowledged.count >= 2000 { break }
            usleep(5000)
        }
        daemon.stop(signal: SIGKILL)
        #expect(group.wait(timeout: .now() + 30) == .success)
        let keys = acknowledged.all
        #expect(keys.count >= 2000)

        daemon = try DaemonProcess(data: directory.file("data"))
        defer { daemon.stop() }
        let client = try daemon.connect()
        var missing = 0
        for key in keys where try client.command("GET", key) != .bulk(Array("value-\(key)".utf8)) { missing += 1 }
        #expect(missing == 0, "\(missing) of \(keys.count) acknowledged writes lost")
    }
}

/// Keys whose SET a client saw acknowledged, from many threads.
final class AcknowledgedKeys: @unchecked Sendable {
    private let lock = NSLock()
    private var keys: [String] = []

    func add(_ key: String) {
        self.lock.lock()
        self.keys.append(key)
        self.lock.unlock()
    }

    var count: Int {
        self.lock.lock()
        defer { self.lock.unlock() }
        return self.keys.count
    }

    var all: [String] {
        self.lock.lock()
        defer { self.lock.unlock() }
        return self.keys
    }
}
