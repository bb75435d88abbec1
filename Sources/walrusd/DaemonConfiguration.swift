import Logging
import WALCore
#if canImport(Glibc)
import Glibc
#endif

/// Everything walrusd can be told, from the config file and the command line (flags win).
/// Every key below is also a flag of the same name (`fsync-interval = 50` ↔ `--fsync-interval 50`).
struct DaemonConfiguration: Equatable, Sendable {
    /// `data` (string, default `./walrus-data`, or `$STATE_DIRECTORY` under systemd): the data directory.
    var data: String = getenv("STATE_DIRECTORY").map { String(cString: $0) } ?? "./walrus-data"
    /// `bind` (string, default `127.0.0.1`): the address clients connect to.
    var bind = "127.0.0.1"
    /// `port` (integer, default 7379; 0 picks a free port and logs it): the client port.
    var port = 7379
    /// `control-socket` (string, default `$RUNTIME_DIRECTORY/control.sock`, else `DATA/control.sock`).
    var controlSocket: String? = nil
    /// `fsync` (`always` or `interval`, default `always`): when a write is acknowledged.
    var fsync = "always"
    /// `fsync-interval` (integer milliseconds, default 100): the period of `fsync = "interval"`.
    var fsyncInterval = 100
    /// `max-clients` (integer, default 10000): connections beyond this are refused. Live on reload.
    /// (`fsync-interval`, `max-key-bytes` and `max-value-bytes` are live on reload too.)
    var maxClients = 10_000
    /// `idle-timeout` (integer seconds, default 0 = never): close idle client connections.
    var idleTimeout = 0
    /// `event-loops` (integer, default 0 = half the cores, at least one): threads serving client connections.
    var eventLoops = 0
    /// `log-level` (trace … critical, default `info`). Live on reload.
    var logLevel: Logger.Level = .info
    /// `segment-size` (integer bytes, default 10485760): rotate log segments past this.
    var segmentSize = 10 * 1024 * 1024
    /// `max-key-bytes` (integer, default 65536) and `max-value-bytes` (integer, default 16777216).
    var maxKeyBytes = 64 * 1024
    var maxValueBytes = 16 * 1024 * 1024
    /// `retention-bytes` (integer, default 67108864) and `retention-seconds` (integer, default 3600):
    /// how much log a checkpoint keeps behind its snapshot.
    var retentionBytes = 64 * 1024 * 1024
    var retentionSeconds = 3600
    /// `repl-bind` (string, default `127.0.0.1`) and `repl-port` (integer, default 7380; 0 picks a
    /// free one): the replication listener, separate from the client port.
    var replBind = "127.0.0.1"
    var replPort = 7380
    /// `follow` (`"host:port"`, default none): run as a follower of that primary's replication port.
    var follow: String? = nil
    /// `sync-replicas` (integer, default 0): writes wait until this many followers have them durable…
    var syncReplicas = 0
    /// …for at most `sync-replicas-timeout` milliseconds (default 5000), then fail with NOREPLICAS.
    var syncReplicasTimeout = 5000
    /// `repl-auth-file` (string, default none): a shared secret; followers prove they hold it.
    var replAuthFile: String? = nil
    /// `repl-timeout` (integer milliseconds, default 10000): a silent replication peer is dropped.
    var replTimeout = 10_000
    /// `repl-snapshot-rate` (integer bytes per second, default 0 = unpaced): snapshot transfer pace.
    var replSnapshotRate = 0
    /// `repl-retention-bytes` (integer, default 1073741824): at most this much log is kept for a
    /// follower that is behind; past it the follower gets a snapshot instead.
    var replRetentionBytes = 1 << 30
    /// `repl-retention-seconds` (integer, default 3600): a follower that went away keeps its log
    /// for this long (within repl-retention-bytes).
    var replRetentionSeconds = 3600
    /// `metrics-port` (integer, default none = off; 0 picks a free port and logs it) and
    /// `metrics-bind` (string, default `127.0.0.1`): a Prometheus endpoint, `GET /metrics`.
    var metricsPort: Int? = nil
    var metricsBind = "127.0.0.1"

    /// `follow` split into host and port.
    var followTarget: (host: String, port: Int)? {
        guard let follow else { return nil }
        return Self.parseHostPort(follow)
    }

    static func parseHostPort(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        return (host, port)
    }

    /// Keys that take effect on reload (SIGHUP or `walrusctl reload`); the rest need a restart.
    static let liveKeys: Set<String> = ["log-level", "max-clients", "fsync-interval", "max-key-bytes", "max-value-bytes"]

    /// A config file problem, with the file, the line and what to do.
    struct FileError: Error, CustomStringConvertible {
        var description: String
    }

    /// Apply `key = value` lines of a config file (a flat subset of TOML: strings in double
    /// quotes, integers, comments with #). Unknown keys are errors, not silently ignored.
    mutating func apply(file path: String) throws {
        let bytes: [UInt8]
        do {
            bytes = try FileIO.readFile(path)
        } catch let error as WALError {
            throw FileError(description: "Cannot read the config file \(path): \(FileIO.describe(error.errno ?? 0)).")
        }
        try self.apply(text: String(decoding: bytes, as: UTF8.self), source: path)
    }

    mutating func apply(text: String, source: String) throws {
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = Self.stripComment(String(rawLine)).trimmingCharacters(in: " \t\r")
            if line.isEmpty { continue }
            func fail(_ why: String) -> FileError {
                FileError(description: "\(source), line \(number + 1): \(why) ('\(line)'). Fix the line or remove it.")
            }
            if line.hasPrefix("[") { throw fail("tables are not used by walrusd; every key is at the top level") }
            guard let equals = line.firstIndex(of: "=") else { throw fail("expected key = value") }
            let key = String(line[..<equals]).trimmingCharacters(in: " \t")
            let raw = String(line[line.index(after: equals)...]).trimmingCharacters(in: " \t")
            let value: String
            if raw.hasPrefix("\"") {
                guard raw.count >= 2, raw.hasSuffix("\"") else { throw fail("unterminated string") }
                value = String(raw.dropFirst().dropLast())
                    .replacingOccurrences(of: "\\\"", with: "\"").replacingOccurrences(of: "\\\\", with: "\\")
            } else {
                value = raw
            }
            do {
                try self.set(key, value)
            } catch let error as FileError {
                throw fail(error.description)
            }
        }
    }

    /// Set one key from its text (shared by the file and the flags).
    mutating func set(_ key: String, _ value: String) throws {
        func integer(_ range: ClosedRange<Int>) throws -> Int {
            guard let number = Int(value.replacingOccurrences(of: "_", with: "")), range.contains(number) else {
                throw FileError(description: "\(key) must be an integer in \(range.lowerBound)…\(range.upperBound), not '\(value)'")
            }
            return number
        }
        switch key {
        case "data": self.data = value
        case "bind": self.bind = value
        case "port": self.port = try integer(0...65535)
        case "control-socket": self.controlSocket = value
        case "fsync":
            guard value == "always" || value == "interval" else {
                throw FileError(description: "fsync must be \"always\" or \"interval\", not '\(value)'")
            }
            self.fsync = value
        case "fsync-interval": self.fsyncInterval = try integer(1...3_600_000)
        case "max-clients": self.maxClients = try integer(1...1_000_000)
        case "idle-timeout": self.idleTimeout = try integer(0...31_536_000)
        case "event-loops": self.eventLoops = try integer(0...256)
        case "log-level":
            guard let level = Logger.Level(rawValue: value.lowercased()) else {
                throw FileError(description: "log-level must be trace, debug, info, notice, warning, error or critical, not '\(value)'")
            }
            self.logLevel = level
        case "segment-size": self.segmentSize = try integer(4096...(1 << 40))
        case "max-key-bytes": self.maxKeyBytes = try integer(1...(512 << 20))
        case "max-value-bytes": self.maxValueBytes = try integer(0...(512 << 20))
        case "retention-bytes": self.retentionBytes = try integer(0...Int.max)
        case "retention-seconds": self.retentionSeconds = try integer(0...Int.max)
        case "repl-bind": self.replBind = value
        case "repl-port": self.replPort = try integer(0...65535)
        case "follow":
            if value.isEmpty {
                self.follow = nil
            } else {
                guard Self.parseHostPort(value) != nil else {
                    throw FileError(description: "follow must be host:port (the primary's replication port, e.g. 10.0.0.1:7380), not '\(value)'")
                }
                self.follow = value
            }
        case "sync-replicas": self.syncReplicas = try integer(0...100)
        case "sync-replicas-timeout": self.syncReplicasTimeout = try integer(1...3_600_000)
        case "repl-auth-file": self.replAuthFile = value.isEmpty ? nil : value
        case "repl-timeout": self.replTimeout = try integer(500...3_600_000)
        case "repl-snapshot-rate": self.replSnapshotRate = try integer(0...Int.max)
        case "repl-retention-bytes": self.replRetentionBytes = try integer(0...Int.max)
        case "repl-retention-seconds": self.replRetentionSeconds = try integer(0...Int.max)
        case "metrics-port": self.metricsPort = try integer(0...65535)
        case "metrics-bind": self.metricsBind = value
        default:
            throw FileError(description: "unknown key '\(key)'")
        }
    }

    /// The keys whose values differ, for reload reports.
    func changedKeys(from other: DaemonConfiguration) -> [String] {
        var keys: [String] = []
        if self.data != other.data { keys.append("data") }
        if self.bind != other.bind { keys.append("bind") }
        if self.port != other.port { keys.append("port") }
        if self.controlSocket != other.controlSocket { keys.append("control-socket") }
        if self.fsync != other.fsync { keys.append("fsync") }
        if self.fsyncInterval != other.fsyncInterval { keys.append("fsync-interval") }
        if self.maxClients != other.maxClients { keys.append("max-clients") }
        if self.idleTimeout != other.idleTimeout { keys.append("idle-timeout") }
        if self.eventLoops != other.eventLoops { keys.append("event-loops") }
        if self.logLevel != other.logLevel { keys.append("log-level") }
        if self.segmentSize != other.segmentSize { keys.append("segment-size") }
        if self.maxKeyBytes != other.maxKeyBytes { keys.append("max-key-bytes") }
        if self.maxValueBytes != other.maxValueBytes { keys.append("max-value-bytes") }
        if self.retentionBytes != other.retentionBytes { keys.append("retention-bytes") }
        if self.retentionSeconds != other.retentionSeconds { keys.append("retention-seconds") }
        if self.replBind != other.replBind { keys.append("repl-bind") }
        if self.replPort != other.replPort { keys.append("repl-port") }
        if self.follow != other.follow { keys.append("follow") }
        if self.syncReplicas != other.syncReplicas { keys.append("sync-replicas") }
        if self.syncReplicasTimeout != other.syncReplicasTimeout { keys.append("sync-replicas-timeout") }
        if self.replAuthFile != other.replAuthFile { keys.append("repl-auth-file") }
        if self.replTimeout != other.replTimeout { keys.append("repl-timeout") }
        if self.metricsPort != other.metricsPort { keys.append("metrics-port") }
        if self.metricsBind != other.metricsBind { keys.append("metrics-bind") }
        if self.replSnapshotRate != other.replSnapshotRate { keys.append("repl-snapshot-rate") }
        if self.replRetentionBytes != other.replRetentionBytes { keys.append("repl-retention-bytes") }
        if self.replRetentionSeconds != other.replRetentionSeconds { keys.append("repl-retention-seconds") }
        return keys
    }

    private static func stripComment(_ line: String) -> String {
        var inString = false
        var previous: Character = " "
        for (offset, character) in line.enumerated() {
            if character == "\"" && previous != "\\" { inString.toggle() }
            if character == "#" && !inString { return String(line.prefix(offset)) }
            previous = character
        }
        return line
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var result = Substring(self)
        while let first = result.first, set.contains(first) { result.removeFirst() }
        while let last = result.last, set.contains(last) { result.removeLast() }
        return String(result)
    }

    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = ""
        var rest = Substring(self)
        while let range = rest.range(of: target) {
            result += rest[..<range.lowerBound]
            result += replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}
