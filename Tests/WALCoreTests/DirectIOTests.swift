#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
@testable import WALCore
import WalrusTestKit

/// Direct writes (O_DIRECT, whole blocks from a staged copy of the last block) leave exactly the
/// records a buffered write leaves, and the newest writes held in memory for cursors are the
/// file's bytes — never stale ones after a cut or a restart.
struct DirectIOTests {
    /// Whether this directory's filesystem takes O_DIRECT (tmpfs does not); the log falls back.
    static func directIOWorks(in directory: TemporaryDirectory) -> Bool {
        let fd = open(directory.file("probe"), O_RDWR | O_CREAT | FileIO.directFlag, 0o644)
        guard fd >= 0 else { return false }
        close(fd)
        unlink(directory.file("probe"))
        return true
    }

    /// Values of sizes that end records anywhere in a 4 KiB block: runs of small ones (writes
    /// that stay in one block) between ones that cross blocks.
    static func value(_ i: Int) -> [UInt8] {
        Array(repeating: UInt8(truncatingIfNeeded: i), count: i % 8 < 5 ? (i * 31) % 200 : (i * 937) % 9_000)
    }

    /// Write `count` records one seal each, across several segments, without closing; returns
    /// the directory's segment files' bytes (as a crash would leave them: zeros after the last
    /// record) and then closes.
    static func writeLog(_ directory: TemporaryDirectory, direct: Bool, count: Int, preallocate: Bool) async throws -> [String: [UInt8]] {
        var configuration = testConfiguration(directory, segmentSize: 64 * 1024)
        configuration.directIO = direct
        let wal = try WriteAheadLog.open(configuration, logger: quietLogger)
        if !preallocate { wal.preallocator.close() }  // segments grow instead of being made ahead
        if direct { #expect(wal.writesDirectly == Self.directIOWorks(in: directory)) }
        for i in 0..<count { _ = try await appendDurably(wal, "k\(i)", String(decoding: Self.value(i).map { _ in UInt8(ascii: "v") }, as: UTF8.self)) }
        let files = try Self.segments(directory)
        wal.close()
        return files
    }

    /// The first offset where `a` and `b` differ (also in length); nil if they are equal.
    static func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> Int? {
        (0..<min(a.count, b.count)).first { a[$0] != b[$0] } ?? (a.count == b.count ? nil : min(a.count, b.count))
    }

    static func segments(_ directory: TemporaryDirectory) throws -> [String: [UInt8]] {
        var files: [String: [UInt8]] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: directory.path) where name.hasSuffix(".log") {
            files[name] = Array(try Data(contentsOf: URL(fileURLWithPath: directory.file(name))))
        }
        return files
    }

    /// The same records give the same segment bytes direct or buffered — as a crash leaves them
    /// (a direct write pads its block with zeros, which read as the end of the log) and after a
    /// clean close (cut to the records) — and every record replays.
    @Test(arguments: [true, false]) func directAndBufferedLogsHoldTheSameRecords(preallocate: Bool) async throws {
        let direct = TemporaryDirectory()
        let buffered = TemporaryDirectory()
        defer { direct.remove(); buffered.remove() }
        let count = 120
        let crashedDirect = try await Self.writeLog(direct, direct: true, count: count, preallocate: preallocate)
        let crashedBuffered = try await Self.writeLog(buffered, direct: false, count: count, preallocate: preallocate)
        #expect(crashedDirect.count > 2, "the records should fill several segments")
        #expect(Set(crashedDirect.keys) == Set(crashedBuffered.keys))
        for (name, bytes) in crashedBuffered {
            let other = crashedDirect[name] ?? []
            // Up to the records they agree; past them both hold only zeros (made ahead, or padding).
            let common = min(bytes.count, other.count)
            let differs = Self.firstDifference(Array(bytes[..<common]), Array(other[..<common]))
            #expect(differs == nil, "\(name): direct and buffered differ first at byte \(differs ?? 0)")
            let nonZero = (common..<other.count).first { other[$0] != 0 } ?? (common..<bytes.count).first { bytes[$0] != 0 }
            #expect(nonZero == nil, "\(name): byte \(nonZero ?? 0), past the records, is not zero")
        }
        let (closedDirect, closedBuffered) = (try Self.segments(direct), try Self.segments(buffered))
        #expect(closedDirect.mapValues(\.count) == closedBuffered.mapValues(\.count), "after a clean close both are cut to their records")
        for (name, bytes) in closedBuffered {
            let differs = Self.firstDifference(bytes, closedDirect[name] ?? [])
            #expect(differs == nil, "\(name) after a clean close: direct and buffered differ first at byte \(differs ?? 0)")
        }
        var configuration = testConfiguration(direct, segmentSize: 64 * 1024)
        configuration.directIO = true
        let (wal, replayed) = try openAndReplay(configuration)
        defer { wal.close() }
        #expect(replayed.count == count)
        #expect(replayed.map(\.2) == (0..<count).map { "k\($0)" })
        #expect(replayed.map(\.3.count) == (0..<count).map { Self.value($0).count })
    }

    /// A log written through the page cache that ends inside a block goes on with direct writes:
    /// the block's records are read back once and rewritten unchanged with the new ones after them.
    @Test func aBufferedLogGoesOnDirectly() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var configuration = testConfiguration(directory)
        configuration.directIO = false
        var wal = try WriteAheadLog.open(configuration, logger: quietLogger)
        for i in 0..<5 { _ = try await appendDurably(wal, "old\(i)", String(repeating: "o", count: 700 + i)) }
        wal.close()
        configuration.directIO = true
        wal = try WriteAheadLog.open(configuration, logger: quietLogger)
        #expect(wal.writesDirectly == Self.directIOWorks(in: directory))
        for i in 0..<5 { _ = try await appendDurably(wal, "new\(i)", String(repeating: "n", count: 900 + i)) }
        wal.close()
        let (reopened, replayed) = try openAndReplay(configuration)
        defer { reopened.close() }
        #expect(replayed.map(\.2) == (0..<5).map { "old\($0)" } + (0..<5).map { "new\($0)" })
        #expect(replayed.map(\.3.count) == (0..<5).map { 700 + $0 } + (0..<5).map { 900 + $0 })
    }

    /// A cursor from the first record reads the old ones from the file and the newest from
    /// memory; both are the log's bytes, in order.
    @Test func aCursorReadsTheSameRecordsFromMemoryAndFromTheFile() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let wal = try WriteAheadLog.open(testConfiguration(directory), logger: quietLogger)
        defer { wal.close() }
        // One seal per record: far more batches than the memory holds (4 MiB of 64 KiB buffers).
        let count = 200
        for i in 0..<count { _ = try await appendDurably(wal, "k\(i)", "value \(i)") }
        let held = wal.recent.held
        #expect(held.bytes > 0 && held.capacity <= 4 << 20)
        let tailing = WALCursor(wal: wal, from: UInt64(count - 2))
        let output = RecordBuffer()
        #expect(try tailing.read(into: output) == 3)
        var seen: [String] = []
        try WALCursor(wal: wal, from: 1).forEach { _, record in seen.append(String(decoding: record.value, as: UTF8.self)) }
        #expect(seen == (0..<count).map { "value \($0)" })
    }

    /// After the log is cut back (a diverged node rejoining) or restarted (after a snapshot), the
    /// bytes held in memory at the old offsets are forgotten: a cursor reads the new records.
    @Test func cutAndRestartForgetWhatMemoryHeld() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let wal = try WriteAheadLog.open(testConfiguration(directory), logger: quietLogger)
        defer { wal.close() }
        for i in 1...20 { _ = try await appendDurably(wal, "k\(i)", "first \(i)") }
        #expect(try wal.truncate(after: 10, divergedPath: directory.file("diverged.log")) == 10)
        for i in 11...20 { _ = try await appendDurably(wal, "k\(i)", "again \(i)") }
        var values: [String] = []
        try WALCursor(wal: wal, from: 5).forEach { _, record in values.append(String(decoding: record.value, as: UTF8.self)) }
        #expect(values == (5...10).map { "first \($0)" } + (11...20).map { "again \($0)" })

        try wal.restart(after: 100)
        for i in 101...105 { _ = try await appendDurably(wal, "k\(i)", "after restart \(i)") }
        values = []
        try WALCursor(wal: wal, from: 101).forEach { _, record in values.append(String(decoding: record.value, as: UTF8.self)) }
        #expect(values == (101...105).map { "after restart \($0)" })
    }
}

/// The in-memory window by itself.
struct RecentWritesTests {
    static func buffer(_ bytes: [UInt8], capacity: Int = 64) -> RecordBuffer {
        let buffer = RecordBuffer(capacity: capacity)
        bytes.withUnsafeBytes { buffer.append($0) }
        return buffer
    }

    func copy(_ recent: RecentWrites, segment: Int, offset: Int64, count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let n = out.withUnsafeMutableBytes { recent.copy(segment: segment, offset: offset, into: $0.baseAddress!, count: count) }
        return Array(out[..<n])
    }

    @Test func copiesContiguousRunsOfOneSegmentOnly() {
        let recent = RecentWrites(budget: 1 << 20)
        let a = Self.buffer([1, 2, 3, 4]), b = Self.buffer([5, 6, 7, 8, 9])
        recent.add(a, start: 0, count: 4, segment: 1, offset: 100)
        recent.add(b, start: 0, count: 3, segment: 1, offset: 104)  // 5 6 7 end segment 1
        recent.add(b, start: 3, count: 2, segment: 2, offset: 0)  // 8 9 start segment 2
        #expect(copy(recent, segment: 1, offset: 100, count: 100) == [1, 2, 3, 4, 5, 6, 7])
        #expect(copy(recent, segment: 1, offset: 102, count: 3) == [3, 4, 5])
        #expect(copy(recent, segment: 2, offset: 0, count: 10) == [8, 9])
        #expect(copy(recent, segment: 1, offset: 99, count: 10) == [], "older than what is held")
        #expect(copy(recent, segment: 1, offset: 107, count: 10) == [], "past what is held")
        #expect(copy(recent, segment: 3, offset: 0, count: 10) == [])
        recent.removeAll()
        #expect(copy(recent, segment: 1, offset: 100, count: 10) == [])
    }

    @Test func keepsItsBudgetAndHandsBackOnlyUnsharedBuffers() {
        let recent = RecentWrites(budget: 256)
        let shared = Self.buffer([1, 1], capacity: 128)
        recent.add(shared, start: 0, count: 2, segment: 1, offset: 0)
        recent.add(Self.buffer([2, 2], capacity: 128), start: 0, count: 2, segment: 1, offset: 2)
        #expect(recent.held == (4, 256))
        recent.add(Self.buffer([3, 3], capacity: 128), start: 0, count: 2, segment: 1, offset: 4)
        // The oldest went; `shared` is still referenced here, so it is not handed back.
        #expect(recent.held == (4, 256))
        #expect(recent.takeReusable() == nil)
        #expect(copy(recent, segment: 1, offset: 0, count: 2) == [])
        #expect(copy(recent, segment: 1, offset: 2, count: 4) == [2, 2, 3, 3])
        recent.add(Self.buffer([4, 4], capacity: 128), start: 0, count: 2, segment: 1, offset: 6)
        // The second was referenced by nothing else: emptied and handed back, once.
        let reused = recent.takeReusable()
        #expect(reused != nil && reused?.count == 0)
        #expect(recent.takeReusable() == nil)
        // The newest batch stays whatever its size.
        recent.add(Self.buffer([5], capacity: 4096), start: 0, count: 1, segment: 1, offset: 8)
        #expect(recent.held == (1, 4096))
        _ = shared
    }
}
