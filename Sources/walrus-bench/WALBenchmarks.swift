import Foundation
import Logging
import WALCore
import WalrusStore

/// The original's WAL benchmarks on the same workloads, beside a raw write+fdatasync baseline
/// measured in the same run, plus group commit, recovery, codec speed and memory per key.
struct WALBenchmarks {
    let directory: String
    let quick: Bool
    let repetitions: Int
    let recoveryRecords: Int
    let sections: Set<String>
    let logger = Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() }

    /// The original benchmark's record: key "key", value "value" (29 bytes framed).
    static let key = Array("key".utf8)
    static let value = Array("value".utf8)

    /// Figures for the original Go walrus, measured on this kind of machine with its own
    /// benchmarks (quoted from the issue, not measured by this run).
    static let originalNanosecondsPerRecord: [Int: Double] = [1: 137_147, 10: 13_791, 100: 1_551, 1000: 247.8]

    func run() async throws {
        print("## walrus-bench wal — \(Bench.machine())")
        print("")
        print("Data directory: \(self.directory) (same disk for every row). Medians of \(self.repetitions) runs, baseline and walrus interleaved.")
        if self.sections.contains("batches") { try self.batches() }
        if self.sections.contains("group") { try await self.groupCommit() }
        if self.sections.contains("codec") { try self.codec() }
        if self.sections.contains("recovery") { try self.recovery() }
    }

    // MARK: Batch size (records per fdatasync)

    /// Raw: write B frames' bytes + fdatasync, in a loop. Walrus: append B records, commit.
    func batches() throws {
        let frame = RecordEncoder.encode(op: .set, key: Self.key, value: Self.value)
        var rows: [[String]] = []
        for batch in [1, 10, 100, 1000] {
            let iterations = self.quick ? max(20, 200 / batch) : max(200, 4000 / batch)
            var raw: [Double] = []
            var ours: [Double] = []
            var appends: [Double] = []
            for _ in 0..<self.repetitions {
                raw.append(try self.rawBaseline(frame: frame, batch: batch, iterations: iterations))
                let (total, append) = try self.walBatch(batch: batch, iterations: iterations)
                ours.append(total)
                appends.append(append)
            }
            let rawNs = Bench.median(raw)
            let oursNs = Bench.median(ours)
            let original = Self.originalNanosecondsPerRecord[batch] ?? .nan
            Report.add(
                section: "WAL (the original's benchmarks)", workload: "batch \(batch): ns per record, one fdatasync per batch",
                walrus: oursNs, peer: rawNs, peerName: "raw write+fdatasync", unit: "ns/record", lowerIsBetter: true,
                goal: .atMost(1.25), limit: "raw write+fdatasync: \(Bench.format(rawNs)) ns/record")
            Report.add(
                section: "WAL (the original's benchmarks)", workload: "batch \(batch): vs the original Go walrus",
                walrus: oursNs, peer: original, peerName: "original Go (quoted)", unit: "ns/record", lowerIsBetter: true)
            rows.append([
                "\(batch)", Bench.format(oursNs), Bench.format(Bench.median(appends)), Bench.format(rawNs),
                Bench.ratio(oursNs, rawNs), Bench.format(original), Bench.ratio(original, oursNs),
            ])
        }
        Bench.table(
            "Batch size: ns per record, one fdatasync per batch (29-byte records, the original's BenchmarkBatchSize)",
            ["records per fdatasync", "walrus ns/record", "of which appending (CPU)", "raw write+fdatasync ns/record",
             "walrus ÷ raw (goal ≤ 1.25×)",
             "original Go ns/record (quoted)", "original ÷ walrus"],
            rows)
    }

    private func rawBaseline(frame: [UInt8], batch: Int, iterations: Int) throws -> Double {
        let path = Bench.scratch(self.directory, "raw") + "/raw.log"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw WALError(.io, "cannot create \(path)") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        for _ in 0..<batch { bytes += frame }
        let started = Bench.now()
        for _ in 0..<iterations {
            try bytes.withUnsafeBytes { try FileIO.writeAll(fd, $0, path: path) }
            try FileIO.fdatasync(fd, path: path)
        }
        return (Bench.now() - started) * 1e9 / Double(iterations * batch)
    }

    /// ns per record in all, and of that the appends (framing, CRC, the log's lock).
    private func walBatch(batch: Int, iterations: Int) throws -> (Double, Double) {
        var configuration = WALConfiguration(directory: Bench.scratch(self.directory, "batch"))
        configuration.fsyncMode = .interval(milliseconds: 3_600_000)
        configuration.segmentSizeBytes = 1 << 30
        let wal = try WriteAheadLog.open(configuration, logger: self.logger)
        defer { wal.close() }
        let started = Bench.now()
        var appendTime = 0.0
        for _ in 0..<iterations {
            let a = Bench.now()
            for _ in 0..<batch { try wal.append(op: .set, key: Self.key, value: Self.value) }
            appendTime += Bench.now() - a
            Bench.commitBlocking(wal)
        }
        return ((Bench.now() - started) * 1e9 / Double(iterations * batch), appendTime * 1e9 / Double(iterations * batch))
    }

    // MARK: Group commit

    /// W concurrent writers in `always` mode, each waiting for its own record to be sealed.
    func groupCommit() async throws {
        let seconds = self.quick ? 0.5 : 2.0
        let rawFsyncsPerSecond = 1e9 / (try self.rawBaseline(frame: RecordEncoder.encode(op: .set, key: Self.key, value: Self.value), batch: 1, iterations: self.quick ? 200 : 2000))
        var rows: [[String]] = []
        for writers in [1, 8, 64] {
            var runs: [(records: Double, fsyncs: Double)] = []
            for _ in 0..<self.repetitions {
                runs.append(try await self.groupCommitRun(writers: writers, seconds: seconds))
            }
            let recordsPerSecond = Bench.median(runs.map(\.records))
            let fsyncsPerSecond = Bench.median(runs.map(\.fsyncs))
            Report.add(
                section: "WAL (the original's benchmarks)", workload: "group commit, \(writers) writers (fsync=always)",
                walrus: recordsPerSecond, peer: nil, peerName: "", unit: "durable records/s",
                limit: "\(writers) × raw fdatasync/s = \(Bench.format(rawFsyncsPerSecond * Double(writers)))")
            rows.append([
                "\(writers)", Bench.format(recordsPerSecond), Bench.format(fsyncsPerSecond),
                Bench.format(recordsPerSecond / max(fsyncsPerSecond, 1), decimals: 1),
                Bench.format(rawFsyncsPerSecond * Double(writers)),
            ])
        }
        Bench.table(
            "Group commit, fsync=always: every writer waits for its record to be sealed",
            ["writers", "durable records/s", "fdatasyncs/s", "records per fdatasync",
             "limit: writers × raw fdatasync/s"],
            rows)
    }

    private func groupCommitRun(writers: Int, seconds: Double) async throws -> (records: Double, fsyncs: Double) {
        var configuration = WALConfiguration(directory: Bench.scratch(self.directory, "group"))
        configuration.fsyncMode = .always
        configuration.segmentSizeBytes = 64 << 20
        let wal = try WriteAheadLog.open(configuration, logger: self.logger)
        defer { wal.close() }
        let deadline = Bench.now() + seconds
        let before = wal.statistics.fsyncCount
        let started = Bench.now()
        let total = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<writers {
                group.addTask {
                    var count = 0
                    while Bench.now() < deadline {
                        let error: WALError? = try await withUnsafeThrowingContinuation { continuation in
                            do {
                                try wal.append(op: .set, key: Self.key, value: Self.value) { continuation.resume(returning: $0) }
                            } catch {
                                continuation.resume(throwing: error)
                            }
                        }
                        if let error { throw error }
                        count += 1
                    }
                    return count
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = Bench.now() - started
        let fsyncs = wal.statistics.fsyncCount - before
        return (Double(total) / elapsed, Double(fsyncs) / elapsed)
    }

    // MARK: Codec

    func codec() throws {
        let count = self.quick ? 200_000 : 2_000_000
        let key = Array("benchmark-key".utf8)
        let value = Array("benchmark-value-with-some-data".utf8)
        let buffer = RecordBuffer(capacity: 8 << 20)
        var encode: [Double] = []
        var decode: [Double] = []
        for _ in 0..<self.repetitions {
            buffer.removeAll()
            var started = Bench.now()
            key.withUnsafeBytes { k in
                value.withUnsafeBytes { v in
                    for i in 0..<count {
                        if i % 100_000 == 0 { buffer.removeAll() }
                        RecordEncoder.append(op: .set, key: k, value: v, to: buffer)
                    }
                }
            }
            encode.append((Bench.now() - started) * 1e9 / Double(count))
            // Decode a buffer of 100,000 frames count/100,000 times: CRC check and field parsing.
            let frames = buffer.bytes
            started = Bench.now()
            var decoded = 0
            var checksum = 0
            for _ in 0..<(count / 100_000) {
                var offset = 0
                while offset < frames.count, case .record(let view, let length) = RecordDecoder.decode(frames, at: offset, maxRecordBytes: 1 << 20) {
                    checksum &+= view.key.count &+ view.value.count
                    offset += length
                    decoded += 1
                }
            }
            decode.append((Bench.now() - started) * 1e9 / Double(max(decoded, 1)))
            if checksum == 42 { print("") }  // keep the loop's results alive
        }
        Bench.table(
            "Record codec (43-byte data, the original's BenchmarkRecordEncode/Decode)",
            ["", "walrus ns/record", "original Go ns/record (quoted)"],
            [
                ["encode (frame + CRC into a buffer)", Bench.format(Bench.median(encode), decimals: 1), "23.8"],
                ["decode (check CRC, parse fields)", Bench.format(Bench.median(decode), decimals: 1), "55.4"],
            ])
    }

    // MARK: Recovery and memory

    /// Write N SETs of 100-byte values (interval mode), then time recovery: the log scan alone,
    /// and the store (scan + rebuilding the map). Memory per key is the RSS the recovered map adds.
    func recovery() throws {
        let count = self.recoveryRecords
        let path = Bench.scratch(self.directory, "recovery")
        var configuration = StoreConfiguration(directory: path)
        configuration.wal.fsyncMode = .interval(milliseconds: 100)
        let value = [UInt8]((0..<100).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) })
        var keys: [[UInt8]] = []
        keys.reserveCapacity(count)
        for i in 0..<count { keys.append(Array(String(format: "key:%08d", i).utf8)) }
        let store = try KeyValueStore.open(configuration, logger: self.logger)
        let writeStarted = Bench.now()
        for key in keys { try store.set(key: key, value: value) }
        try store.commitBlocking()
        let writeSeconds = Bench.now() - writeStarted
        let bytes = store.wal.segmentSummaries.reduce(Int64(0)) { $0 + $1.bytes }
        store.close()
        keys = []

        var scan: [Double] = []
        var full: [Double] = []
        var perKey: [Double] = []
        for _ in 0..<self.repetitions {
            var walConfiguration = configuration.wal
            walConfiguration.fsyncMode = .always
            let started = Bench.now()
            var seen = 0
            let wal = try WriteAheadLog.open(walConfiguration, logger: self.logger) { _, record in seen &+= record.value.count }
            scan.append(Bench.now() - started)
            wal.close()

            // Full recovery in a fresh process, as a restarting daemon does it (this process has
            // allocated and freed a million keys already, which slows malloc and blurs RSS).
            let text = try Bench.run(CommandLine.arguments[0], ["recovery-probe", "--dir", path]).text
            let fields = text.split(separator: " ").compactMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            guard fields.count == 4 else { throw WALError(.io, "recovery-probe failed: \(text)") }
            perKey.append((fields[1] - fields[0]) / max(fields[2], 1))
            full.append(fields[3])
        }
        let scanSeconds = Bench.median(scan)
        let fullSeconds = Bench.median(full)
        let megabytes = Double(bytes) / 1e6
        Report.add(
            section: "WAL (the original's benchmarks)", workload: "recovery of \(Bench.format(Double(count))) records (fresh process)",
            walrus: Double(count) / fullSeconds, peer: 349_000, peerName: "original Go (quoted)", unit: "records/s",
            goal: .absolute(3_000_000), limit: "log scan alone: \(Bench.format(Double(count) / scanSeconds)) records/s")
        Bench.table(
            "Recovery of \(Bench.format(Double(count))) SETs (12-byte keys, 100-byte values, \(Bench.format(megabytes)) MB of log)",
            ["", "walrus", "original Go (quoted)", "goal"],
            [
                ["write \(Bench.format(Double(count))) SETs (fsync=interval), records/s", Bench.format(Double(count) / writeSeconds), "1,460,000", "–"],
                ["log scan with CRC checks, records/s", Bench.format(Double(count) / scanSeconds), "–", "–"],
                ["log scan, MB/s", Bench.format(megabytes / scanSeconds), "–", "–"],
                ["full recovery in a fresh process (scan + rebuild map), records/s", Bench.format(Double(count) / fullSeconds), "349,000", "≥ 3,000,000"],
                ["full recovery, MB/s", Bench.format(megabytes / fullSeconds), "46", "–"],
                ["full recovery, seconds", Bench.format(fullSeconds, decimals: 3), "2.87", "–"],
                ["memory per key (RSS a fresh process adds by recovering, ÷ keys), bytes", Bench.format(Bench.median(perKey)), "–", "–"],
            ])
    }
}

extension WALBenchmarks {
    /// Recover `directory` in this (fresh) process: RSS before and after, keys, seconds.
    static func probeRecovery(directory: String) throws -> (Int, Int, Int, Double) {
        var configuration = StoreConfiguration(directory: directory)
        configuration.wal.fsyncMode = .always
        let logger = Logger(label: "probe") { _ in SwiftLogNoOpLogHandler() }
        let before = Bench.residentBytes()
        let started = Bench.now()
        let store = try KeyValueStore.open(configuration, logger: logger)
        let seconds = Bench.now() - started
        let after = Bench.residentBytes()
        let keys = store.count
        store.close()
        return (before, after, keys, seconds)
    }
}
