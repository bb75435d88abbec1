import Foundation
import Testing
import WalrusTestKit
#if canImport(Glibc)
import Glibc
#endif

/// walrusd's own unit under a real systemd user manager and a real journald, started by the
/// harness script inside a private mount namespace (it needs root, as CI and these machines have).
@Suite(.serialized)
struct SystemdIntegrationTests {
    static var repositoryRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// start waits for READY=1 (also through a recovery longer than TimeoutStartSec), StatusText
    /// shows the role, the journal has native WALRUS_* and CODE_FILE fields, a SIGSTOPped daemon is
    /// restarted by the watchdog with its data, reload works, stop ends with Result=success; a
    /// follower unit (walrusd@follower) streams from it and its StatusText shows link and lag.
    @Test(.enabled(if: getuid() == 0, "needs root for a private mount namespace"), .serverTest)
    func unitUnderARealServiceManager() throws {
        let work = TemporaryDirectory(prefix: "walrus-systemd")
        defer { work.remove() }
        let script = Self.repositoryRoot.appendingPathComponent("Tests/SystemdHarness/harness.sh").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        process.arguments = [
            "-m", "--propagation", "private", "bash", script, DaemonProcess.binaryDirectory,
            Self.repositoryRoot.appendingPathComponent("systemd").path, work.path,
        ]
        var environment = ProcessInfo.processInfo.environment
        environment["WALRUS_TEST_PORT"] = String(TestEnvironment.freePort())
        environment["WALRUS_TEST_REPL_PORT"] = String(TestEnvironment.freePort())
        environment["WALRUS_TEST_FOLLOWER_PORT"] = String(TestEnvironment.freePort())
        environment["WALRUS_TEST_FOLLOWER_REPL_PORT"] = String(TestEnvironment.freePort())
        process.environment = environment
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let checks = text.split(separator: "\n").filter { $0.hasPrefix("check ") }
        for check in checks { #expect(check.split(separator: " ")[2] == "ok", "\(check)") }
        let names = Set(checks.map { String($0.split(separator: " ")[1]) })
        for required in [
            "security-exposure", "unit-verifies", "start-waits-for-ready", "status-shows-role", "journal-has-walrus-fields",
            "journal-has-code-file", "journal-native-transport", "watchdog-restarts", "data-after-watchdog", "reload",
            "stop-result-success", "data-after-restart", "slow-recovery-extends-timeout", "template-verifies",
            "follower-unit-active", "follower-status-shows-link", "follower-refuses-writes", "primary-status-shows-follower",
        ] {
            #expect(names.contains(required), "check \(required) did not run:\n\(text.suffix(3000))")
        }
        #expect(process.terminationStatus == 0, "\(text.suffix(3000))")
    }
}
