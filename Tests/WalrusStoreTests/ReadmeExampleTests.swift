import Logging
import Testing
import WALCore
import WalrusStore
import WalrusTestKit

/// The embedding example from the README, run as written (only the directory differs).
struct ReadmeExampleTests {
    @Test func embeddingExampleRuns() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let dataDirectory = directory.path

        // --- README example begins ---
        var configuration = StoreConfiguration(directory: dataDirectory)
        configuration.wal.fsyncMode = .interval(milliseconds: 100)  // the original's mode; .always is the default
        configuration.wal.segmentSizeBytes = 10 * 1024 * 1024

        let store = try KeyValueStore.open(configuration, logger: Logger(label: "app"))  // recovers
        try await store.set("user", "alice")
        try await store.batch([.set("a", "1"), .set("b", "2"), .delete("user")])  // one record, all or nothing
        let value = store.get("a")  // "1"
        try await store.commit()  // seal everything now
        try store.checkpointBlocking()  // snapshot, then drop log segments it covers
        store.close()
        // --- README example ends ---

        #expect(value == "1")
        let reopened = try KeyValueStore.open(configuration, logger: Logger(label: "app"))
        defer { reopened.close() }
        #expect(reopened.get("b") == "2" && !reopened.has("user"))
    }
}
