import ArgumentParser
import Foundation

/// `walrus-bench`: prints figures and ratios against baselines measured in the same run.
/// It never asserts a timing; build it in release mode (`swift build -c release`).
@main
struct WalrusBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "walrus-bench",
        abstract: "Measure walrus beside the baselines a user would compare it with, in one run.",
        subcommands: [WAL.self, RESP.self, Keyspace.self, Repl.self, TLS.self, ReportCommand.self, PowerCut.self, RecoveryProbe.self],
        defaultSubcommand: WAL.self)

    struct WAL: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "wal",
            abstract: "The original's WAL benchmarks beside a raw write+fdatasync baseline; group commit; recovery.")

        @Option(help: "Where to put benchmark data (a real disk, not a tmpfs); removed afterwards.")
        var dir: String = "./walrus-bench-data"

        @Option(help: "Runs per figure (the median is printed).")
        var repetitions: Int = 5

        @Option(help: "Records for the recovery benchmark.")
        var recoveryRecords: Int = 1_000_000

        @Option(help: "Run only these sections (comma-separated: batches, group, codec, recovery).")
        var only: String = "batches,group,codec,recovery"

        @Flag(help: "Keep the benchmark data directory afterwards (to profile recovery with recovery-probe).")
        var keep = false

        @Flag(help: "Small sizes and short runs, to check the harness works (figures are not meaningful).")
        var quick = false

        func run() async throws {
            #if DEBUG
            print("warning: this is a debug build; build with -c release for meaningful figures")
            #endif
            let directory = URL(fileURLWithPath: self.dir).standardizedFileURL.path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { if !self.keep { try? FileManager.default.removeItem(atPath: directory) } }
            let benchmarks = WALBenchmarks(
                directory: directory, quick: self.quick, repetitions: self.quick ? 1 : max(1, self.repetitions),
                recoveryRecords: self.quick ? min(self.recoveryRecords, 100_000) : self.recoveryRecords,
                sections: Set(self.only.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }))
            try await benchmarks.run()
        }
    }
}

/// walrusd beside redis-server through redis-benchmark.
struct RESP: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resp", abstract: "walrusd vs redis-server (same durability), driven by redis-benchmark in one run.")

    @Option(help: "Where the servers keep their data (a real disk); removed afterwards.")
    var dir: String = "./walrus-bench-data"
    @Option(help: "Requests per redis-benchmark run.") var requests: Int = 100_000
    @Option(help: "Runs per figure (the median is printed).") var repetitions: Int = 3
    @Flag(help: "Few requests, one run: checks the harness works.") var quick = false
    @Flag(help: "Attach a follower to walrusd and a replica to redis-server (as report does).") var replicas = false
    @Flag(help: "Only the durable rows (fsync=always ↔ appendfsync always).") var durableOnly = false

    func run() throws {
        let directory = URL(fileURLWithPath: self.dir).standardizedFileURL.path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var benchmarks = RESPBenchmarks(
            directory: directory, requests: self.quick ? 2000 : self.requests, repetitions: self.quick ? 1 : self.repetitions)
        benchmarks.replicas = self.replicas
        benchmarks.durableOnly = self.durableOnly
        try benchmarks.run()
    }
}

/// The string and keyspace surface beside redis-server.
struct Keyspace: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keyspace",
        abstract: "SET EX, INCR, EXPIRE, MULTI/EXEC, SCAN, memory with TTLs and an expiry wave, beside redis-server.")

    @Option(help: "Where the servers keep their data (a real disk); removed afterwards.")
    var dir: String = "./walrus-bench-data"
    @Option(help: "Runs per figure (the median is printed).") var repetitions: Int = 3
    @Flag(help: "Few requests and keys, one run: checks the harness works.") var quick = false

    func run() throws {
        let directory = URL(fileURLWithPath: self.dir).standardizedFileURL.path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try KeyspaceBenchmarks(
            directory: directory, walrusd: try Bench.walrusdBeside(), quick: self.quick, repetitions: self.quick ? 1 : self.repetitions
        ).run()
    }
}

/// Replication beside a redis-server primary + replica.
struct Repl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "repl",
        abstract: "Replication: visibility lag, follower catch-up, snapshot bootstrap — beside a Redis primary + replica.")

    @Option(help: "Where the servers keep their data (a real disk); removed afterwards.")
    var dir: String = "./walrus-bench-data"
    @Flag(help: "Small sizes and short runs: checks the harness works.") var quick = false

    func run() throws {
        let directory = URL(fileURLWithPath: self.dir).standardizedFileURL.path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let walrusd = try Bench.walrusdBeside()
        try ReplicationBenchmarks(directory: directory, quick: self.quick, walrusd: walrusd).run()
    }
}

struct TLS: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tls",
        abstract: "TLS: GET and SET on walrusd's tls-port beside redis-server's, and follower catch-up over TLS vs in clear.")

    @Option(help: "Where the servers keep their data (a real disk); removed afterwards.")
    var dir: String = "./walrus-bench-data"
    @Option(help: "Interleaved runs per row (the median is reported).") var repetitions: Int = 3
    @Flag(help: "Small sizes and short runs: checks the harness works.") var quick = false

    func run() throws {
        let directory = URL(fileURLWithPath: self.dir).standardizedFileURL.path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let walrusd = try Bench.walrusdBeside()
        try TLSBenchmarks(directory: directory, walrusd: walrusd, quick: self.quick, repetitions: self.quick ? 1 : self.repetitions).run()
    }
}

/// Opens a store in a fresh process and prints its resident memory before and after recovery, so
/// memory per key is not blurred by what the benchmark process allocated and freed before.
struct RecoveryProbe: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "recovery-probe", shouldDisplay: false)

    @Option var dir: String

    func run() throws {
        let (before, after, keys, seconds) = try WALBenchmarks.probeRecovery(directory: self.dir)
        print("\(before) \(after) \(keys) \(seconds)")
    }
}
