import Logging
import Synchronization
import Testing
import WALCore
@testable import WalrusStore
import WalrusTestKit

let quietLogger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }

func storeConfiguration(_ directory: TemporaryDirectory, mode: FsyncMode = .always, segmentSize: Int = 1 << 20)
    -> StoreConfiguration
{
    var configuration = StoreConfiguration(directory: directory.path)
    configuration.wal.fsyncMode = mode
    configuration.wal.segmentSizeBytes = segmentSize
    return configuration
}

/// The store: the original's store_test.go cases, then ordering, batches and snapshots.
struct KeyValueStoreTests {
    /// SET then GET (TestSetAndGet).
    @Test func setAndGet() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try KeyValueStore.open(storeConfiguration(directory), logger: quietLogger)
        defer { store.close() }
        try await store.set("name", "jerk")
        #expect(store.get("name") == "jerk")
    }

    /// HAS and LEN (TestHasAndLen), KEYS (TestKeys).
    @Test func hasLenAndKeys() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try KeyValueStore.open(storeConfiguration(directory), logger: quietLogger)
        defer { store.close() }
        try await store.set("a", "1")
        try await store.set("b", "2")
        #expect(store.has("a") && store.has("b") && !store.has("c"))
        #expect(store.count == 2)
        #expect(Set(store.keys().map(\.description)) == ["a", "b"])
    }

    /// DELETE removes; deleting a missing key reports it and writes nothing (TestDelete).
    @Test func delete() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try KeyValueStore.open(storeConfiguration(directory), logger: quietLogger)
        defer { store.close() }
        try await store.set("temp", "123")
        #expect(try await store.delete("temp"))
        #expect(!store.has("temp"))
        #expect(store.count == 0)
        let before = store.wal.lastIndex
        #expect(try await store.delete("temp") == false)
        #expect(store.wal.lastIndex == before)
    }

    /// A reopened store has every write, deletes included (TestRecovery, TestRecoveryWithDelete).
    @Test func recoveryWithDelete() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var store = try KeyValueStore.open(storeConfiguration(directory), logger: quietLogger)
        try await store.set("name", "jerk")
        try await store.set("project", "walrus")
        try await store.set("delete", "me")
        try await store.delete("delete")
        store.close()
        store = try KeyValueStore.open(storeConfiguration(directory), logger: quietLogger)
        defer { store.close() }
        #expect(store.get("name") == "jerk")
        #expect(store.get("project") == "walrus")
        #expect(!store.has("delete"))
        #expect(store.count == 2)
    }

    /// In interval mode a COMMIT seals; the writes survive a reopen (TestCommit,
    /// TestBackgroundFlushPersistence).
    @Test func intervalModeCommitPersists() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let configuration = storeConfiguration(directory, mode: .interval(milliseconds: 60_000))
        var store = try KeyValueStore.open(configuration, logger: quietLogger)
        try await store.set("commit", "test")
        #expect(store.wal.sealedIndex == 0)
        try await store.commit()
        #expect(store.wal.sealedIndex == 1)
        store.close()
        store = try KeyValueStore.open(configuration, logger: quietLogger)
        defer { store.close() }
        #expect(store.get("commit") == "test")
    }

    /// A batch is one record: applied in order, sealed whole (TestBatch).
    @Test func batchIsOneRecordAppliedInOrder() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var store = try KeyValueStore.open(storeConfiguration(directory), logger: quietLogger)
        try await store.set("gone", "soon")
        try await store.batch([.set("key1", "val1"), .set("key2", "val2"), .delete("gone"), .set("key1", "again")])
        #expect(store.count == 2)
        #expect(store.get("key1") == "again")
        #expect(store.wal.lastIndex == 2)
        store.close()
        store = try KeyValueStore.open(storeConfiguration(directory), logger: quietLogger)
        defer { store.close() }
        #expect(store.get("key1") == "again" && store.get("key2") == "val2" && !store.has("gone"))
    }

    /// A batch cut anywhere by a torn write is dropped whole on recovery, never half applied.
    @Test func tornBatchIsAllOrNothing() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var store = try KeyValueStore.open(storeConfiguration(directory), logger: quietLogger)
        try await store.set("before", "1")
        // Record sizes from the log, not the file: the segment is preallocated (zeros follow).
        let sizeBefore = Int(store.wal.segmentSummaries[0].bytes)
        try await store.batch((0..<10).map { .set("k\($0)", "v\($0)") })
        let sizeAfter = Int(store.wal.segmentSummaries[0].bytes)
        store.close()
        let full = TestFiles.read(directory.file("wal-0001.log"))
        TestFiles.write(directory.file("wal-0001.log"), Array(full[0..<(sizeBefore + (sizeAfter - sizeBefore) / 2)]))
        store = try KeyValueStore.open(storeConfiguration(directory), logger: quietLogger)
        defer { store.close() }
        #expect(store.count == 1)
        #expect(store.get("before") == "1")
    }

    /// Keys and values are bytes: NUL, invalid UTF-8 and empty values survive a reopen.
    @Test func binarySafeKeysAndValues() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let key: [UInt8] = [0, 0xFF, 0xFE, 10, 13, 0]
        let value: [UInt8] = (0...255).map { UInt8($0) }
        var store = try KeyValueStore.open(storeConfiguration(directory), logger: quietLogger)
        try await store.set(key, value)
        try await store.set([1], [])
        store.close()
        store = try KeyValueStore.open(storeConfiguration(directory), logger: quietLogger)
        defer { store.close() }
        #expect(store.get(key: key) == value)
        #expect(store.get(key: [1]) == [])
    }

    /// Readers and writers at once, then 20/20/10 writers, readers and deleters (TestConcurrentAccess,
    /// TestStressTest): the store stays consistent and usable.
    @Test func stress() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try KeyValueStore.open(storeConfiguration(directory, mode: .interval(milliseconds: 10)), logger: quietLogger)
        defer { store.close() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for id in 0..<20 {
                group.addTask { for j in 0..<200 { try await store.set("key-\((id * 200 + j) % 10)", "value-\(id)-\(j)") } }
                group.addTask {
                    for j in 0..<200 {
                        _ = store.get("key-\(j % 10)")
                        _ = store.has("key-\(j % 10)")
                        _ = store.keys()
                        _ = store.count
                    }
                }
            }
            for id in 0..<10 {
                group.addTask {
                    for j in 0..<200 {
                        if j % 2 == 0 { try await store.delete("key-\((id + j) % 10)") } else { try await store.set("key-\(j % 10)", "deleter") }
                    }
                }
            }
            try await group.waitForAll()
        }
        try await store.commit()
        try await store.set("final", "test")
        #expect(store.get("final") == "test")
    }

    /// Under any concurrency the log's order is the map's order: many tasks hammer a few keys,
    /// then the state rebuilt from the log equals the state in memory, key by key.
    @Test(arguments: [FsyncMode.always, .interval(milliseconds: 5)])
    func logOrderEqualsApplyOrder(mode: FsyncMode) async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let configuration = storeConfiguration(directory, mode: mode, segmentSize: 16 * 1024)
        let store = try KeyValueStore.open(configuration, logger: quietLogger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<16 {
                group.addTask {
                    for j in 0..<300 {
                        let key = "hot-\(j % 4)"
                        if j % 7 == 0 {
                            try await store.delete(key)
                        } else if j % 11 == 0 {
                            try await store.batch([.set(key, "batch-\(writer)-\(j)"), .set("hot-\((j + 1) % 4)", "b2-\(writer)-\(j)")])
                        } else {
                            try await store.set(key, "w\(writer)-\(j)")
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let inMemory = store.dictionaryCopy()
        store.close()
        let reopened = try KeyValueStore.open(configuration, logger: quietLogger)
        defer { reopened.close() }
        let recovered = reopened.dictionaryCopy()
        #expect(recovered.count == inMemory.count)
        for (key, value) in inMemory { #expect(recovered[key] == value, "key \(key)") }
    }

    /// Oversized keys and values are refused with the limit's name, and nothing is written.
    @Test func limitsAreEnforced() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var configuration = storeConfiguration(directory)
        configuration.maxKeyBytes = 8
        configuration.maxValueBytes = 16
        let store = try KeyValueStore.open(configuration, logger: quietLogger)
        defer { store.close() }
        await #expect(throws: StoreError(.tooLarge, "")) { try await store.set("123456789", "v") }
        do {
            try await store.set("k", String(repeating: "x", count: 17))
            Issue.record("oversized value accepted")
        } catch let error as StoreError {
            #expect(error.message.contains("max-value-bytes"))
        }
        #expect(store.wal.lastIndex == 0)
    }
}
