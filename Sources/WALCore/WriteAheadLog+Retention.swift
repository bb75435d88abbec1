/// Deleting old segments once a snapshot covers them, within a byte and age budget.
extension WriteAheadLog {
    /// How much covered log to keep for readers that are briefly behind (followers, later).
    public struct RetentionPolicy: Sendable {
        /// Keep covered segments while their total size stays within this (default 64 MiB).
        public var keepBytes: Int64
        /// Keep covered segments younger than this many seconds (default 3600).
        public var keepSeconds: Int64
        public init(keepBytes: Int64 = 64 * 1024 * 1024, keepSeconds: Int64 = 3600) {
            self.keepBytes = keepBytes
            self.keepSeconds = keepSeconds
        }
    }

    /// Delete segments whose every record is at or below `coveredIndex` (a durable snapshot holds
    /// them) and that fall outside `policy`. The active segment is never deleted. `meta` is
    /// updated first so an interrupted pass leaves only leftovers that recovery removes.
    /// Returns the deleted file names.
    @discardableResult
    public func removeSegments(coveredBy coveredIndex: UInt64, policy: RetentionPolicy, nowSeconds: Int64) throws
        -> [String]
    {
        let candidates = self.lock.withLock { state -> [SegmentInfo] in
            // Only whole, sealed, non-active segments.
            Array(state.segments.dropLast().filter { $0.lastIndex <= coveredIndex && $0.sealedCount == $0.recordCount })
        }
        guard !candidates.isEmpty else { return [] }
        // Walk newest to oldest, keeping segments while within both budgets.
        var keptBytes: Int64 = 0
        var deleteThrough: Int? = nil
        for segment in candidates.reversed() {
            let age = nowSeconds - (FileIO.fileStatus(segment.path)?.modified ?? nowSeconds)
            if deleteThrough == nil && keptBytes + segment.size <= policy.keepBytes && age <= policy.keepSeconds {
                keptBytes += segment.size
                continue
            }
            if deleteThrough == nil { deleteThrough = segment.number }
        }
        guard let last = deleteThrough else { return [] }
        let doomed = candidates.filter { $0.number <= last }
        guard let newStart = self.lock.withLock({ state in state.segments.first(where: { $0.number == last + 1 }) }) else {
            return []
        }
        try self.updateMeta { meta in
            meta.logStartSegment = newStart.number
            meta.logStartIndex = newStart.firstIndex
        }
        self.lock.withLock { state in state.segments.removeAll { $0.number <= last } }
        var removed: [String] = []
        for segment in doomed {
            try FileIO.remove(segment.path)
            removed.append(SegmentName.format(segment.number))
        }
        try FileIO.fsyncDirectory(self.configuration.directory)
        self.logger.info(
            "Removed log segments covered by a snapshot",
            metadata: ["wal.removed": "\(removed.joined(separator: ","))", "wal.coveredIndex": "\(coveredIndex)"])
        return removed
    }
}
