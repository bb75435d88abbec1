import Dispatch
import Synchronization
import Testing
@testable import WALCore
import WalrusTestKit

/// The log end to end on real files: the original's wal_test.go cases, then what it got wrong.
struct WriteAheadLogTests {
    /// Appended records read back in order (the original's TestAppendAndReadAll).
    @Test func appendAndReadAll() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let wal = try WriteAheadLog.open(testConfiguration(directory), logger: quietLogger)
        defer { wal.close() }
        #expect(try await appendDurably(wal, "a", "1") == 1)
        #expect(try await appendDurably(wal, "b", "2") == 2)
        let records = try wal.readAll()
        #expect(records.count == 2)
        #expect(records[0].key == bytes("a") && records[0].value == bytes("1"))
        #expect(records[1].key == bytes("b") && records[1].value == bytes("2"))
    }

    /// A delete record keeps its op (TestDeleteRecord).
    @Test func deleteRecord() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let wal = try WriteAheadLog.open(testConfiguration(directory), logger: quietLogger)
        defer { wal.close() }
        _ = try await appendDurably(wal, "x", "42")
        _ = try await appendDurably(wal, "x", "", op: .delete)
        let records = try wal.readAll()
        #expect(records.map(\.op) == [.set, .delete])
    }

    /// An event loop's pass (always mode): appends and a commit inside `deferringWakes` report
    /// that they appended (an enclosing window learns it too; a window without appends does
    /// not), and `sealInline()` afterwards makes every one of them durable and answers the
    /// waiters — nothing is stranded for want of a flusher wake-up.
    @Test func inlineSealSealsWhatAPassAppended() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let wal = try WriteAheadLog.open(testConfiguration(directory), logger: quietLogger)
        defer { wal.close() }
        let answered = Atomic<Int>(0)
        let (_, none) = InlineSeal.deferringWakes { _ = wal.lastIndex }
        #expect(!none)
        let (inner, outer) = try InlineSeal.deferringWakes { () throws -> Bool in
            let (_, inner) = try InlineSeal.deferringWakes {
                try wal.append(op: .set, key: bytes("a"), value: bytes("1")) { error in
                    if error == nil { answered.add(1, ordering: .relaxed) }
                }
            }
            _ = try wal.append(op: .set, key: bytes("b"), value: bytes("2"))
            wal.commit { error in
                if error == nil { answered.add(1, ordering: .relaxed) }
            }
            return inner
        }
        #expect(inner && outer)
        wal.sealInline()
        // Sealed on this thread, or — if the flusher held the log's I/O just then — by it, woken.
        let deadline = ContinuousClock.now + .seconds(10)
        while answered.load(ordering: .relaxed) < 2 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(1)) }
        #expect(answered.load(ordering: .relaxed) == 2)
        #expect(wal.sealedIndex == 2 && wal.lastIndex == 2)
        #expect(try wal.readAll().map(\.key) == [bytes("a"), bytes("b")])
        // Outside a window the flusher is woken as before.
        #expect(try await appendDurably(wal, "c", "3") == 3)
    }

    /// A window is its own thread's (a C thread-local, `CThreadState`): while this thread holds
    /// one open, another thread's append and commit still wake the flusher and are sealed, and
    /// this thread's window does not count that append as its own.
    @Test func aWindowDefersOnlyItsOwnThread() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let wal = try WriteAheadLog.open(testConfiguration(directory), logger: quietLogger)
        defer { wal.close() }
        let answered = LockedValue(false)
        let (_, appended) = InlineSeal.deferringWakes { () -> Void in
            let done = DispatchSemaphore(value: 0)
            DispatchQueue.global().async {
                do {
                    _ = try wal.append(op: .set, key: bytes("x"), value: bytes("1"))
                    wal.commit { error in
                        answered.withLock { $0 = error == nil }
                        done.signal()
                    }
                } catch {
                    done.signal()
                }
            }
            // Waited for inside the window: had the other thread deferred its wake-up too, its
            // commit would wait for a seal this thread never makes.
            _ = done.wait(timeout: .now() + 10)
        }
        #expect(!appended)
        #expect(answered.withLock { $0 })
        #expect(wal.sealedIndex == 1)
    }

    /// In interval mode nothing is sealed (visible to readers) before a commit; after it, all is
    /// (TestBuffering, TestForceFlush).
    @Test func intervalModeSealsOnCommit() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let wal = try WriteAheadLog.open(testConfiguration(directory, mode: .interval(milliseconds: 60_000)), logger: quietLogger)
        defer { wal.close() }
        try wal.append(op: .set, key: bytes("buffered"), value: bytes("data"))
        #expect(wal.sealedIndex == 0)
        #expect(try wal.readAll().isEmpty)
        try await wal.commit()
        #expect(wal.sealedIndex == 1)
        #expect(try wal.readAll().map(\.key) == [bytes("buffered")])
    }

    /// The background flusher seals on its own within the interval (TestBackgroundFlush), observed
    /// through the seal observer rather than a sleep.
    @Test func backgroundFlushSealsWithoutCommit() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let wal = try WriteAheadLog.open(testConfiguration(directory, mode: .interval(milliseconds: 20)), logger: quietLogger)
        defer { wal.close() }
        let sealed = AsyncStream<UInt64>.makeStream()
        wal.addSealObserver { sealed.continuation.yield($0) }
        try wal.append(op: .set, key: bytes("auto"), value: bytes("flush"))
        for await index in sealed.stream where index >= 1 { break }
        #expect(try wal.readAll().map(\.value) == [bytes("flush")])
    }

    /// close() seals what is buffered, and a reopen replays it (TestCloseFlushes).
    @Test func closeSealsAndReopenReplays() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let configuration = testConfiguration(directory, mode: .interval(milliseconds: 60_000))
        let wal = try WriteAheadLog.open(configuration, logger: quietLogger)
        try wal.append(op: .set, key: bytes("close"), value: bytes("test"))
        wal.close()
        let (reopened, replayed) = try openAndReplay(configuration)
        defer { reopened.close() }
        #expect(replayed.count == 1)
        #expect(replayed.first?.2 == "close")
    }

    /// Many writers at once: every record lands once, and fdatasyncs are shared (TestConcurrentAppends).
    @Test func concurrentAppendsAreAllSealed() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let wal = try WriteAheadLog.open(testConfiguration(directory, segmentSize: 64 * 1024), logger: quietLogger)
        defer { wal.close() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<10 {
                group.addTask {
                    for j in 0..<100 { _ = try await appendDurably(wal, "concurrent-\(writer)", "data-\(j)") }
                }
            }
            try await group.waitForAll()
        }
        let records = try wal.readAll()
        #expect(records.count == 1000)
        #expect(records.map(\.index) == Array(1...1000))
        #expect(wal.sealedIndex == 1000)
        #expect(wal.statistics.fsyncCount <= 1000)
    }

    /// After a rotation, a restart appends to the last segment, so order survives (the original
    /// reopened wal-0001.log and replayed out of order).
    @Test func restartAfterRotationKeepsOrder() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let configuration = testConfiguration(directory, segmentSize: 200)
        var wal = try WriteAheadLog.open(configuration, logger: quietLogger)
        for i in 0..<20 { _ = try await appendDurably(wal, "k", "v\(i)") }
        wal.close()
        #expect(directory.names().filter { $0.hasPrefix("wal-") }.count >= 3)
        wal = try WriteAheadLog.open(configuration, logger: quietLogger)
        for i in 20..<30 { _ = try await appendDurably(wal, "k", "v\(i)") }
        wal.close()
        let (reopened, replayed) = try openAndReplay(configuration)
        defer { reopened.close() }
        #expect(replayed.map(\.3) == (0..<30).map { "v\($0)" })
        #expect(replayed.map(\.0) == Array(1...30))
    }

    /// Segment numbers past 9999 keep numeric order (wal-10000.log after wal-9999.log).
    @Test func segmentsPast9999StayInOrder() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var meta = MetaFile()
        meta.logStartSegment = 9998
        try meta.store(directory: directory.path)
        let configuration = testConfiguration(directory, segmentSize: 100)
        let wal = try WriteAheadLog.open(configuration, logger: quietLogger)
        for i in 0..<12 { _ = try await appendDurably(wal, "key", "value-\(i)") }
        wal.close()
        #expect(directory.names().contains("wal-10000.log"))
        #expect(directory.names().contains("wal-9999.log"))
        let (reopened, replayed) = try openAndReplay(configuration)
        defer { reopened.close() }
        #expect(replayed.map(\.3) == (0..<12).map { "value-\($0)" })
    }

    /// A reader can start at any index, in any segment, and sees only sealed records.
    @Test func cursorSeeksToAnyIndex() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let wal = try WriteAheadLog.open(testConfiguration(directory, segmentSize: 2000), logger: quietLogger)
        defer { wal.close() }
        for i in 1...300 { _ = try await appendDurably(wal, "key-\(i)", "value-\(i)") }
        for start in [1, 2, 57, 150, 299, 300] as [UInt64] {
            let records = try wal.readAll(from: start)
            #expect(records.first?.index == start)
            #expect(records.first?.key == bytes("key-\(start)"))
            #expect(records.count == Int(301 - start))
        }
        let output = RecordBuffer()
        let cursor = WALCursor(wal: wal, from: 301)
        #expect(try cursor.read(into: output) == 0)
        _ = try await appendDurably(wal, "key-301", "value-301")
        #expect(try cursor.read(into: output) == 1)
        // A caught-up reader goes on across segments sealed after it stopped (2,000-byte
        // segments: these 100 records fill several), in one read, in order, missing none.
        for i in 302...401 { _ = try await appendDurably(wal, "key-\(i)", "value-\(i)") }
        output.removeAll()
        #expect(try cursor.read(into: output) == 100)
        #expect(cursor.nextIndex == 402)
        #expect(try cursor.read(into: output) == 0)
    }

    /// A directory written by the original Go walrus (bytes built by hand) opens unchanged.
    @Test func opensADirectoryWrittenByTheOriginal() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var segment1: [UInt8] = []
        segment1 += originalFrame(op: 1, key: bytes("name"), value: bytes("jerk"))
        segment1 += originalFrame(op: 1, key: bytes("project"), value: bytes("walrus"))
        let segment2 = originalFrame(op: 2, key: bytes("name"), value: []) + originalFrame(op: 1, key: bytes("a"), value: bytes("b"))
        TestFiles.write(directory.file("wal-0001.log"), segment1)
        TestFiles.write(directory.file("wal-0002.log"), segment2)
        let configuration = testConfiguration(directory)
        let (wal, replayed) = try openAndReplay(configuration)
        #expect(replayed.map(\.2) == ["name", "project", "name", "a"])
        #expect(replayed.map(\.1) == [.set, .set, .delete, .set])
        #expect(wal.lastIndex == 4)
        wal.close()
        // Nothing about the files changed: the original can still read them.
        #expect(TestFiles.read(directory.file("wal-0001.log")) == segment1)
        #expect(TestFiles.read(directory.file("wal-0002.log")) == segment2)
    }

    /// Two opens of one directory: the second is refused and names the holder's pid.
    @Test func secondOpenIsRefusedNamingThePid() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let wal = try WriteAheadLog.open(testConfiguration(directory), logger: quietLogger)
        defer { wal.close() }
        do {
            _ = try WriteAheadLog.open(testConfiguration(directory), logger: quietLogger)
            Issue.record("second open succeeded")
        } catch let error as WALError {
            #expect(error.code == .directoryLocked)
            #expect(error.message.contains("process \(getpid())"))
            #expect(error.message.contains(directory.path))
        }
    }

    /// A record over the configured maximum is refused at append, before it reaches the log.
    @Test func oversizedAppendIsRefused() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var configuration = testConfiguration(directory)
        configuration.maxRecordBytes = 1000
        let wal = try WriteAheadLog.open(configuration, logger: quietLogger)
        defer { wal.close() }
        #expect(throws: WALError(.recordTooLarge, "")) {
            try wal.append(op: .set, key: bytes("k"), value: [UInt8](repeating: 1, count: 2000))
        }
        #expect(wal.lastIndex == 0)
    }

    /// Epoch and batch records round-trip.
    @Test func epochAndBatchRecordsRoundTrip() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let configuration = testConfiguration(directory)
        let wal = try WriteAheadLog.open(configuration, logger: quietLogger)
        try wal.append(op: .epoch, key: [], value: RecordEncoder.epochValue(7))
        let payload = RecordBuffer()
        for (op, key, value) in [(RecordOp.set, "a", "1"), (.delete, "b", ""), (.set, "c", "3")] {
            let k = bytes(key), v = bytes(value)
            k.withUnsafeBytes { kb in
                v.withUnsafeBytes { vb in
                    let at = payload.reserve(RecordEncoder.dataSize(keyCount: kb.count, valueCount: vb.count))
                    payload.commit(RecordEncoder.writeData(op: op, key: kb, value: vb, to: at))
                }
            }
        }
        try wal.append(op: .batch, key: UnsafeRawBufferPointer(start: nil, count: 0), value: payload.bytes)
        try await wal.commit()
        wal.close()
        var entries: [String] = []
        var epoch: UInt64? = nil
        let reopened = try WriteAheadLog.open(configuration, logger: quietLogger) { _, record in
            if let e = record.epoch { epoch = e }
            if record.op == .batch {
                record.forEachBatchEntry { op, key, _ in entries.append("\(op) \(String(decoding: key, as: UTF8.self))") }
            }
        }
        reopened.close()
        #expect(epoch == 7)
        #expect(entries == ["set a", "delete b", "set c"])
    }
}

#if canImport(Glibc)
import Glibc
#endif
