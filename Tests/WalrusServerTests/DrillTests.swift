import Foundation
import Testing
import WalrusTestKit

/// The failover drill (deploy/drill.sh) on the built binaries: switchover under load, kill -9 of
/// the primary with sync-replicas 1 and 0, and a partition (in network namespaces when this runs
/// as root, else on loopback without the partitions and packet loss). Every row must pass its loss rule and
/// end with equal digests.
@Suite(.serialized)
struct DrillTests {
    @Test(.serverTest)
    func failoverDrill() throws {
        let script = SystemdIntegrationTests.repositoryRoot.appendingPathComponent("deploy/drill.sh").path
        let result = try run("/bin/bash", [script, DaemonProcess.binaryDirectory], seconds: 280)
        let rows = result.output.split(separator: "\n").filter { $0.hasPrefix("| ") && !$0.hasPrefix("| scenario") }
        #expect(rows.count == 6, "\(result.output.suffix(2000))")
        for row in rows {
            #expect(row.hasSuffix("| ok |") || row.contains("skipped"), "\(row)")
        }
        #expect(result.status == 0, "\(result.output.suffix(2000))")
    }
}
