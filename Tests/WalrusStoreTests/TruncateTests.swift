import Testing
import WALCore
@testable import WalrusStore
import WalrusTestKit

/// Cutting a node's history back (a former primary rejoining): records past the cut are kept in a
/// diverged file, the state is rebuilt at the cut, and a cut that cannot be rebuilt changes nothing.
struct TruncateTests {
    @Test func cutKeepsTheRestAsideAndRebuildsTheState() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let configuration = storeConfiguration(directory, segmentSize: 1024)
        var store = try KeyValueStore.open(configuration, logger: quietLogger)
        for i in 0..<60 { try await store.set("key-\(i)", "value-\(i)") }
        try store.checkpointBlocking()  // snapshot at 60: the base for a cut at 80
        for i in 60..<100 { try await store.set("key-\(i)", "value-\(i)") }
        try await store.set("key-0", "overwritten")
        let moved = try #require(try store.truncate(after: 80))
        #expect(moved.records == 21 && moved.path.hasSuffix("diverged-1-81-101.log"))
        #expect(store.count == 80 && store.get("key-0") == "value-0" && !store.has("key-80"))
        #expect(store.wal.lastIndex == 80 && store.appliedIndex == 80)
        var dumped: [String] = []
        _ = try WALInspector.dump(file: moved.path, range: 1...UInt64.max) { _, record in dumped.append(String(decoding: record.key, as: UTF8.self)) }
        #expect(dumped.count == 21 && dumped.first == "key-80" && dumped.last == "key-0")
        // The cut log recovers to the same state, and appends continue at 81.
        store.close()
        store = try KeyValueStore.open(configuration, logger: quietLogger)
        defer { store.close() }
        #expect(store.count == 80 && store.get("key-0") == "value-0")
        #expect(try store.set(key: Array("next".utf8), value: []) == 81)
    }

    @Test func cutThatCannotBeRebuiltChangesNothing() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var configuration = storeConfiguration(directory, segmentSize: 1024)
        configuration.retention = .init(keepBytes: 0, keepSeconds: 0)
        let store = try KeyValueStore.open(configuration, logger: quietLogger)
        defer { store.close() }
        for i in 0..<200 { try await store.set("key-\(i)", "value-\(i)") }
        let checkpoint = try store.checkpointBlocking()
        #expect(store.wal.firstIndex > 1)
        for i in 200..<210 { try await store.set("key-\(i)", "value-\(i)") }
        try FileIO.remove(checkpoint.path)  // the only snapshot covering the log's start is gone
        #expect(throws: StoreError.self) { try store.truncate(after: 205) }
        #expect(store.wal.lastIndex == 210 && store.count == 210)
        #expect(!directory.names().contains { $0.hasPrefix("diverged-") })
    }
}
