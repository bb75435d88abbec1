#if canImport(Glibc)
import Glibc
#endif
import WALCore

/// What a follower's store does with the primary's records and snapshots.
extension KeyValueStore {
    /// Append the primary's sealed frames (starting at index `firstIndex`) to this node's log
    /// byte for byte and apply them, frame by frame, in one critical section each. Every frame's
    /// magic, length, layout and CRC are checked first; a frame that fails stops the batch with
    /// an error naming the index, and nothing from it on is written. Returns the last index
    /// appended.
    @discardableResult
    public func applyReplicated(frames: UnsafeRawBufferPointer, firstIndex: UInt64, count: Int) throws -> UInt64 {
        nonisolated(unsafe) let frames = frames
        let maxRecord = self.configuration.wal.maxRecordBytes
        // Check every frame first (magic, length, layout, CRC): a bad one stops the batch before
        // anything of it is written.
        var views: [RecordView] = []
        var sizes: [Int] = []
        views.reserveCapacity(count)
        sizes.reserveCapacity(count)
        var position = 0
        while position < frames.count {
            let result = RecordDecoder.decode(frames, at: position, maxRecordBytes: maxRecord)
            guard case .record(let view, let length) = result else {
                throw StoreError(
                    .invalidArgument,
                    "Record \(firstIndex + UInt64(views.count)) from the primary does not check out (\(result)); nothing "
                        + "of its batch was written. The connection is dropped and the follower resumes from its last durable index.")
            }
            views.append(view)
            sizes.append(length)
            position += length
        }
        guard views.count == count else {
            throw StoreError(.invalidArgument, "A batch from the primary announced \(count) records but held \(views.count).")
        }
        nonisolated(unsafe) let checked = views
        let frameSizes = sizes
        // Append and apply in one critical section: readers see the batch whole.
        return try self.withState { state in
            let last: UInt64
            do {
                last = try self.wal.appendFrames(frames, frameSizes: frameSizes, firstIndex: firstIndex)
            } catch let error as WALError {
                throw StoreError(error)
            }
            var index = firstIndex
            var epochs: [MetaFile.EpochStart] = []
            // Keys a few records ahead are prefetched: their table slots load while this one
            // is applied.
            let ahead = 8
            for position in 0..<min(ahead, checked.count) { state.prefetch(checked[position]) }
            for (position, view) in checked.enumerated() {
                if position + ahead < checked.count { state.prefetch(checked[position + ahead]) }
                state.apply(view, index: index)
                if view.op == .epoch { epochs.append(MetaFile.EpochStart(epoch: view.epoch ?? 0, firstIndex: index)) }
                index += 1
            }
            // A new epoch began on the primary: record it in this node's history too.
            if !epochs.isEmpty {
                do {
                    try self.wal.updateMeta { meta in
                        for start in epochs where start.epoch > meta.currentEpoch { meta.epochs.append(start) }
                    }
                } catch let error as WALError {
                    throw StoreError(error)
                }
            }
            return last
        }
    }

    /// Begin epoch `epoch` on this node (a promotion): its epoch record is appended and sealed,
    /// then the history in `meta` records where the epoch starts — both durable before this
    /// returns, so the node never acts as primary of an epoch its disk does not know. Returns the
    /// epoch record's index.
    @discardableResult
    public func beginEpoch(_ epoch: UInt64) throws -> UInt64 {
        let current = self.wal.meta.currentEpoch
        guard epoch > current else {
            throw StoreError(.invalidArgument, "Epoch \(epoch) is not after this node's epoch \(current).")
        }
        let value = RecordEncoder.epochValue(epoch)
        let index = try self.withState { state -> UInt64 in
            let index: UInt64
            do {
                index = try self.wal.append(op: .epoch, key: [], value: value)
            } catch let error as WALError {
                throw StoreError(error)
            }
            state.appliedIndex = index
            return index
        }
        try self.commitBlocking()
        do {
            try self.wal.updateMeta { $0.epochs.append(MetaFile.EpochStart(epoch: epoch, firstIndex: index)) }
        } catch let error as WALError {
            throw StoreError(error)
        }
        return index
    }

    /// Cut this node's history back to `index`: every record after it goes, byte for byte, into
    /// `diverged-<epoch>-<from>-<to>.log` in the data directory (kept, never deleted), snapshots
    /// past it are renamed `….diverged`, and the in-memory state is rebuilt at `index` from the
    /// newest snapshot at or before it and the log. Returns the diverged file's path and how many
    /// records it holds (nil when there was nothing past `index`).
    public func truncate(after index: UInt64) throws -> (path: String, records: UInt64)? {
        let directory = self.configuration.directory
        let last = self.wal.lastIndex
        guard index < last else { return nil }
        let firstIndex = self.wal.firstIndex
        let epoch = EpochHistory.epoch(at: index + 1, in: self.wal.meta.epochs) ?? self.wal.meta.currentEpoch
        let path = FileIO.join(directory, "diverged-\(epoch)-\(index + 1)-\(last).log")

        // The state at the cut is rebuilt from the newest readable snapshot at or before it; find
        // it before anything changes, so a node that cannot rebuild refuses instead of serving a
        // state that still holds the diverged records.
        var base: (index: UInt64, state: StoreState)?
        for snapshot in try FileIO.listDirectory(directory).compactMap(SnapshotName.parse).filter({ $0 <= index }).sorted(by: >) {
            let snapshotPath = FileIO.join(directory, SnapshotName.format(snapshot))
            do {
                let (header, loaded) = try SnapshotFile.read(path: snapshotPath)
                base = (header.index, loaded)
                break
            } catch {
                self.logger.warning(
                    "Skipping an unusable snapshot while cutting the log", metadata: ["store.snapshot": "\(snapshotPath)", "store.error": "\(error)"])
            }
        }
        let cutInsideLog = index + 1 >= firstIndex
        if cutInsideLog && firstIndex > 1 && (base?.index ?? 0) + 1 < firstIndex {
            throw StoreError(
                .invalidArgument,
                "Cannot cut this node's log back to \(index): the log starts at \(firstIndex) and no readable snapshot covers "
                    + "the records before it, so the state at \(index) cannot be rebuilt. Nothing was changed. Move this "
                    + "data directory aside and start the node empty: it gets a snapshot from the primary.")
        }
        let moved: UInt64
        do {
            if cutInsideLog {
                moved = try self.wal.truncate(after: index, divergedPath: path)
            } else {
                // The cut is before this log's start: keep every record aside, then restart the
                // log after the base snapshot (or empty; the primary sends the rest).
                moved = try self.wal.truncate(after: firstIndex - 1, divergedPath: path)
                try self.wal.restart(after: base?.index ?? 0)
            }
        } catch let error as WALError {
            throw StoreError(error)
        }
        for name in try FileIO.listDirectory(directory) {
            if let snapshot = SnapshotName.parse(name), snapshot > index {
                let from = FileIO.join(directory, name)
                guard rename(from, from + ".diverged") == 0 else {
                    throw StoreError(.invalidArgument, "Cannot rename \(from) aside: \(FileIO.describe(errno)).")
                }
            }
        }
        try FileIO.fsyncDirectory(directory)
        let state = base?.state ?? StoreState()
        let start = (base?.index ?? 0) + 1
        if start <= self.wal.lastIndex {
            try WALCursor(wal: self.wal, from: start).forEach { recordIndex, view in state.apply(view, index: recordIndex) }
        }
        state.appliedIndex = self.wal.lastIndex
        self.replaceState(state)
        return (path, moved)
    }

    /// Make room for `keys` keys at once (a follower about to receive that many; saves the
    /// table's step-by-step growth).
    public func reserve(keys: Int) {
        _ = self.withStateReading { state in
            if keys > state.count { state.map.reserve(keys) }
            return 0
        }
    }

    /// Replace the whole state with the snapshot at `path` (already durable in the data
    /// directory) and restart the log after its index. Used by a follower bootstrapped from the
    /// primary's snapshot. Returns the snapshot's header.
    @discardableResult
    public func installSnapshot(path: String) throws -> SnapshotFile.Header {
        let (header, loaded) = try SnapshotFile.read(path: path)
        try self.wal.restart(after: header.index)
        try self.wal.updateMeta { meta in meta.epochs = header.epochs.isEmpty ? meta.epochs : header.epochs }
        loaded.appliedIndex = header.index
        self.replaceState(loaded)
        return header
    }

    /// An order-independent checksum of every key, value and deadline: equal on two nodes exactly when
    /// they hold the same state (with overwhelming probability). O(n); runs under the lock at one
    /// index, which it returns with the digest.
    public func digest() -> (index: UInt64, keys: Int, digest: String) {
        self.withStateReading { state in Self.digest(of: state) }
    }

    static func digest(of state: StoreState) -> (index: UInt64, keys: Int, digest: String) {
        do {
            var sum: UInt64 = 0
            var mixed: UInt64 = 0
            let hasher = KeyHasher(k0: 0x7761_6C72_7573_2D64, k1: 0x6967_6573_742D_7631)  // "walrus-d" "igest-v1"
            state.map.forEachEntry { key, value, deadline in
                let h1 = hasher.hash(key) &* 0x9E37_79B9_7F4A_7C15
                var h2 = hasher.hash(value)
                // A deadline is part of the state (two nodes that disagree on it disagree on when
                // the key goes); keys without one hash as before deadlines existed.
                if let deadline { h2 ^= (UInt64(bitPattern: deadline) &+ 0x2545_F491_4F6C_DD1D) &* 0xD6E8_FEB8_6659_FD93 }
                let entry = (h1 ^ (h2 &+ 0x632B_E59B_D9B4_E019)) &* 0xBF58_476D_1CE4_E5B9
                sum &+= entry
                mixed ^= (entry ^ (entry >> 31)) &* 0x94D0_49BB_1331_11EB
            }
            let text = String(sum, radix: 16).leftPadded(16) + String(mixed, radix: 16).leftPadded(16)
            return (state.appliedIndex, state.count, text)
        }
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String {
        String(repeating: "0", count: max(0, width - self.count)) + self
    }
}
