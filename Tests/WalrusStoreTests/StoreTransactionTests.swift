import Testing
import WALCore
@testable import WalrusStore
import WalrusTestKit

/// Store transactions: reads see their own writes, everything is one record, nothing is applied
/// when the body throws, deadlines and expiry follow Redis, replay gives the same state.
struct StoreTransactionTests {
    func open(_ directory: TemporaryDirectory, mode: FsyncMode = .interval(milliseconds: 1000)) throws -> KeyValueStore {
        try KeyValueStore.open(storeConfiguration(directory, mode: mode), logger: quietLogger)
    }

    /// Writes are visible to later reads of the same transaction, and logged as one batch record.
    @Test func readsSeeTheTransactionsOwnWrites() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try self.open(directory)
        defer { store.close() }
        try store.set(key: Array("a".utf8), value: Array("1".utf8))
        let before = store.wal.lastIndex
        let (seen, index) = try store.perform { transaction -> [String?] in
            var seen: [String?] = []
            try transaction.set(Array("b".utf8), Array("2".utf8))
            seen.append(try transaction.value(Array("b".utf8)).map { String(decoding: $0, as: UTF8.self) })
            try Array("a".utf8).withUnsafeBytes { _ = try transaction.delete($0) }
            seen.append(try transaction.value(Array("a".utf8)).map { String(decoding: $0, as: UTF8.self) })
            try transaction.set(Array("a".utf8), Array("3".utf8))
            seen.append(try transaction.value(Array("a".utf8)).map { String(decoding: $0, as: UTF8.self) })
            #expect(transaction.count() == 2)
            return seen
        }
        #expect(seen == ["2", nil, "3"])
        #expect(index == before + 1, "one record for three writes")
        #expect(store.get("a") == "3" && store.get("b") == "2")
    }

    /// A body that throws leaves the map and the log as they were.
    @Test func aThrowingBodyWritesNothing() throws {
        struct Stop: Error {}
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try self.open(directory)
        defer { store.close() }
        let before = store.wal.lastIndex
        #expect(throws: Stop.self) {
            try store.perform { transaction in
                try transaction.set(Array("x".utf8), Array("1".utf8))
                throw Stop()
            }
        }
        #expect(store.wal.lastIndex == before && store.get("x") == nil)
    }

    /// FLUSHALL inside a transaction hides every earlier key from later reads of it.
    @Test func flushAllInsideATransaction() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try self.open(directory)
        defer { store.close() }
        for i in 0..<5 { try store.set(key: Array("k\(i)".utf8), value: [1]) }
        try store.perform { transaction in
            try transaction.removeAll()
            #expect(try transaction.value(Array("k1".utf8)) == nil)
            try transaction.set(Array("new".utf8), [2])
            #expect(transaction.count() == 1)
            var keys: [String] = []
            try transaction.forEachKey { key, _ in keys.append(String(decoding: key, as: UTF8.self)) }
            #expect(keys == ["new"])
        }
        #expect(store.count == 1 && store.get("new") != nil)
    }

    /// More than sixteen writes switch reads to the index; reads stay right.
    @Test func manyWritesStayReadable() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try self.open(directory)
        defer { store.close() }
        try store.perform { transaction in
            for i in 0..<100 { try transaction.set(Array("k\(i % 30)".utf8), Array("v\(i)".utf8)) }
            for i in 70..<100 {
                let key = Array("k\(i % 30)".utf8)
                #expect(try transaction.value(key) == Array("v\(i)".utf8))
            }
            try Array("k3".utf8).withUnsafeBytes { _ = try transaction.setDeadline($0, 99_999_999_999_999) }
            #expect(try Array("k3".utf8).withUnsafeBytes { try transaction.deadline($0) } == .some(99_999_999_999_999))
            #expect(try transaction.value(Array("k3".utf8)) == Array("v93".utf8))
        }
        #expect(store.count == 30)
    }

    /// Deadlines: a key past its deadline reads as absent; on a primary the read logs its delete;
    /// a follower's read (expiresKeys false) only hides it. Replay keeps deadlines and deletes.
    @Test func expiredKeysAreDeletedByPrimariesOnly() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        do {
            let store = try self.open(directory)
            defer { store.close() }
            let now: Int64 = 1_000_000
            try store.perform(now: now) { transaction in
                try transaction.set(Array("soon".utf8), Array("x".utf8), deadline: now + 10)
                try transaction.set(Array("later".utf8), Array("y".utf8), deadline: now + 1_000_000_000_000)
                try transaction.set(Array("never".utf8), Array("z".utf8))
            }
            #expect(store.expiringCount == 2)
            // A follower's view: hidden, nothing written.
            let before = store.wal.lastIndex
            let hidden = try store.perform(expiresKeys: false, now: now + 20) { try $0.value(Array("soon".utf8)) }
            #expect(hidden.result == nil && hidden.index == nil && store.count == 3)
            #expect(store.wal.lastIndex == before)
            // A primary's read deletes it with a record.
            let deleted = try store.perform(now: now + 20) { try $0.value(Array("soon".utf8)) }
            #expect(deleted.result == nil && deleted.index == before + 1 && store.count == 2)
            #expect(store.expiredKeys == 1)
            try store.wal.commitBlocking()
        }
        let reopened = try self.open(directory)
        defer { reopened.close() }
        #expect(reopened.count == 2 && reopened.expiringCount == 1)
        let deadline = try reopened.perform(expiresKeys: false, now: 1_000_000) { transaction in
            try Array("later".utf8).withUnsafeBytes { try transaction.deadline($0) }
        }.result
        #expect(deadline == .some(1_000_000 + 1_000_000_000_000))
    }

    /// The active cycle deletes expired keys in rounds, one record per round, and stops when few
    /// of a sample had expired.
    @Test func expiryCycleDeletesExpiredKeys() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try self.open(directory)
        defer { store.close() }
        let past = wallClockMilliseconds() - 1000
        try store.perform(now: past - 10) { transaction in
            for i in 0..<500 { try transaction.set(Array("gone\(i)".utf8), [0], deadline: past) }
            for i in 0..<50 { try transaction.set(Array("kept\(i)".utf8), [0], deadline: past + 3_600_000) }
            for i in 0..<50 { try transaction.set(Array("plain\(i)".utf8), [0]) }
        }
        var expired = 0
        for _ in 0..<100 where store.count > 100 { expired += store.expireCycle().expired }
        #expect(expired == 500 && store.count == 100 && store.expiringCount == 50)
    }

    /// A snapshot keeps deadlines (format 2); the map after loading it equals the one written.
    @Test func snapshotsKeepDeadlines() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        do {
            let store = try self.open(directory)
            defer { store.close() }
            try store.perform { transaction in
                try transaction.set(Array("a".utf8), Array("1".utf8), deadline: 4_000_000_000_000)
                try transaction.set(Array("b".utf8), Array("2".utf8))
            }
            try store.checkpointBlocking()
        }
        let reopened = try self.open(directory)
        defer { reopened.close() }
        #expect(reopened.recovery.snapshotIndex != nil)
        let deadlines = try reopened.perform { transaction in
            try ["a", "b"].map { name in try Array(name.utf8).withUnsafeBytes { try transaction.deadline($0) } }
        }.result
        #expect(deadlines == [.some(4_000_000_000_000), .some(nil)])
    }

    /// WATCH: a write by anyone to a watched key dirties the watcher; a stale (expired) key's
    /// delete does not; FLUSHALL dirties watchers of keys that existed.
    @Test func watchSeesChangesByAnyone() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try self.open(directory)
        defer { store.close() }
        let token = WatchToken()
        store.watch([Array("w".utf8)], token: token)
        try store.set(key: Array("other".utf8), value: [1])
        #expect(!token.dirty)
        try store.set(key: Array("w".utf8), value: [1])
        #expect(token.dirty)
        store.unwatch(token)
        #expect(!token.dirty && !token.isWatching)

        let past = wallClockMilliseconds() - 1000
        try store.perform(expiresKeys: false) { try $0.set(Array("stale".utf8), [1], deadline: past) }
        store.watch([Array("stale".utf8)], token: token)
        _ = try store.perform { try $0.value(Array("stale".utf8)) }  // deletes it
        #expect(!token.dirty, "a stale key's delete changes nothing a client could read")
        store.unwatch(token)

        store.watch([Array("other".utf8), Array("absent".utf8)], token: token)
        try store.perform { try $0.removeAll() }
        #expect(token.dirty)
    }

    /// SCAN returns every key present for the whole scan at least once, while the table grows
    /// between steps (and entries move as deletions shift them back).
    @Test func scanSurvivesGrowth() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try self.open(directory)
        defer { store.close() }
        for i in 0..<300 { try store.set(key: Array("stay\(i)".utf8), value: [0]) }
        var seen = Set<String>()
        var cursor: UInt64 = 0
        var step = 0
        repeat {
            cursor = try store.perform { transaction in
                transaction.scan(cursor: cursor, count: 7) { key, _ in seen.insert(String(decoding: key, as: UTF8.self)) }
            }.result
            step += 1
            // Grow a lot (the table is rebuilt twice over), then delete those keys, while the scan runs.
            if step == 5 { for i in 0..<5000 { try store.set(key: Array("tmp\(i)".utf8), value: [0]) } }
            if step == 40 { try store.perform { t in for i in 0..<5000 { try Array("tmp\(i)".utf8).withUnsafeBytes { _ = try t.delete($0) } } } }
        } while cursor != 0 && step < 100_000
        for i in 0..<300 { #expect(seen.contains("stay\(i)"), "stay\(i) missed") }
    }

    /// The embedding API: conditional sets, deadlines, counters, a transaction that fails when a
    /// watched key changed.
    @Test func embeddingAPI() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try self.open(directory, mode: .always)
        defer { store.close() }
        let key = Array("counter".utf8)
        #expect(try await store.set(key, Array("1".utf8), condition: .ifAbsent))
        #expect(try await !store.set(key, Array("2".utf8), condition: .ifAbsent))
        #expect(try await !store.set(Array("nope".utf8), Array("x".utf8), condition: .ifPresent))
        #expect(try await store.increment(key, by: 41) == 42)
        // A day ahead: an await here may resume minutes later when the test run's blocking tests
        // hold every thread of the cooperative pool (CI saw a 60 s deadline pass between two lines).
        let day: Int64 = 86_400_000
        #expect(try await store.expire(key, at: wallClockMilliseconds() + day))
        let ttl = try #require(try store.timeToLive(key))
        #expect((ttl ?? 0) > day - 3_600_000)
        #expect(try await store.increment(key) == 43, "INCR keeps the deadline")
        #expect(try store.timeToLive(key) != .some(nil))
        #expect(try await store.persist(key))
        #expect(try store.timeToLive(key) == .some(nil))
        try await store.set(Array("text".utf8), Array("abc".utf8))
        await #expect(throws: StoreError.self) { try await store.increment(Array("text".utf8)) }

        let token = store.watch([key])
        let unchanged = try await store.transaction(ifUnchanged: token) { try $0.set(Array("t".utf8), [1]) }
        #expect(unchanged != nil)
        let second = store.watch([key])
        try await store.increment(key)
        let changed = try await store.transaction(ifUnchanged: second) { try $0.set(Array("u".utf8), [1]) }
        #expect(changed == nil && store.get("u") == nil)
    }
}
