/// Where two nodes' logs part, from their epoch histories alone.
///
/// An epoch has exactly one primary, so two logs hold the same record at an index exactly when
/// that index falls in the same epoch on both (the epoch record that opens an epoch is the first
/// index of it). The histories are piecewise-constant maps index → epoch; the logs agree up to
/// the last index before the maps first differ, and no further than either log's end.
public enum EpochHistory {
    /// The epoch of `index` in `history` (epoch starts in increasing order), or nil before the first.
    public static func epoch(at index: UInt64, in history: [MetaFile.EpochStart]) -> UInt64? {
        var found: UInt64?
        for start in history where start.firstIndex <= index { found = start.epoch }
        return found
    }

    /// The last index up to which a follower's log (`follower`, ending at `followerLast`) agrees
    /// with the primary's (`primary`, ending at `primaryLast`).
    public static func commonPrefix(
        follower: [MetaFile.EpochStart], followerLast: UInt64, primary: [MetaFile.EpochStart], primaryLast: UInt64
    ) -> UInt64 {
        let end = min(followerLast, primaryLast)
        guard end > 0 else { return 0 }
        // The maps can only start to differ where either history starts an epoch: check those
        // boundaries in order (and index 1).
        var boundaries = Set(follower.map(\.firstIndex) + primary.map(\.firstIndex))
        boundaries.insert(1)
        for boundary in boundaries.sorted() where boundary <= end {
            if self.epoch(at: boundary, in: follower) != self.epoch(at: boundary, in: primary) { return boundary - 1 }
        }
        return end
    }

    /// What a follower must do before it can stream from the primary: nil when its whole log is a
    /// prefix of the primary's; otherwise the index to cut its log back to (records after it are
    /// moved aside, never thrown away).
    public static func divergence(
        follower: [MetaFile.EpochStart], followerLast: UInt64, primary: [MetaFile.EpochStart], primaryLast: UInt64
    ) -> UInt64? {
        let common = self.commonPrefix(follower: follower, followerLast: followerLast, primary: primary, primaryLast: primaryLast)
        return common < followerLast ? common : nil
    }
}
