import Testing
@testable import WALCore
import WalrusTestKit

/// Damage of every kind: the log keeps what is intact or refuses with file and offset, and never
/// drops a record silently (etcd's repair_test.go, as a table).
struct CorruptionTests {
    /// Every record is the same size (12 + 9 + 6 + 10 = 37 bytes); 5 fit a 200-byte segment, so
    /// 20 records make wal-0001 … wal-0004 with 5 records each.
    static let frameSize = 37
    static let recordCount = 20

    /// Write the 20 records and close.
    static func makeLog(_ directory: TemporaryDirectory) async throws -> WALConfiguration {
        let configuration = testConfiguration(directory, segmentSize: 200)
        let wal = try WriteAheadLog.open(configuration, logger: quietLogger)
        for i in 0..<recordCount {
            let key = "key-\(String(i).leftPadded(2))"
            _ = try await appendDurably(wal, key, "value-\(String(i).leftPadded(4))")
        }
        wal.close()
        return configuration
    }

    enum Expected: CustomStringConvertible {
        /// Opens with this many records; `broken` says whether a .broken copy must exist.
        case kept(Int, broken: Bool)
        /// Refuses with this code, naming this file (and this offset when given).
        case refused(WALError.Code, file: String, offset: Int64?)

        var description: String {
            switch self {
            case .kept(let n, let broken): "kept \(n) (broken copy: \(broken))"
            case .refused(let code, let file, let offset): "refused \(code) \(file) @\(offset.map(String.init) ?? "-")"
            }
        }
    }

    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var corrupt: @Sendable (TemporaryDirectory) -> Void
        var expected: @Sendable () -> Expected
        var testDescription: String { self.name }
    }

    static func flip(_ path: String, at offset: Int) {
        var bytes = TestFiles.read(path)
        bytes[offset] ^= 0xFF
        TestFiles.write(path, bytes)
    }

    static let last = "wal-0004.log"
    static let lastRecordOffset = 4 * frameSize

    static let cases: [Case] = [
        Case(
            name: "flip a CRC byte of the last record",
            corrupt: { flip($0.file(last), at: lastRecordOffset + 9) },
            expected: { .refused(.corruptRecord, file: last, offset: Int64(lastRecordOffset)) }),
        Case(
            name: "flip a payload byte of the last record",
            corrupt: { flip($0.file(last), at: lastRecordOffset + 30) },
            expected: { .refused(.corruptRecord, file: last, offset: Int64(lastRecordOffset)) }),
        Case(
            name: "flip a magic byte of a middle record of the last segment",
            corrupt: { flip($0.file(last), at: 2 * frameSize) },
            expected: { .refused(.corruptRecord, file: last, offset: Int64(2 * frameSize)) }),
        Case(
            name: "length past the end with valid records after it",
            corrupt: { directory in
                var bytes = TestFiles.read(directory.file(last))
                bytes[frameSize + 6] = 0x10  // length 37 → 0x1000|… > what remains
                TestFiles.write(directory.file(last), bytes)
            },
            expected: { .refused(.corruptRecord, file: last, offset: Int64(frameSize)) }),
        Case(
            name: "garbage appended",
            corrupt: { directory in
                TestFiles.write(directory.file(last), TestFiles.read(directory.file(last)) + [0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3])
            },
            expected: { .refused(.corruptRecord, file: last, offset: Int64(5 * frameSize)) }),
        Case(
            // Zeros after the last record are the log's end (a preallocated segment looks like
            // this; so does a file whose size reached the disk before its data): nothing to keep.
            name: "zeroed tail appended (file grew before its data reached the disk)",
            corrupt: { directory in
                TestFiles.write(directory.file(last), TestFiles.read(directory.file(last)) + [UInt8](repeating: 0, count: 4096))
            },
            expected: { .kept(recordCount, broken: false) }),
        Case(
            name: "fewer zeros than a record header after the last record",
            corrupt: { directory in
                TestFiles.write(directory.file(last), TestFiles.read(directory.file(last)) + [UInt8](repeating: 0, count: 5))
            },
            expected: { .kept(recordCount, broken: false) }),
        Case(
            // A power cut after the file's size reached the disk but before the last record's data
            // did (etcd's isTornEntry, PostgreSQL's zeroed WAL end): torn, cut, kept in .broken.
            name: "the last record's data zeroed to the end of the file",
            corrupt: { directory in
                var bytes = TestFiles.read(directory.file(last))
                for i in (lastRecordOffset + 12)..<bytes.count { bytes[i] = 0 }
                TestFiles.write(directory.file(last), bytes)
            },
            expected: { .kept(recordCount - 1, broken: true) }),
        Case(
            name: "the last record's header zeroed part-way, zeros to the end",
            corrupt: { directory in
                var bytes = TestFiles.read(directory.file(last))
                for i in (lastRecordOffset + 2)..<bytes.count { bytes[i] = 0 }
                TestFiles.write(directory.file(last), bytes)
            },
            expected: { .kept(recordCount - 1, broken: true) }),
        Case(
            // The record was whole (zeros start after its end) and its checksum fails: damage.
            name: "a damaged last record followed by zeros",
            corrupt: { directory in
                flip(directory.file(last), at: lastRecordOffset + 30)
                TestFiles.write(directory.file(last), TestFiles.read(directory.file(last)) + [UInt8](repeating: 0, count: 512))
            },
            expected: { .refused(.corruptRecord, file: last, offset: Int64(lastRecordOffset)) }),
        Case(
            name: "a middle segment damaged",
            corrupt: { flip($0.file("wal-0002.log"), at: frameSize + 25) },
            expected: { .refused(.corruptRecord, file: "wal-0002.log", offset: Int64(frameSize)) }),
        Case(
            name: "a middle segment truncated mid-record",
            corrupt: { directory in
                let bytes = TestFiles.read(directory.file("wal-0002.log"))
                TestFiles.write(directory.file("wal-0002.log"), Array(bytes.dropLast(5)))
            },
            expected: { .refused(.corruptRecord, file: "wal-0002.log", offset: Int64(4 * frameSize)) }),
        Case(
            name: "a middle segment missing",
            corrupt: { TestFiles.remove($0.file("wal-0002.log")) },
            expected: { .refused(.segmentGap, file: "wal-0002.log", offset: nil) }),
        Case(
            name: "a 4 GiB length claim in the last record",
            corrupt: { directory in
                var bytes = TestFiles.read(directory.file(last))
                for i in 0..<4 { bytes[lastRecordOffset + 4 + i] = 0xFF }
                TestFiles.write(directory.file(last), bytes)
            },
            expected: { .refused(.corruptRecord, file: last, offset: Int64(lastRecordOffset)) }),
        Case(
            name: "an unknown op in the last record",
            corrupt: { directory in
                var contents = TestFiles.read(directory.file(last))
                let frame = originalFrame(op: 9, key: bytes("key-19"), value: bytes("value-0019"))
                contents.replaceSubrange(lastRecordOffset..<(lastRecordOffset + frameSize), with: frame)
                TestFiles.write(directory.file(last), contents)
            },
            expected: { .refused(.corruptRecord, file: last, offset: Int64(lastRecordOffset)) }),
    ]

    /// Each kind of damage has exactly the expected outcome.
    @Test(arguments: cases)
    func damage(_ testCase: Case) async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let configuration = try await Self.makeLog(directory)
        testCase.corrupt(directory)
        let expected = testCase.expected()
        do {
            let (wal, replayed) = try openAndReplay(configuration)
            wal.close()
            guard case .kept(let count, let broken) = expected else {
                Issue.record("\(testCase.name): opened with \(replayed.count) records, expected \(expected)")
                return
            }
            #expect(replayed.count == count)
            #expect(directory.names().contains { $0.hasSuffix(".broken") } == broken)
        } catch let error as WALError {
            guard case .refused(let code, let file, let offset) = expected else {
                Issue.record("\(testCase.name): refused (\(error.message)), expected \(expected)")
                return
            }
            #expect(error.code == code, "\(error.message)")
            #expect(error.message.contains(file), "\(error.message)")
            if let offset {
                #expect(error.offset == offset, "\(error.message)")
                #expect(error.message.contains("offset \(offset)"), "\(error.message)")
            }
            // The fix is part of the message, and nothing was cut.
            #expect(error.message.contains("restore") || error.message.contains("truncate -s"), "\(error.message)")
            #expect(!directory.names().contains { $0.hasSuffix(".broken") })
        }
    }

    /// Cutting the last record at every byte is a torn write: the 19 records before it survive,
    /// the cut bytes are kept in a .broken copy, and the log appends cleanly afterwards.
    @Test func tornFinalRecordAtEveryByteIsRepaired() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let configuration = try await Self.makeLog(directory)
        let original = TestFiles.read(directory.file(Self.last))
        for cut in 1..<Self.frameSize {
            let scratch = TemporaryDirectory()
            defer { scratch.remove() }
            for name in directory.names() where name.hasPrefix("wal-") {
                TestFiles.write(scratch.file(name), TestFiles.read(directory.file(name)))
            }
            TestFiles.write(scratch.file(Self.last), Array(original[0..<(Self.lastRecordOffset + cut)]))
            var scratchConfiguration = configuration
            scratchConfiguration.directory = scratch.path
            let (wal, replayed) = try openAndReplay(scratchConfiguration)
            #expect(replayed.count == Self.recordCount - 1, "cut at byte \(cut)")
            let brokenName = "\(Self.last).\(Self.lastRecordOffset).broken"
            #expect(TestFiles.read(scratch.file(brokenName)) == Array(original[Self.lastRecordOffset..<(Self.lastRecordOffset + cut)]))
            #expect(TestFiles.read(scratch.file(Self.last)).count == Self.lastRecordOffset)
            _ = try await appendDurably(wal, "after", "repair")
            wal.close()
            let (again, replayedAgain) = try openAndReplay(scratchConfiguration)
            again.close()
            #expect(replayedAgain.count == Self.recordCount)
            #expect(replayedAgain.last?.2 == "after")
        }
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - self.count)) + self }
}
