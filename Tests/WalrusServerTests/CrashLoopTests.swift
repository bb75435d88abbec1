import Foundation
import Testing
import WalrusTestKit

/// deploy/crash-loop.py on the built binaries: 25 SIGKILLs of the primary at random moments under
/// a SET/DEL load (fsync=always), a follower attached. After every restart the state must equal
/// the replay of the acknowledged operations (plus, at most, the one in flight), and the
/// follower's digest the primary's.
@Suite(.serialized)
struct CrashLoopTests {
    @Test(.serverTest)
    func killNineLoop() throws {
        let script = SystemdIntegrationTests.repositoryRoot.appendingPathComponent("deploy/crash-loop.py").path
        let result = try run("/usr/bin/env", ["python3", script, "--bin", DaemonProcess.binaryDirectory, "--iterations", "25"], seconds: 280)
        let row = result.output.split(separator: "\n").first { $0.hasPrefix("| 25 |") } ?? ""
        #expect(row.hasSuffix("| ok |"), "\(result.output.suffix(2000))")
        #expect(result.status == 0, "\(result.output.suffix(2000))")
    }
}
