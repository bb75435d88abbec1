import Synchronization
import WALCore
public import WalrusStore

/// The settings a running server holds, changed by a reload or CONFIG SET: one copy, read by
/// CONFIG GET and INFO, and `apply` to make the running parts follow a change of live keys.
public final class ServerSettings: Sendable {
    private let current: LockedValue<DaemonSettings>
    private let changes = Atomic<Int>(0)
    private let apply: @Sendable (DaemonSettings, [String]) -> Void
    private let validate: (@Sendable (DaemonSettings, [String]) throws -> Void)?
    /// The config file the daemon read (CONFIG REWRITE writes it), and the keys flags set
    /// (they win over the file at the next start).
    public let configFile: String?
    public let flagKeys: Set<String>

    /// - Parameter apply: makes the running parts follow `keys` (live keys) taking the values of
    ///   the settings given (walrusd's reload and CONFIG SET share it).
    public init(
        _ settings: DaemonSettings, configFile: String? = nil, flagKeys: Set<String> = [],
        validate: (@Sendable (DaemonSettings, [String]) throws -> Void)? = nil,
        apply: @escaping @Sendable (DaemonSettings, [String]) -> Void
    ) {
        self.current = LockedValue(settings)
        self.apply = apply
        self.validate = validate
        self.configFile = configFile
        self.flagKeys = flagKeys
    }

    /// CONFIG REWRITE: the config file gets the settings in force, `follow` included (the role
    /// now: a promoted node's file no longer names its old primary). Lines keep their place and
    /// comments; a key that now has no value is commented out; keys set since the start that the
    /// file lacks are appended. Written to a temporary file, fsynced and renamed over the old one.
    /// Returns the keys that flags set, which still win at the next start.
    func rewrite(follow: String?) throws(CommandError) -> [String] {
        guard let path = self.configFile else { throw CommandError("ERR The server is running without a config file") }
        var settings = self.snapshot
        settings.follow = follow
        self.current.withLock { $0.follow = follow }
        self.changes.add(1, ordering: .releasing)
        let defaults = DaemonSettings()
        let text: String
        do {
            text = String(decoding: try FileIO.readFile(path), as: UTF8.self)
        } catch {
            throw CommandError("ERR CONFIG REWRITE failed: cannot read \(path): \(error)")
        }
        var written = Set<String>()
        var lines: [String] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            let trimmed = line.trimmed(" \t")
            guard !trimmed.hasPrefix("#"), let equals = trimmed.firstIndex(of: "="),
                let key = DaemonSettings.key(String(trimmed[..<equals]).trimmed(" \t"))
            else {
                lines.append(line)
                continue
            }
            guard !written.contains(key.name) else { continue }
            written.insert(key.name)
            let value = settings.value(of: key)
            if key.name == "follow" && follow == nil {
                lines.append("# follow: removed by CONFIG REWRITE (this node became a primary)")
            } else {
                lines.append("\(key.name) = \(Self.fileValue(value))")
            }
        }
        let missing = DaemonSettings.keys.filter { key in
            !written.contains(key.name) && settings.value(of: key) != defaults.value(of: key) && !(key.name == "follow" && follow == nil)
        }
        if !missing.isEmpty {
            if lines.last == "" { lines.removeLast() }
            lines.append("# Added by CONFIG REWRITE")
            for key in missing { lines.append("\(key.name) = \(Self.fileValue(settings.value(of: key)))") }
            lines.append("")
        }
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        do {
            try FileIO.writeFileAtomically(path, directory: directory.isEmpty ? "/" : directory, bytes: Array(lines.joined(separator: "\n").utf8))
        } catch {
            throw CommandError("ERR CONFIG REWRITE failed: cannot write \(path): \(error)")
        }
        return self.flagKeys.sorted()
    }

    private static func fileValue(_ value: String) -> String {
        if Int(value) != nil { return value }
        return "\"" + value.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"") + "\""
    }

    /// For a server run without walrusd (tests, embedding): the store's limits follow CONFIG SET.
    convenience init(server: ServerConfiguration, store: KeyValueStore) {
        var settings = DaemonSettings()
        settings.data = store.configuration.directory
        settings.bind = server.bindAddress
        settings.port = server.port
        settings.maxClients = server.maxClients
        settings.idleTimeout = server.idleTimeoutSeconds
        settings.maxKeyBytes = store.configuration.maxKeyBytes
        settings.maxValueBytes = store.configuration.maxValueBytes
        switch store.wal.fsyncMode {
        case .always: settings.fsync = "always"
        case .interval(let milliseconds):
            settings.fsync = "interval"
            settings.fsyncInterval = milliseconds
        }
        self.init(settings) { settings, keys in
            if keys.contains("max-key-bytes") || keys.contains("max-value-bytes") {
                store.setLimits(maxKeyBytes: settings.maxKeyBytes, maxValueBytes: settings.maxValueBytes)
            }
            if keys.contains("fsync-interval") { store.wal.setFsyncInterval(milliseconds: settings.fsyncInterval) }
        }
    }

    /// The settings in force.
    public var snapshot: DaemonSettings { self.current.withLock { $0 } }

    /// Counts changes (reloads, CONFIG SET): a reader that caches a value re-reads it when this moves.
    public var generation: Int { self.changes.load(ordering: .acquiring) }

    /// Take `fresh` (a reload): the live keys among `keys` are applied.
    public func replace(with fresh: DaemonSettings, applying keys: [String]) {
        self.current.withLock { $0 = fresh }
        self.changes.add(1, ordering: .releasing)
        self.apply(fresh, keys)
    }

    /// CONFIG SET: every pair checked first, then all applied together (Redis 7's all-or-nothing).
    func set(_ pairs: [(name: String, value: String)]) throws(CommandError) {
        var fresh = self.snapshot
        var changed: [String] = []
        for (name, value) in pairs {
            guard let key = DaemonSettings.key(name) else {
                if let fixed = RedisCompatibility.fixed[name.lowercased()], fixed(fresh) == value { continue }
                if RedisCompatibility.fixed[name.lowercased()] != nil {
                    throw CommandError("ERR CONFIG SET failed (possibly related to argument '\(name)') - can't set immutable config")
                }
                throw CommandError("ERR Unknown option or number of arguments for CONFIG SET - '\(name)'")
            }
            guard key.live else {
                if fresh.value(of: key) == value { continue }
                throw CommandError(
                    "ERR CONFIG SET failed (possibly related to argument '\(name)') - can't set immutable config "
                        + "(walrus applies '\(key.name)' at start: change it in the config file and restart)")
            }
            do {
                try fresh.set(key.name, value)
            } catch {
                throw CommandError("ERR CONFIG SET failed (possibly related to argument '\(name)') - \(error)")
            }
            changed.append(key.name)
        }
        guard !changed.isEmpty else { return }
        // A change the running parts cannot take (certificates that do not load) changes nothing.
        if let validate = self.validate {
            do {
                try validate(fresh, changed)
            } catch {
                throw CommandError("ERR CONFIG SET failed (possibly related to argument '\(changed[0])') - \(error)")
            }
        }
        self.replace(with: fresh, applying: changed)
    }

    /// CONFIG GET: (name, value) for every key whose name, or Redis name, matches one of `patterns`.
    func matching(_ patterns: [[UInt8]], fsync: FsyncMode) -> [(String, String)] {
        let settings = self.snapshot
        var all: [(String, String)] = []
        for key in DaemonSettings.keys {
            all.append((key.name, settings.value(of: key)))
            if let redis = key.redisName { all.append((redis, settings.value(of: key))) }
        }
        for (name, value) in RedisCompatibility.fixed.sorted(by: { $0.key < $1.key }) { all.append((name, value(settings))) }
        var matched: [(String, String)] = []
        var seen = Set<String>()
        for pattern in patterns {
            let lowered = pattern.map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }
            for (name, value) in all where !seen.contains(name) {
                if Array(name.utf8).withUnsafeBytes({ GlobPattern.matches(lowered, $0) }) {
                    seen.insert(name)
                    matched.append((name, value))
                }
            }
        }
        return matched
    }
}

/// Redis settings that clients and Redis's own tests read, with the value that describes walrus
/// (CONFIG SET to that value is accepted; any other is refused as immutable).
enum RedisCompatibility {
    static let fixed: [String: @Sendable (DaemonSettings) -> String] = [
        "save": { _ in "" },
        "appendonly": { _ in "yes" },
        "appendfsync": { $0.fsync == "always" ? "always" : "everysec" },
        "databases": { _ in "1" },
        "maxmemory": { _ in "0" },
        "maxmemory-policy": { _ in "noeviction" },
        "replica-read-only": { _ in "yes" },
        "slave-read-only": { _ in "yes" },
        "replica-serve-stale-data": { _ in "yes" },
        "slave-serve-stale-data": { _ in "yes" },
    ]
}

/// The ports the listeners actually bound (with `port = 0` every view shows the real one).
public final class ListenerPorts: Sendable {
    private let client = Atomic<Int>(0)
    private let replication = Atomic<Int>(0)
    private let metrics = Atomic<Int>(0)
    private let tls = Atomic<Int>(0)

    public init() {}

    public var clientPort: Int {
        get { self.client.load(ordering: .relaxed) }
        set { self.client.store(newValue, ordering: .relaxed) }
    }
    public var replicationPort: Int {
        get { self.replication.load(ordering: .relaxed) }
        set { self.replication.store(newValue, ordering: .relaxed) }
    }
    /// The TLS client port (0: none).
    public var tlsPort: Int {
        get { self.tls.load(ordering: .relaxed) }
        set { self.tls.store(newValue, ordering: .relaxed) }
    }
    public var metricsPort: Int {
        get { self.metrics.load(ordering: .relaxed) }
        set { self.metrics.store(newValue, ordering: .relaxed) }
    }
}
