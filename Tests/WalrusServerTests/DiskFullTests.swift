import Foundation
import Testing
import WalrusClient
import WalrusTestKit
#if canImport(Glibc)
import Glibc
#endif

/// A full disk under walrusd: its data directory is a small tmpfs in a private mount namespace,
/// mostly taken by a filler file. Writes fail with a clear -MISCONF while reads go on; when the
/// filler is removed, writes resume; no acknowledged write is lost.
@Suite(.serialized)
struct DiskFullTests {
    @Test(.enabled(if: getuid() == 0, "needs root for a private mount namespace"))
    func fullDiskRefusesWritesThenRecovers() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let data = directory.file("data")
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        // The control socket lives outside the tmpfs, which only the daemon's namespace sees.
        let socket = directory.file("control.sock")
        let daemon = try DaemonProcess(data: data, arguments: ["--log-level", "info", "--control-socket", socket]) { commandLine in
            let quoted = commandLine.map { "'\($0)'" }.joined(separator: " ")
            let script =
                "mount -t tmpfs -o size=2m tmpfs '\(data)' && dd if=/dev/zero of='\(data)/filler' bs=64k count=24 status=none && exec \(quoted)"
            return ("/usr/bin/unshare", ["-m", "--propagation", "private", "/bin/sh", "-c", script])
        }
        defer { daemon.stop() }
        let client = try daemon.connect()
        let value = [UInt8](repeating: UInt8(ascii: "v"), count: 16 * 1024)
        var acknowledged: [String] = []
        var refusal = ""
        for i in 0..<200 {
            let reply = try client.command([Array("SET".utf8), Array("k\(i)".utf8), value])
            if reply == .simple("OK") {
                acknowledged.append("k\(i)")
            } else if case .error(let message) = reply {
                refusal = message
                break
            }
        }
        #expect(refusal.hasPrefix("MISCONF") && refusal.contains("full"), "\(refusal)")
        #expect(!acknowledged.isEmpty)
        // Reads go on while the disk is full.
        #expect(try client.command("GET", acknowledged[0]).text?.count == value.count)
        #expect(try client.command("DBSIZE") != .integer(0))
        let status = try run(DaemonProcess.binaryDirectory + "/walrusctl", ["status", "--socket", socket]).output
        #expect(status.contains("full"), "\(status)")

        // Space comes back: remove the filler inside the daemon's mount namespace.
        let pid = String(daemon.process.processIdentifier)
        let freed = try run("/usr/bin/nsenter", ["-t", pid, "-m", "rm", "\(data)/filler"])
        #expect(freed.status == 0, "\(freed.output)")
        let deadline = Date().addingTimeInterval(20)
        var resumed = false
        while Date() < deadline && !resumed {
            resumed = try client.command([Array("SET".utf8), Array("after".utf8), value]) == .simple("OK")
            if !resumed { usleep(100_000) }
        }
        #expect(resumed, "writes did not resume after space came back")
        for key in acknowledged {
            #expect(try client.command("EXISTS", key) == .integer(1), "\(key) was acknowledged and is gone")
        }
        #expect(daemon.log.contains("Disk full") && daemon.log.contains("Disk space is back"), "\(daemon.log.suffix(1500))")
    }
}
