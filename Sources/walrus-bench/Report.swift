import ArgumentParser
import Foundation
import WALCore
import WalrusClient

/// The figures every benchmark adds as it prints its own table, gathered by `walrus-bench report`
/// into one table, a CSV file and charts.
enum Report {
    /// A goal from the issue, in the row's own unit or as a ratio to the peer.
    enum Goal {
        /// walrus ÷ peer at least this (throughput).
        case atLeast(Double)
        /// walrus ÷ peer at most this (time per operation).
        case atMost(Double)
        /// An absolute figure in the row's unit.
        case absolute(Double, lowerIsBetter: Bool = false)
    }

    struct Row {
        var section: String
        var workload: String
        var walrus: Double
        var peer: Double?
        var peerName: String
        var unit: String
        var lowerIsBetter: Bool
        var goal: Goal?
        var limit: String

        /// walrus ÷ peer.
        var ratio: Double? { self.peer.flatMap { $0 > 0 && $0.isFinite && self.walrus.isFinite ? self.walrus / $0 : nil } }

        var goalText: String {
            guard let goal = self.goal else { return "" }
            switch goal {
            case .atLeast(let x): return "≥ \(Bench.format(x, decimals: 2))× peer"
            case .atMost(let x): return "≤ \(Bench.format(x, decimals: 2))× peer"
            case .absolute(let x, let lower): return "\(lower ? "≤" : "≥") \(Bench.format(x, decimals: x < 10 ? 3 : 0)) \(self.unit)"
            }
        }

        var goalMet: Bool? {
            guard let goal = self.goal else { return nil }
            switch goal {
            case .atLeast(let x): return self.ratio.map { $0 >= x }
            case .atMost(let x): return self.ratio.map { $0 <= x }
            case .absolute(let x, let lower): return self.walrus.isFinite ? (lower ? self.walrus <= x : self.walrus >= x) : false
            }
        }
    }

    static let rows = LockedValue<[Row]>([])
    /// Raw visibility-lag samples (seconds) per setup, for the lag chart.
    static let lagSamples = LockedValue<[String: [Double]]>([:])
    /// Physical limits measured at the start of a report.
    struct Limits {
        var fdatasyncPerSecond: Double?
        var loopbackMBps: Double?
        var memoryMBps: Double?
    }
    static let limits = LockedValue(Limits())
    /// (keys, setup, SET ops/s, GET ops/s) for the cost-growth chart.
    static let growth = LockedValue<[(keys: Int, setup: String, set: Double, get: Double)]>([])

    static func add(
        section: String, workload: String, walrus: Double, peer: Double?, peerName: String, unit: String,
        lowerIsBetter: Bool = false, goal: Goal? = nil, limit: String = ""
    ) {
        let row = Row(
            section: section, workload: workload, walrus: walrus, peer: peer, peerName: peerName, unit: unit,
            lowerIsBetter: lowerIsBetter, goal: goal, limit: limit)
        self.rows.withLock { $0.append(row) }
    }

    static func figure(_ value: Double, unit: String) -> String {
        guard value.isFinite else { return "–" }
        if unit == "ms" || unit == "s" || unit == "CPU-s" { return String(format: value < 10 ? "%.3f" : "%.1f", value) }
        return Bench.format(value, decimals: value < 100 ? 1 : 0)
    }
}

/// `walrus-bench report`: every benchmark, side by side with the peers, in one run.
struct ReportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Everything side by side with redis-server and the original: one Markdown table, a CSV file and PNG charts.")

    @Option(help: "Where the servers and logs keep their data (a real disk, not a tmpfs); removed afterwards.")
    var dir: String = "./walrus-bench-data"
    @Option(help: "Where the table (report.md), figures (report.csv) and charts (*.png) go.")
    var out: String = "./walrus-report"
    @Option(help: "Runs per figure; walrus and the peer interleaved, medians printed.") var repetitions: Int = 5
    @Flag(help: "Small sizes, one run each, under 3 minutes: proves the report works (figures not meaningful).")
    var quick = false

    func run() async throws {
        #if DEBUG
        print("warning: this is a debug build; build with -c release for meaningful figures")
        #endif
        let started = Bench.now()
        let directory = URL(fileURLWithPath: self.dir).standardizedFileURL.path
        let out = URL(fileURLWithPath: self.out).standardizedFileURL.path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let walrusd = try Bench.walrusdBeside()
        let repetitions = self.quick ? 1 : max(5, self.repetitions)
        print("# walrus-bench report — \(Bench.machine())")
        print("")
        print("\(RESPBenchmarks.redisVersion()) Medians of \(repetitions) interleaved runs. Data on \(directory).")

        try PhysicalLimits(directory: directory, quick: self.quick).measure()
        try await WALBenchmarks(
            directory: directory, quick: self.quick, repetitions: repetitions, recoveryRecords: self.quick ? 100_000 : 1_000_000,
            sections: ["batches", "group", "recovery"]
        ).run()
        var resp = RESPBenchmarks(directory: directory, requests: self.quick ? 5000 : 100_000, repetitions: repetitions)
        resp.replicas = true
        try resp.run()
        try ReplicationBenchmarks(directory: directory, quick: self.quick, walrusd: walrusd).run()
        try ScaleBenchmarks(directory: directory, walrusd: walrusd, quick: self.quick, repetitions: repetitions).run()
        try KeyspaceBenchmarks(directory: directory, walrusd: walrusd, quick: self.quick, repetitions: self.quick ? 1 : 3).run()
        try TLSBenchmarks(directory: directory, walrusd: walrusd, quick: self.quick, repetitions: self.quick ? 1 : 3).run()

        let rows = Report.rows.withLock { $0 }
        let table = Self.markdown(rows, machine: Bench.machine(), seconds: Bench.now() - started)
        print("")
        print(table)
        try table.write(toFile: out + "/report.md", atomically: true, encoding: .utf8)
        try Self.csv(rows).write(toFile: out + "/report.csv", atomically: true, encoding: .utf8)
        let charts = try Charts(directory: out).draw(rows: rows)
        print("")
        print("Wrote \(out)/report.md, \(out)/report.csv" + (charts.isEmpty ? "" : ", " + charts.joined(separator: ", ")))
        print(String(format: "report: %.0f s", Bench.now() - started))
    }

    static func markdown(_ rows: [Report.Row], machine: String, seconds: Double) -> String {
        var lines = [
            "### Walrus beside its peers — \(machine)", "",
            "ratio = walrus ÷ peer (for ops/s and MB/s higher is better; for ns, ms and s lower is better).", "",
            "| section | workload | walrus | peer | peer figure | unit | ratio | goal | met | physical limit |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rows {
            let met = row.goalMet.map { $0 ? "yes" : "**no**" } ?? ""
            lines.append(
                "| \(row.section) | \(row.workload) | \(Report.figure(row.walrus, unit: row.unit)) | \(row.peerName) | "
                    + "\(row.peer.map { Report.figure($0, unit: row.unit) } ?? "") | \(row.unit) | "
                    + "\(row.ratio.map { String(format: "%.2f×", $0) } ?? "") | \(row.goalText) | \(met) | \(row.limit) |")
        }
        let limits = Report.limits.withLock { $0 }
        lines.append("")
        lines.append(
            "Physical limits measured in this run: fdatasync \(limits.fdatasyncPerSecond.map { Bench.format($0) } ?? "–")/s (4 KiB), "
                + "loopback TCP \(limits.loopbackMBps.map { Bench.format($0) } ?? "–") MB/s, "
                + "memory copy \(limits.memoryMBps.map { Bench.format($0) } ?? "–") MB/s. "
                + String(format: "The report took %.0f s.", seconds))
        return lines.joined(separator: "\n") + "\n"
    }

    static func csv(_ rows: [Report.Row]) -> String {
        func quote(_ text: String) -> String { "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
        var lines = ["section,workload,walrus,peer_name,peer,unit,ratio,goal,goal_met,limit"]
        for row in rows {
            lines.append(
                [
                    quote(row.section), quote(row.workload), row.walrus.isFinite ? String(row.walrus) : "",
                    quote(row.peerName), row.peer.map { $0.isFinite ? String($0) : "" } ?? "", quote(row.unit),
                    row.ratio.map { String(format: "%.4f", $0) } ?? "", quote(row.goalText),
                    row.goalMet.map { $0 ? "yes" : "no" } ?? "", quote(row.limit),
                ].joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// What the hardware allows, measured in the same run: fdatasync rate, loopback TCP bandwidth,
/// memory copy bandwidth.
struct PhysicalLimits {
    let directory: String
    let quick: Bool

    func measure() throws {
        let path = Bench.scratch(self.directory, "limits") + "/probe"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let block = [UInt8](repeating: 7, count: 4096)
        let syncs = self.quick ? 50 : 500
        let started = Bench.now()
        for _ in 0..<syncs {
            _ = block.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            fdatasync(fd)
        }
        let fsyncRate = Double(syncs) / (Bench.now() - started)
        close(fd)

        // Memory: copy 64 MiB back and forth.
        let size = 64 << 20
        let a = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        let b = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        defer { a.deallocate(); b.deallocate() }
        memset(a, 1, size)
        memset(b, 2, size)
        let copies = self.quick ? 4 : 32
        let copyStarted = Bench.now()
        for i in 0..<copies { if i % 2 == 0 { memcpy(b, a, size) } else { memcpy(a, b, size) } }
        let memoryMBps = Double(size * copies) / (Bench.now() - copyStarted) / 1e6

        let loopback = try Self.loopbackMBps(bytes: self.quick ? 256 << 20 : 2 << 30)
        Report.limits.withLock { $0 = Report.Limits(fdatasyncPerSecond: fsyncRate, loopbackMBps: loopback, memoryMBps: memoryMBps) }
        Bench.table(
            "Physical limits on this machine", ["fdatasync/s (4 KiB appends)", "loopback TCP MB/s (one stream)", "memory copy MB/s"],
            [[Bench.format(fsyncRate), Bench.format(loopback), Bench.format(memoryMBps)]])
    }

    /// One TCP stream over 127.0.0.1: a thread sends `bytes`, this thread receives them.
    static func loopbackMBps(bytes: Int) throws -> Double {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        let port = Bench.bindLoopback(listener).bigEndian
        listen(listener, 1)
        let sender = DedicatedThread(name: "loopback-sender") {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var target = sockaddr_in()
            target.sin_family = sa_family_t(AF_INET)
            target.sin_addr.s_addr = inet_addr("127.0.0.1")
            target.sin_port = port
            _ = withUnsafePointer(to: &target) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            let chunk = [UInt8](repeating: 1, count: 1 << 20)
            var sent = 0
            while sent < bytes {
                let n = chunk.withUnsafeBytes { send(fd, $0.baseAddress, min($0.count, bytes - sent), Int32(MSG_NOSIGNAL)) }
                if n <= 0 { break }
                sent += n
            }
        }
        let connection = accept(listener, nil, nil)
        defer { close(connection) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var received = 0
        let started = Bench.now()
        while received < bytes {
            let n = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            received += n
        }
        let seconds = Bench.now() - started
        sender.join()
        return Double(received) / seconds / 1e6
    }
}

/// Memory per key and cost growth: walrusd (fsync=interval, follower-less) beside redis-server
/// (appendfsync everysec), loaded through `redis-cli --pipe` with the same keys and values.
struct ScaleBenchmarks {
    let directory: String
    let walrusd: String
    let quick: Bool
    let repetitions: Int

    func run() throws {
        print("")
        print("## Memory per key and cost growth")
        let value = String(repeating: "v", count: 100)
        let memoryKeys = self.quick ? 100_000 : 1_000_000
        let sizes = self.quick ? [10_000, 100_000] : [10_000, 100_000, 1_000_000, 10_000_000]
        var memoryRow: [String] = []
        var growthRows: [[String]] = []
        for keys in Set(sizes + [memoryKeys]).sorted() {
            let input = try self.protocolFile(keys: keys, value: value)
            defer { unlink(input) }
            let (walrus, redis, ours, theirs) = try Self.loadedPair(directory: self.directory, walrusd: self.walrusd, input: input, keys: keys)
            defer {
                for server in [walrus, redis] {
                    kill(server.process.processIdentifier, SIGKILL)
                    server.process.waitUntilExit()
                }
            }
            if keys == memoryKeys {
                memoryRow = [Bench.format(Double(keys)), Bench.format(ours), Bench.format(theirs), Bench.ratio(ours, theirs)]
                Report.add(
                    section: "Memory", workload: "RSS per key, \(Bench.format(Double(keys))) keys of 100-byte values",
                    walrus: ours, peer: theirs, peerName: "redis-server used_memory_rss", unit: "bytes/key", lowerIsBetter: true,
                    goal: .atMost(1.0), limit: "key + value = \(("key:" + String(keys)).count + 100) bytes")
            }
            guard sizes.contains(keys) else { continue }
            let requests = self.quick ? 5000 : 200_000
            let runner = RESPBenchmarks(directory: self.directory, requests: requests, repetitions: 1)
            var figures: [String: [Double]] = [:]
            for _ in 0..<self.repetitions {
                for (name, port) in [("walrus", walrus.port), ("redis", redis.port)] {
                    for test in ["set", "get"] {
                        figures["\(name) \(test)", default: []].append(
                            try runner.benchmark(port: port, ["-t", test, "-c", "50", "-r", String(keys)]))
                    }
                }
            }
            let m = figures.mapValues(Bench.median)
            growthRows.append([
                Bench.format(Double(keys)), Bench.format(m["walrus set"]!), Bench.format(m["redis set"]!),
                Bench.format(m["walrus get"]!), Bench.format(m["redis get"]!),
            ])
            Report.growth.withLock {
                $0.append((keys, "walrusd", m["walrus set"]!, m["walrus get"]!))
                $0.append((keys, "redis-server", m["redis set"]!, m["redis get"]!))
            }
            for test in ["set", "get"] {
                Report.add(
                    section: "Cost growth (-c 50, periodic fsync)", workload: "\(test.uppercased()) at \(Bench.format(Double(keys))) keys",
                    walrus: m["walrus \(test)"]!, peer: m["redis \(test)"]!, peerName: "redis-server", unit: "ops/s")
            }
        }
        Bench.table(
            "Memory per key: RSS added by loading the keys (walrusd: process RSS; redis-server: used_memory_rss)",
            ["keys", "walrusd bytes/key", "redis-server bytes/key", "walrus ÷ redis (goal ≤ 1)"], [memoryRow])
        Bench.table(
            "Cost growth: redis-benchmark -c 50 over N existing keys (walrusd fsync=interval 1 s, redis appendfsync everysec)",
            ["keys", "walrusd SET ops/s", "redis SET ops/s", "walrusd GET ops/s", "redis GET ops/s"], growthRows)
    }

    /// SET key:N <value> for N in 0..<keys, in RESP, for `redis-cli --pipe`.
    func protocolFile(keys: Int, value: String) throws -> String {
        let path = self.directory + "/load-\(keys).resp"
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        var chunk = ""
        chunk.reserveCapacity(1 << 20)
        for i in 0..<keys {
            let key = "key:\(i)"
            chunk += "*3\r\n$3\r\nSET\r\n$\(key.utf8.count)\r\n\(key)\r\n$\(value.utf8.count)\r\n\(value)\r\n"
            if chunk.utf8.count > 1 << 20 {
                try handle.write(contentsOf: Data(chunk.utf8))
                chunk.removeAll(keepingCapacity: true)
            }
        }
        try handle.write(contentsOf: Data(chunk.utf8))
        return path
    }

    /// walrusd (fsync=interval) and redis-server (everysec) started and loaded with the same
    /// `input` of `keys` keys: both servers (the caller stops them) and the RSS each gained per key.
    static func loadedPair(
        directory: String, walrusd: String, input: String, keys: Int
    ) throws -> (walrus: RESPBenchmarks.Server, redis: RESPBenchmarks.Server, ours: Double, theirs: Double) {
        let walrus = try RESPBenchmarks(directory: directory, requests: 0, repetitions: 1).startWalrusd(
            walrusd, ["--fsync", "interval", "--fsync-interval", "1000"])
        let redis = try RESPBenchmarks.startRedis(directory: directory, name: "scale", ["--appendonly", "yes", "--appendfsync", "everysec"])
        let walrusBefore = Self.rss(walrus.process.processIdentifier)
        let redisBefore = Self.redisRSS(redis.port)
        try Self.pipe(input, port: walrus.port)
        try Self.pipe(input, port: redis.port)
        usleep(500_000)
        let ours = Double(Self.rss(walrus.process.processIdentifier) - walrusBefore) / Double(keys)
        let theirs = Double(Self.redisRSS(redis.port) - redisBefore) / Double(keys)
        return (walrus, redis, ours, theirs)
    }

    static func pipe(_ input: String, port: Int) throws {
        let text = try Bench.run(
            "/usr/bin/redis-cli", ["-p", String(port), "--pipe", "--pipe-timeout", "600"], input: input, errorsToo: true
        ).text
        guard text.contains("errors: 0") else { throw RESPBenchmarks.BenchError("redis-cli --pipe into port \(port) failed: \(text.suffix(300))") }
    }

    static func rss(_ pid: Int32) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        let line = text.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
    }

    static func redisRSS(_ port: Int) -> Int {
        let info = ReplicationBenchmarks.info(port)
        let line = info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("used_memory_rss:") } ?? ""
        return Int(line.split(separator: ":").last ?? "") ?? 0
    }
}

/// PNG charts through gnuplot (Debian's gnuplot-nox; `deploy/setup.sh` installs it).
struct Charts {
    let directory: String

    func draw(rows: [Report.Row]) throws -> [String] {
        guard let gnuplot = ["/usr/bin/gnuplot", "/usr/local/bin/gnuplot"].first(where: { FileManager.default.fileExists(atPath: $0) }) else {
            print("charts skipped: gnuplot is not installed (apt-get install gnuplot-nox)")
            return []
        }
        var drawn: [String] = []
        // Throughput: every RESP workload, walrusd beside redis-server.
        let resp = rows.filter { $0.section.hasPrefix("RESP") && $0.peer != nil }
        if !resp.isEmpty {
            var data = ""
            for (i, row) in resp.enumerated() {
                let label = (row.section.contains("durable") ? "always " : "interval ") + row.workload.replacingOccurrences(of: ", follower attached", with: "")
                data += "\(i) \"\(label)\" \(row.walrus) \(row.peer!)\n"
            }
            try self.plot(gnuplot, "throughput.png", data: data, script: """
                set title "RESP throughput, follower/replica attached (redis-benchmark, 100-byte values)"
                set ylabel "ops/s"; set style data histograms; set style histogram clustered gap 1
                set style fill solid 0.8 border -1; set xtics rotate by -30; set key top left; set grid ytics
                plot DATA using 3:xtic(2) title "walrusd", "" using 4 title "redis-server"
                """)
            drawn.append("throughput.png")
        }
        // Visibility lag: the distribution (CDF) per setup.
        let lags = Report.lagSamples.withLock { $0 }
        if !lags.isEmpty {
            var data = ""
            var plots: [String] = []
            for (index, (name, samples)) in lags.sorted(by: { $0.key < $1.key }).enumerated() {
                let sorted = samples.sorted()
                if index > 0 { data += "\n\n" }
                for (i, value) in sorted.enumerated() where i % max(1, sorted.count / 500) == 0 || i == sorted.count - 1 {
                    data += "\(value * 1000) \(Double(i + 1) / Double(sorted.count))\n"
                }
                plots.append("DATA index \(index) using 1:2 with lines lw 2 title \"\(name)\"")
            }
            try self.plot(gnuplot, "lag.png", data: data, script: """
                set title "Replication visibility lag at 2,000 SET/s (acknowledged on the primary → readable on the follower)"
                set xlabel "lag, ms (log scale)"; set ylabel "fraction of writes"; set logscale x; set format x "%g"; set key bottom right; set grid
                plot \(plots.joined(separator: ", "))
                """)
            drawn.append("lag.png")
        }
        // Cost growth: ops/s against keys already stored.
        let growth = Report.growth.withLock { $0 }
        if !growth.isEmpty {
            var data = ""
            var plots: [String] = []
            var index = 0
            for setup in ["walrusd", "redis-server"] {
                for (column, name) in [(2, "SET"), (3, "GET")] {
                    if index > 0 { data += "\n\n" }
                    for entry in growth where entry.setup == setup {
                        data += "\(entry.keys) \(entry.set) \(entry.get)\n"
                    }
                    plots.append("DATA index \(index) using 1:\(column) with linespoints lw 2 title \"\(setup) \(name)\"")
                    index += 1
                }
            }
            try self.plot(gnuplot, "cost-vs-keys.png", data: data, script: """
                set title "Cost growth: redis-benchmark -c 50 over N existing keys"
                set xlabel "keys stored (log scale)"; set ylabel "ops/s"; set logscale x; set format x "%.0s%c"; set key bottom left; set grid
                plot \(plots.joined(separator: ", "))
                """)
            drawn.append("cost-vs-keys.png")
        }
        return drawn.map { self.directory + "/" + $0 }
    }

    private func plot(_ gnuplot: String, _ name: String, data: String, script: String) throws {
        let dataPath = self.directory + "/" + name.replacingOccurrences(of: ".png", with: ".dat")
        try data.write(toFile: dataPath, atomically: true, encoding: .utf8)
        let full = """
            set terminal png size 1100,600 font ",10"
            set output "\(self.directory)/\(name)"
            DATA = "\(dataPath)"
            \(script)
            """
        let scriptPath = self.directory + "/" + name.replacingOccurrences(of: ".png", with: ".gp")
        try full.write(toFile: scriptPath, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: scriptPath) }
        let (text, status) = try Bench.run(gnuplot, [scriptPath], errorsToo: true)
        if status != 0 {
            throw RESPBenchmarks.BenchError("gnuplot failed drawing \(name): \(text.suffix(400))")
        }
    }
}
