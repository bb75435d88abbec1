import Foundation
import Testing
import WalrusClient
import WalrusTestKit
#if canImport(Glibc)
import Glibc
#endif

/// Scripts as applications use them: one record per script (all or nothing across kill -9, the
/// same on every follower), read-only scripts on a follower, a busy script answered with -BUSY
/// and stopped by SCRIPT KILL or SHUTDOWN, and redis-py's Lock and a rate limiter end to end.
struct ScriptingTests {
    let helpers = ReplicationTests()

    private func error(_ value: RESPValue) -> String {
        if case .error(let text) = value { return text }
        return "not an error: \(value)"
    }

    /// EVALSHA of a script that writes two keys, under load, the primary killed -9 mid-stream:
    /// each script is one record (the log grows by one per script), every pair is whole or
    /// absent after the restart, every acknowledged one is there, and the follower agrees.
    @Test(.serverTest) func scriptIsOneRecordAcrossKillAndFollowers() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var primary = try DaemonProcess(data: directory.file("p"))
        let follower = try DaemonProcess(data: directory.file("f"), arguments: primary.followArguments)
        defer { follower.stop() }
        let client = try primary.connect()
        let script = "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1]); return redis.call('INCR', 'scripts')"
        guard case .bulk(let shaBytes?) = try client.command("SCRIPT", "LOAD", script) else { Issue.record("SCRIPT LOAD failed"); return }
        let sha = String(decoding: shaBytes, as: UTF8.self)
        func lastIndex() throws -> Int {
            let info = try client.command("INFO", "persistence").text ?? ""
            let line = info.split(separator: "\r\n").first { $0.hasPrefix("walrus_last_index:") } ?? ""
            return Int(line.split(separator: ":").last ?? "") ?? -1
        }
        let before = try lastIndex()
        var acknowledged = 0
        for i in 0..<200 {
            let reply = try client.command("EVALSHA", sha, "2", "a\(i)", "b\(i)", "\(i)")
            #expect(reply == .integer(i + 1), "\(reply)")
            acknowledged = i + 1
        }
        // One record per script, whatever it wrote (three keys here).
        #expect(try lastIndex() - before == 200)
        // Fifty more pipelined, unanswered: the kill lands while they are in flight.
        for i in 200..<250 {
            try client.send(["EVALSHA", sha, "2", "a\(i)", "b\(i)", "\(i)"].map { Array($0.utf8) })
        }
        primary.stop(signal: SIGKILL)
        primary = try DaemonProcess(data: directory.file("p"), arguments: ["--repl-port", "\(primary.replicationPort)"])
        defer { primary.stop() }
        let after = try primary.connect()
        var whole = 0
        for i in 0..<250 {
            let a = try after.command("GET", "a\(i)")
            let b = try after.command("GET", "b\(i)")
            #expect(a == b, "script \(i) is half there after kill -9: a=\(a) b=\(b)")
            if a != .bulk(nil) { whole += 1 }
            if i < acknowledged { #expect(a == .bulk(Array("\(i)".utf8)), "acknowledged script \(i) is gone") }
        }
        #expect(try after.command("GET", "scripts") == .bulk(Array("\(whole)".utf8)))
        // The script cache is per node and the process restarted: EVALSHA asks for EVAL.
        #expect(self.error(try after.command("EVALSHA", sha, "2", "x", "y", "z")).hasPrefix("NOSCRIPT"))
        #expect(try self.helpers.converged(primary, [follower]))
    }

    /// On a follower: EVAL_RO and read-only scripts run, a write inside gets READONLY, a
    /// script declaring writes is refused before it runs, and the primary's script cache is
    /// not the follower's (NOSCRIPT, then EVAL works).
    @Test(.serverTest) func followerRunsReadOnlyScripts() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let primary = try DaemonProcess(data: directory.file("p"))
        defer { primary.stop() }
        let follower = try DaemonProcess(data: directory.file("f"), arguments: primary.followArguments)
        defer { follower.stop() }
        let writer = try primary.connect()
        let reader = try follower.connect()
        let script = "return redis.call('GET', KEYS[1])"
        #expect(try writer.command("EVAL", "return redis.call('SET', KEYS[1], ARGV[1])", "1", "k", "v") == .simple("OK"))
        guard case .bulk(let sha?) = try writer.command("SCRIPT", "LOAD", script) else { Issue.record("SCRIPT LOAD failed"); return }
        #expect(try self.helpers.eventually { try reader.command("GET", "k") == .bulk(Array("v".utf8)) })
        #expect(self.error(try reader.command("EVALSHA_RO", String(decoding: sha, as: UTF8.self), "1", "k")).hasPrefix("NOSCRIPT"))
        #expect(try reader.command("EVAL_RO", script, "1", "k") == .bulk(Array("v".utf8)))
        #expect(try reader.command("EVALSHA_RO", String(decoding: sha, as: UTF8.self), "1", "k") == .bulk(Array("v".utf8)))
        #expect(try reader.command("EVAL", script, "1", "k") == .bulk(Array("v".utf8)))
        #expect(try reader.command("EVAL", "#!lua flags=no-writes\n" + script, "1", "k") == .bulk(Array("v".utf8)))
        let write = self.error(try reader.command("EVAL", "return redis.call('SET', 'k', 'w')", "0"))
        #expect(write.hasPrefix("READONLY"), "\(write)")
        #expect(write.contains("script:"), "\(write)")
        #expect(
            self.error(try reader.command("EVAL", "#!lua\nreturn 1", "0"))
                == "READONLY Can not run script with write flag on readonly replica")
        #expect(
            self.error(try writer.command("EVAL_RO", "return redis.call('DEL', 'k')", "0")).hasPrefix(
                "ERR Write commands are not allowed from read-only scripts."))
        #expect(try reader.command("GET", "k") == .bulk(Array("v".utf8)))
    }

    /// A script past busy-reply-threshold: other clients get -BUSY (PING included), SCRIPT KILL
    /// stops one that has not written; one that has written is UNKILLABLE and SHUTDOWN stops it,
    /// its writes discarded (none was acknowledged) — the restarted node still has the old value.
    @Test(.serverTest) func busyScriptsAnswerBusyAndStop() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var daemon = try DaemonProcess(data: directory.file("d"), arguments: ["--busy-reply-threshold", "100"])
        defer { daemon.stop() }
        let admin = try daemon.connect()
        #expect(try admin.command("SET", "k", "old") == .simple("OK"))
        #expect(self.error(try admin.command("SCRIPT", "KILL")) == "NOTBUSY No scripts in execution right now.")
        let looping = try daemon.connect()
        try looping.send([Array("EVAL".utf8), Array("while true do end".utf8), Array("0".utf8)])
        usleep(300_000)
        #expect(self.error(try admin.command("PING")).hasPrefix("BUSY Redis is busy running a script."))
        #expect(self.error(try admin.command("GET", "k")).hasPrefix("BUSY"))
        #expect(try admin.command("SCRIPT", "KILL") == .simple("OK"))
        #expect(self.error(try looping.readReply()).hasPrefix("ERR Script killed by user with SCRIPT KILL..."))
        #expect(try admin.command("GET", "k") == .bulk(Array("old".utf8)))

        try looping.send(["EVAL", "redis.call('SET', 'k', 'new') while true do end", "0"].map { Array($0.utf8) })
        usleep(300_000)
        #expect(self.error(try admin.command("SCRIPT", "KILL")).hasPrefix("UNKILLABLE Sorry the script already executed write commands"))
        _ = try? admin.command("SHUTDOWN", "NOSAVE")
        #expect(daemon.stop(seconds: 20) == 0, "walrusd did not stop cleanly: \(daemon.log)")
        daemon = try DaemonProcess(data: directory.file("d"))
        #expect(try daemon.connect().command("GET", "k") == .bulk(Array("old".utf8)))
    }

    /// What redis-py and rate-limit-redis do with scripts, against a primary with a follower:
    /// Lock (acquire, blocking acquire, extend, reacquire, release, a second owner refused) and
    /// a fixed-window limiter (SCRIPT LOAD + EVALSHA with INCR, PEXPIRE, PTTL); the follower
    /// holds what the scripts wrote, and so does the primary after kill -9.
    @Test(.serverTest) func redisPyLockAndRateLimiter() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var primary = try DaemonProcess(data: directory.file("p"))
        let follower = try DaemonProcess(data: directory.file("f"), arguments: primary.followArguments)
        defer { follower.stop() }
        let script = """
            import redis, time, threading
            r = redis.Redis(host="127.0.0.1", port=\(primary.port))
            lock = r.lock("resource", timeout=5)
            assert lock.acquire(blocking=False)
            other = r.lock("resource", timeout=5)
            assert not other.acquire(blocking=False), "a second owner got the lock"
            started = time.time()
            assert not other.acquire(blocking=True, blocking_timeout=0.3)
            assert time.time() - started >= 0.15
            assert lock.extend(10)
            assert 9000 < r.pttl("resource") <= 15000, r.pttl("resource")
            assert lock.reacquire()
            assert 4000 < r.pttl("resource") <= 5000, r.pttl("resource")
            try:
                other.release()
                raise SystemExit("released a lock it does not own")
            except redis.exceptions.LockError:
                pass
            lock.release()
            assert r.get("resource") is None
            # A blocking acquire that waits for the holder to let go.
            holder = r.lock("resource", timeout=5, thread_local=False)
            assert holder.acquire()
            threading.Timer(0.2, holder.release).start()
            waiter = r.lock("resource", timeout=5)
            assert waiter.acquire(blocking=True, blocking_timeout=3)
            waiter.release()
            # rate-limit-redis's fixed window: INCR, set the window on the first hit, report PTTL.
            limiter = r.script_load(
                "local totalHits = redis.call('INCR', KEYS[1]) "
                "local timeToExpire = redis.call('PTTL', KEYS[1]) "
                "if timeToExpire <= 0 or ARGV[1] == '1' then "
                "  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2])) timeToExpire = tonumber(ARGV[2]) end "
                "return { totalHits, timeToExpire }")
            for hit in range(1, 6):
                total, ttl = r.evalsha(limiter, 1, "rl:client", "0", "60000")
                assert total == hit and 0 < ttl <= 60000, (total, ttl)
            r.set("lock:kept", "yes")
            kept = r.lock("kept-lock", timeout=60)
            assert kept.acquire()
            print("ok", kept.local.token.decode())
            """
        let result = try run("/usr/bin/env", ["python3", "-c", script])
        #expect(result.status == 0, "\(result.output)")
        guard result.status == 0, let token = result.output.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines)
        else { return }
        #expect(try self.helpers.converged(primary, [follower]))
        let reader = try follower.connect()
        #expect(try reader.command("GET", "rl:client") == .bulk(Array("5".utf8)))
        #expect(try reader.command("GET", "kept-lock") == .bulk(Array(token.utf8)))
        primary.stop(signal: SIGKILL)
        primary = try DaemonProcess(data: directory.file("p"), arguments: ["--repl-port", "\(primary.replicationPort)"])
        defer { primary.stop() }
        let after = try primary.connect()
        #expect(try after.command("GET", "rl:client") == .bulk(Array("5".utf8)))
        #expect(try after.command("GET", "kept-lock") == .bulk(Array(token.utf8)))
        #expect(try after.command("GET", "resource") == .bulk(nil))
    }
}
