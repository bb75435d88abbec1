public import WALCore

/// The in-memory key-value state and the index of the last record applied to it.
///
/// - Important: not thread-safe; `KeyValueStore` guards it with its lock.
public final class StoreState: @unchecked Sendable {
    /// The keys and values.
    let map: CompactMap
    /// The index of the last record applied.
    public internal(set) var appliedIndex: UInt64 = 0

    /// An empty state with room for `capacity` keys.
    public init(capacity: Int = 16) { self.map = CompactMap(capacity: capacity) }

    /// How many keys.
    public var count: Int { self.map.count }

    /// Apply one decoded record (recovery and, later, replication). Epoch records carry no data.
    @inline(__always)
    public func apply(_ record: RecordView, index: UInt64) {
        switch record.op {
        case .set:
            self.map.set(record.key, record.value)
        case .delete:
            self.map.remove(record.key)
        case .batch:
            record.forEachBatchEntry { op, key, value in
                if op == .set { self.map.set(key, value) } else { self.map.remove(key) }
            }
        default:
            break
        }
        self.appliedIndex = index
    }

    /// The value of `key`, copied.
    public func value(for key: [UInt8]) -> [UInt8]? {
        key.withUnsafeBytes { k in self.map.withValue(k) { $0.map { Array($0) } } }
    }

    /// Every key and value, copied into a dictionary (tests and tools; O(n)).
    public func dictionary() -> [ByteKey: [UInt8]] {
        var result: [ByteKey: [UInt8]] = [:]
        result.reserveCapacity(self.map.count)
        self.map.forEach { key, value in result[ByteKey(Array(key))] = Array(value) }
        return result
    }
}
