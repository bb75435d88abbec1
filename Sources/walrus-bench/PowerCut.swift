import ArgumentParser
import Foundation
import Logging
import WALCore
import WalrusStore

/// `walrus-bench powercut`: what a power cut can leave on disk, and what recovery makes of it.
///
/// kill -9 keeps the page cache, so it never tears a write; a power cut does. This writes a log
/// (SET and DEL of varying sizes over several segments, the last part never fdatasync'ed), then
/// builds copies of the directory the way a power cut could leave it — cut at every byte of the
/// last record, at sampled bytes of the records before it, truncated to what the last fdatasync
/// made durable, with later segments absent or empty, with part of the unsynced tail written, with
/// the unsynced tail read back as zeros — opens each copy as walrusd would, and checks the outcome:
/// the state must be exactly the replay of the records wholly present (every durable one among
/// them), a cut record kept in a `.broken` copy, or a refusal naming file and offset. Anything
/// else is counted as mishandled and printed.
struct PowerCut: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "powercut",
        abstract: "Simulate power cuts on a copy of a log (torn writes, unsynced tails) and tabulate what recovery does.")

    @Option(help: "Where to put the log and its copies (removed afterwards).")
    var dir: String = "./walrus-bench-data"
    @Option(help: "Records written and made durable (fdatasync) before the unsynced part.")
    var durable: Int = 400
    @Option(help: "Records written after the last fdatasync.")
    var unsynced: Int = 120
    @Option(help: "Records before the last one whose cuts are sampled.")
    var lastRecords: Int = 16
    @Option(help: "Sampled cut offsets per record (and per unsynced-tail case).")
    var samples: Int = 24
    @Option(help: "Largest value written (bytes); values are 1…this.") var maxValue: Int = 3000
    @Option(help: "Seed of the pseudo-random values and samples.") var seed: UInt64 = 42
    @Flag(help: "Fewer samples, for CI.") var quick = false

    /// One record of the log as laid out on disk.
    struct Placed {
        var index: UInt64
        var segment: String
        var offset: Int
        var end: Int
    }

    /// How a copy differs from the original log: each segment's kept length (absent: removed),
    /// and optionally zeros written from `zeroFrom` to the original length of the last kept one.
    struct Image {
        var lengths: [String: Int]
        var zeros: (segment: String, from: Int, to: Int)? = nil
        /// A byte flipped inside a whole record (damage, not a cut): recovery must refuse.
        var flip: (segment: String, offset: Int)? = nil
    }

    enum Outcome: String, CaseIterable {
        case kept = "kept (every record present)"
        case cut = "cut to the previous record (.broken copy kept)"
        case refused = "refused with file and offset"
        case mishandled = "MISHANDLED"
    }

    func run() throws {
        let base = URL(fileURLWithPath: self.dir).standardizedFileURL.path + "/powercut"
        try? FileManager.default.removeItem(atPath: base)
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: base) }
        var random = SplitMix(seed: self.seed)
        let samples = self.quick ? min(self.samples, 6) : self.samples
        let lastRecords = self.quick ? min(self.lastRecords, 6) : self.lastRecords

        // The log: `durable` records sealed by an fdatasync, then `unsynced` written after it.
        let source = base + "/source"
        var configuration = StoreConfiguration(directory: source)
        configuration.wal.segmentSizeBytes = 64 * 1024
        configuration.wal.fsyncMode = .interval(milliseconds: 3_600_000)
        var logger = Logger(label: "walrus.powercut")
        logger.logLevel = .critical
        let store = try KeyValueStore.open(configuration, logger: logger)
        var operations: [(index: UInt64, command: StoreCommand)] = []
        var durableIndex: UInt64 = 0
        for i in 0..<(self.durable + self.unsynced) {
            let key = Array("key-\(random.next() % 200)".utf8)
            let command: StoreCommand =
                i % 7 == 3
                ? .delete(key: key)
                : .set(key: key, value: (0..<(1 + Int(random.next() % UInt64(max(1, self.maxValue))))).map { _ in UInt8(truncatingIfNeeded: random.next()) })
            operations.append((try store.apply(batch: [command]), command))
            if i + 1 == self.durable {
                try store.wal.commitBlocking()
                durableIndex = operations.last!.index
            }
        }
        store.close()

        // Where every record is: scan each segment in order, numbering from the last index back.
        let segments = try FileManager.default.contentsOfDirectory(atPath: source)
            .filter { SegmentName.parse($0) != nil }.sorted()
        var frames: [(segment: String, offset: Int, end: Int)] = []
        for name in segments {
            var offset = 0
            _ = try WALInspector.dump(file: source + "/" + name, range: 0...UInt64.max) { _, record in
                frames.append((name, offset, offset + record.frame.count))
                offset += record.frame.count
            }
        }
        let lastIndex = operations.last!.index
        let placed = frames.enumerated().map { k, frame in
            Placed(index: lastIndex - UInt64(frames.count - 1 - k), segment: frame.segment, offset: frame.offset, end: frame.end)
        }
        let sizes = Dictionary(uniqueKeysWithValues: segments.map { ($0, Int(FileIO.fileStatus(source + "/" + $0)?.size ?? 0)) })
        let durableRecord = placed.first { $0.index == durableIndex }!

        /// The image of a cut at `offset` of `segment`: earlier segments whole, later ones absent.
        func cutImage(_ segment: String, _ offset: Int, laterEmpty: Bool = false) -> Image {
            var lengths: [String: Int] = [:]
            for name in segments where name < segment { lengths[name] = sizes[name] }
            lengths[segment] = offset
            if laterEmpty { for name in segments where name > segment { lengths[name] = 0 } }
            return Image(lengths: lengths)
        }
        /// A byte position in the log as (segment, offset), counting from the durable end.
        let unsyncedBytes = placed.filter { $0.index > durableIndex }.map { $0.end - $0.offset }.reduce(0, +)
        func position(afterDurable bytes: Int) -> (String, Int) {
            var remaining = bytes
            var segment = durableRecord.segment
            var offset = durableRecord.end
            for name in segments where name >= segment {
                let room = (name == segment ? sizes[name]! - offset : sizes[name]!)
                if remaining <= room || name == segments.last! {
                    return (name, (name == segment ? offset : 0) + min(remaining, room))
                }
                remaining -= room
                segment = name
                offset = 0
            }
            return (segment, offset)
        }

        var cases: [(family: String, image: Image)] = []
        let last = placed.last!
        for cut in last.offset..<last.end {
            cases.append(("last record, cut at every byte (\(last.end - last.offset))", cutImage(last.segment, cut)))
        }
        for record in placed.dropLast().suffix(lastRecords) {
            for _ in 0..<samples {
                let cut = record.offset + Int(random.next() % UInt64(record.end - record.offset))
                cases.append(("\(lastRecords) records before it, \(samples) sampled cuts each", cutImage(record.segment, cut)))
            }
        }
        cases.append(("copy truncated to the last fdatasync, later segments absent", cutImage(durableRecord.segment, durableRecord.end)))
        cases.append(
            ("copy truncated to the last fdatasync, later segments empty",
             cutImage(durableRecord.segment, durableRecord.end, laterEmpty: true)))
        for _ in 0..<(samples * 2) {
            let (segment, offset) = position(afterDurable: 1 + Int(random.next() % UInt64(max(1, unsyncedBytes))))
            cases.append(("part of the unsynced tail written (\(samples * 2) samples)", cutImage(segment, offset)))
        }
        for _ in 0..<samples {
            let (segment, offset) = position(afterDurable: Int(random.next() % UInt64(max(1, unsyncedBytes))))
            var image = cutImage(segment, sizes[segment]!)
            image.zeros = (segment, offset, sizes[segment]!)
            cases.append(("unsynced tail read back as zeros (size reached disk, data did not; \(samples) samples)", image))
        }

        for _ in 0..<samples {
            let record = placed[Int(random.next() % UInt64(placed.count - 1))]
            var image = cutImage(last.segment, last.end)
            image.flip = (record.segment, record.offset + Int(random.next() % UInt64(record.end - record.offset)))
            cases.append(("a byte flipped in a record before the last (damage, \(samples) samples)", image))
        }

        var tally: [String: [Outcome: Int]] = [:]
        var order: [String] = []
        var mishandled: [String] = []
        for (number, testCase) in cases.enumerated() {
            let copy = base + "/copy"
            try? FileManager.default.removeItem(atPath: copy)
            try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: true)
            for name in try FileManager.default.contentsOfDirectory(atPath: source) where SegmentName.parse(name) == nil {
                try FileManager.default.copyItem(atPath: source + "/" + name, toPath: copy + "/" + name)
            }
            for (name, length) in testCase.image.lengths {
                var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: source + "/" + name)).prefix(length))
                if let zeros = testCase.image.zeros, zeros.segment == name {
                    bytes = Array(bytes.prefix(zeros.from)) + [UInt8](repeating: 0, count: zeros.to - zeros.from)
                }
                if let flip = testCase.image.flip, flip.segment == name { bytes[flip.offset] ^= 0x5A }
                try Data(bytes).write(to: URL(fileURLWithPath: copy + "/" + name))
            }
            // What must come back: every record wholly present in the copy (zeros are not records).
            let present = placed.filter { record in
                guard let length = testCase.image.lengths[record.segment], record.end <= length else { return false }
                if let zeros = testCase.image.zeros, zeros.segment == record.segment, record.end > zeros.from { return false }
                return true
            }
            let expectedCount = placed.prefix { record in present.contains { $0.index == record.index } }.count
            let expectedIndex = expectedCount == 0 ? 0 : placed[expectedCount - 1].index
            // A record cut part-way must be kept in a .broken copy; zeros from a record's start
            // (a preallocated segment's end, or data that never reached the disk) hold nothing.
            let torn = expectedCount < placed.count && testCase.image.lengths.contains { name, length in
                let next = placed[expectedCount]
                guard name == next.segment && length > next.offset else { return false }
                if let zeros = testCase.image.zeros, zeros.segment == name, zeros.from <= next.offset { return false }
                return true
            }
            var outcome: Outcome
            var problem = ""
            var copyConfiguration = configuration
            copyConfiguration.wal.directory = copy
            do {
                let recovered = try KeyValueStore.open(copyConfiguration, logger: logger)
                var expected: [ByteKey: [UInt8]] = [:]
                for operation in operations where operation.index <= expectedIndex {
                    switch operation.command {
                    case .set(let key, let value): expected[ByteKey(key)] = value
                    case .delete(let key): expected[ByteKey(key)] = nil
                    }
                }
                let applied = recovered.appliedIndex
                let state = recovered.dictionaryCopy()
                recovered.close()
                let broken = try FileManager.default.contentsOfDirectory(atPath: copy).contains { $0.hasSuffix(".broken") }
                if testCase.image.flip != nil {
                    outcome = .mishandled
                    problem = "a damaged record was not reported (recovered up to index \(applied))"
                } else if applied != expectedIndex {
                    outcome = .mishandled
                    problem = "recovered up to index \(applied), expected \(expectedIndex)"
                } else if state != expected {
                    outcome = .mishandled
                    problem = "state differs from the replay of the first \(expectedCount) records"
                } else if expectedIndex < durableIndex && testCase.family.contains("fdatasync") {
                    outcome = .mishandled
                    problem = "a durable record is gone"
                } else if torn {
                    outcome = broken ? .cut : .mishandled
                    if !broken { problem = "a cut record was dropped without a .broken copy" }
                } else {
                    outcome = .kept
                }
            } catch let error as WALError where error.path != nil && error.offset != nil {
                outcome = testCase.image.flip != nil ? .refused : .mishandled
                if outcome == .mishandled { problem = "refused a repairable cut: \(error.message)" }
            } catch {
                outcome = .mishandled
                problem = "refused without file and offset: \(error)"
            }
            if outcome == .mishandled { mishandled.append("case \(number) (\(testCase.family)): \(problem)") }
            if tally[testCase.family] == nil { order.append(testCase.family) }
            tally[testCase.family, default: [:]][outcome, default: 0] += 1
        }

        print("Power-cut simulation: \(placed.count) records in \(segments.count) segments of 64 KiB, "
              + "\(self.durable) durable + \(self.unsynced) after the last fdatasync (seed \(self.seed))")
        Bench.table(
            "Power cuts: copies of the directory as a cut could leave them, opened as walrusd would",
            ["what the cut left", "cases", "kept", "cut to previous record", "refused (file, offset)", "mishandled"],
            order.map { family in
                let row = tally[family]!
                return [family, String(row.values.reduce(0, +)), String(row[.kept] ?? 0), String(row[.cut] ?? 0),
                        String(row[.refused] ?? 0), String(row[.mishandled] ?? 0)]
            } + [["total", String(cases.count), "", "", "", String(mishandled.count)]])
        for line in mishandled.prefix(20) { print("mishandled: \(line)") }
        print("power-cut cases: \(cases.count) tried, \(mishandled.count) mishandled")
        if !mishandled.isEmpty { throw ExitCode(1) }
    }
}

/// A small deterministic generator (SplitMix64), so a run can be repeated exactly.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
