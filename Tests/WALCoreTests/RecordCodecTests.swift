import CZlib
import Testing
@testable import WALCore

/// The frame codec: byte-compatible with the original and strict about damage.
struct RecordCodecTests {
    /// Our encoder produces exactly the original's bytes.
    @Test func encoderMatchesTheOriginalFormat() {
        let ours = RecordEncoder.encode(op: .set, key: bytes("name"), value: bytes("jerk"))
        #expect(ours == originalFrame(op: 1, key: bytes("name"), value: bytes("jerk")))
        let delete = RecordEncoder.encode(op: .delete, key: bytes("x"), value: [])
        #expect(delete == originalFrame(op: 2, key: bytes("x"), value: []))
        #expect(Array(ours.prefix(4)) == [0xCA, 0xFE, 0xBA, 0xBE])
    }

    /// Feeding a frame one byte at a time asks for more bytes until the last one, then decodes it.
    @Test func decodesByteAtATime() {
        let frame = originalFrame(op: 1, key: bytes("key"), value: Array(repeating: 7, count: 300))
        for prefix in 0..<frame.count {
            let result = Array(frame[0..<prefix]).withUnsafeBytes { RecordDecoder.decode($0, at: 0, maxRecordBytes: 1 << 20) }
            guard case .needMoreBytes = result else {
                Issue.record("prefix \(prefix) gave \(result)")
                return
            }
        }
        frame.withUnsafeBytes { raw in
            guard case .record(let view, let length) = RecordDecoder.decode(raw, at: 0, maxRecordBytes: 1 << 20) else {
                Issue.record("whole frame did not decode")
                return
            }
            #expect(length == frame.count)
            #expect(Array(view.key) == bytes("key"))
            #expect(view.value.count == 300)
        }
    }

    /// Many frames in one buffer decode in sequence.
    @Test func decodesManyFramesInOneBuffer() {
        var buffer: [UInt8] = []
        for i in 0..<50 { buffer += originalFrame(op: 1, key: bytes("k\(i)"), value: bytes("v\(i)")) }
        var offset = 0
        var count = 0
        buffer.withUnsafeBytes { raw in
            while offset < raw.count, case .record(let view, let length) = RecordDecoder.decode(raw, at: offset, maxRecordBytes: 1 << 20) {
                #expect(String(decoding: view.key, as: UTF8.self) == "k\(count)")
                offset += length
                count += 1
            }
        }
        #expect(count == 50)
    }

    /// Damage of each kind is named.
    @Test(arguments: [
        ("bad magic", 0, UInt8(0x00)),
        ("bad CRC", 9, UInt8(0x55)),
        ("bad payload", 20, UInt8(0x55)),
    ])
    func reportsDamage(name: String, position: Int, value: UInt8) {
        var frame = originalFrame(op: 1, key: bytes("key"), value: bytes("value-value"))
        frame[position] ^= value == 0 ? 0xFF : value
        let result = frame.withUnsafeBytes { RecordDecoder.decode($0, at: 0, maxRecordBytes: 1 << 20) }
        guard case .damaged = result else {
            Issue.record("\(name): expected damage, got \(result)")
            return
        }
    }

    /// A 4 GiB length claim is refused from the header alone, before anything is allocated.
    @Test func refusesHugeLengthFromTheHeader() {
        let header = be32(0xCAFE_BABE) + be32(0xFFFF_FFF0) + be32(0)
        let result = header.withUnsafeBytes { RecordDecoder.decode($0, at: 0, maxRecordBytes: 64 << 20) }
        guard case .damaged(.lengthTooLarge(let n)) = result else {
            Issue.record("expected lengthTooLarge, got \(result)")
            return
        }
        #expect(n == 0xFFFF_FFF0)
    }

    /// An op this version does not know stops the reader instead of being skipped.
    @Test func refusesUnknownOp() {
        let frame = originalFrame(op: 9, key: bytes("k"), value: bytes("v"))
        let result = frame.withUnsafeBytes { RecordDecoder.decode($0, at: 0, maxRecordBytes: 1 << 20) }
        guard case .damaged(.unknownOp(9)) = result else {
            Issue.record("expected unknownOp, got \(result)")
            return
        }
    }

    /// Segment names sort by number, past 9999.
    @Test func segmentNamesSortNumerically() {
        #expect(SegmentName.format(1) == "wal-0001.log")
        #expect(SegmentName.format(10000) == "wal-10000.log")
        #expect(SegmentName.parse("wal-10000.log") == 10000)
        #expect(SegmentName.parse("wal-0002.log") == 2)
        #expect(SegmentName.parse("wal-.log") == nil)
        #expect(SegmentName.parse("wal-0001.log.broken") == nil)
        let sorted = ["wal-10000.log", "wal-9999.log", "wal-0002.log"].compactMap(SegmentName.parse).sorted()
        #expect(sorted == [2, 9999, 10000])
    }

    /// The meta file round-trips and refuses a damaged checksum.
    @Test func metaFileRoundTripsAndChecksCRC() throws {
        var meta = MetaFile()
        meta.clusterID = "abc"
        meta.logStartSegment = 7
        meta.logStartIndex = 501
        meta.epochs = [.init(epoch: 1, firstIndex: 1), .init(epoch: 2, firstIndex: 400)]
        let encoded = meta.encode()
        #expect(try MetaFile.decode(encoded, path: "meta") == meta)
        var damaged = encoded
        damaged[20] ^= 1
        #expect(throws: WALError.self) { try MetaFile.decode(damaged, path: "meta") }
    }
}

/// Our CRC-32 (ISA-L) agrees with zlib's on every length and when chained.
struct CRC32Tests {
    @Test func matchesZlibOnEveryLengthAndWhenChained() {
        let data = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        for length in [0, 1, 2, 3, 7, 8, 15, 16, 43, 63, 64, 121, 255, 1000, 4096] {
            let slice = Array(data[0..<length])
            let zlib = slice.withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, UInt32($0.count))) }
            #expect(CRC32.checksum(slice) == zlib, "length \(length)")
        }
        let first = Array(data[0..<1000])
        let second = Array(data[1000..<4096])
        #expect(CRC32.checksum(second, seed: CRC32.checksum(first)) == CRC32.checksum(data))
    }

    /// The expiry operations decode with their fixed layouts and are refused with others; a
    /// batch may hold them (but not an epoch or a batch).
    @Test func expiryOperationsHaveFixedLayouts() {
        func decode(_ op: UInt8, key: [UInt8], value: [UInt8]) -> RecordDecoder.Result {
            let frame = RecordEncoder.encode(op: RecordOp(rawValue: op), key: key, value: value)
            return frame.withUnsafeBytes { RecordDecoder.decode($0, at: 0, maxRecordBytes: 1 << 20) }
        }
        let deadline = RecordEncoder.epochValue(1_700_000_000_000)
        for (op, key, value, ok) in [
            (5, [UInt8](repeating: 1, count: 3), deadline + [9, 9], true), (5, [1], [1, 2, 3], false),
            (6, [1], deadline, true), (6, [1], deadline + [0], false), (7, [1], [], true), (7, [1], [0], false),
            (8, [], [], true), (8, [1], [], false),
        ] as [(UInt8, [UInt8], [UInt8], Bool)] {
            if case .record = decode(op, key: key, value: value) {
                #expect(ok, "op \(op) with a \(value.count)-byte value was accepted")
            } else {
                #expect(!ok, "op \(op) with a \(value.count)-byte value was refused")
            }
        }
        var entries: [UInt8] = []
        for (op, key, value) in [(5, [1], deadline + [2]), (6, [1], deadline), (7, [1], []), (8, [], []), (2, [1], [])]
            as [(UInt8, [UInt8], [UInt8])]
        {
            entries += Array(RecordEncoder.encode(op: RecordOp(rawValue: op), key: key, value: value).dropFirst(12))
        }
        guard case .record(let view, _) = decode(4, key: [], value: entries) else {
            Issue.record("a batch of expiry operations was refused")
            return
        }
        var ops: [RecordOp] = []
        view.forEachBatchEntry { op, _, _ in ops.append(op) }
        #expect(ops == [.setExpiring, .expireAt, .persist, .flushAll, .delete])
        let nested = Array(RecordEncoder.encode(op: .epoch, key: [], value: deadline).dropFirst(12))
        if case .record = decode(4, key: [], value: nested) { Issue.record("a batch holding an epoch was accepted") }
    }
}
