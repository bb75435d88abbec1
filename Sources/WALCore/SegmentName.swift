/// Segment file names: `wal-0001.log`, `wal-0002.log`, … in numeric order; the number grows past
/// 9999 (`wal-10000.log`), so names are sorted by number, never as strings.
public enum SegmentName {
    /// The file name of segment `number`.
    public static func format(_ number: Int) -> String {
        let digits = String(number)
        return "wal-" + String(repeating: "0", count: max(0, 4 - digits.count)) + digits + ".log"
    }

    /// The segment number of a file name, or nil if it is not a segment name.
    public static func parse(_ name: String) -> Int? {
        guard name.hasPrefix("wal-"), name.hasSuffix(".log") else { return nil }
        let digits = name.dropFirst(4).dropLast(4)
        guard !digits.isEmpty, digits.count <= 18, digits.allSatisfy({ $0 >= "0" && $0 <= "9" }) else { return nil }
        guard let number = Int(digits), number > 0 else { return nil }
        return number
    }
}

/// Snapshot file names: `snapshot-<index>.snap`.
public enum SnapshotName {
    /// The file name of the snapshot at `index`.
    public static func format(_ index: UInt64) -> String { "snapshot-\(index).snap" }

    /// The index of a snapshot file name, or nil if it is not one.
    public static func parse(_ name: String) -> UInt64? {
        guard name.hasPrefix("snapshot-"), name.hasSuffix(".snap") else { return nil }
        let digits = name.dropFirst(9).dropLast(5)
        guard !digits.isEmpty, digits.allSatisfy({ $0 >= "0" && $0 <= "9" }) else { return nil }
        return UInt64(digits)
    }
}
