public import WALCore

/// The in-memory key-value state and the index of the last record applied to it.
///
/// - Important: not thread-safe; `KeyValueStore` guards it with its lock.
public final class StoreState: @unchecked Sendable {
    /// The keys and values.
    let map: CompactMap
    /// The index of the last record applied.
    public internal(set) var appliedIndex: UInt64 = 0
    /// The buffer every transaction encodes its writes into, emptied at its first write: one per
    /// transaction was two allocations per write command. Transactions run one at a time, under
    /// the store's lock, and the log copies the record out before the transaction ends.
    let scratch = RecordBuffer(capacity: 4096)

    /// An empty state with room for `capacity` keys.
    public init(capacity: Int = 16) { self.map = CompactMap(capacity: capacity) }

    /// How many keys.
    public var count: Int { self.map.count }

    /// Apply one decoded record (recovery, replication, and a live write after its append: one
    /// code path, so replay gives exactly the state the writes made). Epoch records carry no data.
    @inline(__always)
    public func apply(_ record: RecordView, index: UInt64) {
        if record.op == .batch {
            record.forEachBatchEntry { op, key, value in self.apply(op: op, key: key, value: value) }
        } else {
            self.apply(op: record.op, key: record.key, value: record.value)
        }
        self.appliedIndex = index
    }

    /// Start loading what applying `record` will touch first (see `CompactMap.prefetch`).
    @inline(__always)
    func prefetch(_ record: RecordView) {
        if record.op != .batch && record.op != .epoch { self.map.prefetch(record.key) }
    }

    /// Apply one operation. Replay expires nothing: a key past its deadline stays until a primary
    /// logs its delete (so every node, snapshot and recovery agrees on when it went).
    @inline(__always)
    func apply(op: RecordOp, key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        let changed: Bool
        switch op {
        case .set:
            self.map.set(key, value)
            changed = true
        case .delete:
            changed = self.map.remove(key)
        case .setExpiring:
            let deadline = Int64(bitPattern: loadBigEndian64(value))
            self.map.set(key, UnsafeRawBufferPointer(rebasing: value[8...]), deadline: deadline)
            changed = true
        case .expireAt:
            changed = self.map.setDeadline(key, Int64(bitPattern: loadBigEndian64(value)))
        case .persist:
            changed = self.map.setDeadline(key, nil)
        case .flushAll:
            if let watches = self.watches, !watches.isEmpty {
                watches.touchAll { key in key.bytes.withUnsafeBytes { self.map.contains($0) } }
            }
            self.map.removeAll()
            changed = false
        default:
            changed = false
        }
        if changed, let watches = self.watches, !watches.isEmpty { watches.touch(op: op, key: key) }
    }

    /// Clients watching keys (MULTI/WATCH); nil until the first WATCH.
    var watches: WatchRegistry?

    /// The value of `key`, copied.
    public func value(for key: [UInt8]) -> [UInt8]? {
        key.withUnsafeBytes { k in self.map.withValue(k) { $0.map { Array($0) } } }
    }

    /// Keys with a deadline.
    public var expiringCount: Int { self.map.expiring.count }

    /// Every key and value, copied into a dictionary (tests and tools; O(n)).
    public func dictionary() -> [ByteKey: [UInt8]] {
        var result: [ByteKey: [UInt8]] = [:]
        result.reserveCapacity(self.map.count)
        self.map.forEach { key, value in result[ByteKey(Array(key))] = Array(value) }
        return result
    }
}

@inline(__always)
func loadBigEndian64(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    UInt64(bigEndian: bytes.loadUnaligned(as: UInt64.self))
}
