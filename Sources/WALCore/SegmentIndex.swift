/// What the log knows about one segment file: which indexes it holds, how many of its bytes are
/// appended and how many are sealed, and a sparse index from record index to byte offset.
struct SegmentInfo: Sendable {
    /// The segment number (`wal-0007.log` is 7).
    var number: Int
    /// The full path.
    var path: String
    /// The index of the segment's first record (the next index when it is empty).
    var firstIndex: UInt64
    /// Records appended to it (sealed or not).
    var recordCount: UInt64 = 0
    /// Bytes appended to it (sealed or not).
    var size: Int64 = 0
    /// Records that are durable.
    var sealedCount: UInt64 = 0
    /// Bytes that are durable.
    var sealedSize: Int64 = 0
    /// Every `sparseIndexStrideBytes` or so: a record index and its byte offset, ascending.
    var sparse: [SparseEntry] = []

    /// The index of the last record, or firstIndex - 1 when empty.
    var lastIndex: UInt64 { self.firstIndex + self.recordCount - 1 }
    /// The index of the last sealed record, or firstIndex - 1 when none is.
    var lastSealedIndex: UInt64 { self.firstIndex + self.sealedCount - 1 }

    /// The closest known byte offset at or before `index` (which must be in this segment).
    func seekOffset(for index: UInt64) -> (index: UInt64, offset: Int64) {
        var low = 0
        var high = self.sparse.count - 1
        var best: SparseEntry? = nil
        while low <= high {
            let mid = (low + high) / 2
            if self.sparse[mid].index <= index {
                best = self.sparse[mid]
                low = mid + 1
            } else {
                high = mid - 1
            }
        }
        if let best { return (best.index, best.offset) }
        return (self.firstIndex, 0)
    }
}

/// One sparse index entry: record `index` starts at byte `offset` of its segment.
struct SparseEntry: Sendable, Equatable {
    var index: UInt64
    var offset: Int64
}
