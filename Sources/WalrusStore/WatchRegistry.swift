import WALCore

/// One client's WATCH: dirty once a key it watches is changed by anyone (a write, a delete, an
/// expiry's delete, FLUSHALL), so that its EXEC fails (Redis's CLIENT_DIRTY_CAS).
///
/// - Important: read and written under the store's lock only (every path that touches it — a
///   write's apply, WATCH, UNWATCH, EXEC — holds it).
public final class WatchToken: @unchecked Sendable {
    /// A watched key was changed since WATCH.
    public internal(set) var dirty = false
    /// The keys this client watches, each with whether it was already expired at WATCH time.
    var keys: [ByteKey: WatchRegistry.Entry] = [:]

    public init() {}

    /// Whether the client watches anything.
    public var isWatching: Bool { !self.keys.isEmpty }
}

/// The watched keys of every client: key → the clients watching it (Redis's `watched_keys`).
///
/// - Important: not thread-safe; `StoreState` (under the store's lock) owns it.
final class WatchRegistry {
    /// A client's watch on one key.
    final class Entry {
        unowned let token: WatchToken
        /// The key had passed its deadline (but was not deleted yet) when it was watched: its
        /// delete is no logical change and does not dirty the client (Redis 7.0's rule).
        var expiredAtWatch: Bool

        init(token: WatchToken, expiredAtWatch: Bool) {
            self.token = token
            self.expiredAtWatch = expiredAtWatch
        }
    }

    private var watchers: [ByteKey: [Entry]] = [:]

    var isEmpty: Bool { self.watchers.isEmpty }

    func watch(_ key: ByteKey, token: WatchToken, expired: Bool) {
        guard token.keys[key] == nil else { return }
        let entry = Entry(token: token, expiredAtWatch: expired)
        token.keys[key] = entry
        self.watchers[key, default: []].append(entry)
    }

    /// Forget every key `token` watches (UNWATCH, EXEC, DISCARD, a disconnect). The dirty flag is
    /// the caller's to clear.
    func unwatchAll(_ token: WatchToken) {
        for (key, entry) in token.keys {
            guard var entries = self.watchers[key] else { continue }
            entries.removeAll { $0 === entry }
            self.watchers[key] = entries.isEmpty ? nil : entries
        }
        token.keys.removeAll()
    }

    /// `op` was applied to `key`.
    func touch(op: RecordOp, key: UnsafeRawBufferPointer) {
        guard let entries = self.watchers[ByteKey(Array(key))] else { return }
        for entry in entries {
            if entry.expiredAtWatch && op == .delete {
                // A stale key's delete changes nothing a client could have read.
                entry.expiredAtWatch = false
                continue
            }
            entry.token.dirty = true
        }
    }

    /// Every key is about to be removed (FLUSHALL): dirty the watchers of keys that exist.
    func touchAll(exists: (ByteKey) -> Bool) {
        for (key, entries) in self.watchers where exists(key) {
            for entry in entries {
                if entry.expiredAtWatch {
                    entry.expiredAtWatch = false
                    continue
                }
                entry.token.dirty = true
            }
        }
    }
}
