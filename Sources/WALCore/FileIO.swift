#if canImport(Glibc)
import Glibc
#endif

/// Thin, error-reporting wrappers over the system calls the log uses. Every failure becomes a
/// `WALError` naming the path and the call.
public enum FileIO {
    /// The text of an errno value.
    public static func describe(_ code: Int32) -> String { String(cString: strerror(code)) }

    static func ioError(_ call: String, _ path: String, _ code: Int32 = errno, offset: Int64? = nil) -> WALError {
        if code == ENOSPC || code == EDQUOT {
            return WALError(
                .diskFull,
                "\(call) failed on \(path): \(describe(code)). Writes are refused until space is freed on that "
                    + "filesystem; reads continue.",
                path: path, offset: offset, errno: code)
        }
        return WALError(.io, "\(call) failed on \(path): \(describe(code)).", path: path, offset: offset, errno: code)
    }

    /// Join a directory and a file name.
    public static func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }

    /// Open a file, retrying on EINTR.
    public static func open(_ path: String, _ flags: Int32, mode: UInt32 = 0o644) throws -> Int32 {
        while true {
            let fd = Glibc.open(path, flags | O_CLOEXEC, mode_t(mode))
            if fd >= 0 { return fd }
            if errno == EINTR { continue }
            throw ioError("open", path)
        }
    }

    /// O_DIRECT, which Glibc's Swift module leaves out (it is a _GNU_SOURCE flag); Linux's value.
    #if arch(x86_64) || arch(i386)
    public static let directFlag: Int32 = 0o40000
    #elseif arch(arm64) || arch(arm)
    public static let directFlag: Int32 = 0o200000
    #else
    #error("O_DIRECT's value is not known for this architecture")
    #endif

    /// Open (or create) the segment appends go to, with O_DIRECT if `direct` and the filesystem
    /// accepts it (tmpfs does not); returns the descriptor and whether it is direct.
    static func openForAppend(_ path: String, direct: Bool, flags: Int32 = 0) throws -> (fd: Int32, direct: Bool) {
        if direct {
            while true {
                let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC | flags | Self.directFlag, mode_t(0o644))
                if fd >= 0 { return (fd, true) }
                if errno == EINTR { continue }
                guard errno == EINVAL else { throw ioError("open", path) }
                break  // no direct I/O here: as before
            }
        }
        return (try open(path, O_RDWR | O_CREAT | flags), false)
    }

    /// Write all of `bytes` at the file's current position.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw ioError("write", path)
            }
            done += n
        }
    }

    /// Write all of `bytes` at `offset`.
    public static func pwriteAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int64, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw ioError("pwrite", path, offset: offset)
            }
            done += n
        }
    }

    /// Write `count` bytes — whole blocks, from block-aligned memory — at the block-aligned
    /// `offset` of a direct descriptor. A short write goes on only where it stopped on a block.
    static func pwriteBlocks(_ fd: Int32, _ base: UnsafeRawPointer, count: Int, at offset: Int64, block: Int, path: String) throws {
        var done = 0
        while done < count {
            let n = Glibc.pwrite(fd, base + done, count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw ioError("pwrite (direct)", path, offset: offset + Int64(done))
            }
            done += n
            if done < count && (n == 0 || done % block != 0) {
                throw WALError(
                    .io, "A direct write to \(path) at \(offset) stopped after \(done) of \(count) bytes, inside a block.",
                    path: path, offset: offset + Int64(done))
            }
        }
    }

    /// One pread (retried on EINTR only): a direct descriptor cannot go on from an unaligned
    /// place after a short read; returns the bytes read.
    static func preadOnce(_ fd: Int32, into destination: UnsafeMutableRawPointer, count: Int, at offset: Int64, path: String) throws -> Int {
        while true {
            let n = Glibc.pread(fd, destination, count, off_t(offset))
            if n >= 0 { return n }
            if errno != EINTR { throw ioError("pread", path, offset: offset) }
        }
    }

    /// Read up to `count` bytes at `offset` into `destination`; returns the bytes read (short only at EOF).
    public static func pread(_ fd: Int32, into destination: UnsafeMutableRawPointer, count: Int, at offset: Int64, path: String) throws -> Int {
        var done = 0
        while done < count {
            let n = Glibc.pread(fd, destination + done, count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw ioError("pread", path, offset: offset)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// fdatasync: the data and the metadata needed to read it back (the size) are on disk.
    public static func fdatasync(_ fd: Int32, path: String) throws {
        while Glibc.fdatasync(fd) != 0 {
            if errno == EINTR { continue }
            throw ioError("fdatasync", path)
        }
    }

    /// fsync a directory, so that entries created, renamed or removed in it survive a power cut.
    public static func fsyncDirectory(_ path: String) throws {
        let fd = try open(path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        while Glibc.fsync(fd) != 0 {
            if errno == EINTR { continue }
            throw ioError("fsync (directory)", path)
        }
    }

    /// The size of an open file.
    public static func size(_ fd: Int32, path: String) throws -> Int64 {
        var info = Glibc.stat()
        guard fstat(fd, &info) == 0 else { throw ioError("fstat", path) }
        return Int64(info.st_size)
    }

    /// The size and modification time (seconds since the epoch) of a path, or nil if it does not exist.
    public static func fileStatus(_ path: String) -> (size: Int64, modified: Int64)? {
        var info = Glibc.stat()
        guard fstatat(AT_FDCWD, path, &info, 0) == 0 else { return nil }
        return (Int64(info.st_size), Int64(info.st_mtim.tv_sec))
    }

    /// Truncate an open file to `length`.
    public static func truncate(_ fd: Int32, to length: Int64, path: String) throws {
        while ftruncate(fd, off_t(length)) != 0 {
            if errno == EINTR { continue }
            throw ioError("ftruncate", path, offset: length)
        }
    }

    /// The names in a directory (no `.` and `..`).
    public static func listDirectory(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw ioError("opendir", path) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Create a directory and its parents; succeed if it exists.
    public static func makeDirectories(_ path: String) throws {
        var current = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, 0o755) != 0 && errno != EEXIST { throw ioError("mkdir", current) }
        }
    }

    /// Read a whole (small) file.
    public static func readFile(_ path: String) throws -> [UInt8] {
        let fd = try open(path, O_RDONLY)
        defer { close(fd) }
        let size = Int(try size(fd, path: path))
        var bytes = [UInt8](repeating: 0, count: size)
        let n = try bytes.withUnsafeMutableBytes { (raw) throws -> Int in
            try pread(fd, into: raw.baseAddress!, count: size, at: 0, path: path)
        }
        bytes.removeLast(size - n)
        return bytes
    }

    /// Replace a file atomically: write a temporary file, fsync it, rename it over `path`, fsync the
    /// directory. A crash at any point leaves either the old file or the new one, never a mix.
    public static func writeFileAtomically(_ path: String, directory: String, bytes: [UInt8]) throws {
        let temporary = path + ".tmp"
        let fd = try open(temporary, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
        do {
            try bytes.withUnsafeBytes { (raw) throws in try writeAll(fd, raw, path: temporary) }
            while Glibc.fsync(fd) != 0 {
                if errno == EINTR { continue }
                throw ioError("fsync", temporary)
            }
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        close(fd)
        guard rename(temporary, path) == 0 else { throw ioError("rename", temporary) }
        try fsyncDirectory(directory)
    }

    /// Remove a file; succeed if it does not exist.
    public static func remove(_ path: String) throws {
        if unlink(path) != 0 && errno != ENOENT { throw ioError("unlink", path) }
    }
}
