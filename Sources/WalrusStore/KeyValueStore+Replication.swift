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
        return try self.withState { state in
            var position = 0
            var index = firstIndex
            var applied = 0
            while position < frames.count {
                guard case .record(let view, let length) = RecordDecoder.decode(frames, at: position, maxRecordBytes: maxRecord)
                else {
                    let result = RecordDecoder.decode(frames, at: position, maxRecordBytes: maxRecord)
                    throw StoreError(
                        .invalidArgument,
                        "Record \(index) from the primary does not check out (\(result)); it was not written. "
                            + "The connection is dropped and the follower resumes from its last durable index.")
                }
                do {
                    try self.wal.appendFrame(view.frame, index: index)
                } catch let error as WALError {
                    throw StoreError(error)
                }
                state.apply(view, index: index)
                position += length
                index += 1
                applied += 1
            }
            guard applied == count else {
                throw StoreError(
                    .invalidArgument, "A batch from the primary announced \(count) records but held \(applied).")
            }
            return index - 1
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

    /// An order-independent checksum of every key and value: equal on two nodes exactly when
    /// they hold the same state (with overwhelming probability). O(n); runs under the lock at one
    /// index, which it returns with the digest.
    public func digest() -> (index: UInt64, keys: Int, digest: String) {
        self.withStateReading { state in
            var sum: UInt64 = 0
            var mixed: UInt64 = 0
            let hasher = KeyHasher(k0: 0x7761_6C72_7573_2D64, k1: 0x6967_6573_742D_7631)  // "walrus-d" "igest-v1"
            state.map.forEach { key, value in
                let h1 = hasher.hash(key) &* 0x9E37_79B9_7F4A_7C15
                let h2 = hasher.hash(value)
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
