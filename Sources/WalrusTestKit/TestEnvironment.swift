import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where the built programs are, and free ports, for tests that run real processes.
public enum TestEnvironment {
    /// The directory holding the built executables: next to the test bundle (or `$WALRUS_BIN_DIR`).
    public static var binaryDirectory: String {
        if let override = ProcessInfo.processInfo.environment["WALRUS_BIN_DIR"] { return override }
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: directory.appendingPathComponent("walrusd").path),
            !FileManager.default.fileExists(atPath: directory.appendingPathComponent("walrus").path),
            directory.path != "/"
        {
            directory = directory.deletingLastPathComponent()
        }
        return directory.path
    }

    /// A TCP port that is free on 127.0.0.1 right now.
    public static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
