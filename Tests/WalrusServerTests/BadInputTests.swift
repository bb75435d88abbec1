import Foundation
import Testing
import WalrusTestKit

/// deploy/attack.py on the built walrusd: random bytes, slowloris, connection floods past the
/// limit, oversized frames and valid-then-invalid input on the client port, the replication port
/// and the control socket, while a redis-py client keeps working. The daemon must never exit,
/// the real client never see an error, RSS and threads come back within bounds.
@Suite(.serialized)
struct BadInputTests {
    @Test(.serverTest)
    func attacksOnEveryPort() throws {
        let script = SystemdIntegrationTests.repositoryRoot.appendingPathComponent("deploy/attack.py").path
        let result = try run(
            "/usr/bin/env",
            ["python3", script, "--bin", DaemonProcess.binaryDirectory, "--quick", "--flood", "300", "--slow-seconds", "4"],
            seconds: 280)
        #expect(result.output.contains(", 0 daemon exits, 0 failures"), "\(result.output.suffix(3000))")
        #expect(result.status == 0, "\(result.output.suffix(3000))")
    }
}
