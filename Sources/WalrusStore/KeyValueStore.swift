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
    /// A checkpoint running, and the outcome of the last one (a caller that joins a running
    /// checkpoint waits for it here and takes its result).
    private let checkpointing = ConditionLock<(running: Bool, generation: Int, last: Result<CheckpointReport, StoreError>?)>(
        (false, 0, nil))
    /// Keys deleted because they had passed their deadline.
    private let expiredKeyCount = Atomic<Int>(0)
    private let expiredObserver = LockedValue<(@Sendable ([[UInt8]]) -> Void)?>(nil)
    private let observingExpiry = Atomic<Bool>(false)
    /// When the last checkpoint finished (Unix seconds; 0: none since the store opened).
    private let lastCheckpoint = Atomic<Int>(0)
    /// The key count, keys with a deadline, data bytes and applied index as of the last change,
    /// published under the lock so status readers (INFO, STATUS=, metrics) never take it — a
    /// status read from inside a transaction (INFO in a MULTI) cannot deadlock.
    private let publishedCount = Atomic<Int>(0)
    private let publishedExpiring = Atomic<Int>(0)
    private let publishedBytes = Atomic<Int>(0)
    private let publishedApplied = Atomic<UInt64>(0)
    /// Tells a checkpoint the first index some reader (a follower) still needs, if any.
    private let retentionGuard = LockedValue<(@Sendable () -> UInt64?)?>(nil)
    /// The key and value limits in force (max-key-bytes, max-value-bytes; a reload changes them).
    /// Atomics, not a lock: every write reads them (a lock pair per SET, ~60 instructions), and
    /// a reload sets each on its own.
    private let maxKeyLimit: Atomic<Int>
    private let maxValueLimit: Atomic<Int>
    public let logger: Logger
    /// Held by short work (commands, expiry, replication) and closed by a running script: see
    /// `ExclusiveGate`.
    public let gate = ExclusiveGate()

    private init(
        configuration: StoreConfiguration, wal: WriteAheadLog, state: StoreState, recovery: StoreRecoveryReport,
        logger: Logger
    ) {
        self.configuration = configuration
        self.wal = wal
        self.state = LockedValue(state)
        self.maxKeyLimit = Atomic(configuration.maxKeyBytes)
        self.maxValueLimit = Atomic(configuration.maxValueBytes)
        self.recovery = recovery
        self.logger = logger
        self.publish(state)
    }

    /// Publish the state's figures (call under the lock, after every change).
    @inline(__always)
    private func publish(_ state: StoreState) {
        self.publishedCount.store(state.count, ordering: .relaxed)
        self.publishedExpiring.store(state.expiringCount, ordering: .relaxed)
        self.publishedBytes.store(state.map.entryBytes, ordering: .relaxed)
        self.publishedApplied.store(state.appliedIndex, ordering: .relaxed)
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
            },
            // The table slots of the keys a few records ahead load while this one is applied.
            upcoming: { key in state.map.prefetch(key) }, progress: progress)
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
    /// `commit(onDurable:)`, which covers every write made before it. A plain SET clears the
    /// key's deadline, as in Redis.
    @discardableResult
    public func set(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, onDurable: WriteAheadLog.SealCallback? = nil)
        throws -> UInt64
    {
        try self.validate(keyCount: key.count, valueCount: value.count)
        let waiter = self.sealWaiter(onDurable)
        nonisolated(unsafe) let (key, value) = (key, value)
        let index = try self.state.withLock { state throws -> UInt64 in
            let index = try self.appendToLog(op: .set, key: key, value: value, onDurable: waiter)
            state.apply(op: .set, key: key, value: value)
            state.appliedIndex = index
            self.publish(state)
            return index
        }
        if waiter == nil { onDurable?(nil) }
        return index
    }

    /// Start loading what reading or writing the keys `keys` yields will touch: each key's table
    /// slot, then the entry it holds — every one a cache miss in a large map. Issued for a batch
    /// at once, the misses overlap instead of following one another (an event loop calls it with
    /// the keys of every connection it read before running their requests). A hint: it changes
    /// nothing, and prefetches the first 64 keys at most.
    public func prefetch(_ keys: (_ each: (UnsafeRawBufferPointer) -> Void) -> Void) {
        self.state.withLock { state in
            let map = state.map
            withUnsafeTemporaryAllocation(of: UInt64.self, capacity: 64) { hashes in
                // A key's entry is asked for `lag` keys after its slot: by then the slot came.
                let lag = 8
                var count = 0
                keys { key in
                    guard count < hashes.count else { return }
                    let hash = map.hash(key)
                    map.prefetchSlot(hash: hash)
                    hashes[count] = hash
                    count += 1
                    if count > lag { map.prefetchEntry(hash: hashes[count - 1 - lag]) }
                }
                for hash in hashes[max(0, count - lag)..<count] { map.prefetchEntry(hash: hash) }
            }
        }
    }

    /// Delete `key`; returns whether it existed. A missing key writes no record (as Redis's DEL),
    /// and `onDurable` runs at once.
    @discardableResult
    public func delete(key: [UInt8], onDurable: WriteAheadLog.SealCallback? = nil) throws -> Bool {
        let (existed, _) = try self.perform(onDurable: onDurable) { transaction in
            try key.withUnsafeBytes { try transaction.delete($0) }
        }
        return existed
    }

    /// Apply `commands` atomically: one record, sealed whole or not at all, applied in order.
    @discardableResult
    public func apply(batch commands: [StoreCommand], onDurable: WriteAheadLog.SealCallback? = nil) throws -> UInt64 {
        let (_, index) = try self.perform(onDurable: onDurable) { transaction in
            for command in commands {
                switch command {
                case .set(let key, let value): try transaction.set(key, value)
                case .delete(let key): try key.withUnsafeBytes { _ = try transaction.delete($0) }
                }
            }
        }
        return index ?? self.appliedIndex
    }

    /// Run `body` as one transaction under the store's lock: its reads see the map and its own
    /// writes; its writes are logged as one record (a batch when there are several) and applied
    /// when it returns. Returns `body`'s result and the record's index (nil: nothing was written,
    /// and `onDurable` runs at once). If `body` throws, nothing it wrote is logged or applied.
    ///
    /// - Parameters:
    ///   - expiresKeys: a read that finds a key past its deadline deletes it (a primary that
    ///     takes writes; a follower and a paused primary only hide such keys).
    ///   - now: the transaction's clock (ms since the Unix epoch); the wall clock by default.
    public func perform<R>(
        expiresKeys: Bool = true, now: Int64? = nil, onDurable: WriteAheadLog.SealCallback? = nil,
        _ body: (inout StoreTransaction) throws -> R
    ) throws -> (result: R, index: UInt64?) {
        var result: R? = nil
        let index = try self.perform(expiresKeys: expiresKeys, now: now, onDurable: onDurable) { transaction in
            result = try body(&transaction)
        }
        return (result!, index)
    }

    /// `perform` for a body that returns nothing (every command's): the record's index. Not
    /// generic, so nothing in it looks up type metadata at run time — the generic form, called
    /// from another module unspecialized, built its tuples' metadata on every command (~400
    /// instructions per INCR, callgrind).
    public func perform(
        expiresKeys: Bool = true, now: Int64? = nil, onDurable: WriteAheadLog.SealCallback? = nil,
        _ body: (inout StoreTransaction) throws -> Void
    ) throws -> UInt64? {
        let waiter = self.sealWaiter(onDurable)
        let (maxKey, maxValue) = (self.maxKeyBytes, self.maxValueBytes)
        let clock = now ?? wallClockMilliseconds()
        let observer = self.observingExpiry.load(ordering: .relaxed) ? self.expiredObserver.withLock { $0 } : nil
        var expiredNames: [[UInt8]] = []
        let (index, expired) = try self.state.withLock { state throws -> (UInt64?, Int) in
            var transaction = StoreTransaction(
                state: state, now: clock, expiresKeys: expiresKeys, maxKeyBytes: maxKey, maxValueBytes: maxValue)
            transaction.collectsExpired = observer != nil
            try body(&transaction)
            if transaction.collectsExpired { expiredNames = transaction.expiredNames }
            guard let payload = transaction.payload else { return (nil, 0) }
            let index = try self.commit(transaction.writeCount, payload: payload, to: state, onDurable: waiter)
            self.publish(state)
            return (index, transaction.expiredKeys)
        }
        if expired > 0 { self.expiredKeyCount.add(expired, ordering: .relaxed) }
        if let observer, !expiredNames.isEmpty { observer(expiredNames) }
        if index == nil || waiter == nil { onDurable?(nil) }
        return index
    }

    /// Log a transaction's writes as one record and apply them (under the state lock).
    private func commit(
        _ writes: Int, payload: RecordBuffer, to state: StoreState, onDurable: WriteAheadLog.SealCallback?
    ) throws -> UInt64 {
        let index: UInt64
        do {
            if writes == 1 {
                index = try self.wal.append(data: payload.bytes, onSealed: onDurable)
            } else {
                index = try self.wal.append(
                    op: .batch, key: UnsafeRawBufferPointer(start: nil, count: 0), value: payload.bytes, onSealed: onDurable)
            }
        } catch let error as WALError {
            throw StoreError(error)
        }
        var offset = 0
        let bytes = payload.bytes
        while offset < bytes.count {
            let entry = StoreTransaction.decodeEntry(payload, at: offset)
            state.apply(op: entry.op, key: entry.key, value: entry.value)
            offset += RecordFormat.dataHeaderSize + entry.key.count + entry.value.count
        }
        state.appliedIndex = index
        return index
    }

    /// Whether a checkpoint is being written now.
    public var checkpointInProgress: Bool { self.checkpointing.withLock { $0.running } }

    /// When the newest checkpoint was written (Unix seconds; 0 when none was this run), for LASTSAVE.
    public var lastCheckpointSeconds: Int { self.lastCheckpoint.load(ordering: .relaxed) }

    /// Keys deleted because they had passed their deadline, since the store opened.
    public var expiredKeys: Int { self.expiredKeyCount.load(ordering: .relaxed) }

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

    /// The largest value accepted now (max-value-bytes).
    public var maxValueBytes: Int { self.maxValueLimit.load(ordering: .relaxed) }

    /// The largest key accepted now (max-key-bytes).
    public var maxKeyBytes: Int { self.maxKeyLimit.load(ordering: .relaxed) }

    /// Change the key and value limits (reload); writes after this are checked against them.
    public func setLimits(maxKeyBytes: Int, maxValueBytes: Int) {
        self.maxKeyLimit.store(maxKeyBytes, ordering: .relaxed)
        self.maxValueLimit.store(maxValueBytes, ordering: .relaxed)
    }

    private func validate(key: [UInt8], value: [UInt8]) throws {
        try self.validate(keyCount: key.count, valueCount: value.count)
    }

    private func validate(keyCount: Int, valueCount: Int) throws {
        let (maxKey, maxValue) = (self.maxKeyBytes, self.maxValueBytes)
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
    /// the store's lock, so keep it short (copy into a network buffer, say). Not generic, so a GET
    /// costs no generic-metadata lookups. Returns false, without calling `body`, when the key is
    /// there but past its deadline: on a primary the caller deletes it through a transaction; a
    /// follower answers as if it were absent.
    public func readValue(key: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer?) -> Void) -> Bool {
        nonisolated(unsafe) let key = key
        return self.state.withLock { state in
            var live = true
            state.map.readEntry(key) { value, deadline in
                if let deadline, deadline <= wallClockMilliseconds() {
                    live = false
                } else {
                    body(value)
                }
            }
            return live
        }
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
    public var count: Int { self.publishedCount.load(ordering: .relaxed) }

    /// How many keys have a deadline.
    public var expiringCount: Int { self.publishedExpiring.load(ordering: .relaxed) }

    /// Bytes of key and value data held in memory (with an 8-byte header per key).
    public var dataBytes: Int { self.publishedBytes.load(ordering: .relaxed) }

    /// The index of the last record applied in memory.
    public var appliedIndex: UInt64 { self.publishedApplied.load(ordering: .relaxed) }

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
    public func checkpointBlocking(joiningRunning: Bool = false) throws -> CheckpointReport {
        let (busy, generation) = self.checkpointing.withLock { state -> (Bool, Int) in
            defer { state.running = true }
            return (state.running, state.generation)
        }
        if busy {
            guard joiningRunning else {
                throw StoreError(.checkpointRunning, "A checkpoint is already running; wait for it to finish.")
            }
            self.checkpointing.wait(while: { $0.generation == generation }, untilMonotonicNanoseconds: nil)
            switch self.checkpointing.withLock({ $0.last }) {
            case .success(let report): return report
            case .failure(let error): throw error
            case nil: throw StoreError(.checkpointRunning, "A checkpoint ended without a result.")
            }
        }
        var outcome: Result<CheckpointReport, StoreError> = .failure(StoreError(.checkpointRunning, "The checkpoint failed."))
        defer {
            self.checkpointing.withLock { state in
                state.running = false
                state.generation += 1
                state.last = outcome
            }
            self.checkpointing.broadcast()
        }
        do {
            let report = try self.writeCheckpoint()
            outcome = .success(report)
            return report
        } catch let error as StoreError {
            outcome = .failure(error)
            throw error
        } catch let error as WALError {
            outcome = .failure(StoreError(error))
            throw StoreError(error)
        }
    }

    private func writeCheckpoint() throws -> CheckpointReport {
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
        self.lastCheckpoint.store(Int(time(nil)), ordering: .relaxed)
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
        try self.state.withLock { state throws -> R in
            defer { self.publish(state) }
            return try body(state)
        }
    }

    /// Read the state under the store's lock.
    func withStateReading<R: Sendable>(_ body: (StoreState) -> R) -> R {
        self.state.withLock { state -> R in body(state) }
    }

    /// Run `body` on the state under the store's lock.
    func withStateLocked(_ body: (StoreState) -> Void) {
        self.state.withLock { state in body(state) }
    }

    /// Told the names of keys a transaction deleted because they had expired (after it
    /// committed; keyspace notifications). nil: nobody listens, and no name is collected.
    public func setExpiredObserver(_ observer: (@Sendable ([[UInt8]]) -> Void)?) {
        self.expiredObserver.withLock { $0 = observer }
        self.observingExpiry.store(observer != nil, ordering: .relaxed)
    }

    /// Swap in a whole new state (a snapshot from the primary).
    func replaceState(_ fresh: StoreState) {
        self.state.withLock { state in
            // Every watched key may have changed: their EXECs fail (Redis does the same when a
            // replica loads a full sync).
            if let watches = state.watches {
                watches.touchAll { _ in true }
                fresh.watches = watches
            }
            state = fresh
            self.publish(state)
        }
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
