import Foundation
import Testing
import WalrusFuzzTargets

/// The committed fuzz corpus (`Tests/Fuzz/corpus/<target>/`, seeds plus every input that found
/// new coverage, and any input that once crashed) replayed through each fuzz target: a decoder
/// change that brings back an old crash fails here, without libFuzzer. `deploy/fuzz.sh` fuzzes.
@Suite(.serialized)
struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../Fuzz/corpus").standardized.path

    @Test(arguments: FuzzTargets.names)
    func corpusReplays(_ target: String) throws {
        let directory = Self.corpus + "/" + target
        let files = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(!files.isEmpty, "no corpus for \(target) in \(directory)")
        for file in files {
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: directory + "/" + file)))
            bytes.withUnsafeBytes { FuzzTargets.run(target, $0) }
        }
        FuzzTargets.removeScratch()
    }

    /// The seeds still come out of walrus's own encoders (a format change shows here first).
    @Test func seedsDecode() throws {
        let seeds = try FuzzTargets.seeds()
        #expect(Set(seeds.keys) == Set(FuzzTargets.names))
        for (target, inputs) in seeds {
            for input in inputs { input.withUnsafeBytes { FuzzTargets.run(target, $0) } }
        }
        FuzzTargets.removeScratch()
    }
}
