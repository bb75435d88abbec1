#if canImport(Glibc)
import Glibc
#endif

/// The data directory's `LOCK` file, held with `flock` for as long as the directory is open, so
/// two processes (or two opens in one process) can never write one log.
///
/// The holder writes its pid into the file so the second opener can say who holds it.
public final class DirectoryLock: @unchecked Sendable {
    /// The path of the LOCK file.
    public let path: String
    private let fd: ConditionLock<Int32>

    /// Take the lock or throw `.directoryLocked` naming the holder's pid.
    public init(directory: String) throws {
        let path = FileIO.join(directory, "LOCK")
        let fd = try FileIO.open(path, O_RDWR | O_CREAT, mode: 0o644)
        var deadline: UInt64? = nil
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            if code == EINTR { continue }
            let holder = Self.holder(fd)
            // A lock this process just released can stay held for a moment by a child that another
            // thread is spawning: flock belongs to the open file description, which the child shares
            // until its exec closes it (O_CLOEXEC). So when the holder is us, wait a little.
            if code == EWOULDBLOCK, holder == Int(getpid()) {
                let now = monotonicNanoseconds()
                if deadline == nil { deadline = now + 500_000_000 }
                if now < deadline! {
                    usleep(1000)
                    continue
                }
            }
            close(fd)
            if code == EWOULDBLOCK {
                let who = holder.map { "process \($0)" } ?? "another process"
                throw WALError(
                    .directoryLocked,
                    "The data directory \(directory) is in use by \(who) (it holds \(path)). Stop that process, "
                        + "or point this one at another data directory.",
                    path: path)
            }
            throw FileIO.ioError("flock", path, code)
        }
        // We hold the lock: record our pid for the next opener's error message.
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { Glibc.pwrite(fd, $0.baseAddress!, $0.count, 0) }
        self.path = path
        self.fd = ConditionLock(fd)
    }

    private static func holder(_ fd: Int32) -> Int? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = buffer.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress!, 32, 0) }
        guard n > 0 else { return nil }
        return Int(String(decoding: buffer[0..<n], as: UTF8.self).trimmingWhitespace())
    }

    /// Release the lock (closing the descriptor releases the flock). The file stays: removing it
    /// would race with a second opener that already opened it.
    public func release() {
        self.fd.withLock { fd in
            if fd >= 0 { close(fd) }
            fd = -1
        }
    }

    deinit { self.release() }
}

extension String {
    func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first.isWhitespace { scalars.removeFirst() }
        while let last = scalars.last, last.isWhitespace { scalars.removeLast() }
        return String(scalars)
    }
}
