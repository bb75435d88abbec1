public import WALCore

/// The in-memory key-value state and the index of the last record applied to it.
public struct StoreState: Sendable {
    /// The keys and values.
    public var map: [ByteKey: [UInt8]] = [:]
    /// The index of the last record applied.
    public var appliedIndex: UInt64 = 0

    public init() {}

    /// Apply one decoded record (recovery and, later, replication). Epoch records carry no data.
    @inline(__always)
    public mutating func apply(_ record: RecordView, index: UInt64) {
        switch record.op {
        case .set:
            self.map[ByteKey(Array(record.key))] = Array(record.value)
        case .delete:
            self.map.removeValue(forKey: ByteKey(Array(record.key)))
        case .batch:
            record.forEachBatchEntry { op, key, value in
                if op == .set {
                    self.map[ByteKey(Array(key))] = Array(value)
                } else {
                    self.map.removeValue(forKey: ByteKey(Array(key)))
                }
            }
        default:
            break
        }
        self.appliedIndex = index
    }
}
