import CZlib
import Logging
@testable import WALCore
import WalrusTestKit

/// Bytes exactly as the original Go walrus writes a record (encodeRecord + Append), built here by
/// hand from the format description, not with our encoder.
func originalFrame(op: UInt8, key: [UInt8], value: [UInt8]) -> [UInt8] {
    var data: [UInt8] = [op]
    data += be32(UInt32(key.count))
    data += be32(UInt32(value.count))
    data += key
    data += value
    let crc = data.withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, UInt32($0.count))) }
    return be32(0xCAFE_BABE) + be32(UInt32(data.count)) + be32(crc) + data
}

func be32(_ value: UInt32) -> [UInt8] {
    [UInt8(value >> 24), UInt8((value >> 16) & 0xff), UInt8((value >> 8) & 0xff), UInt8(value & 0xff)]
}

func bytes(_ string: String) -> [UInt8] { Array(string.utf8) }

let quietLogger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }

/// A configuration for tests: small segments, a short interval when asked.
func testConfiguration(_ directory: TemporaryDirectory, segmentSize: Int = 1 << 20, mode: FsyncMode = .always)
    -> WALConfiguration
{
    var configuration = WALConfiguration(directory: directory.path)
    configuration.segmentSizeBytes = segmentSize
    configuration.fsyncMode = mode
    configuration.sparseIndexStrideBytes = 256
    return configuration
}

/// Append and wait for the seal (always mode), the way the store does.
func appendDurably(_ wal: WriteAheadLog, _ key: String, _ value: String, op: RecordOp = .set) async throws -> UInt64 {
    var index: UInt64 = 0
    let error: WALError? = try await withUnsafeThrowingContinuation { continuation in
        do {
            index = try wal.append(op: op, key: bytes(key), value: bytes(value)) { continuation.resume(returning: $0) }
        } catch {
            continuation.resume(throwing: error)
        }
    }
    if let error { throw error }
    return index
}

/// Open, returning the replayed records too.
func openAndReplay(_ configuration: WALConfiguration, logger: Logger = quietLogger) throws -> (
    WriteAheadLog, [(UInt64, RecordOp, String, String)]
) {
    var replayed: [(UInt64, RecordOp, String, String)] = []
    let wal = try WriteAheadLog.open(configuration, logger: logger) { index, record in
        replayed.append(
            (index, record.op, String(decoding: record.key, as: UTF8.self), String(decoding: record.value, as: UTF8.self)))
    }
    return (wal, replayed)
}
