import Synchronization
import WALCore
public import WalrusStore

/// The settings a running server holds, changed by a reload or CONFIG SET: one copy, read by
/// CONFIG GET and INFO, and `apply` to make the running parts follow a change of live keys.
public final class ServerSettings: Sendable {
    private let current: LockedValue<DaemonSettings>
    private let changes = Atomic<Int>(0)
    private let apply: @Sendable (DaemonSettings, [String]) -> Void

    /// - Parameter apply: makes the running parts follow `keys` (live keys) taking the values of
    ///   the settings given (walrusd's reload and CONFIG SET share it).
    public init(_ settings: DaemonSettings, apply: @escaping @Sendable (DaemonSettings, [String]) -> Void) {
        self.current = LockedValue(settings)
        self.apply = apply
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

    public init() {}

    public var clientPort: Int {
        get { self.client.load(ordering: .relaxed) }
        set { self.client.store(newValue, ordering: .relaxed) }
    }
    public var replicationPort: Int {
        get { self.replication.load(ordering: .relaxed) }
        set { self.replication.store(newValue, ordering: .relaxed) }
    }
    public var metricsPort: Int {
        get { self.metrics.load(ordering: .relaxed) }
        set { self.metrics.store(newValue, ordering: .relaxed) }
    }
}
