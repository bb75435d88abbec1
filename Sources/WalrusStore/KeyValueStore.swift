#if canImport(Glibc)
import Glibc
#endif
public import Logging
import Synchronization
public import WALCore

/// The key-value store: an in-memory map whose every change is a record in the write-ahead log.
///
/// A write validates, appends its record and applies it to the map inside one critical section,
/// so the index order of the log is exactly the order the map saw (the original appended and
/// applied under different locks, so two SETs of one key could replay in the other order).
/// The caller's acknowledgement then waits for the durability the fsync mode promises.
public final class KeyValueStore: Sendable {
    /// How the store was opened.
    public let configuration: StoreConfiguration
    /// The log under the store.
    public let wal: WriteAheadLog
    /// What recovery did.
    public let recovery: StoreRecoveryReport
    private let state: LockedValue<StoreState>
    private let checkpointing = LockedValue<Bool>(false)
    /// Tells a checkpoint the first index some reader (a follower) still needs, if any.
    private let retentionGuard = LockedValue<(@Sendable () -> UInt64?)?>(nil)
    /// Key and value limits in force (a reload can change them).
    private let limits: LockedValue<(key: Int, value: Int)>
    let logger: Logger

    private init(
        configuration: StoreConfiguration, wal: WriteAheadLog, state: StoreState, recovery: StoreRecoveryReport,
        logger: Logger
    ) {
        self.configuration = configuration
        self.wal = wal
        self.state = LockedValue(state)
        self.limits = LockedValue((configuration.maxKeyBytes, configuration.maxValueBytes))
        self.recovery = recovery
        self.logger = logger
    }

    /// Open a data directory and recover: the newest valid snapshot, then the log after it.
    ///
    /// A snapshot that fails its checks is reported and skipped for the one before it (or the full
    /// log). A torn final record is cut and kept; any other damage throws with the fix.
    public static func open(
        _ configuration: StoreConfiguration,
        logger: Logger,
        progress: ((RecoveryProgress) -> Void)? = nil
    ) throws -> KeyValueStore {
        let directory = configuration.directory
        try FileIO.makeDirectories(directory)
        let lock = try DirectoryLock(directory: directory)

        var report = StoreRecoveryReport()
        var state = StoreState()
        var snapshotIndexes: [UInt64] = []
        for name in try FileIO.listDirectory(directory) {
            if let index = SnapshotName.parse(name) { snapshotIndexes.append(index) }
            if name.hasSuffix(".snap.tmp") {
                // An interrupted checkpoint; the rename never happened, so it holds nothing we need.
                try FileIO.remove(FileIO.join(directory, name))
            }
        }
        for index in snapshotIndexes.sorted(by: >) {
            let path = FileIO.join(directory, SnapshotName.format(index))
            do {
                let (header, loaded) = try SnapshotFile.read(path: path)
                guard header.index == index else {
                    throw StoreError(.badSnapshot, "The snapshot \(path) holds index \(header.index), not \(index).")
                }
                state = loaded
                report.snapshotIndex = index
                report.snapshotKeys = Int(header.entryCount)
                break
            } catch {
                report.skippedSnapshots.append("\(path): \(error)")
                logger.warning(
                    "Skipping an unusable snapshot", metadata: ["store.snapshot": "\(path)", "store.error": "\(error)"])
            }
        }

        let snapshotIndex = report.snapshotIndex ?? 0
        // Size the table once instead of growing it ~20 times (each growth re-reads every entry):
        // after the first records, estimate how many the log holds from their average size.
        var logBytes = 0
        for name in try FileIO.listDirectory(directory) where SegmentName.parse(name) != nil {
            logBytes += Int(FileIO.fileStatus(FileIO.join(directory, name))?.size ?? 0)
        }
        var sampled = 0
        var sampledBytes = 0
        let wal = try WriteAheadLog.open(
            configuration.wal, logger: logger, directoryLock: lock, replayAfter: snapshotIndex,
            replay: { index, record in
                if sampled < 4096 {
                    sampled += 1
                    sampledBytes += record.frame.count
                    if sampled == 4096 { state.map.reserve(state.count + logBytes / max(sampledBytes / sampled, 1)) }
                }
                state.apply(record, index: index)
            }, progress: progress)
        // A log of overwrites holds far fewer keys than records: give back an oversized table.
        state.map.shrinkIfSparse()
        state.appliedIndex = max(state.appliedIndex, wal.lastIndex)
        report.wal = wal.recoveryReport
        report.keys = state.count
        return KeyValueStore(configuration: configuration, wal: wal, state: state, recovery: report, logger: logger)
    }

    // MARK: Writes (callback form; the daemon uses these from its event loops)

    /// Set `key` to `value`; returns the record's index. `onDurable` runs once the write is as
    /// durable as the fsync mode promises (at once in interval mode).
    @discardableResult
    public func set(key: [UInt8], value: [UInt8], onDurable: WriteAheadLog.SealCallback? = nil) throws -> UInt64 {
        try key.withUnsafeBytes { k in try value.withUnsafeBytes { v in try self.set(key: k, value: v, onDurable: onDurable) } }
    }

    /// `set` from borrowed bytes (the server's pipelined path copies nothing but the log record
    /// and the map entry). Without `onDurable`, an `always`-mode caller learns durability from
    /// `commit(onDurable:)`, which covers every write made before it.
    @discardableResult
    public func set(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, onDurable: WriteAheadLog.SealCallback? = nil)
        throws -> UInt64
    {
        try self.validate(keyCount: key.count, valueCount: value.count)
        let waiter = self.sealWaiter(onDurable)
        nonisolated(unsafe) let (key, value) = (key, value)
        let index = try self.state.withLock { state throws -> UInt64 in
            let index = try self.appendToLog(op: .set, key: key, value: value, onDurable: waiter)
            state.map.set(key, value)
            state.appliedIndex = index
            return index
        }
        if waiter == nil { onDurable?(nil) }
        return index
    }

    /// Delete `key`; returns whether it existed. A missing key writes no record (as Redis's DEL),
    /// and `onDurable` runs at once.
    @discardableResult
    public func delete(key: [UInt8], onDurable: WriteAheadLog.SealCallback? = nil) throws -> Bool {
        try self.validate(key: key, value: [])
        let waiter = self.sealWaiter(onDurable)
        let existed = try self.state.withLock { state throws -> Bool in
            guard key.withUnsafeBytes({ state.map.contains($0) }) else { return false }
            let index = try key.withUnsafeBytes { k in
                try self.appendToLog(op: .delete, key: k, value: UnsafeRawBufferPointer(start: nil, count: 0), onDurable: waiter)
            }
            key.withUnsafeBytes { _ = state.map.remove($0) }
            state.appliedIndex = index
            return true
        }
        if !existed || waiter == nil { onDurable?(nil) }
        return existed
    }

    /// Apply `commands` atomically: one record, sealed whole or not at all, applied in order.
    @discardableResult
    public func apply(batch commands: [StoreCommand], onDurable: WriteAheadLog.SealCallback? = nil) throws -> UInt64 {
        guard !commands.isEmpty else {
            onDurable?(nil)
            return self.state.withLock { $0.appliedIndex }
        }
        var payloadSize = 0
        for command in commands {
            switch command {
            case .set(let key, let value):
                try self.validate(key: key, value: value)
                payloadSize += RecordEncoder.dataSize(keyCount: key.count, valueCount: value.count)
            case .delete(let key):
                try self.validate(key: key, value: [])
                payloadSize += RecordEncoder.dataSize(keyCount: key.count, valueCount: 0)
            }
        }
        let payload = RecordBuffer(capacity: payloadSize)
        for command in commands {
            let (op, key, value): (RecordOp, [UInt8], [UInt8]) =
                switch command {
                case .set(let key, let value): (.set, key, value)
                case .delete(let key): (.delete, key, [])
                }
            key.withUnsafeBytes { k in
                value.withUnsafeBytes { v in
                    let destination = payload.reserve(RecordEncoder.dataSize(keyCount: k.count, valueCount: v.count))
                    payload.commit(RecordEncoder.writeData(op: op, key: k, value: v, to: destination))
                }
            }
        }
        let waiter = self.sealWaiter(onDurable)
        let index = try self.state.withLock { state throws -> UInt64 in
            let index = try self.appendToLog(
                op: .batch, key: UnsafeRawBufferPointer(start: nil, count: 0), value: payload.bytes, onDurable: waiter)
            for command in commands {
                switch command {
                case .set(let key, let value):
                    key.withUnsafeBytes { k in value.withUnsafeBytes { v in state.map.set(k, v) } }
                case .delete(let key):
                    key.withUnsafeBytes { _ = state.map.remove($0) }
                }
            }
            state.appliedIndex = index
            return index
        }
        if waiter == nil { onDurable?(nil) }
        return index
    }

    /// In `always` mode the caller waits for the seal; in `interval` mode it is acknowledged at once
    /// (the original's behaviour) and the write is sealed within one period.
    private func sealWaiter(_ onDurable: WriteAheadLog.SealCallback?) -> WriteAheadLog.SealCallback? {
        guard let onDurable, self.configuration.wal.fsyncMode == .always else { return nil }
        // (The mode itself never changes while running; only the interval does.)
        return onDurable
    }

    private func appendToLog(
        op: RecordOp, key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, onDurable: WriteAheadLog.SealCallback?
    ) throws -> UInt64 {
        do {
            return try self.wal.append(op: op, key: key, value: value, onSealed: onDurable)
        } catch let error as WALError {
            throw StoreError(error)
        }
    }

    /// Change the key and value limits (reload); writes after this are checked against them.
    public func setLimits(maxKeyBytes: Int, maxValueBytes: Int) {
        self.limits.withLock { $0 = (maxKeyBytes, maxValueBytes) }
    }

    private func validate(key: [UInt8], value: [UInt8]) throws {
        try self.validate(keyCount: key.count, valueCount: value.count)
    }

    private func validate(keyCount: Int, valueCount: Int) throws {
        let (maxKey, maxValue) = self.limits.withLock { $0 }
        if keyCount > maxKey {
            throw StoreError(.tooLarge, "The key is \(keyCount) bytes; the limit is \(maxKey) (max-key-bytes).")
        }
        if valueCount > maxValue {
            throw StoreError(.tooLarge, "The value is \(valueCount) bytes; the limit is \(maxValue) (max-value-bytes).")
        }
    }

    // MARK: Reads (may see a write a moment before it is sealed, as on Redis)

    /// The value of `key`, if set.
    public func get(key: [UInt8]) -> [UInt8]? {
        self.state.withLock { $0.value(for: key) }
    }

    /// Run `body` with the value's bytes (nil if unset) without copying them; `body` runs under
    /// the store's lock, so keep it short (copy into a network buffer, say).
    /// The same without a result: not generic, so a GET costs no generic-metadata lookups.
    public func readValue(key: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer?) -> Void) {
        nonisolated(unsafe) let key = key
        self.state.withLock { state in state.map.readValue(key, body) }
    }

    public func withValue<R: Sendable>(key: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer?) throws -> R) rethrows -> R {
        // The pointer is only read inside the lock; it does not escape.
        nonisolated(unsafe) let key = key
        return try self.state.withLock { state in try state.map.withValue(key, body) }
    }

    /// Whether `key` is set.
    public func has(key: [UInt8]) -> Bool {
        self.state.withLock { state in key.withUnsafeBytes { state.map.contains($0) } }
    }

    /// Every key, in no particular order.
    public func keys() -> [ByteKey] {
        self.state.withLock { state in
            var keys: [ByteKey] = []
            keys.reserveCapacity(state.count)
            state.map.forEach { key, _ in keys.append(ByteKey(Array(key))) }
            return keys
        }
    }

    /// How many keys.
    public var count: Int { self.state.withLock { $0.count } }

    /// Bytes of key and value data held in memory (with an 8-byte header per key).
    public var dataBytes: Int { self.state.withLock { $0.map.entryBytes } }

    /// The index of the last record applied in memory.
    public var appliedIndex: UInt64 { self.state.withLock { $0.appliedIndex } }

    /// Every key and value, copied into a dictionary at one consistent point (tests and tools; O(n)).
    public func dictionaryCopy() -> [ByteKey: [UInt8]] { self.state.withLock { $0.dictionary() } }

    // MARK: Durability

    /// Seal every write made so far; `onDurable` runs once they are durable.
    public func commit(onDurable: @escaping WriteAheadLog.SealCallback) {
        self.wal.commit(onSealed: onDurable)
    }

    /// Write `snapshot-<index>.snap` for the current state, then delete what it makes redundant:
    /// older snapshots beyond `snapshotsToKeep`, and log segments outside the retention budget.
    /// Returns the snapshot's index. Blocks the calling thread for the write; call it off any
    /// event loop.
    @discardableResult
    public func checkpointBlocking() throws -> CheckpointReport {
        let busy = self.checkpointing.withLock { busy -> Bool in
            defer { busy = true }
            return busy
        }
        guard !busy else {
            throw StoreError(.invalidArgument, "A checkpoint is already running; wait for it to finish.")
        }
        defer { self.checkpointing.withLock { $0 = false } }

        let started = monotonicNanoseconds()
        // Freeze the map at one index: a copy of its slot array; writes go on meanwhile.
        let (frozen, index) = self.state.withLock { state in (state.map.openSnapshot(), state.appliedIndex) }
        defer { self.state.withLock { $0.map.closeSnapshot() } }
        // The snapshot must never cover a record the log could still lose.
        try self.waitForSeal()
        let epochs = self.wal.meta.epochs
        let written = try SnapshotFile.write(
            count: frozen.count, entries: frozen.forEach, index: index, epochs: epochs,
            directory: self.configuration.directory)
        var report = CheckpointReport(index: index, path: written.path, bytes: written.bytes, keys: frozen.count)

        // Older snapshots beyond the number to keep.
        let indexes = try FileIO.listDirectory(self.configuration.directory).compactMap(SnapshotName.parse).sorted(by: >)
        for index in indexes.dropFirst(max(self.configuration.snapshotsToKeep, 1)) {
            try FileIO.remove(FileIO.join(self.configuration.directory, SnapshotName.format(index)))
            report.removedSnapshots.append(SnapshotName.format(index))
        }
        // Followers may still need records the snapshot covers: keep the log from their floor.
        var covered = index
        if let floor = self.retentionGuard.withLock({ $0 })?(), floor > 0 { covered = min(covered, floor - 1) }
        report.removedSegments = try self.wal.removeSegments(
            coveredBy: covered, policy: self.configuration.retention, nowSeconds: Int64(time(nil)))
        report.nanoseconds = monotonicNanoseconds() - started
        self.logger.info(
            "Checkpoint written",
            metadata: [
                "store.snapshot": "\(written.path)", "store.index": "\(index)", "store.keys": "\(frozen.count)",
                "store.bytes": "\(written.bytes)", "store.ms": "\(report.nanoseconds / 1_000_000)",
            ])
        return report
    }

    private func waitForSeal() throws {
        try self.commitBlocking()
    }

    /// Keep the log from the index `floor` returns (if any) when a checkpoint removes segments
    /// (replication passes its slowest follower's position).
    public func setRetentionGuard(_ floor: @escaping @Sendable () -> UInt64?) {
        self.retentionGuard.withLock { $0 = floor }
    }

    /// Run `body` on the state under the store's lock (replication applies records here).
    func withState<R: Sendable>(_ body: (StoreState) throws -> R) throws -> R {
        try self.state.withLock { state throws -> R in try body(state) }
    }

    /// Read the state under the store's lock.
    func withStateReading<R: Sendable>(_ body: (StoreState) -> R) -> R {
        self.state.withLock { state -> R in body(state) }
    }

    /// Swap in a whole new state (a snapshot from the primary).
    func replaceState(_ fresh: StoreState) {
        self.state.withLock { $0 = fresh }
    }

    /// Seal everything and close the log (and release the directory).
    public func close() {
        self.wal.close()
    }
}

/// What recovery found.
public struct StoreRecoveryReport: Sendable {
    /// The snapshot loaded, if any.
    public var snapshotIndex: UInt64?
    /// Keys it held.
    public var snapshotKeys = 0
    /// Snapshots that failed their checks, with why.
    public var skippedSnapshots: [String] = []
    /// What the log's recovery found.
    public var wal = RecoveryReport()
    /// Keys after recovery.
    public var keys = 0
}

/// What a checkpoint did.
public struct CheckpointReport: Sendable {
    /// The snapshot's index.
    public var index: UInt64
    /// Its path.
    public var path: String
    /// Its size.
    public var bytes: Int64
    /// Keys in it.
    public var keys: Int
    /// Older snapshots removed.
    public var removedSnapshots: [String] = []
    /// Log segments removed.
    public var removedSegments: [String] = []
    /// Time taken.
    public var nanoseconds: UInt64 = 0
}
