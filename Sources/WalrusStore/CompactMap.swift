import CPrefetch
#if canImport(Glibc)
import Glibc
#endif

/// The store's key → value map, built for memory per key and for recovery speed.
///
/// - Each entry is one immutable malloc'd block `[keyLength u32][valueLength u32][key][value]`
///   (a 12-byte key and a 100-byte value take one 128-byte malloc chunk; `[ByteKey: [UInt8]]`
///   took two arrays with 32-byte headers each, plus the dictionary's buckets). A key with a
///   deadline has bit 31 of its length set and the deadline (ms since the Unix epoch, 8 bytes)
///   after the lengths: only keys that expire pay for one.
/// - Entries with a deadline are also in `ExpiryIndex` (8 bytes a slot), which the expiry cycle
///   samples, as Redis samples its `expires` dict.
/// - The table is an array of 8-byte slots, linear probing, at most 85% full: a slot holds the
///   entry's address (low 48 bits) and 16 low bits of its hash (the high bits pick the home
///   slot), so most probes compare a tag and never touch the entry. Capacities are not powers of
///   two (the hash is mapped onto the table with a multiply), so the table grows by 1.5× instead
///   of doubling. Deletion shifts later entries back (no tombstones).
/// - A snapshot copies the slot array only (entries are immutable). While one is open, entries
///   that a write replaces or deletes are parked instead of freed, and freed when it closes.
///
/// - Important: not thread-safe; `KeyValueStore` guards it with its lock.
final class CompactMap: @unchecked Sendable {
    private static let addressMask: UInt64 = (1 << 48) - 1
    private static let maxLoadNumerator = 85
    private static let headerSize = 8
    private static let deadlineFlag: UInt32 = 1 << 31

    @exclusivity(unchecked) private var slots: UnsafeMutablePointer<UInt64>
    @exclusivity(unchecked) private(set) var capacity: Int
    @exclusivity(unchecked) private(set) var count = 0
    @exclusivity(unchecked) private var growAt: Int
    private let hasher: KeyHasher
    /// Entries replaced or deleted while a snapshot is open; freed when it closes.
    @exclusivity(unchecked) private var parked: [UnsafeMutableRawPointer] = []
    @exclusivity(unchecked) private(set) var openSnapshots = 0
    /// Bytes of entry data held (keys and values, headers included), for status.
    @exclusivity(unchecked) private(set) var entryBytes = 0
    /// The entries that have a deadline.
    let expiring: ExpiryIndex

    init(capacity: Int = 16, hasher: KeyHasher = KeyHasher()) {
        self.hasher = hasher
        self.expiring = ExpiryIndex(hasher: hasher)
        self.capacity = max(16, capacity * 100 / Self.maxLoadNumerator + 1)
        self.slots = Self.allocateSlots(self.capacity)
        self.growAt = self.capacity * Self.maxLoadNumerator / 100
    }

    deinit {
        for i in 0..<self.capacity where self.slots[i] != 0 { free(Self.entry(self.slots[i])) }
        for entry in self.parked { free(entry) }
        Self.freeSlots(self.slots, self.capacity)
    }

    /// Zeroed slots. Large tables come straight from mmap (already zero) and ask for transparent
    /// huge pages: every lookup is a random access into the table, and with 4 KiB pages most of
    /// them also miss the TLB.
    private static func allocateSlots(_ count: Int) -> UnsafeMutablePointer<UInt64> {
        let bytes = count * 8
        if bytes >= 2 << 20 {
            let region = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            if let region, region != MAP_FAILED {
                _ = madvise(region, bytes, MADV_HUGEPAGE)
                return region.bindMemory(to: UInt64.self, capacity: count)
            }
        }
        return calloc(count, 8)!.bindMemory(to: UInt64.self, capacity: count)
    }

    private static func freeSlots(_ slots: UnsafeMutablePointer<UInt64>, _ count: Int) {
        let bytes = count * 8
        if bytes >= 2 << 20 { munmap(slots, bytes) } else { free(slots) }
    }

    // MARK: Entries

    @inline(__always)
    private static func entry(_ slot: UInt64) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(bitPattern: UInt(slot & addressMask))!
    }

    @inline(__always)
    static func hasDeadline(_ entry: UnsafeRawPointer) -> Bool {
        entry.load(as: UInt32.self) & deadlineFlag != 0
    }

    @inline(__always)
    private static func dataOffset(_ entry: UnsafeRawPointer) -> Int {
        hasDeadline(entry) ? headerSize + 8 : headerSize
    }

    @inline(__always)
    static func key(of entry: UnsafeRawPointer) -> UnsafeRawBufferPointer {
        let keyCount = Int(entry.load(as: UInt32.self) & ~deadlineFlag)
        return UnsafeRawBufferPointer(start: entry + dataOffset(entry), count: keyCount)
    }

    @inline(__always)
    static func value(of entry: UnsafeRawPointer) -> UnsafeRawBufferPointer {
        let keyCount = Int(entry.load(as: UInt32.self) & ~deadlineFlag)
        let valueCount = Int(entry.load(fromByteOffset: 4, as: UInt32.self))
        return UnsafeRawBufferPointer(start: entry + dataOffset(entry) + keyCount, count: valueCount)
    }

    /// The entry's deadline (ms since the Unix epoch), if it has one.
    @inline(__always)
    static func deadline(of entry: UnsafeRawPointer) -> Int64? {
        hasDeadline(entry) ? entry.loadUnaligned(fromByteOffset: headerSize, as: Int64.self) : nil
    }

    /// Bytes an entry takes (for `entryBytes`).
    @inline(__always)
    private static func size(of entry: UnsafeRawPointer) -> Int {
        dataOffset(entry) + key(of: entry).count + value(of: entry).count
    }

    private static func makeEntry(
        _ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer, deadline: Int64?
    ) -> UnsafeMutableRawPointer {
        let offset = deadline == nil ? headerSize : headerSize + 8
        let size = offset + key.count + value.count
        let entry = malloc(max(size, 1))!
        entry.storeBytes(of: UInt32(key.count) | (deadline == nil ? 0 : deadlineFlag), as: UInt32.self)
        entry.storeBytes(of: UInt32(value.count), toByteOffset: 4, as: UInt32.self)
        if let deadline { entry.storeBytes(of: deadline, toByteOffset: headerSize, as: Int64.self) }
        if key.count > 0 { (entry + offset).copyMemory(from: key.baseAddress!, byteCount: key.count) }
        if value.count > 0 { (entry + offset + key.count).copyMemory(from: value.baseAddress!, byteCount: value.count) }
        precondition(UInt64(UInt(bitPattern: entry)) & ~addressMask == 0, "malloc returned an address above 2^48")
        return entry
    }

    private func release(_ entry: UnsafeMutableRawPointer) {
        self.entryBytes -= Self.size(of: entry)
        if self.openSnapshots > 0 { self.parked.append(entry) } else { free(entry) }
    }

    // MARK: Probing

    @inline(__always)
    private func home(_ hash: UInt64) -> Int {
        Int(truncatingIfNeeded: hash.multipliedFullWidth(by: UInt64(self.capacity)).high)
    }

    /// The 16 tag bits kept in a slot: the hash's low bits. (Its high bits pick the home slot,
    /// so neighbours share them: a tag made of those matched nearly every neighbour, and every
    /// probe past one read its entry — a cache miss — for nothing.)
    @inline(__always)
    private static func tag(_ hash: UInt64) -> UInt64 { hash << 48 }

    /// The slot holding `key`, or the empty slot where it would go.
    @inline(__always)
    private func probe(_ key: UnsafeRawBufferPointer, hash: UInt64) -> (index: Int, found: Bool) {
        let tag = Self.tag(hash)
        var index = self.home(hash)
        while true {
            let slot = self.slots[index]
            if slot == 0 { return (index, false) }
            if slot & ~Self.addressMask == tag {
                let candidate = Self.key(of: Self.entry(slot))
                if candidate.count == key.count
                    && (key.count == 0 || memcmp(candidate.baseAddress!, key.baseAddress!, key.count) == 0)
                {
                    return (index, true)
                }
            }
            index += 1
            if index == self.capacity { index = 0 }
        }
    }

    /// Start loading `key`'s home slot into the cache (a hint: it changes nothing). A batch
    /// applied key after key (replication, recovery) calls it a few keys ahead, so the table's
    /// random accesses — nearly every one a cache miss in a large map — overlap instead of
    /// following one another.
    @inline(__always)
    func prefetch(_ key: UnsafeRawBufferPointer) {
        self.prefetchSlot(hash: self.hasher.hash(key))
    }

    /// The hash `key` is placed by (for `prefetchSlot` and `prefetchEntry`).
    @inline(__always)
    func hash(_ key: UnsafeRawBufferPointer) -> UInt64 { self.hasher.hash(key) }

    /// First step of prefetching a batch of keys: start loading each key's home slot.
    @inline(__always)
    func prefetchSlot(hash: UInt64) {
        walrus_prefetch(self.slots + self.home(hash))
    }

    /// Second step, once the home slots had time to arrive: start loading the entry a slot with
    /// the key's tag points at (the key's own, nearly always), so the write or read that follows
    /// finds both in the cache. Looks at two slots at most; a hint either way.
    @inline(__always)
    func prefetchEntry(hash: UInt64) {
        let tag = Self.tag(hash)
        var index = self.home(hash)
        for _ in 0..<2 {
            let slot = self.slots[index]
            if slot == 0 { return }
            if slot & ~Self.addressMask == tag { return walrus_prefetch(Self.entry(slot)) }
            index += 1
            if index == self.capacity { index = 0 }
        }
    }

    // MARK: Operations

    /// The value's bytes for `key`, valid until the next write to the map.
    @inline(__always)
    func withValue<R>(_ key: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer?) throws -> R) rethrows -> R {
        let (index, found) = self.probe(key, hash: self.hasher.hash(key))
        guard found else { return try body(nil) }
        return try body(Self.value(of: Self.entry(self.slots[index])))
    }

    /// The value's bytes and deadline for `key`, valid until the next write to the map.
    @inline(__always)
    func withEntry<R>(_ key: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer, Int64?) throws -> R) rethrows -> R? {
        let (index, found) = self.probe(key, hash: self.hasher.hash(key))
        guard found else { return nil }
        let entry = Self.entry(self.slots[index])
        return try body(Self.value(of: entry), Self.deadline(of: entry))
    }

    /// `withEntry` without a result (not generic: a GET costs no generic-metadata lookups).
    func readEntry(_ key: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer?, Int64?) -> Void) {
        let (index, found) = self.probe(key, hash: self.hasher.hash(key))
        guard found else { return body(nil, nil) }
        let entry = Self.entry(self.slots[index])
        body(Self.value(of: entry), Self.deadline(of: entry))
    }

    /// Whether `key` is present (expired or not: the map knows nothing of time).
    func contains(_ key: UnsafeRawBufferPointer) -> Bool {
        self.probe(key, hash: self.hasher.hash(key)).found
    }

    /// The memory `key` takes: its entry's malloc chunk and its slots (MEMORY USAGE), nil if absent.
    func footprint(_ key: UnsafeRawBufferPointer) -> Int? {
        let (index, found) = self.probe(key, hash: self.hasher.hash(key))
        guard found else { return nil }
        let entry = Self.entry(self.slots[index])
        // One 8-byte slot at most 85% full, and one in the expiry index for a key with a deadline.
        let slots = Self.hasDeadline(entry) ? 2 : 1
        // glibc's chunk for a request of n bytes on 64-bit: n + 8 rounded up to 16, at least 32.
        let chunk = max(32, (Self.size(of: entry) + 8 + 15) & ~15)
        return chunk + slots * 8 * 100 / Self.maxLoadNumerator
    }

    /// The deadline of `key`: nil when absent, `.some(nil)` when present without one.
    func deadline(_ key: UnsafeRawBufferPointer) -> Int64?? {
        let (index, found) = self.probe(key, hash: self.hasher.hash(key))
        guard found else { return nil }
        return .some(Self.deadline(of: Self.entry(self.slots[index])))
    }

    /// Set `key` to `value`, with `deadline` (nil: none; a plain SET clears a key's deadline).
    func set(_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer, deadline: Int64? = nil) {
        let hash = self.hasher.hash(key)
        var (index, found) = self.probe(key, hash: hash)
        let entry = Self.makeEntry(key, value, deadline: deadline)
        self.entryBytes += Self.size(of: entry)
        if found {
            let old = Self.entry(self.slots[index])
            self.slots[index] = UInt64(UInt(bitPattern: entry)) | Self.tag(hash)
            self.reindex(old: old, new: entry, hash: hash)
            self.release(old)
            return
        }
        if self.count + 1 > self.growAt {
            self.grow(to: self.capacity + self.capacity / 2)
            index = self.probe(key, hash: hash).index
        }
        self.slots[index] = UInt64(UInt(bitPattern: entry)) | Self.tag(hash)
        if deadline != nil { self.expiring.insert(entry, hash: hash) }
        self.count += 1
    }

    /// Give `key` a new deadline (nil removes it); returns false when the key is absent.
    /// The entry is rewritten (entries are immutable: an open snapshot may be reading it).
    @discardableResult
    func setDeadline(_ key: UnsafeRawBufferPointer, _ deadline: Int64?) -> Bool {
        let hash = self.hasher.hash(key)
        let (index, found) = self.probe(key, hash: hash)
        guard found else { return false }
        let old = Self.entry(self.slots[index])
        if Self.deadline(of: old) == deadline { return true }
        let entry = Self.makeEntry(key, Self.value(of: old), deadline: deadline)
        self.entryBytes += Self.size(of: entry)
        self.slots[index] = UInt64(UInt(bitPattern: entry)) | Self.tag(hash)
        self.reindex(old: old, new: entry, hash: hash)
        self.release(old)
        return true
    }

    /// Keep the expiry index in step when `old` is replaced by `new` (same key).
    @inline(__always)
    private func reindex(old: UnsafeMutableRawPointer, new: UnsafeMutableRawPointer, hash: UInt64) {
        switch (Self.hasDeadline(old), Self.hasDeadline(new)) {
        case (false, false): break
        case (true, true): self.expiring.replace(old, with: new, hash: hash)
        case (true, false): self.expiring.remove(old, hash: hash)
        case (false, true): self.expiring.insert(new, hash: hash)
        }
    }

    /// Remove `key`; returns whether it was present.
    @discardableResult
    func remove(_ key: UnsafeRawBufferPointer) -> Bool {
        let hash = self.hasher.hash(key)
        let (found, existed) = self.probe(key, hash: hash)
        guard existed else { return false }
        let removed = Self.entry(self.slots[found])
        if Self.hasDeadline(removed) { self.expiring.remove(removed, hash: hash) }
        self.release(removed)
        // Backward-shift deletion: move later members of the probe run into the hole when their
        // home position allows it, so lookups never need tombstones.
        var hole = found
        var next = found
        while true {
            next += 1
            if next == self.capacity { next = 0 }
            let slot = self.slots[next]
            if slot == 0 { break }
            let home = self.home(self.hasher.hash(Self.key(of: Self.entry(slot))))
            // The entry at `next` may fill `hole` unless its home lies cyclically in (hole, next].
            let homeInRange = hole <= next ? (home > hole && home <= next) : (home > hole || home <= next)
            if !homeInRange {
                self.slots[hole] = slot
                hole = next
            }
        }
        self.slots[hole] = 0
        self.count -= 1
        return true
    }

    /// Remove every entry (FLUSHALL): the table starts over at its smallest size.
    func removeAll() {
        for i in 0..<self.capacity where self.slots[i] != 0 { self.release(Self.entry(self.slots[i])) }
        Self.freeSlots(self.slots, self.capacity)
        self.capacity = 16
        self.slots = Self.allocateSlots(self.capacity)
        self.growAt = self.capacity * Self.maxLoadNumerator / 100
        self.count = 0
        self.expiring.removeAll()
    }

    /// Up to `count` keys that have a deadline, read from the place in the expiry index that
    /// `point` (a random number) picks, with their deadlines (the expiry cycle's sample).
    ///
    /// The randomness comes in as a number, not an `inout` generator: the system generator is
    /// an empty struct, and ThreadSanitizer's instrumentation of an `inout` access to one held
    /// by a closure faults on its (meaningless) address.
    func sampleExpiring(_ count: Int, from point: UInt64) -> [(key: [UInt8], deadline: Int64)] {
        self.expiring.sample(count, from: point).map { entry in
            (Array(Self.key(of: entry)), Self.deadline(of: entry) ?? 0)
        }
    }

    /// One SCAN step: the keys whose hash is at least `cursor`, about `limit` of them, with their
    /// deadlines; returns the next cursor (0 when the whole table has been covered).
    ///
    /// The cursor is a point in hash space, not a table position: an entry's home slot is
    /// `hash × capacity >> 64`, monotonic in the hash at every capacity, so "every key whose hash
    /// is below the cursor was returned" stays true when the table grows or shrinks between
    /// steps. A step ends at an empty slot `e`: every entry whose home is before `e` lies before
    /// `e` (linear probing never crosses an empty slot), so every key with a hash below the first
    /// hash that homes at `e` has been seen. A probe run that wraps past the end of the table
    /// finishes the scan.
    func scan(from cursor: UInt64, limit: Int, _ body: (UnsafeRawBufferPointer, Int64?) -> Void) -> UInt64 {
        var position = self.home(cursor)
        var returned = 0
        var wrapped = false
        while true {
            let slot = self.slots[position]
            if slot == 0 {
                if wrapped { return 0 }
                if returned >= limit {
                    // The first hash whose home is `position`: ceil(position × 2^64 / capacity).
                    let (quotient, remainder) = UInt64(self.capacity).dividingFullWidth((high: UInt64(position), low: 0))
                    return quotient + (remainder > 0 ? 1 : 0)
                }
            } else {
                let entry = Self.entry(slot)
                let key = Self.key(of: entry)
                let hash = self.hasher.hash(key)
                // An entry whose home is after its slot wrapped around the end of the table: it
                // belongs to the last step (the wrapping one), not to the step that reaches its
                // slot from the front. Entries below the cursor were returned by earlier steps.
                let wrappedHere = self.home(hash) > position
                if hash >= cursor && wrappedHere == wrapped {
                    body(key, Self.deadline(of: entry))
                    returned += 1
                }
            }
            position += 1
            if position == self.capacity {
                // Wrap: the entries at the start whose homes are near the end belong to this step.
                if wrapped { return 0 }
                wrapped = true
                position = 0
            }
        }
    }

    /// The first entry at or after the slot `point` (a random number) picks (RANDOMKEY), nil
    /// when empty.
    func randomEntry(from point: UInt64) -> (key: UnsafeRawBufferPointer, deadline: Int64?)? {
        guard self.count > 0 else { return nil }
        var position = self.home(point)
        while self.slots[position] == 0 {
            position += 1
            if position == self.capacity { position = 0 }
        }
        let entry = Self.entry(self.slots[position])
        return (Self.key(of: entry), Self.deadline(of: entry))
    }

    /// Make room for `count` entries without growing.
    func reserve(_ count: Int) {
        let needed = count * 100 / Self.maxLoadNumerator + 1
        if needed > self.capacity { self.grow(to: needed) }
    }

    /// Rebuild the table smaller if it is less than 40% full (after recovery sized it for every
    /// record of a log that held many overwrites).
    func shrinkIfSparse() {
        guard self.capacity > 64, self.count * 100 < self.capacity * 40 else { return }
        self.grow(to: max(16, self.count * 100 / 70 + 1))
    }

    private func grow(to newCapacity: Int) {
        let old = self.slots
        let oldCapacity = self.capacity
        self.capacity = newCapacity
        self.slots = Self.allocateSlots(newCapacity)
        self.growAt = newCapacity * Self.maxLoadNumerator / 100
        for i in 0..<oldCapacity where old[i] != 0 {
            let slot = old[i]
            let hash = self.hasher.hash(Self.key(of: Self.entry(slot)))
            var index = self.home(hash)
            while self.slots[index] != 0 {
                index += 1
                if index == newCapacity { index = 0 }
            }
            self.slots[index] = slot
        }
        Self.freeSlots(old, oldCapacity)
    }

    /// Visit every entry (in table order).
    func forEach(_ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Void) rethrows {
        for i in 0..<self.capacity where self.slots[i] != 0 {
            let entry = Self.entry(self.slots[i])
            try body(Self.key(of: entry), Self.value(of: entry))
        }
    }

    /// Visit every entry with its deadline (in table order).
    func forEachEntry(_ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer, Int64?) throws -> Void) rethrows {
        for i in 0..<self.capacity where self.slots[i] != 0 {
            let entry = Self.entry(self.slots[i])
            try body(Self.key(of: entry), Self.value(of: entry), Self.deadline(of: entry))
        }
    }

    /// Whether the expiry index holds exactly the live entries that have a deadline (tests).
    func expiryIndexIsConsistent() -> Bool {
        var live = Set<UnsafeMutableRawPointer>()
        for i in 0..<self.capacity where self.slots[i] != 0 {
            let entry = Self.entry(self.slots[i])
            if Self.hasDeadline(entry) { live.insert(entry) }
        }
        let indexed = self.expiring.entries()
        return indexed.count == self.expiring.count && Set(indexed) == live
    }

    /// The table's capacity (SCAN cursors are positions in it).
    var tableSize: Int { self.capacity }

    // MARK: Snapshots

    /// A frozen view of the map: a copy of the slot array. Entries stay valid until `close()`.
    final class Snapshot: @unchecked Sendable {
        let slots: UnsafeMutablePointer<UInt64>
        let capacity: Int
        let count: Int

        fileprivate init(slots: UnsafeMutablePointer<UInt64>, capacity: Int, count: Int) {
            self.slots = slots
            self.capacity = capacity
            self.count = count
        }

        deinit { self.slots.deallocate() }

        /// Visit every entry of the frozen view, with its deadline.
        func forEach(_ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer, Int64?) throws -> Void) rethrows {
            for i in 0..<self.capacity where self.slots[i] != 0 {
                let entry = CompactMap.entry(self.slots[i])
                try body(CompactMap.key(of: entry), CompactMap.value(of: entry), CompactMap.deadline(of: entry))
            }
        }
    }

    /// Freeze the current contents (O(table size) memcpy). Call `closeSnapshot()` when done.
    func openSnapshot() -> Snapshot {
        let copy = UnsafeMutablePointer<UInt64>.allocate(capacity: self.capacity)
        copy.initialize(from: self.slots, count: self.capacity)
        self.openSnapshots += 1
        return Snapshot(slots: copy, capacity: self.capacity, count: self.count)
    }

    /// Release a snapshot; once none is open, parked entries are freed.
    func closeSnapshot() {
        self.openSnapshots -= 1
        if self.openSnapshots == 0 {
            for entry in self.parked { free(entry) }
            self.parked.removeAll()
        }
    }
}
