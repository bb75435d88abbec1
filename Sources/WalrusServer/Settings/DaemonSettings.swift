public import Logging
import WALCore
#if canImport(Glibc)
import Glibc
#endif

/// Everything walrusd can be told, typed. Each field is one key of `DaemonSettings.keys`, which
/// is the only place a key's name, type, default, parsing and liveness are written: the
/// command-line flags, the config file, a reload's diff, CONFIG GET / CONFIG SET and the README's
/// key table (checked by a test) all come from it.
public struct DaemonSettings: Equatable, Sendable {
    public var data: String = getenv("STATE_DIRECTORY").map { String(cString: $0) } ?? "./walrus-data"
    public var bind = "127.0.0.1"
    public var port = 7379
    public var controlSocket: String? = nil
    public var fsync = "always"
    public var fsyncInterval = 100
    public var commitGather = 50
    public var maxClients = 10_000
    public var idleTimeout = 0
    public var eventLoops = 0
    public var logLevel: Logger.Level = .info
    public var segmentSize = 10 * 1024 * 1024
    public var maxKeyBytes = 64 * 1024
    public var maxValueBytes = 16 * 1024 * 1024
    public var retentionBytes = 64 * 1024 * 1024
    public var retentionSeconds = 3600
    public var replBind = "127.0.0.1"
    public var replPort = 7380
    public var follow: String? = nil
    public var syncReplicas = 0
    public var syncReplicasTimeout = 5000
    public var replAuthFile: String? = nil
    public var replTimeout = 10_000
    public var replSnapshotRate = 0
    public var replRetentionBytes = 1 << 30
    public var replRetentionSeconds = 3600
    public var metricsPort: Int? = nil
    public var metricsBind = "127.0.0.1"
    public var busyReplyThreshold = 5000
    public var scriptMemoryBytes = 512 << 20
    public var pubsubOutputLimitBytes = 32 << 20
    public var replicaPriority = 100
    public var replicaAnnounceIp = ""
    public var replicaAnnouncePort = 0
    public var notifyKeyspaceEvents = ""
    public var tlsPort = 0
    public var tlsCertFile = ""
    public var tlsKeyFile = ""
    public var tlsKeyFilePass = ""
    public var tlsClientCertFile = ""
    public var tlsClientKeyFile = ""
    public var tlsClientKeyFilePass = ""
    public var tlsCaCertFile = ""
    public var tlsCaCertDir = ""
    public var tlsAuthClients = "yes"
    public var tlsReplication = "no"
    public var tlsProtocols = ""
    public var tlsCiphers = ""
    public var tlsCiphersuites = ""

    public init() {}

    /// `follow` split into host and port.
    public var followTarget: (host: String, port: Int)? {
        guard let follow else { return nil }
        return Self.parseHostPort(follow)
    }

    /// `HOST:PORT` or `[IPv6]:PORT`, port 1…65535.
    public static func parseHostPort(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        return (host, port)
    }

    /// A value a key refuses, or a file mistake: what is wrong and what to do.
    public struct FileError: Error, CustomStringConvertible, Sendable {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// One config key.
    public struct Key: Sendable {
        /// The name in the file and the flag (`--fsync-interval`).
        public let name: String
        /// Redis's name for the same setting, for CONFIG GET / CONFIG SET (`maxclients`).
        public let redisName: String?
        /// What the README's table says of its type.
        public let type: String
        /// What the README's table says of its default.
        public let defaultText: String
        /// Applied by a reload (SIGHUP, `walrusctl reload`) and by CONFIG SET, without a restart.
        public let live: Bool
        /// One line for the README and `walrusd --help`.
        public let doc: String
        let read: @Sendable (DaemonSettings) -> String
        let write: @Sendable (inout DaemonSettings, String) throws -> Void
    }

    /// The key named `name` (or whose Redis name it is).
    public static func key(_ name: String) -> Key? {
        let lowered = name.lowercased()
        return Self.keys.first { $0.name == lowered || $0.redisName == lowered }
    }

    /// The value of `key` as text (what CONFIG GET answers; "" for none).
    public func value(of key: Key) -> String { key.read(self) }

    /// Set one key from its text (the file, a flag, CONFIG SET).
    public mutating func set(_ name: String, _ value: String) throws {
        guard let key = Self.keys.first(where: { $0.name == name }) else { throw FileError(description: "unknown key '\(name)'") }
        try key.write(&self, value)
    }

    /// The keys whose values differ, in table order (a reload's report).
    public func changedKeys(from other: DaemonSettings) -> [String] {
        Self.keys.filter { $0.read(self) != $0.read(other) }.map(\.name)
    }

    /// Keys that take effect on reload and CONFIG SET; the rest need a restart.
    public static var liveKeys: Set<String> { Set(Self.keys.filter(\.live).map(\.name)) }
}

extension DaemonSettings {
    // MARK: Building keys

    private static func integer(
        _ name: String, redis: String? = nil, type: String = "integer", _ range: ClosedRange<Int>, default defaultText: String,
        live: Bool = false, _ path: WritableKeyPath<DaemonSettings, Int>, _ doc: String
    ) -> Key {
        // Key paths are immutable values: sharing one between threads is safe.
        nonisolated(unsafe) let path = path
        return Key(
            name: name, redisName: redis, type: type, defaultText: defaultText, live: live, doc: doc,
            read: { String($0[keyPath: path]) },
            write: { settings, text in settings[keyPath: path] = try Self.parseInteger(name, text, range) })
    }

    private static func text(
        _ name: String, redis: String? = nil, type: String, default defaultText: String, live: Bool = false,
        _ path: WritableKeyPath<DaemonSettings, String>, _ doc: String
    ) -> Key {
        nonisolated(unsafe) let path = path
        return Key(
            name: name, redisName: redis, type: type, defaultText: defaultText, live: live, doc: doc,
            read: { $0[keyPath: path] }, write: { settings, text in settings[keyPath: path] = text })
    }

    /// A key that takes one of `choices` (Redis's spelling; compared without case).
    private static func choice(
        _ name: String, _ choices: [String], default defaultText: String, live: Bool = false,
        _ path: WritableKeyPath<DaemonSettings, String>, _ doc: String
    ) -> Key {
        nonisolated(unsafe) let path = path
        return Key(
            name: name, redisName: name, type: choices.map { "`\($0)`" }.joined(separator: " \\| "), defaultText: defaultText,
            live: live, doc: doc, read: { $0[keyPath: path] },
            write: { settings, text in
                let lowered = text.lowercased()
                guard choices.contains(lowered) else {
                    throw FileError(description: "\(name) must be \(choices.joined(separator: ", ")), not '\(text)'")
                }
                settings[keyPath: path] = lowered
            })
    }

    /// The keys a certificate reload re-reads (SIGHUP, `walrusctl reload`, CONFIG SET).
    public static let tlsLiveKeys: Set<String> = [
        "tls-cert-file", "tls-key-file", "tls-key-file-pass", "tls-client-cert-file", "tls-client-key-file",
        "tls-client-key-file-pass", "tls-ca-cert-file", "tls-ca-cert-dir", "tls-auth-clients", "tls-protocols", "tls-ciphers",
        "tls-ciphersuites",
    ]

    /// Whether TLS is asked for at all (a TLS client port, or TLS replication).
    public var tlsEnabled: Bool { self.tlsPort > 0 || self.tlsReplication == "yes" }

    private static func optionalPath(
        _ name: String, default defaultText: String, _ path: WritableKeyPath<DaemonSettings, String?>, _ doc: String
    ) -> Key {
        nonisolated(unsafe) let path = path
        return Key(
            name: name, redisName: nil, type: "path", defaultText: defaultText, live: false, doc: doc,
            read: { $0[keyPath: path] ?? "" }, write: { settings, text in settings[keyPath: path] = text.isEmpty ? nil : text })
    }

    static func parseInteger(_ name: String, _ text: String, _ range: ClosedRange<Int>) throws -> Int {
        guard let number = Int(text.filter { $0 != "_" }), range.contains(number) else {
            throw FileError(description: "\(name) must be an integer in \(range.lowerBound)…\(range.upperBound), not '\(text)'")
        }
        return number
    }

    /// Every key, in the order the README lists them.
    public static let keys: [Key] = [
        Key(
            name: "data", redisName: "dir", type: "path", defaultText: "`$STATE_DIRECTORY`, else `./walrus-data`", live: false,
            doc: "the data directory", read: { $0.data }, write: { $0.data = $1 }),
        text("bind", redis: "bind", type: "address", default: "`127.0.0.1`", \.bind, "where clients connect"),
        integer("port", redis: "port", 0...65535, default: "7379", \.port, "the client port (0: any free port, logged)"),
        optionalPath(
            "control-socket", default: "`$RUNTIME_DIRECTORY/control.sock`, else `DATA/control.sock`", \.controlSocket,
            "the control socket"),
        Key(
            name: "fsync", redisName: nil, type: "`always` \\| `interval`", defaultText: "`always`", live: false,
            doc: "acknowledge after the record's fdatasync, or at once with an fdatasync every `fsync-interval`",
            read: { $0.fsync },
            write: { settings, text in
                guard text == "always" || text == "interval" else {
                    throw FileError(description: "fsync must be \"always\" or \"interval\", not '\(text)'")
                }
                settings.fsync = text
            }),
        integer(
            "fsync-interval", type: "ms", 1...3_600_000, default: "100", live: true, \.fsyncInterval,
            "the period of interval mode"),
        integer(
            "commit-gather", type: "µs", 0...100_000, default: "50", live: true, \.commitGather,
            "with `fsync = always`, hold a pass's fdatasync back at most this long while clients the last one answered are still sending, so one fdatasync serves them all (0: never)"),
        integer(
            "max-clients", redis: "maxclients", 1...1_000_000, default: "10000", live: true, \.maxClients,
            "more connections get `-ERR max number of clients reached`"),
        integer(
            "idle-timeout", redis: "timeout", type: "seconds", 0...31_536_000, default: "0 (never)", \.idleTimeout,
            "close idle clients"),
        Key(
            name: "log-level", redisName: "loglevel", type: "trace…critical", defaultText: "info", live: true,
            doc: "also `walrusctl log-level`", read: { $0.logLevel.rawValue },
            write: { settings, text in
                guard let level = Logger.Level(rawValue: text.lowercased()) else {
                    throw FileError(
                        description: "log-level must be trace, debug, info, notice, warning, error or critical, not '\(text)'")
                }
                settings.logLevel = level
            }),
        integer("segment-size", type: "bytes", 4096...(1 << 40), default: "10485760", \.segmentSize, "rotate log segments past this"),
        integer(
            "max-key-bytes", type: "bytes", 1...(512 << 20), default: "65536", live: true, \.maxKeyBytes,
            "larger keys are refused with the limit's name"),
        integer(
            "max-value-bytes", redis: "proto-max-bulk-len", type: "bytes", 0...(512 << 20), default: "16777216", live: true,
            \.maxValueBytes, "larger values are refused with the limit's name"),
        integer("retention-bytes", type: "bytes", 0...Int.max, default: "67108864", \.retentionBytes, "log kept behind a snapshot"),
        integer("retention-seconds", type: "s", 0...Int.max, default: "3600", \.retentionSeconds, "…and for at least this long"),
        text("repl-bind", type: "address", default: "`127.0.0.1`", \.replBind, "the replication listener's address"),
        integer("repl-port", 0...65535, default: "7380", \.replPort, "the replication port (0: any free port, logged)"),
        Key(
            name: "follow", redisName: nil, type: "`host:port`", defaultText: "none", live: false,
            doc: "run as a follower of that primary's replication port", read: { $0.follow ?? "" },
            write: { settings, text in
                if text.isEmpty {
                    settings.follow = nil
                } else {
                    guard Self.parseHostPort(text) != nil else {
                        throw FileError(
                            description: "follow must be host:port (the primary's replication port, e.g. 10.0.0.1:7380), not '\(text)'")
                    }
                    settings.follow = text
                }
            }),
        integer(
            "sync-replicas", 0...100, default: "0", \.syncReplicas,
            "a write is acknowledged only once this many followers have it durable"),
        integer(
            "sync-replicas-timeout", type: "ms", 1...3_600_000, default: "5000", \.syncReplicasTimeout,
            "…or it fails with `-NOREPLICAS` after this long"),
        optionalPath(
            "repl-auth-file", default: "none", \.replAuthFile,
            "shared secret (≥ 16 bytes, not world-readable); followers must prove they hold it"),
        integer(
            "repl-timeout", type: "ms", 500...3_600_000, default: "10000", \.replTimeout,
            "a silent replication peer is dropped (heartbeats every second)"),
        integer(
            "repl-snapshot-rate", type: "bytes/s", 0...Int.max, default: "0 (unpaced)", \.replSnapshotRate,
            "pace snapshot transfers to followers"),
        integer(
            "repl-retention-bytes", type: "bytes", 0...Int.max, default: "1073741824", \.replRetentionBytes,
            "log kept for a follower that is behind or away, at most"),
        integer(
            "repl-retention-seconds", type: "s", 0...Int.max, default: "3600", \.replRetentionSeconds,
            "…and for a follower that went away, this long"),
        integer(
            "event-loops", 0...256, default: "0 (half the cores, at least 1)", \.eventLoops,
            "threads serving every connection (clients, replication, control, metrics)"),
        Key(
            name: "metrics-port", redisName: nil, type: "integer", defaultText: "none (off)", live: false,
            doc: "Prometheus metrics at `GET /metrics` (0: any free port, logged); see [Metrics](#metrics)",
            read: { $0.metricsPort.map(String.init) ?? "" },
            write: { settings, text in
                settings.metricsPort = text.isEmpty ? nil : try Self.parseInteger("metrics-port", text, 0...65535)
            }),
        text("metrics-bind", type: "address", default: "`127.0.0.1`", \.metricsBind, "the metrics endpoint's address"),
        integer(
            "busy-reply-threshold", redis: "lua-time-limit", type: "ms", 0...Int.max, default: "5000", live: true,
            \.busyReplyThreshold,
            "a script running longer makes other clients' commands answer `-BUSY` (0: never); SCRIPT KILL stops it"),
        integer(
            "script-memory-bytes", type: "bytes", (1 << 20)...(1 << 40), default: "536870912", live: true,
            \.scriptMemoryBytes, "the Lua heap's bound; an allocation past it fails the script with \"not enough memory\""),
        integer(
            "replica-priority", redis: "replica-priority", type: "integer", 0...Int.max, default: "100", live: true, \.replicaPriority,
            "Sentinel promotes the follower with the lowest non-zero value first (INFO's slave_priority); 0: never promote this one"),
        text(
            "replica-announce-ip", redis: "replica-announce-ip", type: "address", default: "none (the address the primary sees)",
            \.replicaAnnounceIp,
            "the address this follower's primary reports for it (INFO `slaveN:ip=`, which Sentinel connects to): behind NAT or in a container"),
        integer(
            "replica-announce-port", redis: "replica-announce-port", 0...65535, default: "0 (the client port)", \.replicaAnnouncePort,
            "…and the port it reports (`slaveN:port=`)"),
        Key(
            name: "notify-keyspace-events", redisName: "notify-keyspace-events", type: "classes", defaultText: "\"\"", live: true,
            doc: "Redis's keyspace notifications: K, E and the classes g $ x n A (l s h z t e m d are accepted and never fire); empty: off",
            read: { $0.notifyKeyspaceEvents },
            write: { settings, text in
                guard let flags = KeyspaceEventFlags(parsing: text) else {
                    throw FileError(description: "Invalid event class character. Use 'Ag$lshzxeKEtmdn'.")
                }
                settings.notifyKeyspaceEvents = flags.text
            }),
        integer(
            "pubsub-output-limit-bytes", type: "bytes", 0...Int.max, default: "33554432", live: true, \.pubsubOutputLimitBytes,
            "a subscriber whose unsent messages pass this is disconnected (Redis's `client-output-buffer-limit pubsub` hard limit; 0: none)"),
        integer(
            "tls-port", redis: "tls-port", 0...65535, default: "0 (off)", \.tlsPort,
            "a TLS client listener beside `port`, on `bind` (see [TLS](#tls))"),
        text(
            "tls-cert-file", redis: "tls-cert-file", type: "path", default: "none", live: true, \.tlsCertFile,
            "this node's certificate (PEM, chain after it), for the TLS listeners and, without `tls-client-cert-file`, outgoing links"),
        text("tls-key-file", redis: "tls-key-file", type: "path", default: "none", live: true, \.tlsKeyFile, "…and its private key (PEM)"),
        text(
            "tls-key-file-pass", redis: "tls-key-file-pass", type: "text", default: "none", live: true, \.tlsKeyFilePass,
            "the passphrase of an encrypted `tls-key-file`"),
        text(
            "tls-client-cert-file", redis: "tls-client-cert-file", type: "path", default: "none (`tls-cert-file`)", live: true,
            \.tlsClientCertFile, "the certificate a follower presents to its primary (and REPLICAOF's probe)"),
        text(
            "tls-client-key-file", redis: "tls-client-key-file", type: "path", default: "none", live: true, \.tlsClientKeyFile,
            "…and its private key"),
        text(
            "tls-client-key-file-pass", redis: "tls-client-key-file-pass", type: "text", default: "none", live: true,
            \.tlsClientKeyFilePass, "…and that key's passphrase"),
        text(
            "tls-ca-cert-file", redis: "tls-ca-cert-file", type: "path", default: "none", live: true, \.tlsCaCertFile,
            "the CA certificates (PEM) that clients', followers' and the primary's certificates must be signed by"),
        text(
            "tls-ca-cert-dir", redis: "tls-ca-cert-dir", type: "path", default: "none", live: true, \.tlsCaCertDir,
            "…or a directory of them (every PEM file in it)"),
        choice(
            "tls-auth-clients", ["yes", "no", "optional"], default: "`yes`", live: true, \.tlsAuthClients,
            "TLS clients and followers must present a certificate the CA signed (`optional`: checked only if one is sent)"),
        choice(
            "tls-replication", ["yes", "no"], default: "`no`", \.tlsReplication,
            "the replication listener speaks only TLS, and a follower (and REPLICAOF) dials with TLS, checking the primary's certificate names the host it dialled"),
        text(
            "tls-protocols", redis: "tls-protocols", type: "versions", default: "`TLSv1.2 TLSv1.3`", live: true, \.tlsProtocols,
            "the TLS versions accepted and offered (TLSv1 TLSv1.1 TLSv1.2 TLSv1.3)"),
        text(
            "tls-ciphers", redis: "tls-ciphers", type: "cipher list", default: "BoringSSL's", live: true, \.tlsCiphers,
            "TLS 1.2 cipher suites (an OpenSSL cipher list)"),
        text(
            "tls-ciphersuites", redis: "tls-ciphersuites", type: "suite list", default: "all three", live: true, \.tlsCiphersuites,
            "TLS 1.3 suites: BoringSSL always offers all three, so only the full list is accepted (see [TLS](#tls))"),
    ]

    /// The README's table of keys, from `keys` (a test checks the README against this).
    public static var markdownTable: String {
        var lines = ["| key / flag | type | default | live | meaning |", "|---|---|---|---|---|"]
        for key in Self.keys {
            lines.append("| `\(key.name)` | \(key.type) | \(key.defaultText) | \(key.live ? "yes" : "") | \(key.doc) |")
        }
        return lines.joined(separator: "\n")
    }
}
