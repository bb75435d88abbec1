import Foundation
import WalrusClient

/// walrusd beside redis-server, both started here and driven by redis-benchmark in the same run,
/// with matching durability: fsync=always ↔ appendfsync always, fsync=interval ↔ everysec.
struct RESPBenchmarks {
    let directory: String
    let requests: Int
    let repetitions: Int
    /// Attach a follower to walrusd and a replica to redis-server (as `walrus-bench report` does).
    var replicas = false
    /// Only the fsync=always ↔ appendfsync always rows.
    var durableOnly = false

    struct Server {
        let process: Process
        let port: Int
        var replicationPort = 0
    }

    func run() throws {
        let walrusd = try Bench.walrusdBeside()
        for tool in ["/usr/bin/redis-server", "/usr/bin/redis-benchmark"] where !FileManager.default.fileExists(atPath: tool) {
            throw BenchError("\(tool) is missing; deploy/setup.sh installs it")
        }
        print("## walrus-bench resp — \(Bench.machine())")
        print("")
        print("redis-benchmark drives both servers (-n \(self.requests), 100-byte values, random keys over 100k), runs interleaved, medians of \(self.repetitions). \(Self.redisVersion())")
        let modes: [(title: String, walrus: [String], redis: [String], workloads: [(String, [String])])] = [
            (
                "durable: walrusd fsync=always vs redis-server appendfsync always",
                ["--fsync", "always"], ["--appendfsync", "always"],
                [
                    ("SET -c 1", ["-t", "set", "-c", "1"]), ("SET -c 10", ["-t", "set", "-c", "10"]),
                    ("SET -c 50", ["-t", "set", "-c", "50"]), ("SET -c 200", ["-t", "set", "-c", "200"]),
                    ("EVALSHA (INCR, PEXPIRE, PTTL) -c 50", ["-c", "50"] + Self.evalsha),
                ]
            ),
            (
                "periodic: walrusd fsync=interval (1000 ms) vs redis-server appendfsync everysec",
                ["--fsync", "interval", "--fsync-interval", "1000"], ["--appendfsync", "everysec"],
                [
                    ("SET -c 1", ["-t", "set", "-c", "1"]), ("GET -c 1", ["-t", "get", "-c", "1"]),
                    ("SET -c 50", ["-t", "set", "-c", "50"]), ("GET -c 50", ["-t", "get", "-c", "50"]),
                    ("SET -c 50 -P 16", ["-t", "set", "-c", "50", "-P", "16"]),
                    ("GET -c 50 -P 16", ["-t", "get", "-c", "50", "-P", "16"]),
                    ("EVALSHA (INCR, PEXPIRE, PTTL) -c 50", ["-c", "50"] + Self.evalsha),
                ]
            ),
        ]
        for mode in modes where !self.durableOnly || mode.walrus.contains("always") {
            let walrus = try self.startWalrusd(walrusd, mode.walrus)
            let redis = try Self.startRedis(directory: self.directory, name: "redis", ["--appendonly", "yes"] + mode.redis)
            var attached: [Server] = []
            if self.replicas {
                attached.append(try self.startWalrusd(walrusd, mode.walrus + ["--follow", "127.0.0.1:\(walrus.replicationPort)"]))
                attached.append(
                    try Self.startRedis(
                        directory: self.directory, name: "replica", ["--appendonly", "yes", "--replicaof", "127.0.0.1", String(redis.port)] + mode.redis))
            }
            defer {
                for server in attached {
                    kill(server.process.processIdentifier, SIGKILL)
                    server.process.waitUntilExit()
                }
                // Children spawned from a Dispatch thread inherit its blocked signals, so SIGTERM
                // may never reach them: stop them with SIGKILL (their data is scratch).
                kill(walrus.process.processIdentifier, SIGKILL)
                kill(redis.process.processIdentifier, SIGKILL)
                walrus.process.waitUntilExit()
                redis.process.waitUntilExit()
            }
            // Measure only once both stream: a Redis primary starts a replica's full sync
            // 5 s after it asks (repl-diskless-sync-delay), and the replica then rewrites its
            // AOF in a child. Without this wait the first runs had no replica to feed.
            for (server, redisReplica) in zip(attached, [false, true]) {
                let signs = ["master_link_status:up"] + (redisReplica ? ["aof_rewrite_in_progress:0", "aof_rewrite_scheduled:0"] : [])
                for text in signs {
                    guard try ReplicationBenchmarks.waitForInfo(port: server.port, text, seconds: 60) else {
                        throw BenchError("the follower / replica on port \(server.port) did not report \(text) within 60 s")
                    }
                }
            }
            // The script the EVALSHA rows run, in both script caches.
            var sha = ""
            for server in [walrus, redis] {
                sha = try RESPConnection(host: "127.0.0.1", port: server.port).command("SCRIPT", "LOAD", Self.rateLimiter).text ?? ""
            }
            var rows: [[String]] = []
            for (name, words) in mode.workloads {
                let arguments = words.map { $0 == "SHA" ? sha : $0 }
                var ours: [Sample] = []
                var theirs: [Sample] = []
                // One client waiting for each fdatasync manages a few thousand a second: fewer requests.
                let requests = arguments.suffix(2) == ["-c", "1"] && mode.walrus.contains("always") ? min(self.requests, 10_000) : self.requests
                for _ in 0..<self.repetitions {
                    ours.append(try self.measure(walrus, follower: attached.first, arguments, requests: requests))
                    theirs.append(try self.measure(redis, follower: attached.last, arguments, requests: requests))
                }
                let (w, r) = (Bench.median(ours.map(\.rate)), Bench.median(theirs.map(\.rate)))
                let (wc, rc) = (Bench.median(ours.map(\.cpu)), Bench.median(theirs.map(\.cpu)))
                let (wf, rf) = (Bench.median(ours.map(\.followerCPU)), Bench.median(theirs.map(\.followerCPU)))
                let (ws, rs) = (Bench.median(ours.map(\.switches)), Bench.median(theirs.map(\.switches)))
                let (wy, ry) = (Bench.median(ours.map(\.fdatasyncs)), Bench.median(theirs.map(\.fdatasyncs)))
                let durable = mode.walrus.contains("always")
                let script = name.hasPrefix("EVALSHA")
                // What bounds a durable SET: an event loop that fdatasyncs inline spends its CPU
                // and its disk wait on each request, and serves nobody while it waits.
                let (wd, rd) =
                    durable && !script
                    ? (try self.diskWait(walrus, arguments, requests: requests), try self.diskWait(redis, arguments, requests: requests))
                    : (nil, nil)
                rows.append([
                    name, Bench.format(w), Bench.format(r), Bench.ratio(w, r), String(format: "%.1f", wc), String(format: "%.1f", rc),
                    self.replicas ? String(format: "%.1f", wf) : "–", self.replicas ? String(format: "%.1f", rf) : "–",
                    String(format: "%.2f", ws), String(format: "%.2f", rs), Bench.format(wy), Bench.format(ry),
                    wd.map { String(format: "%.1f (%.0f)", $0.perRequest, $0.perFlush) } ?? "–",
                    rd.map { String(format: "%.1f (%.0f)", $0.perRequest, $0.perFlush) } ?? "–",
                ])
                var loopCost = "fdatasync rate × batch (see WAL rows)"
                if let wd, let rd {
                    // CPU + time inside the disk calls, per request: what one event loop spends on
                    // each. The calls' own kernel CPU is in both terms, so a server serves a little
                    // more than 1 / its sum; the ratio of the two sums is what the comparison predicts.
                    let (ours, theirs) = (wc + wd.perRequest, rc + rd.perRequest)
                    loopCost = String(
                        format: "one event loop, CPU + time in disk calls per request: walrusd %.1f + %.1f = %.1f µs, "
                            + "redis-server %.1f + %.1f = %.1f µs (%.2f× walrusd's; the calls' kernel CPU is in both terms)",
                        wc, wd.perRequest, ours, rc, rd.perRequest, theirs, theirs / ours)
                }
                let goal: Double? =
                    script ? 1.0 : durable ? (name == "SET -c 50" ? 1.5 : 1.0) : (name.contains("-c 50") ? 1.0 : nil)
                let section = durable ? "RESP, durable (fsync=always ↔ appendfsync always)" : "RESP, periodic (fsync=interval 1 s ↔ everysec)"
                let workload = name + (self.replicas ? ", follower attached" : "")
                Report.add(
                    section: section, workload: workload, walrus: w, peer: r, peerName: "redis-server",
                    unit: "ops/s", goal: goal.map { .atLeast($0) },
                    limit: script ? "three commands through the executor (see the Keyspace CPU rows)"
                        : durable ? loopCost : "")
                Report.add(
                    section: section, workload: workload + ", server CPU", walrus: wc, peer: rc, peerName: "redis-server",
                    unit: "CPU-µs/op", lowerIsBetter: true, goal: durable && !script ? .atMost(1.0) : nil)
                if self.replicas {
                    Report.add(
                        section: section, workload: workload + ", follower CPU", walrus: wf, peer: rf, peerName: "redis-server replica",
                        unit: "CPU-µs/op", lowerIsBetter: true, goal: durable && !script ? .atMost(1.0) : nil)
                }
                Report.add(
                    section: section, workload: workload + ", server context switches", walrus: ws, peer: rs, peerName: "redis-server",
                    unit: "switches/op", lowerIsBetter: true)
                if let wd, let rd {
                    Report.add(
                        section: section, workload: workload + ", primary disk wait", walrus: wd.perRequest, peer: rd.perRequest,
                        peerName: "redis-server", unit: "µs/op", lowerIsBetter: true,
                        limit: "time inside pwrite64 + fdatasync + fsync (perf trace, a run of its own)")
                    Report.add(
                        section: section, workload: workload + ", primary disk wait per fdatasync", walrus: wd.perFlush,
                        peer: rd.perFlush, peerName: "redis-server", unit: "µs", lowerIsBetter: true,
                        limit: "walrusd: direct write + fdatasync of a preallocated segment; redis-server: fdatasync of a growing AOF (its buffered write is not timed)")
                }
                if durable && wy.isFinite && ry.isFinite {
                    Report.add(
                        section: section, workload: workload + ", fdatasyncs (primary)", walrus: wy, peer: ry, peerName: "redis-server",
                        unit: "per 100k writes", lowerIsBetter: true)
                }
            }
            Bench.table(
                mode.title,
                [
                    "workload", "walrusd ops/s", "redis-server ops/s", "walrus ÷ redis", "walrusd CPU-µs/op", "redis-server CPU-µs/op",
                    "follower CPU-µs/op", "replica CPU-µs/op", "walrusd switches/op", "redis switches/op",
                    "walrusd fdatasyncs/100k", "redis fdatasyncs/100k",
                    "walrusd disk wait µs/op (µs/fdatasync)", "redis disk wait µs/op (µs/fdatasync)",
                ], rows)
        }
    }

    /// A rate limiter as rate-limit-redis writes it: three commands per call.
    static let rateLimiter =
        "local hits = redis.call('INCR', KEYS[1]) local ttl = redis.call('PTTL', KEYS[1]) "
        + "if ttl <= 0 then redis.call('PEXPIRE', KEYS[1], 60000) ttl = 60000 end return {hits, ttl}"

    /// redis-benchmark's words for one EVALSHA of `rateLimiter` on a random key (SHA: the
    /// script's, from SCRIPT LOAD).
    static let evalsha = ["EVALSHA", "SHA", "1", "rl:__rand_int__"]

    /// One run's figures: ops/s; the server's and its follower's CPU time (user + system, all
    /// threads, from /proc) per request in µs; the server's context switches per request
    /// (voluntary + involuntary, /proc/PID/task/*/status); its fdatasync and fsync calls per
    /// 100,000 requests (perf's syscall tracepoints; NaN without perf).
    struct Sample {
        var rate: Double
        var cpu: Double
        var followerCPU: Double
        var switches: Double
        var fdatasyncs: Double
    }

    func measure(_ server: Server, follower: Server?, _ arguments: [String], requests: Int, countsSyscalls: Bool = true) throws -> Sample {
        let pid = server.process.processIdentifier
        let counter = countsSyscalls ? Bench.SyscallCounter(pid: pid) : nil
        let before = Bench.cpuSeconds(pid)
        let followerBefore = follower.map { Bench.cpuSeconds($0.process.processIdentifier) } ?? 0
        let switchesBefore = Bench.contextSwitches(pid)
        let rate = try self.benchmark(port: server.port, arguments, requests: requests)
        let spent = Bench.cpuSeconds(pid) - before
        let followerSpent = follower.map { Bench.cpuSeconds($0.process.processIdentifier) - followerBefore } ?? .nan
        let switches = Bench.contextSwitches(pid) - switchesBefore
        let syncs = counter?.stop() ?? .nan
        let n = Double(requests)
        return Sample(
            rate: rate, cpu: spent / n * 1e6, followerCPU: followerSpent / n * 1e6, switches: Double(switches) / n,
            fdatasyncs: syncs / n * 100_000)
    }

    /// One more run of `arguments` with the server's disk writes and flushes traced
    /// (`Bench.DiskWaitTracer`): µs spent in them per request and per fdatasync. Nil without perf.
    func diskWait(_ server: Server, _ arguments: [String], requests: Int) throws -> (perRequest: Double, perFlush: Double)? {
        guard let tracer = Bench.DiskWaitTracer(pid: server.process.processIdentifier, scratch: self.directory) else { return nil }
        do {
            _ = try self.benchmark(port: server.port, arguments, requests: requests)
        } catch {
            _ = tracer.stop()
            throw error
        }
        guard let (seconds, flushes) = tracer.stop() else { return nil }
        return (seconds / Double(requests) * 1e6, flushes > 0 ? seconds / flushes * 1e6 : .nan)
    }

    struct BenchError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    static func redisVersion() -> String {
        let text = (try? Bench.run("/usr/bin/redis-server", ["--version"]).text) ?? ""
        return text.split(separator: " ").first { $0.hasPrefix("v=") }.map { "redis-server \($0.dropFirst(2))." } ?? ""
    }

    func startWalrusd(_ binary: String, _ arguments: [String]) throws -> Server {
        try Self.launchWalrusd(binary, data: Bench.scratch(self.directory, "walrusd-\(UInt32.random(in: 0...UInt32.max))"), arguments)
    }

    /// walrusd on `data` with free client and replication ports, quiet, once it answers PING.
    static func launchWalrusd(_ binary: String, data: String, _ arguments: [String]) throws -> Server {
        let port = Self.freePort()
        let replicationPort = Self.freePort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [
            "--data", data, "--port", String(port), "--repl-port", String(replicationPort), "--log-level", "warning",
            "--control-socket", data + "/c.sock",
        ] + arguments
        process.standardError = FileHandle.nullDevice
        try process.run()
        try Self.waitForPing(port)
        return Server(process: process, port: port, replicationPort: replicationPort)
    }

    /// A redis-server on a free loopback port, data in `directory/name-PORT`, no RDB saves; the
    /// caller's arguments (persistence, replicaof, …) come last.
    static func startRedis(directory: String, name: String, _ arguments: [String]) throws -> Server {
        let port = Self.freePort()
        let data = Bench.scratch(directory, "\(name)-\(port)")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = [
            "--port", String(port), "--bind", "127.0.0.1", "--dir", data, "--save", "", "--daemonize", "no", "--logfile", "",
        ] + arguments
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        try Self.waitForPing(port)
        return Server(process: process, port: port)
    }

    /// ops/s from `redis-benchmark -q`.
    func benchmark(port: Int, _ arguments: [String], requests: Int? = nil) throws -> Double {
        let text = try Bench.run(
            "/usr/bin/redis-benchmark",
            ["-p", String(port), "-n", String(requests ?? self.requests), "-d", "100", "-r", "100000", "-q"] + arguments
        ).text
        // "SET: 64557.78 requests per second, p50=0.655 msec" (after \r progress lines).
        // A custom command's line starts with its words: the figure is the word before "requests".
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) where line.contains("requests per second") {
            let words = line.split(separator: " ")
            if let at = words.firstIndex(of: "requests"), at > 0, let number = Double(words[at - 1]) { return number }
        }
        throw BenchError("redis-benchmark printed no figure: \(text.suffix(200))")
    }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        return Int(Bench.bindLoopback(fd))
    }

    static func waitForPing(_ port: Int) throws {
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if (try? RESPConnection(host: "127.0.0.1", port: port, timeoutMilliseconds: 1000).command("PING")) == .simple("PONG") { return }
            usleep(50_000)
        }
        throw BenchError("the server on port \(port) did not answer PING within 30 s")
    }
}
