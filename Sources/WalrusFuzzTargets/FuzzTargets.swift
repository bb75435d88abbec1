import Foundation
import Logging
import NIOCore
import WALCore
import WalrusProtocol
import WalrusServer
import WalrusStore

/// The decoders that read what a peer or a disk hands walrus, as fuzz targets: each takes any
/// bytes and must neither crash, hang, leak nor allocate without bound. `walrus-fuzz` runs them
/// under libFuzzer (built with `-sanitize=fuzzer,address`); the test suite replays the committed
/// corpus (`Tests/Fuzz/corpus/<target>/`) through them as regression tests.
public enum FuzzTargets {
    public static let names = ["resp", "replication", "wal", "snapshot", "control", "commands"]

    /// Run one input through a target.
    public static func run(_ name: String, _ data: UnsafeRawBufferPointer) {
        switch name {
        case "resp": self.resp(data)
        case "replication": self.replication(data)
        case "wal": self.wal(data)
        case "snapshot": self.snapshot(data)
        case "control": self.control(data)
        case "commands": self.commands(data)
        default: fatalError("unknown fuzz target \(name); the targets are \(names.joined(separator: ", "))")
        }
    }

    // MARK: - RESP

    /// The client port's request decoder. The first byte picks a chunk size; the rest is fed
    /// whole and in chunks of that size, and both must decode the same commands and fail alike
    /// (a decoder that depends on how TCP split the bytes is a bug).
    static func resp(_ data: UnsafeRawBufferPointer) {
        guard let first = data.first else { return }
        let input = UnsafeRawBufferPointer(rebasing: data.dropFirst())
        var limits = RESPLimits()
        limits.maxBulkBytes = 1 << 20
        limits.maxArguments = 1 << 12
        limits.maxInlineBytes = 4096
        let whole = self.decodeRESP(input, chunk: max(1, input.count), limits: limits)
        let pieces = self.decodeRESP(input, chunk: Int(first) % 17 + 1, limits: limits)
        check(whole.commands == pieces.commands && whole.failed == pieces.failed, "RESP decoding depends on chunking")
        // The server's in-place GET/SET reader in front of the decoder must not change a thing.
        let quick = self.decodeRESP(input, chunk: Int(first) % 17 + 1, limits: limits, quick: true)
        check(whole.commands == quick.commands && whole.failed == quick.failed, "the quick GET/SET path disagrees with the decoder")
    }

    static func decodeRESP(
        _ input: UnsafeRawBufferPointer, chunk: Int, limits: RESPLimits, quick: Bool = false
    ) -> (commands: [RESPCommand], failed: Bool) {
        var decoder = RESPCommandDecoder(limits: limits)
        var buffer = ByteBufferAllocator().buffer(capacity: 0)
        var commands: [RESPCommand] = []
        var offset = 0
        while offset < input.count {
            let end = min(input.count, offset + chunk)
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: input[offset..<end]))
            offset = end
            do {
                while true {
                    if quick && decoder.isIdle, let (request, consumed) = buffer.withUnsafeReadableBytes({ RESPQuickRequest.parse($0, limits: limits) }) {
                        let start = buffer.readerIndex
                        // "*N\r\n$3\r\n" (the length may have leading zeros), then the 3-byte name.
                        let nameLine = buffer.readableBytesView.dropFirst(4).firstIndex(of: 10)!
                        let name = buffer.getSlice(at: nameLine + 1, length: 3)!
                        switch request {
                        case .get(let key):
                            commands.append(RESPCommand(arguments: [name, buffer.getSlice(at: start + key.lowerBound, length: key.count)!]))
                        case .set(let key, let value):
                            commands.append(
                                RESPCommand(arguments: [
                                    name, buffer.getSlice(at: start + key.lowerBound, length: key.count)!,
                                    buffer.getSlice(at: start + value.lowerBound, length: value.count)!,
                                ]))
                        }
                        buffer.moveReaderIndex(forwardBy: consumed)
                        continue
                    }
                    guard let command = try decoder.decode(buffer: &buffer) else { break }
                    commands.append(command)
                }
            } catch {
                return (commands, true)
            }
        }
        return (commands, false)
    }

    // MARK: - Replication

    /// The replication port's frame decoder, then every message decoder on each frame's payload
    /// and on the raw input (the frame CRC would otherwise keep the fuzzer out of the payloads).
    static func replication(_ data: UnsafeRawBufferPointer) {
        var decoder = ReplicationFrameDecoder(maxPayloadBytes: 1 << 20, checksum: { CRC32.checksum($0) })
        var buffer = ByteBufferAllocator().buffer(capacity: data.count)
        buffer.writeBytes(data)
        while true {
            guard let frame = try? decoder.decode(buffer: &buffer) else { break }
            self.decodeMessages(frame.payload)
        }
        var raw = ByteBufferAllocator().buffer(capacity: data.count)
        raw.writeBytes(data)
        self.decodeMessages(raw)
    }

    static func decodeMessages(_ payload: ByteBuffer) {
        _ = try? ReplicationHello.decode(payload)
        _ = try? ReplicationAck.decode(payload)
        _ = try? ReplicationReject.decode(payload)
        _ = try? ReplicationStream.decode(payload)
        _ = try? ReplicationPromotion.decode(payload)
        _ = try? ReplicationDiverged.decode(payload)
        _ = try? ReplicationChallenge.decode(payload)
        _ = try? ReplicationSnapshotBegin.decode(payload)
        _ = try? ReplicationSnapshotChunk.decode(payload)
    }

    // MARK: - WAL

    /// The record decoder over the bytes in memory (applying what decodes to a store state, as
    /// recovery and followers do), then the segment scanner over them as the last segment of a
    /// log on disk (torn-tail and damage classification), then a store's recovery from them.
    static func wal(_ data: UnsafeRawBufferPointer) {
        let state = StoreState()
        var position = 0
        var index: UInt64 = 1
        while position < data.count {
            guard case .record(let record, let frameLength) = RecordDecoder.decode(data, at: position, maxRecordBytes: 1 << 20)
            else { break }
            state.apply(record, index: index)
            index += 1
            position += frameLength
        }
        let path = self.scratchFile("wal-0001.log", data)
        _ = try? WALInspector.dump(file: path, range: 0...UInt64.max, maxRecordBytes: 1 << 20) { _, _ in }
        // Recovery over the same bytes as a store's only segment: the scanner's look-ahead (it
        // reads the headers of records ahead, unchecked, to prefetch their keys) meets them too.
        let directory = self.scratch + "/recover"
        try? FileManager.default.removeItem(atPath: directory)
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: directory + "/wal-0001.log", contents: Data(data))
        var configuration = StoreConfiguration(directory: directory)
        configuration.wal.fsyncMode = .interval(milliseconds: 60_000)
        var logger = Logger(label: "walrus.fuzz")
        logger.logLevel = .critical
        if let store = try? KeyValueStore.open(configuration, logger: logger) { store.close() }
    }

    // MARK: - Snapshot

    /// The snapshot reader (what recovery and a follower's install read) on the bytes as a file.
    static func snapshot(_ data: UnsafeRawBufferPointer) {
        let path = self.scratchFile("snapshot-1.snap", data)
        _ = try? SnapshotFile.read(path: path)
    }

    // MARK: - Control socket

    /// The control socket's request parser.
    static func control(_ data: UnsafeRawBufferPointer) {
        _ = try? ControlRequest.parse(data)
    }

    // MARK: - Commands

    /// The command layer: the input is a RESP request stream; each command runs through the
    /// command table and its handler against a store (interval mode, on a tmpfs), in one
    /// client's session (MULTI, WATCH). Every reply must be well-formed RESP, and the state
    /// after the commands must equal the state replayed from the log they wrote (a reopen): a
    /// live write and its replay never differ.
    static func commands(_ data: UnsafeRawBufferPointer) {
        var limits = RESPLimits()
        limits.maxBulkBytes = 1 << 16
        limits.maxArguments = 64
        limits.maxInlineBytes = 1024
        let (commands, _) = self.decodeRESP(data, chunk: max(1, data.count), limits: limits)
        guard !commands.isEmpty else { return }
        let directory = self.scratch + "/commands"
        try? FileManager.default.removeItem(atPath: directory)
        var configuration = StoreConfiguration(directory: directory)
        configuration.wal.fsyncMode = .interval(milliseconds: 60_000)
        configuration.wal.segmentSizeBytes = 1 << 16
        configuration.maxValueBytes = 1 << 16
        var logger = Logger(label: "walrus.fuzz")
        logger.logLevel = .critical
        guard let store = try? KeyValueStore.open(configuration, logger: logger) else { return }
        // Scripts too (the conversions, the sandbox); an endless one is stopped after 200 ms.
        let runner = CommandRunner(store: store, scriptTimeLimitMilliseconds: 200)
        for command in commands.prefix(200) {
            let words = command.arguments.map { Array($0.readableBytesView) }
            // An empty request (a blank inline line) gets no reply, as on the client port.
            if words.isEmpty { continue }
            let name = String(decoding: words[0], as: UTF8.self).uppercased()
            // A command that would stop the process, or block for its timeout, is not what this target is about.
            if ["SHUTDOWN", "WAIT"].contains(name) { continue }
            let reply = runner.run(words)
            let count = Self.replyCount(reply)
            // Redis answers (P)SUBSCRIBE and (P)UNSUBSCRIBE with one confirmation per channel, and
            // an EXEC that ran a queued one carries those extra confirmations after its array (as
            // redis-server 7.0 does). Every other command answers exactly one reply.
            let several = ["SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "EXEC"].contains(name)
            check(
                count.map { several ? $0 >= 1 : $0 == 1 } ?? false,
                "the reply to \(words.map { String(decoding: $0.prefix(32), as: UTF8.self) }) is not \(several ? "a sequence of whole RESP replies" : "one RESP reply"): \(String(decoding: reply.prefix(200), as: UTF8.self))")
        }
        runner.end()
        try? store.commitBlocking()
        let live = store.digest()
        store.close()
        guard let reopened = try? KeyValueStore.open(configuration, logger: logger) else {
            fatalError("the log the commands wrote does not reopen")
        }
        let replayed = reopened.digest()
        reopened.close()
        check(live.digest == replayed.digest && live.keys == replayed.keys, "the replayed state differs from the live one")
    }

    /// How many whole RESP2/RESP3 replies `bytes` holds, end to end; nil when they are not a
    /// sequence of whole replies (a malformed or cut-off one).
    static func replyCount(_ bytes: [UInt8]) -> Int? {
        var position = 0
        func line() -> String? {
            guard let end = bytes[position...].firstIndex(of: 13), end + 1 < bytes.count, bytes[end + 1] == 10 else { return nil }
            defer { position = end + 2 }
            return String(decoding: bytes[(position + 1)..<end], as: UTF8.self)
        }
        func value(depth: Int) -> Bool {
            guard depth < 16, position < bytes.count else { return false }
            let kind = bytes[position]
            guard let text = line() else { return false }
            switch kind {
            case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: ":"), UInt8(ascii: "_"), UInt8(ascii: ","), UInt8(ascii: "#"):
                return true
            case UInt8(ascii: "$"):
                guard let length = Int(text) else { return false }
                if length == -1 { return true }
                guard length >= 0, position + length + 2 <= bytes.count, bytes[position + length] == 13 else { return false }
                position += length + 2
                return true
            case UInt8(ascii: "*"), UInt8(ascii: "%"):
                guard let count = Int(text) else { return false }
                if count == -1 { return true }
                for _ in 0..<(count * (kind == UInt8(ascii: "%") ? 2 : 1)) where !value(depth: depth + 1) { return false }
                return true
            default:
                return false
            }
        }
        var count = 0
        while position < bytes.count {
            guard value(depth: 0) else { return nil }
            count += 1
        }
        return count
    }

    /// A finding: stops the run with `message`. (`precondition` drops its message in a release
    /// build, which is what the fuzzer runs; `fatalError` keeps it, so the CI log says what failed.)
    static func check(_ condition: Bool, _ message: @autoclosure () -> String) {
        if !condition { fatalError(message()) }
    }

    // MARK: - Support

    /// A per-process scratch directory on a tmpfs when there is one.
    static let scratch: String = {
        let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        let path = "\(base)/walrus-fuzz-\(getpid())"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }()

    static func scratchFile(_ name: String, _ data: UnsafeRawBufferPointer) -> String {
        let path = self.scratch + "/" + name
        var fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        if fd < 0 && errno == ENOENT {  // removed by removeScratch(): make it again
            try? FileManager.default.createDirectory(atPath: self.scratch, withIntermediateDirectories: true)
            fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        }
        check(fd >= 0, "cannot write \(path)")
        var written = 0
        while written < data.count {
            let n = write(fd, data.baseAddress! + written, data.count - written)
            check(n > 0, "cannot write \(path)")
            written += n
        }
        close(fd)
        return path
    }

    /// Remove the scratch directory (at exit of a replay run).
    public static func removeScratch() { try? FileManager.default.removeItem(atPath: self.scratch) }

    // MARK: - Seeds

    /// Valid inputs for each target, made with walrus's own encoders (`walrus-fuzz seed DIR`
    /// writes them; the committed corpus started from these).
    public static func seeds() throws -> [String: [[UInt8]]] {
        var seeds: [String: [[UInt8]]] = [:]
        let set = "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"
        seeds["resp"] = [
            [0] + Array(set.utf8),
            [3] + Array("PING\r\nGET key\r\n".utf8),
            [7] + Array((set + "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n*1\r\n$4\r\nPING\r\n").utf8),
            [1] + Array("*2\r\n$4\r\nECHO\r\n$0\r\n\r\n".utf8),
        ]
        func request(_ words: String...) -> String {
            "*\(words.count)\r\n" + words.map { "$\($0.utf8.count)\r\n\($0)\r\n" }.joined()
        }
        seeds["commands"] = [
            request("SET", "k", "1", "EX", "100") + request("INCR", "k") + request("APPEND", "k", "x") + request("GET", "k"),
            request("MULTI") + request("SET", "a", "1") + request("INCRBY", "a", "5") + request("RENAME", "a", "b") + request("EXEC"),
            request("WATCH", "w") + request("SET", "w", "2") + request("MULTI") + request("DEL", "w") + request("EXEC"),
            request("MSET", "x", "1", "y", "2") + request("EXPIRE", "x", "10", "GT") + request("COPY", "y", "z") + request("FLUSHALL")
                + request("SETRANGE", "r", "3", "abc") + request("SETBIT", "b", "7", "1") + request("INCRBYFLOAT", "f", "1.5"),
            request("GETEX", "k", "PERSIST") + request("LCS", "k", "b", "IDX") + request("SCAN", "0", "COUNT", "5")
                + request("KEYS", "*") + request("PEXPIREAT", "k", "1") + request("TTL", "k") + request("COMMAND", "INFO", "get"),
        ].map { Array($0.utf8) }
        seeds["control"] = [
            #"{"verb":"status"}"#, #"{"verb":"log-level","level":"debug"}"#, #"{"verb":"promote","force":true}"#,
            #"{"verb":"follow","target":"[::1]:7380"}"#, #"{"verb":"switchover","target":"10.0.0.2:7380","timeoutMilliseconds":5000}"#,
        ].map { Array($0.utf8) }

        // A real log and snapshot: sets, a delete and a batch, then a checkpoint.
        let directory = NSTemporaryDirectory() + "walrus-fuzz-seed-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var configuration = StoreConfiguration(directory: directory)
        configuration.snapshotsToKeep = 1
        var logger = Logger(label: "walrus.fuzz")
        logger.logLevel = .critical
        let store = try KeyValueStore.open(configuration, logger: logger)
        _ = try store.set(key: Array("alpha".utf8), value: Array("one".utf8))
        _ = try store.set(key: Array("beta".utf8), value: [UInt8](repeating: 0x42, count: 300))
        _ = try store.delete(key: Array("alpha".utf8))
        _ = try store.apply(batch: [.set(key: Array("g".utf8), value: Array("h".utf8)), .delete(key: Array("beta".utf8))])
        try store.commitBlocking()
        let segment = try FileManager.default.contentsOfDirectory(atPath: directory).filter { SegmentName.parse($0) != nil }.sorted()[0]
        let log = [UInt8](try Data(contentsOf: URL(fileURLWithPath: directory + "/" + segment)))
        _ = try store.set(key: Array("after".utf8), value: Array("snapshot".utf8))
        let report = try store.checkpointBlocking()
        store.close()
        let snapshot = [UInt8](try Data(contentsOf: URL(fileURLWithPath: report.path)))
        seeds["wal"] = [log, Array(log.prefix(log.count - 5))]
        seeds["snapshot"] = [snapshot]

        var frames: [[UInt8]] = []
        func frame(_ kind: ReplicationFrame.Kind, _ encode: (inout ByteBuffer) -> Void) {
            var payload = ByteBufferAllocator().buffer(capacity: 64)
            encode(&payload)
            var out = ByteBufferAllocator().buffer(capacity: 64)
            ReplicationFrame(kind: kind, epoch: 1, payload: payload).encode(into: &out, checksum: { CRC32.checksum($0) })
            frames.append(Array(out.readableBytesView))
        }
        frame(.hello) {
            ReplicationHello(
                protocolVersion: 1, clusterID: "c1", nodeID: "n1", epoch: 1, durableEpoch: 1, durableIndex: 5,
                authProof: [1, 2, 3], epochs: [(1, 1), (2, 9)]
            ).encode(into: &$0)
        }
        frame(.challenge) {
            ReplicationChallenge(clusterID: "c1", nodeID: "p", epoch: 2, nonce: Array(repeating: 7, count: 16), authRequired: true).encode(into: &$0)
        }
        frame(.ack) { ReplicationAck(received: 9, durable: 8, applied: 7).encode(into: &$0) }
        frame(.reject) { ReplicationReject(reason: .staleEpoch, message: "stale").encode(into: &$0) }
        var frameBytes = ByteBufferAllocator().buffer(capacity: log.count)
        frameBytes.writeBytes(log)
        frame(.stream) { ReplicationStream(firstIndex: 1, count: 4, frames: frameBytes).encode(into: &$0) }
        frame(.heartbeat) { _ in }
        frame(.diverged) { ReplicationDiverged(index: 3).encode(into: &$0) }
        frame(.promote) { ReplicationPromotion(epoch: 3, index: 10).encode(into: &$0) }
        frame(.snapshotBegin) { ReplicationSnapshotBegin(index: 5, totalBytes: 100, offset: 0).encode(into: &$0) }
        var chunk = ByteBufferAllocator().buffer(capacity: 16)
        chunk.writeBytes(snapshot.prefix(64))
        frame(.snapshotChunk) { ReplicationSnapshotChunk(offset: 0, bytes: chunk).encode(into: &$0) }
        seeds["replication"] = frames + [frames.joined().map { $0 }]
        return seeds
    }
}
