import Synchronization
import WALCore

/// What one active expiry cycle did.
public struct ExpiryCycleReport: Sendable, Equatable {
    /// Keys with a deadline looked at.
    public var sampled = 0
    /// Keys deleted because their deadline had passed.
    public var expired = 0
    /// Sampling rounds (one record each when something expired).
    public var rounds = 0
    /// The cycle stopped because its time budget ran out (many keys are expiring at once).
    public var timedOut = false

    public init() {}
}

/// Expiry: deadlines live in the map's entries; only a primary deletes keys past them — lazily
/// when a command touches one (`StoreTransaction`), and actively here — and every delete is a
/// record, so followers, snapshots and recovery agree on when a key went.
extension KeyValueStore {
    /// Redis's active expiry cycle: sample `keysPerRound` keys that have a deadline, delete the
    /// expired ones (one record per round), and go on while more than `acceptableStalePercent` of
    /// a sample had expired and the time budget lasts. Each round takes the store's lock once, so
    /// clients get in between rounds.
    public func expireCycle(
        keysPerRound: Int = 20, acceptableStalePercent: Int = 10, budgetNanoseconds: UInt64 = 25_000_000
    ) -> ExpiryCycleReport {
        var report = ExpiryCycleReport()
        let started = monotonicNanoseconds()
        while true {
            let round: (sampled: Int, expired: Int)
            do {
                round = try self.perform { transaction in
                    let sample = transaction.state.map.sampleExpiring(keysPerRound, from: UInt64.random(in: .min ... .max))
                    var expired = 0
                    for (key, deadline) in sample where deadline <= transaction.now {
                        // The existence check deletes it (a primary's transaction).
                        if try !key.withUnsafeBytes({ try transaction.exists($0) }) { expired += 1 }
                    }
                    return (sample.count, expired)
                }.result
            } catch {
                // The log takes no writes (disk full, failed, shutting down): expire nothing now.
                return report
            }
            report.rounds += 1
            report.sampled += round.sampled
            report.expired += round.expired
            if round.sampled == 0 || round.expired * 100 <= round.sampled * acceptableStalePercent { return report }
            if monotonicNanoseconds() - started >= budgetNanoseconds {
                report.timedOut = true
                return report
            }
        }
    }

    // MARK: WATCH

    /// WATCH `keys` for `token`: a later change to any of them by anyone makes `token` dirty.
    public func watch(_ keys: [[UInt8]], token: WatchToken) {
        let now = wallClockMilliseconds()
        self.withStateLocked { state in
            let registry = state.watches ?? WatchRegistry()
            state.watches = registry
            for key in keys {
                let expired = key.withUnsafeBytes { k in
                    state.map.deadline(k).map { deadline in deadline.map { $0 <= now } ?? false } ?? false
                }
                registry.watch(ByteKey(key), token: token, expired: expired)
            }
        }
    }

    /// Forget `token`'s watched keys and its dirty flag (UNWATCH, DISCARD, a disconnect).
    public func unwatch(_ token: WatchToken) {
        self.withStateLocked { state in
            state.watches?.unwatchAll(token)
            token.dirty = false
        }
    }
}

extension StoreTransaction {
    /// WATCH `key` for `token` (inside the transaction that runs the WATCH command).
    public mutating func watch(_ key: [UInt8], token: WatchToken) {
        let registry = self.state.watches ?? WatchRegistry()
        self.state.watches = registry
        let now = self.now
        let expired = key.withUnsafeBytes { k in
            self.state.map.deadline(k).map { deadline in deadline.map { $0 <= now } ?? false } ?? false
        }
        registry.watch(ByteKey(key), token: token, expired: expired)
    }

    /// The bytes `key` takes in memory (MEMORY USAGE), nil when absent or expired. A key this
    /// transaction wrote is measured as the map holds it until the transaction commits.
    public mutating func memoryUsage(_ key: UnsafeRawBufferPointer) throws -> Int? {
        guard try self.exists(key) else { return nil }
        return self.state.map.footprint(key) ?? (key.count + 64)
    }

    /// The state's digest (DIGEST): the map as of the transaction's start, its own writes not
    /// yet included.
    public func digest() -> (index: UInt64, keys: Int, digest: String) { KeyValueStore.digest(of: self.state) }

    /// Forget `token`'s watched keys and its dirty flag (UNWATCH, DISCARD).
    public mutating func unwatch(_ token: WatchToken) {
        self.state.watches?.unwatchAll(token)
        token.dirty = false
    }

    /// EXEC's check, inside its transaction: whether a key `token` watches was changed, or has
    /// passed its deadline since it was watched (Redis's CLIENT_DIRTY_CAS and
    /// isWatchedKeyExpired). The watch ends either way.
    public mutating func endWatch(_ token: WatchToken) -> (failed: Bool, watched: Bool) {
        let watched = token.isWatching
        var failed = token.dirty
        if !failed {
            for (key, entry) in token.keys where !entry.expiredAtWatch {
                let expired = key.bytes.withUnsafeBytes { k in
                    self.state.map.deadline(k).map { deadline in deadline.map { $0 <= self.now } ?? false } ?? false
                }
                if expired {
                    failed = true
                    break
                }
            }
        }
        self.state.watches?.unwatchAll(token)
        token.dirty = false
        return (failed, watched)
    }
}
