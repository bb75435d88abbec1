import Foundation
import Logging
import WALCore
import WalrusClient
import WalrusStore

/// Replication figures beside a redis-server primary + replica in the same run: visibility lag
/// at a fixed write rate, follower catch-up throughput, and snapshot bootstrap vs full resync.
struct ReplicationBenchmarks {
    let directory: String
    let quick: Bool
    let walrusd: String

    struct Node {
        let process: Process
        let port: Int
        let replicationPort: Int
        let data: String

        func stop() {
            // Children of a Dispatch thread may have SIGTERM blocked; their data is scratch.
            kill(self.process.processIdentifier, SIGKILL)
            self.process.waitUntilExit()
        }
    }

    func run() throws {
        print("## walrus-bench repl — \(Bench.machine())")
        print("")
        print("walrusd primary + follower beside redis-server primary + replica, all on 127.0.0.1, in one run. \(RESPBenchmarks.redisVersion())")
        let fsync = try self.fdatasyncLatency()
        Bench.table(
            "fdatasync on this disk (4 KiB appends)", ["p50 ms", "p99 ms"],
            [[String(format: "%.3f", fsync.p50 * 1000), String(format: "%.3f", fsync.p99 * 1000)]])
        try self.visibilityLag(fsyncP50: fsync.p50)
        try self.catchUp()
        try self.bootstrap()
    }

    // MARK: fdatasync

    private func fdatasyncLatency() throws -> (p50: Double, p99: Double) {
        let path = Bench.scratch(self.directory, "fsync") + "/probe"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        defer { close(fd) }
        let block = [UInt8](repeating: 7, count: 4096)
        var samples: [Double] = []
        for _ in 0..<(self.quick ? 50 : 300) {
            _ = block.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            let started = Bench.now()
            fdatasync(fd)
            samples.append(Bench.now() - started)
        }
        return (Self.percentile(samples, 0.5), Self.percentile(samples, 0.99))
    }

    static func percentile(_ values: [Double], _ p: Double) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return .nan }
        return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]
    }

    // MARK: Visibility lag

    private func visibilityLag(fsyncP50: Double) throws {
        let rate = 2000.0
        let writes = self.quick ? 2000 : 10_000
        var rows: [[String]] = []
        var figures: [String: (p50: Double, p99: Double, max: Double)] = [:]
        var samples: [String: [Double]] = [:]
        var primaryCPU: [String: Double] = [:]
        let setups: [(String, () throws -> (primary: Int, follower: Int, primaryPID: Int32, stop: () -> Void))] = [
            ("walrusd fsync=always", { try self.walrusPair(["--fsync", "always"]) }),
            ("walrusd fsync=interval (100 ms)", { try self.walrusPair(["--fsync", "interval", "--fsync-interval", "100"]) }),
            ("redis-server (no persistence)", { try self.redisPair([]) }),
        ]
        for (name, start) in setups {
            let pair = try start()
            defer { pair.stop() }
            let before = Bench.cpuSeconds(pair.primaryPID)
            let lags = try Self.measureLag(primary: pair.primary, follower: pair.follower, writes: writes, rate: rate)
            // The primary's CPU per SET: serving it and streaming it to the follower. (Not the
            // follower's: the reader polling GET there is most of it.)
            primaryCPU[name] = (Bench.cpuSeconds(pair.primaryPID) - before) / Double(writes) * 1e6
            samples[name] = lags
            let figure = (Self.percentile(lags, 0.5), Self.percentile(lags, 0.99), lags.max() ?? .nan)
            figures[name] = figure
            rows.append([
                name, String(format: "%.3f", figure.0 * 1000), String(format: "%.3f", figure.1 * 1000),
                String(format: "%.3f", figure.2 * 1000), String(format: "%.1f", primaryCPU[name] ?? .nan),
            ])
        }
        Bench.table(
            "visibility lag: write acknowledged on the primary → readable on the follower (\(writes) SETs at \(Int(rate))/s)",
            ["setup", "p50 ms", "p99 ms", "max ms", "primary CPU-µs/SET"], rows)
        if let ours = figures["walrusd fsync=always"], let theirs = figures["redis-server (no persistence)"] {
            let goal = theirs.p99 + fsyncP50
            Report.add(
                section: "Replication", workload: "visibility lag p50 at \(Int(rate)) SET/s (fsync=always)", walrus: ours.p50 * 1000,
                peer: theirs.p50 * 1000, peerName: "redis-server", unit: "ms", lowerIsBetter: true)
            Report.add(
                section: "Replication", workload: "visibility lag p99 at \(Int(rate)) SET/s (fsync=always)", walrus: ours.p99 * 1000,
                peer: theirs.p99 * 1000, peerName: "redis-server", unit: "ms", lowerIsBetter: true,
                goal: .absolute(goal * 1000, lowerIsBetter: true),
                limit: String(format: "one fdatasync p50 %.3f ms", fsyncP50 * 1000))
            for (mode, name, note) in [
                ("fsync=always", "walrusd fsync=always", "walrusd's includes an fdatasync per SET"),
                ("fsync=interval 100 ms", "walrusd fsync=interval (100 ms)", ""),
            ] {
                Report.add(
                    section: "Replication", workload: "visibility lag at \(Int(rate)) SET/s, primary CPU (\(mode))",
                    walrus: primaryCPU[name] ?? .nan, peer: primaryCPU["redis-server (no persistence)"],
                    peerName: "redis-server (no persistence)", unit: "CPU-µs/op", lowerIsBetter: true, limit: note)
            }
            Report.lagSamples.withLock { $0 = samples }
            print("")
            print(
                String(
                    format: "goal: walrusd fsync=always p99 %.3f ms ≤ redis p99 %.3f ms + one fdatasync %.3f ms = %.3f ms: %@",
                    ours.p99 * 1000, theirs.p99 * 1000, fsyncP50 * 1000, goal * 1000, ours.p99 <= goal ? "met" : "MISSED"))
        }
    }

    /// SET lag <i> at `rate`/s on the primary; a reader polls GET lag on the follower. Each
    /// write's lag is when the follower first showed it (or a later value) minus when its SET
    /// was acknowledged.
    static func measureLag(primary: Int, follower: Int, writes: Int, rate: Double) throws -> [Double] {
        let acknowledged = UnsafeMutableBufferPointer<Double>.allocate(capacity: writes + 1)
        let seen = UnsafeMutableBufferPointer<Double>.allocate(capacity: writes + 1)
        defer {
            acknowledged.deallocate()
            seen.deallocate()
        }
        acknowledged.initialize(repeating: .nan)
        seen.initialize(repeating: .nan)
        let reader = try RESPConnection(host: "127.0.0.1", port: follower)
        _ = try RESPConnection(host: "127.0.0.1", port: primary).command("SET", "lag", "0")
        usleep(200_000)
        let readerThread = DedicatedThread(name: "lag-reader") {
            var last = 0
            let deadline = Bench.now() + Double(writes) / rate + 10
            while last < writes && Bench.now() < deadline {
                guard let text = try? reader.command("GET", "lag").text, let value = Int(text) else { continue }
                if value > last {
                    let now = Bench.now()
                    for index in (last + 1)...min(value, writes) { seen[index] = now }
                    last = value
                }
            }
        }
        let writer = try RESPConnection(host: "127.0.0.1", port: primary)
        let started = Bench.now()
        for index in 1...writes {
            let due = started + Double(index - 1) / rate
            while Bench.now() < due { usleep(20) }
            _ = try writer.command("SET", "lag", String(index))
            acknowledged[index] = Bench.now()
        }
        readerThread.join()
        return (1...writes).compactMap { index in
            let lag = seen[index] - acknowledged[index]
            return lag.isNaN ? nil : max(lag, 0)
        }
    }

    // MARK: Catch-up

    private func catchUp() throws {
        let records = self.quick ? 100_000 : 1_000_000
        // Three fresh followers in full mode: the median is the figure, the spread says how steady.
        let runs = self.quick ? 1 : 3
        let data = Bench.scratch(self.directory, "catchup-primary")
        try Self.fill(directory: data, keys: records, checkpoint: false)
        let logBytes = try FileManager.default.contentsOfDirectory(atPath: data).filter { $0.hasPrefix("wal-") }
            .reduce(Int64(0)) { $0 + ((try? FileManager.default.attributesOfItem(atPath: data + "/" + $1)[.size] as? Int64) ?? 0) }
        var rates: [Double] = []
        var followerCPU: [Double] = []
        var primaryCPU: [Double] = []
        var rows: [[String]] = []
        for _ in 1...runs {
            // The fill's (and the last follower's) dirty pages out first: each run times the
            // catch-up, not the writeback of what came before it.
            sync()
            let primary = try self.startWalrusd(data: data, ["--fsync", "always"])
            defer { primary.stop() }
            let run = try self.newFollower(of: primary, scratch: "catchup-follower") {
                try Self.waitForOffset(port: $0.port, UInt64(records), seconds: 300)
            }
            let seconds = run.seconds ?? .nan
            let rate = Double(logBytes) / seconds / 1e6
            rates.append(rate)
            // CPU per record, start-up included: the follower's (receive, check, append, apply,
            // fdatasync) and the primary's (read the segments, send).
            followerCPU.append(run.followerCPU / Double(records) * 1e6)
            primaryCPU.append(run.primaryCPU / Double(records) * 1e6)
            rows.append([
                "\(rows.count + 1)", Bench.format(Double(records) / seconds), String(format: "%.0f", rate),
                String(format: "%.2f", seconds), String(format: "%.2f", followerCPU.last!), String(format: "%.2f", primaryCPU.last!),
                rate >= 200 ? "met" : "MISSED",
            ])
        }
        let median = rates.contains(where: \.isNaN) ? .nan : Bench.median(rates)
        let spread = runs > 1 ? "; \(runs) runs \(String(format: "%.0f–%.0f", rates.min() ?? .nan, rates.max() ?? .nan)) MB/s" : ""
        Report.add(
            section: "Replication", workload: "follower catch-up, \(Bench.format(Double(records))) records",
            walrus: median, peer: nil, peerName: "", unit: "MB/s", goal: .absolute(200),
            limit: (Report.limits.withLock { $0.loopbackMBps.map { "loopback TCP \(Bench.format($0)) MB/s" } ?? "" }) + spread)
        for (who, figures) in [("follower", followerCPU), ("primary", primaryCPU)] {
            Report.add(
                section: "Replication", workload: "follower catch-up, \(Bench.format(Double(records))) records, \(who) CPU",
                walrus: Bench.median(figures), peer: nil, peerName: "", unit: "CPU-µs/record", lowerIsBetter: true)
        }
        Bench.table(
            "follower catch-up: a new follower streams \(records) records (\(Bench.format(Double(logBytes) / 1_048_576)) MiB of log) from the primary's segments",
            ["run", "records/s", "MB/s", "seconds", "follower CPU-µs/record", "primary CPU-µs/record", "goal ≥ 200 MB/s"], rows)
        print("")
        print("(from starting the follower process to its applied index reaching \(records); includes its start-up; median of the runs in the report)")
    }

    // MARK: Bootstrap

    private func bootstrap() throws {
        let keys = self.quick ? 100_000 : 1_000_000
        let data = Bench.scratch(self.directory, "bootstrap-primary")
        try Self.fill(directory: data, keys: keys, checkpoint: true)
        let config = self.directory + "/bootstrap.toml"
        try "retention-bytes = 0\nretention-seconds = 0\n".write(toFile: config, atomically: true, encoding: .utf8)
        var rows: [[String]] = []

        let primary = try self.startWalrusd(data: data, ["--config", config])
        let walrus: (seconds: Double?, followerCPU: Double, primaryCPU: Double)
        do {
            defer { primary.stop() }
            walrus = try self.newFollower(of: primary, scratch: "bootstrap-follower") {
                try Self.waitForKeys(port: $0.port, keys, seconds: 300)
            }
        }
        let walrusSeconds = walrus.seconds ?? .nan
        rows.append([
            "walrusd snapshot bootstrap", String(format: "%.2f", walrusSeconds), "1.00×", String(format: "%.2f", walrus.followerCPU),
            String(format: "%.2f", walrus.primaryCPU),
        ])
        for (name, extra) in [
            ("redis-server full resync, repl-diskless-sync-delay 0", ["--repl-diskless-sync-delay", "0"]),
            ("redis-server full resync, defaults", [String]()),
        ] {
            let redisPrimary = try self.startRedis(extra + ["--enable-debug-command", "local"], name: "bootstrap-redis")
            defer { kill(redisPrimary.process.processIdentifier, SIGKILL); redisPrimary.process.waitUntilExit() }
            let connection = try RESPConnection(host: "127.0.0.1", port: redisPrimary.port, timeoutMilliseconds: 120_000)
            let populated = try connection.command("DEBUG", "POPULATE", String(keys), "key", "100")
            guard populated == .simple("OK") else { throw RESPBenchmarks.BenchError("DEBUG POPULATE failed: \(populated)") }
            let primaryBefore = Bench.cpuSeconds(redisPrimary.process.processIdentifier)
            let started = Bench.now()
            let replica = try self.startRedis(["--replicaof", "127.0.0.1", String(redisPrimary.port)], name: "bootstrap-replica")
            defer { kill(replica.process.processIdentifier, SIGKILL); replica.process.waitUntilExit() }
            var seconds = Double.nan
            if try Self.waitForRedisSync(port: replica.port, keys: keys, seconds: 300) { seconds = Bench.now() - started }
            // (The primary's fork for the RDB is a child process: its CPU is not counted here.)
            let cpu = (
                follower: Bench.cpuSeconds(replica.process.processIdentifier),
                primary: Bench.cpuSeconds(redisPrimary.process.processIdentifier) - primaryBefore
            )
            rows.append([
                name, String(format: "%.2f", seconds), Bench.ratio(seconds, walrusSeconds), String(format: "%.2f", cpu.follower),
                String(format: "%.2f", cpu.primary),
            ])
            let workload = "bootstrap \(Bench.format(Double(keys))) keys vs \(name.replacingOccurrences(of: "redis-server ", with: ""))"
            Report.add(section: "Replication", workload: workload, walrus: walrusSeconds, peer: seconds, peerName: "redis-server", unit: "s", lowerIsBetter: true)
            Report.add(
                section: "Replication", workload: workload + ", follower CPU", walrus: walrus.followerCPU, peer: cpu.follower,
                peerName: "redis-server replica", unit: "CPU-s", lowerIsBetter: true)
            Report.add(
                section: "Replication", workload: workload + ", primary CPU", walrus: walrus.primaryCPU, peer: cpu.primary,
                peerName: "redis-server", unit: "CPU-s", lowerIsBetter: true,
                limit: "Redis's fork that writes the RDB is not counted")
        }
        Bench.table(
            "bootstrap a new follower with \(keys) keys of 100-byte values (primary's log already dropped) vs a Redis replica's full resync",
            ["setup", "seconds", "÷ walrusd", "follower CPU-s", "primary CPU-s"], rows)
        print("")
        print("(from starting the follower/replica process until it serves every key)")
    }

    /// Write `keys` SETs of 100-byte values into a fresh data directory through the store (fast,
    /// interval mode), then optionally checkpoint and drop the covered log.
    static func fill(directory: String, keys: Int, checkpoint: Bool) throws {
        var configuration = StoreConfiguration(directory: directory)
        configuration.wal.fsyncMode = .interval(milliseconds: 1000)
        configuration.retention = .init(keepBytes: 0, keepSeconds: 0)
        let store = try KeyValueStore.open(configuration, logger: Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() })
        let value = [UInt8](repeating: UInt8(ascii: "x"), count: 100)
        for index in 0..<keys { try store.set(key: Array("key:\(index)".utf8), value: value) }
        try store.commitBlocking()
        if checkpoint { try store.checkpointBlocking() }
        store.close()
    }

    // MARK: Processes

    /// Start a new follower of `primary` in the fresh scratch directory `scratch` and wait until
    /// `reached` says it got there: the seconds from its start (nil if it never did), its CPU
    /// seconds (start-up included) and the primary's meanwhile. The follower is stopped after.
    private func newFollower(
        of primary: Node, scratch: String, until reached: (Node) throws -> Bool
    ) throws -> (seconds: Double?, followerCPU: Double, primaryCPU: Double) {
        let primaryBefore = Bench.cpuSeconds(primary.process.processIdentifier)
        let started = Bench.now()
        let follower = try self.startWalrusd(
            data: Bench.scratch(self.directory, scratch), ["--follow", "127.0.0.1:\(primary.replicationPort)"])
        defer { follower.stop() }
        let seconds: Double? = try reached(follower) ? Bench.now() - started : nil
        return (
            seconds, Bench.cpuSeconds(follower.process.processIdentifier),
            Bench.cpuSeconds(primary.process.processIdentifier) - primaryBefore
        )
    }

    private func walrusPair(_ arguments: [String]) throws -> (primary: Int, follower: Int, primaryPID: Int32, stop: () -> Void) {
        let primary = try self.startWalrusd(data: Bench.scratch(self.directory, "lag-primary"), arguments)
        let follower = try self.startWalrusd(
            data: Bench.scratch(self.directory, "lag-follower"), arguments + ["--follow", "127.0.0.1:\(primary.replicationPort)"])
        _ = try Self.waitForInfo(port: follower.port, "master_link_status:up", seconds: 30)
        return (primary.port, follower.port, primary.process.processIdentifier, { follower.stop(); primary.stop() })
    }

    private func redisPair(_ arguments: [String]) throws -> (primary: Int, follower: Int, primaryPID: Int32, stop: () -> Void) {
        let primary = try self.startRedis(arguments, name: "lag-redis")
        let replica = try self.startRedis(arguments + ["--replicaof", "127.0.0.1", String(primary.port)], name: "lag-replica")
        _ = try Self.waitForInfo(port: replica.port, "master_link_status:up", seconds: 30)
        let stop = {
            for server in [replica, primary] {
                kill(server.process.processIdentifier, SIGKILL)
                server.process.waitUntilExit()
            }
        }
        return (primary.port, replica.port, primary.process.processIdentifier, stop)
    }

    private func startWalrusd(data: String, _ arguments: [String]) throws -> Node {
        let server = try RESPBenchmarks.launchWalrusd(self.walrusd, data: data, arguments)
        return Node(process: server.process, port: server.port, replicationPort: server.replicationPort, data: data)
    }

    /// A redis-server without persistence (its replica applies before any fsync).
    private func startRedis(_ arguments: [String], name: String) throws -> RESPBenchmarks.Server {
        try RESPBenchmarks.startRedis(directory: self.directory, name: name, ["--appendonly", "no"] + arguments)
    }

    static func info(_ port: Int) -> String {
        (try? RESPConnection(host: "127.0.0.1", port: port).command("INFO").text) ?? ""
    }

    static func waitForInfo(port: Int, _ text: String, seconds: Double) throws -> Bool {
        let deadline = Bench.now() + seconds
        while Bench.now() < deadline {
            if Self.info(port).contains(text) { return true }
            usleep(10_000)
        }
        return false
    }

    static func waitForOffset(port: Int, _ offset: UInt64, seconds: Double) throws -> Bool {
        let deadline = Bench.now() + seconds
        let connection = try RESPConnection(host: "127.0.0.1", port: port)
        while Bench.now() < deadline {
            let text = (try? connection.command("INFO", "replication").text) ?? ""
            if let line = text.split(separator: "\r\n").first(where: { $0.hasPrefix("slave_repl_offset:") }),
                let value = UInt64(line.dropFirst("slave_repl_offset:".count)), value >= offset
            {
                return true
            }
            usleep(5_000)
        }
        return false
    }

    static func waitForKeys(port: Int, _ keys: Int, seconds: Double) throws -> Bool {
        let deadline = Bench.now() + seconds
        while Bench.now() < deadline {
            if let connection = try? RESPConnection(host: "127.0.0.1", port: port),
                case .integer(let count) = try connection.command("DBSIZE"), count >= keys
            {
                return true
            }
            usleep(5_000)
        }
        return false
    }

    static func waitForRedisSync(port: Int, keys: Int, seconds: Double) throws -> Bool {
        let deadline = Bench.now() + seconds
        while Bench.now() < deadline {
            if let connection = try? RESPConnection(host: "127.0.0.1", port: port),
                let info = try? connection.command("INFO", "replication").text, info.contains("master_link_status:up"),
                case .integer(let count) = try connection.command("DBSIZE"), count >= keys
            {
                return true
            }
            usleep(5_000)
        }
        return false
    }
}
