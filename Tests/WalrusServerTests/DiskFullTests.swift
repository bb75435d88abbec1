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

    /// A failing fdatasync (EIO from a preloaded shim while a trigger file exists, as a dying disk
    /// returns it) stops the log for good: the write in flight is not acknowledged, later writes are
    /// refused even after the disk "recovers" (no retry as if nothing happened: the kernel may have
    /// dropped the dirty pages), reads go on, the daemon stays up and says why. A restart recovers
    /// every acknowledged write.
    @Test
    func failedFdatasyncStopsTheLog() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let shim = directory.file("fail-fdatasync.so")
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../Fixtures/fail-fdatasync.c").standardized.path
        let built = try run("/usr/bin/env", ["clang", "-shared", "-fPIC", "-O1", "-o", shim, source, "-ldl"])
        try #require(built.status == 0, "could not build the fault shim: \(built.output)")
        let trigger = directory.file("disk-fails")
        let data = directory.file("data")
        var daemon: DaemonProcess? = try DaemonProcess(data: data, arguments: ["--log-level", "info"]) { commandLine in
            ("/usr/bin/env", ["LD_PRELOAD=\(shim)", "WALRUS_FAULT_TRIGGER=\(trigger)"] + commandLine)
        }
        defer { daemon?.stop() }
        let client = try daemon!.connect()
        for i in 0..<50 {
            #expect(try client.command("SET", "k\(i)", "v\(i)") == .simple("OK"))
        }
        _ = FileManager.default.createFile(atPath: trigger, contents: Data())
        let failed = try client.command("SET", "lost", "x")
        guard case .error(let message) = failed else {
            Issue.record("a write whose fdatasync failed was acknowledged: \(failed)")
            return
        }
        #expect(message.hasPrefix("MISCONF") && message.contains("fdatasync"), "\(message)")
        // The disk "recovers": the log still refuses, reads go on, the daemon is up and says why.
        try FileManager.default.removeItem(atPath: trigger)
        if case .error(let again) = try client.command("SET", "after", "y") {
            #expect(again.hasPrefix("MISCONF"), "\(again)")
        } else {
            Issue.record("the log accepted writes again after a failed fdatasync")
        }
        #expect(try client.command("GET", "k49") == .bulk(Array("v49".utf8)))
        #expect(daemon!.process.isRunning)
        let status = try run(DaemonProcess.binaryDirectory + "/walrusctl", ["status", "--socket", daemon!.controlSocket]).output
        #expect(status.contains("fdatasync"), "\(status)")
        #expect(daemon!.log.contains("Write-ahead log failed"), "\(daemon!.log.suffix(1500))")
        daemon!.stop()

        // A restart (what an operator does after checking the disk) recovers every acknowledged write.
        daemon = try DaemonProcess(data: data, arguments: ["--log-level", "info"])
        let restarted = try daemon!.connect()
        for i in 0..<50 {
            #expect(try restarted.command("GET", "k\(i)") == .bulk(Array("v\(i)".utf8)), "k\(i) was acknowledged and is gone")
        }
        #expect(try restarted.command("SET", "after", "y") == .simple("OK"))
    }
}
