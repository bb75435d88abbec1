import Foundation
import WALCore
import WalrusClient

/// The string and keyspace surface beside redis-server: SET EX, INCR, EXPIRE and MULTI/EXEC of
/// ten SETs in both durability modes (ops/s and the server's CPU-µs per operation), SCAN of a
/// large keyspace, memory per key with and without a TTL, and a million keys expiring at once.
struct KeyspaceBenchmarks {
    let directory: String
    let walrusd: String
    let quick: Bool
    let repetitions: Int

    private var requests: Int { self.quick ? 3000 : 100_000 }
    private var keyCount: Int { self.quick ? 50_000 : 1_000_000 }
    private static let value = String(repeating: "v", count: 100)

    func run() throws {
        try self.throughput()
        try self.scanAndMemory()
        try self.expiryWave()
    }

    // MARK: Throughput

    private func throughput() throws {
        print("")
        print("## Keyspace commands: ops/s and server CPU-µs/op, walrusd vs redis-server")
        let modes: [(name: String, walrus: [String], redis: [String])] = [
            ("durable", ["--fsync", "always"], ["--appendfsync", "always"]),
            ("periodic", ["--fsync", "interval", "--fsync-interval", "1000"], ["--appendfsync", "everysec"]),
        ]
        let runner = RESPBenchmarks(directory: self.directory, requests: self.requests, repetitions: 1)
        for mode in modes {
            let walrus = try runner.startWalrusd(self.walrusd, mode.walrus)
            let redis = try RESPBenchmarks.startRedis(directory: self.directory, name: "keyspace", ["--appendonly", "yes"] + mode.redis)
            defer {
                for server in [walrus, redis] {
                    kill(server.process.processIdentifier, SIGKILL)
                    server.process.waitUntilExit()
                }
            }
            // Keys for EXPIRE to find.
            for server in [walrus, redis] { _ = try runner.benchmark(port: server.port, ["-t", "set", "-c", "50", "-P", "16"]) }
            let workloads: [(String, [String])] = [
                ("SET EX", ["SET", "key:__rand_int__", Self.value, "EX", "3600"]),
                ("INCR", ["-t", "incr"]),
                ("EXPIRE", ["EXPIRE", "key:__rand_int__", "3600"]),
            ]
            var rows: [[String]] = []
            for pipeline in [1, 16] {
                let shape = pipeline == 1 ? "-c 50" : "-c 50 -P 16"
                for (name, words) in workloads {
                    let arguments = ["-c", "50"] + (pipeline > 1 ? ["-P", String(pipeline)] : []) + words
                    var figures = (ours: [Double](), theirs: [Double](), ourCPU: [Double](), theirCPU: [Double]())
                    for _ in 0..<self.repetitions {
                        let ours = try runner.measure(walrus, follower: nil, arguments, requests: self.requests, countsSyscalls: false)
                        let theirs = try runner.measure(redis, follower: nil, arguments, requests: self.requests, countsSyscalls: false)
                        figures.ours.append(ours.rate)
                        figures.ourCPU.append(ours.cpu)
                        figures.theirs.append(theirs.rate)
                        figures.theirCPU.append(theirs.cpu)
                    }
                    rows.append(self.add(mode.name, "\(name) \(shape)", figures))
                }
                // MULTI, ten SETs, EXEC: walrus-bench's own clients (redis-benchmark sends single commands).
                var figures = (ours: [Double](), theirs: [Double](), ourCPU: [Double](), theirCPU: [Double]())
                let transactions = max(self.requests / 10, 500)
                for _ in 0..<self.repetitions {
                    let (w, wc) = try Self.transactions(walrus, clients: 50, pipeline: pipeline, count: transactions)
                    let (r, rc) = try Self.transactions(redis, clients: 50, pipeline: pipeline, count: transactions)
                    figures.ours.append(w)
                    figures.ourCPU.append(wc)
                    figures.theirs.append(r)
                    figures.theirCPU.append(rc)
                }
                rows.append(self.add(mode.name, "MULTI/EXEC of 10 SETs \(shape)", figures))
            }
            Bench.table(
                mode.name == "durable" ? "durable: fsync=always vs appendfsync always" : "periodic: fsync=interval 1 s vs appendfsync everysec",
                ["workload", "walrusd ops/s", "redis-server ops/s", "walrus ÷ redis", "walrusd CPU-µs/op", "redis-server CPU-µs/op"], rows)
        }
    }

    private func add(
        _ mode: String, _ workload: String, _ figures: (ours: [Double], theirs: [Double], ourCPU: [Double], theirCPU: [Double])
    ) -> [String] {
        let (w, r) = (Bench.median(figures.ours), Bench.median(figures.theirs))
        let (wc, rc) = (Bench.median(figures.ourCPU), Bench.median(figures.theirCPU))
        let section = mode == "durable" ? "Keyspace, durable (fsync=always ↔ appendfsync always)" : "Keyspace, periodic (fsync=interval 1 s ↔ everysec)"
        Report.add(section: section, workload: workload, walrus: w, peer: r, peerName: "redis-server", unit: "ops/s", goal: .atLeast(1.0))
        Report.add(
            section: section, workload: workload + ", server CPU", walrus: wc, peer: rc, peerName: "redis-server", unit: "CPU-µs/op",
            lowerIsBetter: true)
        return [workload, Bench.format(w), Bench.format(r), Bench.ratio(w, r), String(format: "%.1f", wc), String(format: "%.1f", rc)]
    }

    /// `clients` connections, each with `pipeline` transactions (MULTI, 10 SETs, EXEC) in flight,
    /// `count` transactions in all: EXECs per second, and the server's CPU-µs per EXEC.
    static func transactions(_ server: RESPBenchmarks.Server, clients: Int, pipeline: Int, count: Int) throws -> (Double, Double) {
        let perClient = max(count / clients, pipeline)
        let connections = try (0..<clients).map { _ in try RESPConnection(host: "127.0.0.1", port: server.port) }
        let failures = LockedValue(0)
        let before = Bench.cpuSeconds(server.process.processIdentifier)
        let started = Bench.now()
        let threads = connections.enumerated().map { index, connection in
            DedicatedThread(name: "tx-\(index)") {
                var sent = 0
                var key = index * perClient
                while sent < perClient {
                    let batch = min(pipeline, perClient - sent)
                    var bytes: [UInt8] = []
                    for _ in 0..<batch {
                        bytes += Array("*1\r\n$5\r\nMULTI\r\n".utf8)
                        for _ in 0..<10 {
                            let name = "tx:\(key % 100_000)"
                            key += 1
                            bytes += Array("*3\r\n$3\r\nSET\r\n$\(name.utf8.count)\r\n\(name)\r\n$100\r\n\(Self.value)\r\n".utf8)
                        }
                        bytes += Array("*1\r\n$4\r\nEXEC\r\n".utf8)
                    }
                    do {
                        try connection.sendRaw(bytes)
                        for _ in 0..<batch {
                            for _ in 0..<11 { _ = try connection.readReply() }
                            guard case .array(let replies?) = try connection.readReply(), replies.count == 10 else {
                                failures.withLock { $0 += 1 }
                                continue
                            }
                        }
                    } catch {
                        failures.withLock { $0 += 1 }
                        return
                    }
                    sent += batch
                }
            }
        }
        for thread in threads { thread.join() }
        let seconds = Bench.now() - started
        let spent = Bench.cpuSeconds(server.process.processIdentifier) - before
        if failures.withLock({ $0 }) > 0 { throw RESPBenchmarks.BenchError("MULTI/EXEC on port \(server.port): failed transactions") }
        let done = Double(perClient * clients)
        return (done / seconds, spent / done * 1e6)
    }

    // MARK: SCAN and memory

    private func scanAndMemory() throws {
        print("")
        print("## SCAN and memory per key (fsync=interval 1 s ↔ appendfsync everysec)")
        var rows: [[String]] = []
        for ttl in [false, true] {
            let input = try Self.protocolFile(self.directory, keys: self.keyCount, ttlMilliseconds: ttl ? 3_600_000 : nil)
            defer { unlink(input) }
            let (walrus, redis, ours, theirs) = try ScaleBenchmarks.loadedPair(
                directory: self.directory, walrusd: self.walrusd, input: input, keys: self.keyCount)
            defer {
                for server in [walrus, redis] {
                    kill(server.process.processIdentifier, SIGKILL)
                    server.process.waitUntilExit()
                }
            }
            let label = "RSS per key, \(Bench.format(Double(self.keyCount))) keys of 100-byte values" + (ttl ? ", each with a TTL" : "")
            rows.append([label, Bench.format(ours), Bench.format(theirs), Bench.ratio(ours, theirs)])
            // (Without a TTL the memory section has the row already.)
            if ttl {
                Report.add(
                    section: "Memory", workload: label, walrus: ours, peer: theirs, peerName: "redis-server used_memory_rss",
                    unit: "bytes/key", lowerIsBetter: true, goal: .atMost(1.0))
                continue
            }
            var scans = (ours: [Double](), theirs: [Double]())
            for _ in 0..<self.repetitions {
                scans.ours.append(try Self.scan(walrus.port, expected: self.keyCount))
                scans.theirs.append(try Self.scan(redis.port, expected: self.keyCount))
            }
            let (w, r) = (Bench.median(scans.ours), Bench.median(scans.theirs))
            Report.add(
                section: "Keyspace", workload: "SCAN of \(Bench.format(Double(self.keyCount))) keys, COUNT 1000, one client",
                walrus: w, peer: r, peerName: "redis-server", unit: "s", lowerIsBetter: true, goal: .atMost(1.0))
            rows.append(["SCAN of \(Bench.format(Double(self.keyCount))) keys (s)", String(format: "%.3f", w), String(format: "%.3f", r), Bench.ratio(w, r)])
        }
        Bench.table("SCAN and memory", ["figure", "walrusd", "redis-server", "walrus ÷ redis"], rows)
    }

    /// Seconds for a full SCAN (COUNT 1000); every key must be seen.
    static func scan(_ port: Int, expected: Int) throws -> Double {
        let connection = try RESPConnection(host: "127.0.0.1", port: port, timeoutMilliseconds: 60_000)
        var seen = Set<String>()
        seen.reserveCapacity(expected)
        var cursor = "0"
        let started = Bench.now()
        repeat {
            guard case .array(let reply?) = try connection.command("SCAN", cursor, "COUNT", "1000"), reply.count == 2,
                let next = reply[0].text, case .array(let keys?) = reply[1]
            else { throw RESPBenchmarks.BenchError("SCAN on port \(port) answered something else") }
            for key in keys { if let name = key.text { seen.insert(name) } }
            cursor = next
        } while cursor != "0"
        let seconds = Bench.now() - started
        guard seen.count == expected else { throw RESPBenchmarks.BenchError("SCAN on port \(port) saw \(seen.count) of \(expected) keys") }
        return seconds
    }

    /// SET key:N <100 bytes> [PX ms] for every N, in RESP, for `redis-cli --pipe`. With a
    /// `spread`, each key's PX is drawn from 1…spread ms (seeded: the same file for both servers).
    static func protocolFile(_ directory: String, keys: Int, ttlMilliseconds: Int?, spread: Bool = false) throws -> String {
        let path = directory + "/keyspace-\(keys)-\(ttlMilliseconds ?? 0)-\(spread).resp"
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        var chunk = ""
        chunk.reserveCapacity(1 << 20)
        var random = UInt64(0x9E37_79B9_7F4A_7C15)
        for i in 0..<keys {
            let key = "key:\(i)"
            if let ttl = ttlMilliseconds {
                random = random &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                let ms = String(spread ? 1 + Int((random >> 33) % UInt64(ttl)) : ttl)
                chunk += "*5\r\n$3\r\nSET\r\n$\(key.utf8.count)\r\n\(key)\r\n$100\r\n\(Self.value)\r\n$2\r\nPX\r\n$\(ms.utf8.count)\r\n\(ms)\r\n"
            } else {
                chunk += "*3\r\n$3\r\nSET\r\n$\(key.utf8.count)\r\n\(key)\r\n$100\r\n\(Self.value)\r\n"
            }
            if chunk.utf8.count > 1 << 20 {
                try handle.write(contentsOf: Data(chunk.utf8))
                chunk.removeAll(keepingCapacity: true)
            }
        }
        try handle.write(contentsOf: Data(chunk.utf8))
        return path
    }

    // MARK: A wave of expiry

    /// A million keys whose deadlines fall within 10 s of being set: the time until the server
    /// holds none, the CPU it spent meanwhile, and the p99 of a client's GETs meanwhile.
    private func expiryWave() throws {
        print("")
        print("## \(Bench.format(Double(self.keyCount))) keys expiring within 10 s (fsync=interval 1 s ↔ appendfsync everysec)")
        let spreadMilliseconds = 10_000
        let input = try Self.protocolFile(self.directory, keys: self.keyCount, ttlMilliseconds: spreadMilliseconds, spread: true)
        defer { unlink(input) }
        var rows: [[String]] = []
        var results: [String: (seconds: Double, cpu: Double, p99: Double)] = [:]
        for name in ["walrusd", "redis-server"] {
            let server =
                name == "walrusd"
                ? try RESPBenchmarks(directory: self.directory, requests: 0, repetitions: 1).startWalrusd(
                    self.walrusd, ["--fsync", "interval", "--fsync-interval", "1000"])
                : try RESPBenchmarks.startRedis(directory: self.directory, name: "expiry", ["--appendonly", "yes", "--appendfsync", "everysec"])
            defer {
                kill(server.process.processIdentifier, SIGKILL)
                server.process.waitUntilExit()
            }
            let loadStarted = Bench.now()
            let cpuBefore = Bench.cpuSeconds(server.process.processIdentifier)
            try ScaleBenchmarks.pipe(input, port: server.port)
            // A client reads meanwhile; its latencies until the keyspace is empty.
            let stop = LockedValue(false)
            let latencies = LockedValue<[Double]>([])
            let reader = DedicatedThread(name: "expiry-reader") {
                guard let connection = try? RESPConnection(host: "127.0.0.1", port: server.port) else { return }
                var samples: [Double] = []
                var i = 0
                while !stop.withLock({ $0 }) {
                    let started = Bench.now()
                    _ = try? connection.command("GET", "key:\(i % 1000)")
                    samples.append(Bench.now() - started)
                    i += 1
                    usleep(1000)
                }
                latencies.withLock { $0 = samples }
            }
            let probe = try RESPConnection(host: "127.0.0.1", port: server.port)
            var emptied = Double.nan
            let deadline = Bench.now() + 300
            while Bench.now() < deadline {
                if case .integer(0) = try probe.command("DBSIZE") {
                    emptied = Bench.now() - loadStarted
                    break
                }
                usleep(50_000)
            }
            stop.withLock { $0 = true }
            reader.join()
            let cpu = Bench.cpuSeconds(server.process.processIdentifier) - cpuBefore
            let sorted = latencies.withLock { $0 }.sorted()
            let p99 = sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.99))] * 1000
            results[name] = (emptied, cpu, p99)
        }
        let (w, r) = (results["walrusd"]!, results["redis-server"]!)
        let keys = Bench.format(Double(self.keyCount))
        Report.add(
            section: "Keyspace", workload: "\(keys) keys expiring within 10 s: load start until none is left", walrus: w.seconds,
            peer: r.seconds, peerName: "redis-server", unit: "s", lowerIsBetter: true, goal: .atMost(1.0),
            limit: "the last deadline falls 10 s after its key's SET")
        Report.add(
            section: "Keyspace", workload: "\(keys) keys expiring within 10 s: server CPU, load included", walrus: w.cpu, peer: r.cpu,
            peerName: "redis-server", unit: "s", lowerIsBetter: true)
        Report.add(
            section: "Keyspace", workload: "\(keys) keys expiring within 10 s: a client's GET p99 meanwhile", walrus: w.p99, peer: r.p99,
            peerName: "redis-server", unit: "ms", lowerIsBetter: true, goal: .atMost(1.0))
        rows.append(["load start until none left (s)", String(format: "%.2f", w.seconds), String(format: "%.2f", r.seconds), Bench.ratio(w.seconds, r.seconds)])
        rows.append(["server CPU, load included (s)", String(format: "%.2f", w.cpu), String(format: "%.2f", r.cpu), Bench.ratio(w.cpu, r.cpu)])
        rows.append(["client GET p99 meanwhile (ms)", String(format: "%.3f", w.p99), String(format: "%.3f", r.p99), Bench.ratio(w.p99, r.p99)])
        Bench.table("Expiry wave", ["figure", "walrusd", "redis-server", "walrus ÷ redis"], rows)
    }
}
