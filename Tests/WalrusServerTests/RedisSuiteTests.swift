import Foundation
import Testing
import WalrusTestKit

/// Redis 7.0's own test files (Debian's redis source package, fetched and cached at test time by
/// deploy/redis-suite.sh) against redis-server and the built walrusd side by side: every test that
/// passes on redis-server passes on walrusd, or Tests/RedisSuite/exceptions.tsv names it with the
/// reason (a data type, command or library walrus does not have).
struct RedisSuiteTests {
    @Test(.timeLimit(.minutes(20)))
    func redisOwnTestsPassSideBySide() throws {
        let root = SystemdIntegrationTests.repositoryRoot
        let out = TemporaryDirectory()
        defer { out.remove() }
        let result = try run(
            "/bin/bash",
            [
                root.appendingPathComponent("deploy/redis-suite.sh").path, "--walrusd", DaemonProcess.binaryDirectory + "/walrusd",
                "--out", out.path,
            ], seconds: 1100)
        #expect(result.status == 0, "\(result.output.suffix(6000))")
        // Every file ran: its row is in the table.
        for file in ["unit/type/string", "unit/keyspace", "unit/expire", "unit/multi", "unit/scripting", "unit/pubsub"] {
            #expect(result.output.contains("| \(file) |"), "no row for \(file): \(result.output.suffix(3000))")
        }
    }
}
