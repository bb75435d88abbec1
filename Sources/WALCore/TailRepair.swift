#if canImport(Glibc)
import Glibc
#endif

/// Cuts a torn write off the end of the last segment, keeping the cut bytes in a `.broken` copy
/// first (etcd's `repair.go` does the same): nothing is ever truncated away unseen.
enum TailRepair {
    /// Copy `[tail.offset, EOF)` of `path` into `<segment>.<offset>.broken`, fsync it, then truncate
    /// the segment and fsync it and the directory. Returns the `.broken` path.
    static func cut(path: String, directory: String, tail: SegmentScanner.TornTail) throws -> String {
        let fd = try FileIO.open(path, O_RDWR)
        defer { close(fd) }
        var brokenPath = "\(path).\(tail.offset).broken"
        var attempt = 1
        while FileIO.fileStatus(brokenPath) != nil {
            attempt += 1
            brokenPath = "\(path).\(tail.offset).\(attempt).broken"
        }
        var bytes = [UInt8](repeating: 0, count: Int(tail.length))
        let n = try bytes.withUnsafeMutableBytes { (raw) throws -> Int in
            try FileIO.pread(fd, into: raw.baseAddress!, count: raw.count, at: tail.offset, path: path)
        }
        bytes.removeLast(bytes.count - n)
        // The copy must be durable before the original bytes go.
        let out = try FileIO.open(brokenPath, O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
        do {
            try bytes.withUnsafeBytes { (raw) throws in try FileIO.writeAll(out, raw, path: brokenPath) }
            try FileIO.fdatasync(out, path: brokenPath)
        } catch {
            close(out)
            throw error
        }
        close(out)
        try FileIO.fsyncDirectory(directory)
        try FileIO.truncate(fd, to: tail.offset, path: path)
        try FileIO.fdatasync(fd, path: path)
        return brokenPath
    }
}
