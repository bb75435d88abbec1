#if canImport(Glibc)
import Glibc
#endif
import WALCore

/// Reads and writes that run under the store's lock and are logged as **one record**: a command
/// that reads before it writes (INCR, SET NX GET, RENAME), a MULTI/EXEC, a script.
///
/// Nothing touches the map until the transaction commits: each write is encoded into `payload`
/// (the `Data` encodings a batch record holds), and reads look there first, newest entry first,
/// then at the map. On commit the store appends the record and applies it with the same code that
/// replays the log (`StoreState.apply`), so a live write and its replay cannot differ; if the
/// append fails (disk full, a failed log), nothing was applied and the caller reports the error.
///
/// Time is frozen at `now` for the whole transaction (a key does not expire half-way through a
/// MULTI). On a primary (`expiresKeys`) a read that finds a key past its deadline deletes it — a
/// delete record in this transaction, as Redis deletes and propagates an expired key it touches;
/// a follower only hides it.
public struct StoreTransaction {
    /// One key as the transaction sees it.
    public struct Entry: Sendable, Equatable {
        public var value: [UInt8]
        /// Ms since the Unix epoch, or nil.
        public var deadline: Int64?
    }

    let state: StoreState
    /// Now, in ms since the Unix epoch, frozen for the transaction.
    public let now: Int64
    /// Whether a read deletes a key past its deadline (a primary that takes writes).
    public let expiresKeys: Bool
    let maxKeyBytes: Int
    let maxValueBytes: Int
    /// The writes so far, encoded; nil until the first.
    private(set) var payload: RecordBuffer?
    /// Where each write's encoding starts in `payload`.
    private var offsets = SmallList<Int>()
    /// The newest write for each key, once there are many writes (reads then look it up instead
    /// of scanning back through every write).
    private var newest: [ByteKey: Int]?
    /// Where the last FLUSHALL of this transaction is in `offsets`, if there is one.
    private var lastFlush: Int?
    /// Keys deleted because they had expired (for INFO's expired_keys).
    public private(set) var expiredKeys = 0
    /// Their names, when someone listens (keyspace notifications' "expired").
    var collectsExpired = false
    private(set) var expiredNames: [[UInt8]] = []

    init(state: StoreState, now: Int64, expiresKeys: Bool, maxKeyBytes: Int, maxValueBytes: Int) {
        self.state = state
        self.now = now
        self.expiresKeys = expiresKeys
        self.maxKeyBytes = maxKeyBytes
        self.maxValueBytes = maxValueBytes
    }

    /// How many writes the transaction holds.
    public var writeCount: Int { self.offsets.count }

    // MARK: Reading

    /// What the newest write of this transaction says about `key`.
    private enum Pending {
        /// No write of this transaction touched it: ask the map (with a deadline change, if any).
        case map(deadline: Int64??)
        case absent
        case value(UnsafeRawBufferPointer, deadline: Int64?)
    }

    private func pending(_ key: UnsafeRawBufferPointer) -> Pending {
        guard let payload = self.payload else { return .map(deadline: nil) }
        var deadlineChange: Int64?? = nil
        var position = self.offsets.count - 1
        if let newest = self.newest {
            position = newest[ByteKey(Array(key))] ?? -1
            if let flush = self.lastFlush, position < flush { return .absent }
        }
        while position >= 0 {
            let entry = Self.decodeEntry(payload, at: self.offsets[position])
            if entry.op == .flushAll {
                return .absent
            }
            if entry.key.count == key.count && (key.count == 0 || memcmp(entry.key.baseAddress!, key.baseAddress!, key.count) == 0) {
                switch entry.op {
                case .set:
                    return .value(entry.value, deadline: deadlineChange ?? nil)
                case .setExpiring:
                    let deadline = Int64(bitPattern: loadBigEndian64(entry.value))
                    return .value(UnsafeRawBufferPointer(rebasing: entry.value[8...]), deadline: deadlineChange ?? deadline)
                case .delete:
                    return .absent
                case .expireAt:
                    if deadlineChange == nil { deadlineChange = .some(Int64(bitPattern: loadBigEndian64(entry.value))) }
                case .persist:
                    if deadlineChange == nil { deadlineChange = .some(nil) }
                default:
                    break
                }
            }
            // (With the index, scanning starts at this key's newest write; an EXPIRE or PERSIST there
            // sends it on back to the write that set the value.)
            position -= 1
        }
        return .map(deadline: deadlineChange)
    }

    /// Run `body` with the value and deadline of `key` as this transaction sees it (nil when the
    /// key is absent or past its deadline). The bytes are valid only inside `body`.
    public mutating func withEntry<R>(
        _ key: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer?, Int64?) throws -> R
    ) throws -> R {
        switch self.pending(key) {
        case .absent:
            return try body(nil, nil)
        case .value(let value, let deadline):
            if let deadline, deadline <= self.now { return try body(nil, nil) }
            return try body(value, deadline)
        case .map(let change):
            let state = self.state
            let now = self.now
            var expired = false
            let result = try state.map.withEntry(key) { value, stored -> R? in
                let deadline = change ?? stored
                if let deadline, deadline <= now {
                    expired = true
                    return nil
                }
                return try body(value, deadline)
            }
            if let result, let result { return result }
            if expired { try self.expire(key) }
            return try body(nil, nil)
        }
    }

    /// `withEntry` for a body that returns nothing: not generic, so a caller in another module
    /// (every command reads through one) builds no type metadata at run time.
    public mutating func readEntry(_ key: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer?, Int64?) throws -> Void) throws {
        try self.withEntry(key, body)
    }

    /// A copy of `key`'s value and deadline (nil when absent or expired).
    public mutating func entry(_ key: UnsafeRawBufferPointer) throws -> Entry? {
        try self.withEntry(key) { value, deadline in value.map { Entry(value: Array($0), deadline: deadline) } }
    }

    /// A copy of `key`'s value (nil when absent or expired).
    public mutating func value(_ key: [UInt8]) throws -> [UInt8]? {
        try key.withUnsafeBytes { k in try self.withEntry(k) { value, _ in value.map { Array($0) } } }
    }

    /// Whether `key` exists (and has not expired).
    public mutating func exists(_ key: UnsafeRawBufferPointer) throws -> Bool {
        try self.withEntry(key) { value, _ in value != nil }
    }

    /// The deadline of `key`: nil when absent or expired, `.some(nil)` when it has none.
    public mutating func deadline(_ key: UnsafeRawBufferPointer) throws -> Int64?? {
        try self.withEntry(key) { value, deadline in value == nil ? nil : .some(deadline) }
    }

    /// On a primary, log the delete of a key found past its deadline.
    private mutating func expire(_ key: UnsafeRawBufferPointer) throws {
        guard self.expiresKeys else { return }
        try self.append(op: .delete, key: key, value: UnsafeRawBufferPointer(start: nil, count: 0))
        self.expiredKeys += 1
        if self.collectsExpired { self.expiredNames.append(Array(key)) }
    }

    // MARK: Writing

    /// Set `key` to `value`, with `deadline` (ms since the Unix epoch; nil for none). A deadline
    /// in the past is the caller's to turn into a delete (as Redis does for SET … PXAT past).
    public mutating func set(_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer, deadline: Int64? = nil) throws {
        try self.validate(keyCount: key.count, valueCount: value.count)
        if let deadline {
            var prefix = UInt64(bitPattern: deadline).bigEndian
            try withUnsafeBytes(of: &prefix) { prefix in
                try self.append(op: .setExpiring, key: key, value: prefix, extra: value)
            }
        } else {
            try self.append(op: .set, key: key, value: value)
        }
    }

    /// `set` with a value built in memory.
    public mutating func set(_ key: UnsafeRawBufferPointer, _ value: [UInt8], deadline: Int64? = nil) throws {
        try value.withUnsafeBytes { try self.set(key, $0, deadline: deadline) }
    }

    /// `set` from arrays.
    public mutating func set(_ key: [UInt8], _ value: [UInt8], deadline: Int64? = nil) throws {
        try key.withUnsafeBytes { k in try value.withUnsafeBytes { v in try self.set(k, v, deadline: deadline) } }
    }

    /// Delete `key`; returns whether it existed (a missing key logs nothing, as Redis's DEL).
    @discardableResult
    public mutating func delete(_ key: UnsafeRawBufferPointer) throws -> Bool {
        try self.validate(keyCount: key.count, valueCount: 0)
        guard try self.exists(key) else { return false }
        try self.append(op: .delete, key: key, value: UnsafeRawBufferPointer(start: nil, count: 0))
        return true
    }

    /// Give an existing key a deadline (nil: remove it); returns false, logging nothing, when the
    /// key is absent.
    @discardableResult
    public mutating func setDeadline(_ key: UnsafeRawBufferPointer, _ deadline: Int64?) throws -> Bool {
        guard let current = try self.deadline(key) else { return false }
        if current == deadline { return true }
        if let deadline {
            var bytes = UInt64(bitPattern: deadline).bigEndian
            try withUnsafeBytes(of: &bytes) { try self.append(op: .expireAt, key: key, value: $0) }
        } else {
            try self.append(op: .persist, key: key, value: UnsafeRawBufferPointer(start: nil, count: 0))
        }
        return true
    }

    /// Remove every key (FLUSHALL).
    public mutating func removeAll() throws {
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        try self.append(op: .flushAll, key: empty, value: empty)
        self.lastFlush = self.offsets.count - 1
    }

    private func validate(keyCount: Int, valueCount: Int) throws {
        if keyCount > self.maxKeyBytes {
            throw StoreError(.tooLarge, "The key is \(keyCount) bytes; the limit is \(self.maxKeyBytes) (max-key-bytes).")
        }
        if valueCount > self.maxValueBytes {
            throw StoreError(.tooLarge, "The value is \(valueCount) bytes; the limit is \(self.maxValueBytes) (max-value-bytes).")
        }
    }

    /// Encode one write: `Data` = op, key length, value length (of `value` and `extra` together),
    /// key, value, extra.
    private mutating func append(
        op: RecordOp, key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer,
        extra: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)
    ) throws {
        let payload: RecordBuffer
        if let started = self.payload {
            payload = started
        } else {
            payload = self.state.scratch
            payload.removeAll(maxRetainedCapacity: 1 << 20)
            self.payload = payload
        }
        let offset = payload.count
        let size = RecordFormat.dataHeaderSize + key.count + value.count + extra.count
        let destination = payload.reserve(size)
        destination.storeBytes(of: op.rawValue, as: UInt8.self)
        withUnsafeBytes(of: UInt32(key.count).bigEndian) { (destination + 1).copyMemory(from: $0.baseAddress!, byteCount: 4) }
        withUnsafeBytes(of: UInt32(value.count + extra.count).bigEndian) {
            (destination + 5).copyMemory(from: $0.baseAddress!, byteCount: 4)
        }
        var at = destination + RecordFormat.dataHeaderSize
        // Part by part (an array of the three was an allocation per write).
        if key.count > 0 { at.copyMemory(from: key.baseAddress!, byteCount: key.count) }
        at += key.count
        if value.count > 0 { at.copyMemory(from: value.baseAddress!, byteCount: value.count) }
        at += value.count
        if extra.count > 0 { at.copyMemory(from: extra.baseAddress!, byteCount: extra.count) }
        payload.commit(size)
        self.offsets.append(offset)
        // Past a handful of writes, index them so reads need not scan back through all of them.
        if self.newest == nil && self.offsets.count > 16 {
            var newest: [ByteKey: Int] = [:]
            for (position, start) in self.offsets.enumerated() {
                let entry = Self.decodeEntry(payload, at: start)
                if entry.op != .flushAll { newest[ByteKey(Array(entry.key))] = position }
            }
            self.newest = newest
        } else if self.newest != nil && op != .flushAll {
            self.newest![ByteKey(Array(key))] = self.offsets.count - 1
        }
    }

    static func decodeEntry(_ payload: RecordBuffer, at offset: Int) -> (op: RecordOp, key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        let base = UnsafeRawPointer(payload.base) + offset
        let op = RecordOp(rawValue: base.load(as: UInt8.self))
        let keyCount = Int(UInt32(bigEndian: base.loadUnaligned(fromByteOffset: 1, as: UInt32.self)))
        let valueCount = Int(UInt32(bigEndian: base.loadUnaligned(fromByteOffset: 5, as: UInt32.self)))
        return (
            op, UnsafeRawBufferPointer(start: base + 9, count: keyCount),
            UnsafeRawBufferPointer(start: base + 9 + keyCount, count: valueCount)
        )
    }

    // MARK: The whole keyspace

    /// The keys written by this transaction (after its last FLUSHALL), each once.
    private func writtenKeys() -> [ByteKey] {
        guard let payload = self.payload else { return [] }
        var seen = Set<ByteKey>()
        var keys: [ByteKey] = []
        for position in ((self.lastFlush.map { $0 + 1 } ?? 0)..<self.offsets.count) {
            let key = ByteKey(Array(Self.decodeEntry(payload, at: self.offsets[position]).key))
            if seen.insert(key).inserted { keys.append(key) }
        }
        return keys
    }

    /// How many keys there are, expired ones not yet deleted included (as Redis's DBSIZE).
    public mutating func count() -> Int {
        guard self.payload != nil else { return self.state.count }
        var count = self.lastFlush == nil ? self.state.count : 0
        for key in self.writtenKeys() {
            let physical: Bool
            switch key.bytes.withUnsafeBytes({ self.pending($0) }) {
            case .absent: physical = false
            case .value: physical = true
            case .map: physical = key.bytes.withUnsafeBytes { self.state.map.contains($0) }
            }
            let before = self.lastFlush == nil && key.bytes.withUnsafeBytes { self.state.map.contains($0) }
            count += (physical ? 1 : 0) - (before ? 1 : 0)
        }
        return count
    }

    /// Keys with a deadline, for INFO's keyspace line (the map's count: exact without pending writes).
    public var expiringCount: Int { self.state.expiringCount }

    /// Visit every live key (not past its deadline) with its deadline, in no particular order.
    public mutating func forEachKey(_ body: (UnsafeRawBufferPointer, Int64?) throws -> Void) throws {
        let now = self.now
        let written = self.payload == nil ? [] : self.writtenKeys()
        let skip = Set(written)
        if self.lastFlush == nil {
            try self.state.map.forEachEntry { key, _, deadline in
                if let deadline, deadline <= now { return }
                if !skip.isEmpty && skip.contains(ByteKey(Array(key))) { return }
                try body(key, deadline)
            }
        }
        for key in written {
            try key.bytes.withUnsafeBytes { k in
                if let deadline = try self.deadline(k) { try body(k, deadline) }
            }
        }
    }

    /// One SCAN step over the live keys (see `CompactMap.scan`); returns the next cursor (0: done).
    public mutating func scan(cursor: UInt64, count: Int, _ body: (UnsafeRawBufferPointer, Int64?) -> Void) -> UInt64 {
        let now = self.now
        guard self.payload != nil else {
            return self.state.map.scan(from: cursor, limit: count) { key, deadline in
                if let deadline, deadline <= now { return }
                body(key, deadline)
            }
        }
        // With writes pending (SCAN inside a MULTI after writes): the map's step without the keys
        // written here, and the written keys that exist once, at the end.
        let written = self.writtenKeys()
        let skip = Set(written)
        let flushed = self.lastFlush != nil
        let next =
            flushed
            ? 0
            : self.state.map.scan(from: cursor, limit: count) { key, deadline in
                if let deadline, deadline <= now { return }
                if skip.contains(ByteKey(Array(key))) { return }
                body(key, deadline)
            }
        if next == 0 {
            for key in written {
                key.bytes.withUnsafeBytes { k in
                    if let deadline = try? self.deadline(k) { body(k, deadline) }
                }
            }
        }
        return next
    }

    /// A random live key (RANDOMKEY), nil when there is none.
    public mutating func randomKey() throws -> [UInt8]? {
        if self.lastFlush == nil {
            // A few draws from the map; a key past its deadline is deleted (on a primary) by the
            // existence check and another one drawn.
            for _ in 0..<100 {
                guard let (key, _) = self.state.map.randomEntry(from: UInt64.random(in: .min ... .max)) else { break }
                let copy = Array(key)
                if try copy.withUnsafeBytes({ try self.exists($0) }) { return copy }
            }
        }
        for key in self.writtenKeys().shuffled() where try key.bytes.withUnsafeBytes({ try self.exists($0) }) {
            return key.bytes
        }
        return nil
    }
}
