import ArgumentParser
import Foundation
import WALCore
import WalrusClient
import WalrusProtocol

/// `walrusctl`: drives a running walrusd over its control socket; `wal verify` and `wal dump` read a
/// data directory directly.
@main
struct Walrusctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "walrusctl",
        abstract: "Operate walrusd: status, replicas, digest, flush, checkpoint, log level, reload; inspect a log offline.",
        subcommands: [
            Status.self, Replicas.self, Digest.self, Promote.self, Follow.self, Switchover.self, Flush.self, Checkpoint.self,
            LogLevel.self, Reload.self, WAL.self,
        ])

    /// `--socket PATH` and `--json` may come before the verb (`walrusctl --socket P status`, as
    /// etcdctl, kubectl and systemctl take them) or after it: moved behind the verb here.
    static func main() {
        var arguments = Array(CommandLine.arguments.dropFirst())
        var globals: [String] = []
        while let first = arguments.first, first.hasPrefix("--") {
            if first == "--json" {
                globals.append(arguments.removeFirst())
            } else if first == "--socket", arguments.count >= 2 {
                globals += arguments.prefix(2)
                arguments.removeFirst(2)
            } else if first.hasPrefix("--socket=") {
                globals.append(arguments.removeFirst())
            } else {
                break
            }
        }
        if !globals.isEmpty, !arguments.isEmpty {
            // The verb, and for `wal` its subcommand, then the globals.
            let verbs = arguments.first == "wal" && arguments.count > 1 ? 2 : 1
            arguments.insert(contentsOf: globals, at: verbs)
        } else {
            arguments = globals + arguments
        }
        Self.main(arguments)
    }
}

/// Options every online verb takes.
struct ControlOptions: ParsableArguments {
    @Option(
        help: "The control socket (default: /run/walrus/control.sock if it exists, else ./walrus-data/control.sock).")
    var socket: String?

    @Flag(help: "Print the reply as JSON (for scripts).")
    var json = false

    var socketPath: String {
        if let socket { return socket }
        if let runtime = ProcessInfo.processInfo.environment["RUNTIME_DIRECTORY"] { return runtime + "/control.sock" }
        if FileManager.default.fileExists(atPath: "/run/walrus/control.sock") { return "/run/walrus/control.sock" }
        return "./walrus-data/control.sock"
    }

    /// Send `request` and decode its result; on `--json` print the result as it came. Prints and
    /// exits non-zero on a refusal.
    func call<Result: Codable & Sendable>(_ request: ControlRequest, as type: Result.Type) throws -> Result {
        let line: [UInt8]
        do {
            line = try ControlConnection(path: self.socketPath).request(line: request.line)
        } catch {
            Self.fail("walrusctl: \(error)")
        }
        guard let reply = try? JSONDecoder().decode(ControlReply<Result>.self, from: Data(line)) else {
            let any = try? JSONDecoder().decode(AnyControlReply.self, from: Data(line))
            if self.json { print(String(decoding: line, as: UTF8.self)) }
            Self.fail("walrusctl: \(any?.error ?? "walrusd sent a reply walrusctl cannot read: \(String(decoding: line.prefix(200), as: UTF8.self))")")
        }
        guard reply.ok, let result = reply.result else {
            if self.json { print(String(decoding: line, as: UTF8.self)) }
            Self.fail("walrusctl: \(reply.error ?? "walrusd refused the request")")
        }
        if self.json {
            // The result object as sent, pretty-printed with sorted keys.
            if let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any], let result = object["result"] {
                Self.printJSON(result)
            }
        }
        return result
    }

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data((message + "\n").utf8))
        Foundation.exit(1)
    }

    static func printJSON(_ object: Any) {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])) ?? Data()
        print(String(decoding: data, as: UTF8.self))
    }

    /// Two aligned columns.
    static func printTable(_ rows: [(String, String)]) {
        let width = rows.map(\.0.count).max() ?? 0
        for (key, value) in rows { print(key.padding(toLength: width + 2, withPad: " ", startingAt: 0) + value) }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Role, indexes, keys, log size, fsync, clients, uptime.")
    @OptionGroup var options: ControlOptions

    func run() throws {
        let status = try self.options.call(.status, as: NodeStatus.self)
        if self.options.json { return }
        let history = status.epochHistory.map { "\($0.epoch) from \($0.firstIndex)" }.joined(separator: ", ")
        ControlOptions.printTable([
            ("role", status.role), ("epoch", "\(status.epoch)"), ("last index", "\(status.lastIndex)"),
            ("sealed index", "\(status.sealedIndex)"), ("first index", "\(status.firstIndex)"),
            ("keys", "\(status.keys) (\(status.expiringKeys) with a deadline)"),
            ("wal", "\(ByteCountFormatter.string(fromByteCount: status.walBytes, countStyle: .binary)) in \(status.walSegments) segment(s)"),
            ("fsync", status.fsync),
            (
                "last fsync",
                "\(DurationFormat.seconds(Double(status.lastFsyncMicroseconds) / 1e6)) (max \(DurationFormat.seconds(Double(status.maxFsyncMicroseconds) / 1e6)), \(status.fsyncs) in all)"
            ),
            ("clients", "\(status.connectedClients)"), ("client port", "\(status.clientPort)"),
            ("replication port", "\(status.replicationPort)"), ("uptime", DurationFormat.seconds(Double(status.uptimeSeconds))),
            ("data", status.dataDirectory), ("pid", "\(status.pid)"), ("log level", status.logLevel), ("health", status.health),
            ("node id", status.nodeID), ("cluster id", status.clusterID), ("epoch history", history),
            ("diverged files", status.divergedFiles.isEmpty ? "none" : status.divergedFiles.joined(separator: " ")),
        ])
        if let tls = status.tls {
            let days = Double(tls.certificateExpires - Int64(Date().timeIntervalSince1970)) / 86_400
            let expires = Date(timeIntervalSince1970: Double(tls.certificateExpires)).formatted(.iso8601)
            var rows: [(String, String)] = [
                ("tls port", (status.tlsPort ?? 0) > 0 ? "\(status.tlsPort ?? 0)" : "none"),
                ("tls replication", tls.replication ? "yes" : "no"),
                ("tls certificate", "\(tls.certificateSubject) (issued by \(tls.certificateIssuer))"),
                ("tls expires", "\(expires) (in \(String(format: "%.1f", days)) days)" + (days < 14 ? "  WARNING: renew it" : "")),
                ("tls clients", "auth \(tls.authClients), \(tls.protocols)"),
                (
                    "tls reloads",
                    "\(tls.reloads); certificates in force loaded \(Date(timeIntervalSince1970: Double(tls.loadedAt)).formatted(.iso8601))"
                ),
            ]
            if tls.clientCertificateSubject != tls.certificateSubject {
                rows.insert(("tls client cert", tls.clientCertificateSubject), at: 3)
            }
            print("")
            ControlOptions.printTable(rows)
        }
        if status.isFollower {
            var rows: [(String, String)] = [
                ("primary", "\(status.primary ?? "?") (node \(status.primaryNodeID ?? "?"))"),
                (
                    "link",
                    "\(status.link ?? "down"), \(status.linkState ?? "?"); last heard "
                        + ((status.lastIOSecondsAgo ?? -1) < 0 ? "never" : DurationFormat.seconds(status.lastIOSecondsAgo ?? 0) + " ago")
                ),
                ("received / durable / applied", "\(status.receivedIndex ?? 0) / \(status.durableIndex ?? 0) / \(status.appliedIndex)"),
                ("primary sealed", "\(status.primarySealedIndex ?? 0)"), ("lag", "\(status.lagRecords ?? 0) records"),
                ("snapshots installed", "\(status.snapshotsInstalled ?? 0)"),
            ]
            if status.tls?.replication == true { rows.append(("link tls peer", status.linkPeerSubject ?? "(handshake not done)")) }
            if let total = status.snapshotTotalBytes {
                rows.append(("snapshot", "\(status.snapshotPercent ?? 0)% (\(status.snapshotBytes ?? 0) of \(total) bytes)"))
            }
            if let error = status.linkError { rows.append(("last link error", error)) }
            print("")
            ControlOptions.printTable(rows)
        } else if let followers = status.followers {
            print("")
            ControlOptions.printTable([("followers", "\(followers)"), ("sync-replicas", "\(status.syncReplicas ?? 0)")])
        }
    }
}

struct Replicas: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "One row per follower: state, received/durable/applied index, lag in records, bytes and data age.")
    @OptionGroup var options: ControlOptions

    func run() throws {
        let replicas = try self.options.call(.replicas, as: ReplicasReply.self).replicas
        if self.options.json { return }
        guard !replicas.isEmpty else { return print("no followers") }
        var rows: [[String]] = [["NODE", "ADDRESS", "STATE", "RECEIVED", "DURABLE", "APPLIED", "LAG", "LAG BYTES", "DATA AGE", "HEARD"]]
        var notes: [String] = []
        for replica in replicas {
            var state = replica.state.rawValue
            if replica.snapshotBytesTotal > 0 && replica.state == .snapshot {
                state += " \(replica.snapshotBytesSent * 100 / replica.snapshotBytesTotal)%"
            }
            rows.append([
                replica.nodeID, replica.address, state, "\(replica.received)", "\(replica.durable)", "\(replica.applied)",
                "\(replica.lagRecords)", "\(replica.lagBytes)", DurationFormat.seconds(replica.dataAgeSeconds),
                DurationFormat.seconds(replica.lastHeardSecondsAgo) + " ago",
            ])
            if let warning = replica.warning { notes.append("\(replica.nodeID): \(warning)") }
            if let subject = replica.peerSubject { notes.append("\(replica.nodeID): TLS, certificate \(subject)") }
        }
        let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            print(zip(row, widths).map { $0.padding(toLength: $1 + 2, withPad: " ", startingAt: 0) }.joined().trimmingCharacters(in: .whitespaces))
        }
        for note in notes { print(note.contains(": TLS, ") ? note : "warning: " + note) }
    }
}

struct Promote: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make this follower the primary: stop following, begin a new epoch, take writes.")
    @OptionGroup var options: ControlOptions
    @Flag(help: "Promote even though this node is behind the primary it last saw (those records are then lost to the cluster).")
    var force = false

    func run() throws {
        let result = try self.options.call(.promote(force: self.force), as: PromoteReply.self)
        if self.options.json { return }
        print("primary of epoch \(result.epoch) (epoch record at index \(result.index))")
        if let note = result.note { print("note: \(note)") }
    }
}

struct Follow: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Follow HOST:PORT (a primary's replication port); a former primary's extra records are moved aside.")
    @OptionGroup var options: ControlOptions
    @Argument(help: "The primary's replication address, HOST:PORT.") var target: String

    func run() throws {
        guard let (host, port) = ControlRequest.hostPort(self.target) else {
            throw ValidationError("HOST:PORT is the primary's replication address, e.g. 10.0.0.1:7380")
        }
        let result = try self.options.call(.follow(host: host, port: port), as: FollowReply.self)
        if self.options.json { return }
        print("following \(result.primary); see 'walrusctl status' for the link")
    }
}

struct Switchover: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "On the primary: hand over to a follower with no acknowledged write lost, then follow it.",
        discussion: """
            Pauses writes (clients get -TRYAGAIN naming the new primary), waits until TARGET holds every sealed \
            record durably, has it begin the next epoch, then follows it (writes here get -READONLY). On any \
            failure within --timeout this node resumes writes and the error says what happened.
            """)
    @OptionGroup var options: ControlOptions
    @Argument(help: "The follower: its node id or host:port, as 'walrusctl replicas' shows.") var target: String
    @Option(help: "Milliseconds the whole handover may take.") var timeout = 10_000

    func run() throws {
        let result = try self.options.call(.switchover(target: self.target, timeoutMilliseconds: self.timeout), as: SwitchoverReply.self)
        if self.options.json { return }
        ControlOptions.printTable([
            ("new primary", "\(result.newPrimary) (clients \(result.clientAddress), replication \(result.replicationAddress))"),
            ("epoch", "\(result.epoch)"), ("handed over at index", "\(result.sealedIndex)"),
            ("writes paused", DurationFormat.seconds(result.pausedMilliseconds / 1000)),
            ("this node", "now follows the new primary"),
        ])
    }
}

struct Digest: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A checksum of the whole key-value state, equal on nodes that hold the same data.")
    @OptionGroup var options: ControlOptions

    func run() throws {
        let result = try self.options.call(.digest, as: DigestReply.self)
        if self.options.json { return }
        print("\(result.digest)  index \(result.index)  keys \(result.keys)")
    }
}

struct Flush: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Seal every write now (fdatasync).")
    @OptionGroup var options: ControlOptions

    func run() throws {
        let result = try self.options.call(.flush, as: FlushReply.self)
        if self.options.json { return }
        print("sealed through index \(result.sealedIndex)")
    }
}

struct Checkpoint: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write a snapshot now and drop the log it covers.")
    @OptionGroup var options: ControlOptions

    func run() throws {
        let result = try self.options.call(.checkpoint, as: CheckpointReply.self)
        if self.options.json { return }
        ControlOptions.printTable([
            ("snapshot", result.path), ("index", "\(result.index)"), ("keys", "\(result.keys)"), ("bytes", "\(result.bytes)"),
            ("took", "\(result.milliseconds) ms"),
            ("segments removed", result.removedSegments.isEmpty ? "none (within the retention budget)" : result.removedSegments.joined(separator: " ")),
        ])
    }
}

struct LogLevel: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "log-level", abstract: "Show or set the log level.")
    @OptionGroup var options: ControlOptions
    @Argument(help: "trace, debug, info, notice, warning, error or critical; none to show the current one.")
    var level: String?

    func run() throws {
        let result = try self.options.call(.logLevel(self.level), as: LogLevelReply.self)
        if self.options.json { return }
        if let previous = result.previous { print("log level \(previous) → \(result.level)") } else { print("log level \(result.level)") }
    }
}

struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply what can change without a restart (as SIGHUP).")
    @OptionGroup var options: ControlOptions

    func run() throws {
        let result = try self.options.call(.reload, as: ReloadReply.self)
        if self.options.json { return }
        print("reloaded: \(result.result)")
    }
}

struct WAL: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal", abstract: "Read a data directory's log directly (never changes it); replay a diverged file.",
        subcommands: [Verify.self, Dump.self, Replay.self])

    struct Replay: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-apply the records of a diverged file to a primary (an operator's decision, after a failover).",
            discussion: """
                Sends each record of FILE to the primary at --to as SET / DEL (a batch record as its SETs and \
                DELs in order; epoch records are skipped). Later writes to the same keys on the new primary are \
                overwritten: look at the file with 'walrusctl wal dump --file FILE' first.
                """)
        @Argument(help: "A diverged-EPOCH-FROM-TO.log file.") var file: String
        @Option(help: "The primary's client address, HOST:PORT.") var to: String
        @Flag(help: "Only print what would be sent.") var dryRun = false

        func run() throws {
            guard let colon = self.to.lastIndex(of: ":"), let port = Int(self.to[self.to.index(after: colon)...]) else {
                throw ValidationError("--to must be HOST:PORT (the new primary's client port)")
            }
            let connection = self.dryRun ? nil : try RESPConnection(host: String(self.to[..<colon]), port: port)
            var sent = 0
            var skippedFlushes = 0
            var failed: [String] = []
            let report = try WALInspector.dump(file: self.file, range: 1...UInt64.max) { index, record in
                var commands: [[[UInt8]]] = []
                if record.op != .epoch {
                    record.forEachBatchEntry { op, key, value in
                        if let command = RecordText.command(op, key, value) {
                            commands.append(command)
                        } else if op == .flushAll {
                            skippedFlushes += 1
                        }
                    }
                }
                for command in commands {
                    if let connection {
                        let reply = try connection.command(command)
                        if case .error(let message) = reply { failed.append("record \(index): \(message)") } else { sent += 1 }
                    } else {
                        print("\(index)  " + command.map { String(decoding: $0, as: UTF8.self) }.joined(separator: " "))
                        sent += 1
                    }
                }
            }
            if let damage = report.damage { ControlOptions.fail("walrusctl: \(damage)") }
            print("\(self.dryRun ? "would send" : "sent") \(sent) command(s) from \(report.records) record(s)" + (failed.isEmpty ? "" : "; \(failed.count) refused"))
            if skippedFlushes > 0 {
                print("note: \(skippedFlushes) FLUSHALL record(s) not replayed: they would empty the new primary; run FLUSHALL there yourself if you mean it")
            }
            for line in failed.prefix(10) { print("  " + line) }
            if !failed.isEmpty { throw ExitCode(1) }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check every record; exit 1 on damage.")
        @Option(name: [.customLong("data"), .customLong("data-dir")], help: "The data directory.")
        var data: String = "./walrus-data"
        @Flag(help: "Print the report as JSON.") var json = false

        func run() throws {
            let report = WALInspector.verify(directory: self.data)
            if self.json {
                ControlOptions.printJSON([
                    "directory": report.directory, "records": report.records, "bytes": report.bytes,
                    "segments": report.segments.map { ["name": $0.name, "firstIndex": $0.firstIndex, "records": $0.records, "bytes": $0.bytes] },
                    "tornTail": report.tornTail as Any, "damage": report.damage as Any, "healthy": report.isHealthy,
                ])
            } else {
                print("segment          first index       records         bytes")
                for segment in report.segments {
                    print(
                        segment.name.padding(toLength: 17, withPad: " ", startingAt: 0)
                            + String(segment.firstIndex).leftPadded(11) + String(segment.records).leftPadded(14)
                            + String(segment.bytes).leftPadded(14))
                }
                print("\(report.records) records, \(report.bytes) bytes in \(report.segments.count) segment(s) of \(report.directory)")
                if let torn = report.tornTail { print("note: \(torn)") }
                print(report.damage.map { "DAMAGED: \($0)" } ?? "ok: every record checks out")
            }
            if !report.isHealthy { throw ExitCode(1) }
        }
    }

    struct Dump: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print records as text or JSON lines.")
        @Option(name: [.customLong("data"), .customLong("data-dir")], help: "The data directory.")
        var data: String = "./walrus-data"
        @Option(help: "Dump this file of frames instead (a diverged-EPOCH-FROM-TO.log moved aside by 'follow').")
        var file: String?
        @Option(help: "The first index to print.") var from: UInt64 = 1
        @Option(help: "The last index to print.") var to: UInt64 = UInt64.max
        @Flag(help: "One JSON object per record.") var json = false

        func run() throws {
            guard self.from <= self.to else { throw ValidationError("--from must not be after --to") }
            let json = self.json
            let printer: (UInt64, RecordView) throws -> Void = { index, record in
                var values: [String] = []
                record.forEachBatchEntry { op, key, value in values.append(RecordText.text(op, key, value)) }
                if json {
                    var object: [String: Any] = ["index": index, "op": "\(record.op)"]
                    if record.op == .epoch { object["epoch"] = record.epoch ?? 0 } else if record.op == .batch {
                        var entries: [[String: Any]] = []
                        record.forEachBatchEntry { op, key, value in entries.append(RecordText.json(op, key, value)) }
                        object["entries"] = entries
                    } else {
                        object.merge(RecordText.json(record.op, record.key, record.value)) { _, new in new }
                    }
                    ControlOptions.printJSONLine(object)
                } else if record.op == .epoch {
                    print("\(index)  epoch \(record.epoch ?? 0)")
                } else {
                    print("\(index)  " + values.joined(separator: "; "))
                }
            }
            let report =
                try self.file.map { try WALInspector.dump(file: $0, range: self.from...self.to, printer) }
                ?? WALInspector.dump(directory: self.data, range: self.from...self.to, printer)
            if let damage = report.damage { ControlOptions.fail("walrusctl: \(damage)") }
        }

        static func show(_ bytes: UnsafeRawBufferPointer) -> String { RecordText.show(bytes) }
    }
}

/// How a record's operation reads for people, for JSON, and as the Redis command that redoes it.
enum RecordText {
    /// A deadline's 8 bytes, and what follows them.
    static func deadline(_ value: UnsafeRawBufferPointer) -> (Int64, UnsafeRawBufferPointer) {
        let deadline = value.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return (Int64(bitPattern: deadline), UnsafeRawBufferPointer(rebasing: value.dropFirst(8)))
    }

    static func date(_ milliseconds: Int64) -> String {
        ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1000))
    }

    static func text(_ op: RecordOp, _ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> String {
        switch op {
        case .set: "set \(show(key)) = \(show(value))"
        case .delete: "delete \(show(key))"
        case .setExpiring:
            "set \(show(key)) = \(show(deadline(value).1)) until \(date(deadline(value).0))"
        case .expireAt: "expire \(show(key)) at \(date(deadline(value).0))"
        case .persist: "persist \(show(key))"
        case .flushAll: "flush-all"
        default: "\(op) \(show(key))"
        }
    }

    static func json(_ op: RecordOp, _ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> [String: Any] {
        var object: [String: Any] = ["op": "\(op)"]
        switch op {
        case .flushAll: break
        case .set: object["key"] = show(key); object["value"] = show(value)
        case .setExpiring:
            object["key"] = show(key)
            object["value"] = show(deadline(value).1)
            object["deadline"] = deadline(value).0
        case .expireAt:
            object["key"] = show(key)
            object["deadline"] = deadline(value).0
        default: object["key"] = show(key)
        }
        return object
    }

    /// The Redis command that redoes the operation (FLUSHALL: nil; a replay does not empty the
    /// new primary on its own).
    static func command(_ op: RecordOp, _ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> [[UInt8]]? {
        switch op {
        case .set: [Array("SET".utf8), Array(key), Array(value)]
        case .delete: [Array("DEL".utf8), Array(key)]
        case .setExpiring:
            [Array("SET".utf8), Array(key), Array(deadline(value).1), Array("PXAT".utf8), Array(String(deadline(value).0).utf8)]
        case .expireAt: [Array("PEXPIREAT".utf8), Array(key), Array(String(deadline(value).0).utf8)]
        case .persist: [Array("PERSIST".utf8), Array(key)]
        default: nil
        }
    }

    /// Bytes as text; unprintable bytes as \xHH.
    static func show(_ bytes: UnsafeRawBufferPointer) -> String {
            var text = ""
            for byte in bytes {
                if byte >= 0x20 && byte < 0x7F && byte != UInt8(ascii: "\\") {
                    text.unicodeScalars.append(Unicode.Scalar(byte))
                } else {
                    text += "\\x" + String(byte, radix: 16).leftPadded(2, "0")
                }
            }
            return text
        }
}

extension ControlOptions {
    static func printJSONLine(_ object: Any) {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        print(String(decoding: data, as: UTF8.self))
    }
}

extension String {
    func leftPadded(_ width: Int, _ pad: Character = " ") -> String {
        String(repeating: pad, count: max(0, width - self.count)) + self
    }
}
