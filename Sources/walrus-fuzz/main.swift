// walrus-fuzz: the fuzz targets of WalrusFuzzTargets.
//
//   Fuzzing (libFuzzer; see the README's Reliability section):
//     swift build --product walrus-fuzz --build-path .build-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZ
//     .build-fuzz/debug/walrus-fuzz TARGET [libFuzzer flags] NEW_INPUTS_DIR Tests/Fuzz/corpus/TARGET
//   Without -DFUZZ (any build):
//     walrus-fuzz TARGET FILE|DIR...   run each input once (replay a corpus or a crash)
//     walrus-fuzz seed DIR             write seed inputs made with walrus's own encoders
import Foundation
import WalrusFuzzTargets
#if FUZZ
import CFuzzerDriver
#endif

var arguments = CommandLine.arguments
let usage = "usage: walrus-fuzz TARGET [libFuzzer flags or inputs…] | walrus-fuzz seed DIR; targets: \(FuzzTargets.names.joined(separator: ", "))"
// libFuzzer re-runs this program for -merge and -jobs without the target's name: it is passed
// on in WALRUS_FUZZ_TARGET.
let target: String
if arguments.count >= 2, arguments[1] == "seed" || FuzzTargets.names.contains(arguments[1]) {
    target = arguments.remove(at: 1)
    setenv("WALRUS_FUZZ_TARGET", target, 1)
} else if let inherited = ProcessInfo.processInfo.environment["WALRUS_FUZZ_TARGET"] {
    target = inherited
} else {
    FileHandle.standardError.write(Data(((arguments.count >= 2 ? "unknown target '\(arguments[1])'; " : "") + usage + "\n").utf8))
    exit(2)
}

if target == "seed" {
    guard arguments.count == 2 else {
        FileHandle.standardError.write(Data((usage + "\n").utf8))
        exit(2)
    }
    for (name, inputs) in try FuzzTargets.seeds() {
        let directory = arguments[1] + "/" + name
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (number, input) in inputs.enumerated() {
            try Data(input).write(to: URL(fileURLWithPath: directory + "/seed-\(number)"))
        }
        print("\(directory): \(inputs.count) seeds")
    }
    exit(0)
}

#if FUZZ
nonisolated(unsafe) var selected = target
/// libFuzzer's runtime refers to this symbol; the driver below is handed the same function.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzTargets.run(selected, UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
var argc = Int32(arguments.count)
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = UnsafeMutablePointer.allocate(capacity: arguments.count + 1)
for (i, argument) in arguments.enumerated() { argv![i] = strdup(argument) }
argv![arguments.count] = nil
let status = LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOne(data, size) }
FuzzTargets.removeScratch()
exit(status)
#else
// Replay: every file named, or every file in every directory named.
var count = 0
for path in arguments.dropFirst() {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        FileHandle.standardError.write(Data("no such file or directory: \(path)\n".utf8))
        exit(2)
    }
    let files = isDirectory.boolValue
        ? try FileManager.default.contentsOfDirectory(atPath: path).sorted().map { path + "/" + $0 } : [path]
    for file in files {
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: file)))
        bytes.withUnsafeBytes { FuzzTargets.run(target, $0) }
        count += 1
    }
}
FuzzTargets.removeScratch()
print("\(target): \(count) inputs replayed, no crash")
#endif
