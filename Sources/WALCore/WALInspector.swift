/// Reads a data directory's log without changing it (no LOCK, no repair): for `walrusctl wal
/// verify` and `wal dump`, also while walrusd runs.
public enum WALInspector {
    /// One segment as found.
    public struct Segment: Sendable {
        public var name: String
        public var firstIndex: UInt64
        public var records: UInt64
        public var bytes: Int64
    }

    /// What verification found.
    public struct Report: Sendable {
        public var directory: String
        public var segments: [Segment] = []
        public var records: UInt64 = 0
        public var bytes: Int64 = 0
        /// A torn final record that the next open would cut (or a write in progress).
        public var tornTail: String?
        /// Damage that makes walrus refuse to open the directory, with the fix.
        public var damage: String?
        public var isHealthy: Bool { self.damage == nil }
    }

    /// Check every record of every segment, in order.
    public static func verify(directory: String, maxRecordBytes: Int = 64 * 1024 * 1024) -> Report {
        var report = Report(directory: directory)
        do {
            try self.scan(directory: directory, maxRecordBytes: maxRecordBytes, report: &report) { _, _ in }
        } catch let error as WALError {
            report.damage = error.message
        } catch {
            report.damage = "\(error)"
        }
        return report
    }

    /// Pass each record with an index in `range` to `body` (stops early past the range's end).
    public static func dump(
        directory: String, range: ClosedRange<UInt64>, maxRecordBytes: Int = 64 * 1024 * 1024,
        _ body: (UInt64, RecordView) throws -> Void
    ) throws -> Report {
        var report = Report(directory: directory)
        try self.scan(directory: directory, maxRecordBytes: maxRecordBytes, report: &report) { index, record in
            if range.contains(index) { try body(index, record) }
            if index > range.upperBound { throw StopScan() }
        }
        return report
    }

    /// Pass each record of one file of frames (a `diverged-<epoch>-<from>-<to>.log`, or a single
    /// segment) to `body`, numbering them from `firstIndex` (from the name of a diverged file).
    public static func dump(
        file path: String, range: ClosedRange<UInt64>, maxRecordBytes: Int = 64 * 1024 * 1024,
        _ body: (UInt64, RecordView) throws -> Void
    ) throws -> Report {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        var firstIndex: UInt64 = 1
        let parts = name.split(separator: "-")
        if name.hasPrefix("diverged-"), parts.count == 4, let from = UInt64(parts[2]) { firstIndex = from }
        var report = Report(directory: path)
        var configuration = WALConfiguration(directory: ".")
        configuration.maxRecordBytes = maxRecordBytes
        let scanner = SegmentScanner(configuration: configuration)
        do {
            let outcome = try scanner.scan(
                number: 0, path: path, firstIndex: firstIndex, isLast: true, buffer: SegmentScanner.Buffer(capacity: 8 << 20),
                onRecord: { index, record in
                    if range.contains(index) { try body(index, record) }
                    if index > range.upperBound { throw StopScan() }
                }, onBytes: { _ in })
            report.records = outcome.info.recordCount
            report.bytes = outcome.info.size
            if let torn = outcome.tornTail { report.damage = "\(path) ends with \(torn.length) bytes that are not a whole record (\(torn.reason))." }
        } catch is StopScan {
        } catch let error as WALError {
            report.damage = error.message
        }
        return report
    }

    private struct StopScan: Error {}

    private static func scan(
        directory: String, maxRecordBytes: Int, report: inout Report, onRecord: (UInt64, RecordView) throws -> Void
    ) throws {
        let meta = try MetaFile.load(directory: directory) ?? MetaFile()
        var numbers = try FileIO.listDirectory(directory).compactMap(SegmentName.parse).filter { $0 >= meta.logStartSegment }
        numbers.sort()
        if let first = numbers.first, first != meta.logStartSegment {
            throw WALError(
                .segmentGap,
                "The log should start at \(SegmentName.format(meta.logStartSegment)) but the oldest segment is "
                    + "\(SegmentName.format(first)).")
        }
        for (previous, next) in zip(numbers, numbers.dropFirst()) where next != previous + 1 {
            throw WALError(.segmentGap, "Segment \(SegmentName.format(previous + 1)) is missing.")
        }
        var configuration = WALConfiguration(directory: directory)
        configuration.maxRecordBytes = maxRecordBytes
        let scanner = SegmentScanner(configuration: configuration)
        let buffer = SegmentScanner.Buffer(capacity: 8 << 20)
        var index = meta.logStartIndex
        for (position, number) in numbers.enumerated() {
            let path = FileIO.join(directory, SegmentName.format(number))
            do {
                let outcome = try scanner.scan(
                    number: number, path: path, firstIndex: index, isLast: position == numbers.count - 1, buffer: buffer,
                    onRecord: onRecord, onBytes: { _ in })
                report.segments.append(
                    Segment(name: SegmentName.format(number), firstIndex: index, records: outcome.info.recordCount, bytes: outcome.info.size))
                report.records += outcome.info.recordCount
                report.bytes += outcome.info.size
                index += outcome.info.recordCount
                if let torn = outcome.tornTail {
                    report.tornTail =
                        "\(SegmentName.format(number)) ends with \(torn.length) bytes at offset \(torn.offset) that are not a "
                        + "whole record (\(torn.reason)): a write in progress, or a torn write the next open cuts into a "
                        + ".broken file."
                }
            } catch is StopScan {
                return
            }
        }
    }
}
