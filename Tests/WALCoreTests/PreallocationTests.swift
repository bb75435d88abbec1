import Foundation
import Testing
@testable import WALCore
import WalrusTestKit

/// Segments made ahead as zeros (`SegmentPreallocator`): used at rotation, cut to their records
/// when finished, read back exactly after a restart or a crash, never left behind.
struct PreallocationTests {
    static let segmentSize = 64 * 1024
    static let value = [UInt8](repeating: 0x61, count: 1000)

    func fileSize(_ path: String) -> Int64 { FileIO.fileStatus(path)?.size ?? -1 }

    func names(_ directory: TemporaryDirectory) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
    }

    @Test func theNextSegmentIsMadeAheadUsedAndCut() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let configuration = testConfiguration(directory, segmentSize: Self.segmentSize, mode: .interval(milliseconds: 600_000))
        var written = 0
        do {
            let wal = try WriteAheadLog.open(configuration, logger: quietLogger)
            defer { wal.close() }
            // Past half of segment 1: the flusher asks for segment 2.
            for _ in 0..<40 {
                try wal.append(op: .set, key: bytes("k\(written)"), value: Self.value)
                written += 1
            }
            try wal.commitBlocking()
            let deadline = Date().addingTimeInterval(30)
            while wal.preallocator.readyNumber != 2 && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
            #expect(wal.preallocator.readyNumber == 2)
            #expect(self.fileSize(directory.file("wal-0002.log.prealloc")) == Int64(Self.segmentSize))
            // Into segment 2, which is the file made ahead.
            for _ in 0..<40 {
                try wal.append(op: .set, key: bytes("k\(written)"), value: Self.value)
                written += 1
            }
            try wal.commitBlocking()
            let segments = wal.segmentSummaries
            #expect(segments.count == 2)
            #expect(self.fileSize(directory.file("wal-0001.log")) == segments[0].bytes, "a finished segment is cut to its records")
            #expect(self.fileSize(directory.file("wal-0002.log")) == Int64(Self.segmentSize), "the new segment was preallocated")
            #expect(segments[1].bytes < Int64(Self.segmentSize))

            // A crash now (kill -9): the files as they are, zeros after the last record.
            let copy = TemporaryDirectory()
            defer { copy.remove() }
            for name in try self.names(directory) where SegmentName.parse(name) != nil || name == "meta" {
                try FileManager.default.copyItem(atPath: directory.file(name), toPath: copy.file(name))
            }
            var copied = configuration
            copied.directory = copy.path
            let recovered = try WriteAheadLog.open(copied, logger: quietLogger)
            #expect(try recovered.readAll().map(\.key) == (0..<written).map { bytes("k\($0)") })
            #expect(recovered.recoveryReport.brokenCopy == nil, "zeros after the last record are the end, not a torn write")
            // Appends after the crash go right after the last record, into the zeros.
            for i in 0..<5 { try recovered.append(op: .set, key: bytes("after-crash-\(i)"), value: Self.value) }
            try recovered.commitBlocking()
            recovered.close()
            let reopened = try WriteAheadLog.open(copied, logger: quietLogger)
            #expect(try reopened.readAll().map(\.key) == (0..<written).map { bytes("k\($0)") } + (0..<5).map { bytes("after-crash-\($0)") })
            reopened.close()
        }
        #expect(try !self.names(directory).contains { $0.hasSuffix(".prealloc") }, "close removes a file made ahead")
        #expect(
            self.fileSize(directory.file("wal-0002.log")) < Int64(Self.segmentSize),
            "a clean close cuts the zeros, so a segment added after it finds this one whole")

        // Reopen: appends go after the last record and read back in order.
        do {
            let wal = try WriteAheadLog.open(configuration, logger: quietLogger)
            defer { wal.close() }
            #expect(wal.recoveryReport.brokenCopy == nil)
            for _ in 0..<10 {
                try wal.append(op: .set, key: bytes("k\(written)"), value: Self.value)
                written += 1
            }
            try wal.commitBlocking()
        }
        let wal = try WriteAheadLog.open(configuration, logger: quietLogger)
        defer { wal.close() }
        #expect(try wal.readAll().map(\.key) == (0..<written).map { bytes("k\($0)") })
        #expect(try !self.names(directory).contains { $0.hasSuffix(".broken") })
    }

    @Test func aLeftoverFileMadeAheadIsRemovedAtOpen() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        TestFiles.write(directory.file("wal-0002.log.prealloc"), [UInt8](repeating: 0, count: 4096))
        let wal = try WriteAheadLog.open(testConfiguration(directory), logger: quietLogger)
        defer { wal.close() }
        #expect(try !self.names(directory).contains("wal-0002.log.prealloc"))
        #expect(SegmentPreallocator.isPreallocated("wal-0002.log.prealloc"))
        #expect(!SegmentPreallocator.isPreallocated("wal-0002.log"))
        #expect(SegmentName.parse("wal-0002.log.prealloc") == nil)
    }
}
