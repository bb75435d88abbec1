import Testing
import WalrusTestKit

/// The power-cut simulation (`walrus-bench powercut`, the README's Reliability row) in a small
/// size: every copy a cut could leave recovers to exactly the records wholly present, keeps a cut
/// record in a `.broken` copy, and a damaged record is refused with file and offset.
struct PowerCutTests {
    @Test func everySimulatedPowerCutIsHandled() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let result = try run(
            DaemonProcess.binaryDirectory + "/walrus-bench",
            ["powercut", "--quick", "--dir", directory.path, "--max-value", "1000", "--durable", "150", "--unsynced", "60"])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains(", 0 mishandled"), "\(result.output)")
        for family in ["every byte", "last fdatasync", "unsynced tail written", "as zeros", "byte flipped"] {
            #expect(result.output.contains(family), "\(family) missing from \(result.output)")
        }
    }
}
