import Testing
import WALCore
@testable import WalrusStore
import WalrusTestKit

/// Checkpoints: snapshot files, recovery from them, retention of the log behind them.
struct SnapshotTests {
    /// A checkpoint writes snapshot-<index>.snap; recovery loads it and replays only what follows.
    @Test func recoveryLoadsSnapshotThenReplaysTheRest() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let configuration = storeConfiguration(directory)
        var store = try KeyValueStore.open(configuration, logger: quietLogger)
        for i in 0..<100 { try await store.set("key-\(i)", "value-\(i)") }
        let report = try store.checkpointBlocking()
        #expect(report.index == 100)
        #expect(directory.names().contains("snapshot-100.snap"))
        for i in 100..<110 { try await store.set("key-\(i)", "value-\(i)") }
        try await store.delete("key-0")
        store.close()
        store = try KeyValueStore.open(configuration, logger: quietLogger)
        defer { store.close() }
        #expect(store.recovery.snapshotIndex == 100)
        #expect(store.recovery.wal.replayed == 11)
        #expect(store.count == 109)
        #expect(store.get("key-105") == "value-105" && !store.has("key-0"))
    }

    /// With a zero retention budget, segments wholly covered by the snapshot are deleted, `meta`
    /// records the new start, and recovery still has everything.
    @Test func retentionDeletesCoveredSegments() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var configuration = storeConfiguration(directory, segmentSize: 1024)
        configuration.retention = .init(keepBytes: 0, keepSeconds: 0)
        var store = try KeyValueStore.open(configuration, logger: quietLogger)
        for i in 0..<200 { try await store.set("key-\(i)", "value-\(i)") }
        let segmentsBefore = directory.names().filter { $0.hasPrefix("wal-") }
        let report = try store.checkpointBlocking()
        #expect(!report.removedSegments.isEmpty)
        let segmentsAfter = directory.names().filter { $0.hasPrefix("wal-") }
        #expect(segmentsAfter.count < segmentsBefore.count)
        #expect(!segmentsAfter.contains("wal-0001.log"))
        for i in 200..<220 { try await store.set("key-\(i)", "value-\(i)") }
        store.close()
        store = try KeyValueStore.open(configuration, logger: quietLogger)
        defer { store.close() }
        #expect(store.count == 220)
        #expect(store.get("key-0") == "value-0")
        #expect(store.wal.firstIndex > 1)
        #expect(store.appliedIndex == 220)
    }

    /// A retention budget keeps recent covered segments.
    @Test func retentionBudgetKeepsRecentSegments() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var configuration = storeConfiguration(directory, segmentSize: 1024)
        configuration.retention = .init(keepBytes: 1 << 30, keepSeconds: 3600)
        let store = try KeyValueStore.open(configuration, logger: quietLogger)
        defer { store.close() }
        for i in 0..<200 { try await store.set("key-\(i)", "value-\(i)") }
        let report = try store.checkpointBlocking()
        #expect(report.removedSegments.isEmpty)
        #expect(directory.names().contains("wal-0001.log"))
    }

    /// A damaged newest snapshot is skipped with a warning; recovery falls back to the older one
    /// (kept for this) and the log, and loses nothing.
    @Test func damagedNewestSnapshotFallsBack() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let configuration = storeConfiguration(directory)
        var store = try KeyValueStore.open(configuration, logger: quietLogger)
        for i in 0..<50 { try await store.set("key-\(i)", "value-\(i)") }
        try store.checkpointBlocking()
        for i in 50..<80 { try await store.set("key-\(i)", "value-\(i)") }
        try store.checkpointBlocking()
        store.close()
        var bytes = TestFiles.read(directory.file("snapshot-80.snap"))
        bytes[bytes.count / 2] ^= 0xFF
        TestFiles.write(directory.file("snapshot-80.snap"), bytes)
        let capture = LogCapture()
        store = try KeyValueStore.open(configuration, logger: capture.logger())
        defer { store.close() }
        #expect(store.recovery.snapshotIndex == 50)
        #expect(store.count == 80)
        #expect(store.recovery.skippedSnapshots.count == 1)
        #expect(capture.entries.contains { $0.level == .warning && ($0.metadata["store.snapshot"] ?? "").contains("snapshot-80.snap") })
    }

    /// Only the configured number of snapshots is kept.
    @Test func oldSnapshotsAreRemoved() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try KeyValueStore.open(storeConfiguration(directory), logger: quietLogger)
        defer { store.close() }
        for round in 1...4 {
            try await store.set("k\(round)", "v")
            try store.checkpointBlocking()
        }
        #expect(directory.names().filter { $0.hasSuffix(".snap") } == ["snapshot-3.snap", "snapshot-4.snap"])
    }
}
