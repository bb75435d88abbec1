#if canImport(Glibc)
import Glibc
#endif

/// The store's key → value map, built for memory per key and for recovery speed.
///
/// - Each entry is one immutable malloc'd block `[keyLength u32][valueLength u32][key][value]`
///   (a 12-byte key and a 100-byte value take one 128-byte malloc chunk; `[ByteKey: [UInt8]]`
///   took two arrays with 32-byte headers each, plus the dictionary's buckets).
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

    init(capacity: Int = 16, hasher: KeyHasher = KeyHasher()) {
        self.hasher = hasher
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
    static func key(of entry: UnsafeRawPointer) -> UnsafeRawBufferPointer {
        let keyCount = Int(entry.load(as: UInt32.self))
        return UnsafeRawBufferPointer(start: entry + headerSize, count: keyCount)
    }

    @inline(__always)
    static func value(of entry: UnsafeRawPointer) -> UnsafeRawBufferPointer {
        let keyCount = Int(entry.load(as: UInt32.self))
        let valueCount = Int(entry.load(fromByteOffset: 4, as: UInt32.self))
        return UnsafeRawBufferPointer(start: entry + headerSize + keyCount, count: valueCount)
    }

    private static func makeEntry(_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> UnsafeMutableRawPointer {
        let size = headerSize + key.count + value.count
        let entry = malloc(max(size, 1))!
        entry.storeBytes(of: UInt32(key.count), as: UInt32.self)
        entry.storeBytes(of: UInt32(value.count), toByteOffset: 4, as: UInt32.self)
        if key.count > 0 { (entry + headerSize).copyMemory(from: key.baseAddress!, byteCount: key.count) }
        if value.count > 0 { (entry + headerSize + key.count).copyMemory(from: value.baseAddress!, byteCount: value.count) }
        precondition(UInt64(UInt(bitPattern: entry)) & ~addressMask == 0, "malloc returned an address above 2^48")
        return entry
    }

    private func release(_ entry: UnsafeMutableRawPointer) {
        let key = Self.key(of: entry)
        self.entryBytes -= Self.headerSize + key.count + Self.value(of: entry).count
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

    // MARK: Operations

    /// The value's bytes for `key`, valid until the next write to the map.
    @inline(__always)
    func withValue<R>(_ key: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer?) throws -> R) rethrows -> R {
        let (index, found) = self.probe(key, hash: self.hasher.hash(key))
        guard found else { return try body(nil) }
        return try body(Self.value(of: Self.entry(self.slots[index])))
    }

    /// `withValue` without a result (not generic).
    func readValue(_ key: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer?) -> Void) {
        let (index, found) = self.probe(key, hash: self.hasher.hash(key))
        body(found ? Self.value(of: Self.entry(self.slots[index])) : nil)
    }

    /// Whether `key` is present.
    func contains(_ key: UnsafeRawBufferPointer) -> Bool {
        self.probe(key, hash: self.hasher.hash(key)).found
    }

    /// Set `key` to `value`.
    func set(_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) {
        let hash = self.hasher.hash(key)
        var (index, found) = self.probe(key, hash: hash)
        let entry = Self.makeEntry(key, value)
        self.entryBytes += Self.headerSize + key.count + value.count
        if found {
            let old = Self.entry(self.slots[index])
            self.slots[index] = UInt64(UInt(bitPattern: entry)) | Self.tag(hash)
            self.release(old)
            return
        }
        if self.count + 1 > self.growAt {
            self.grow(to: self.capacity + self.capacity / 2)
            index = self.probe(key, hash: hash).index
        }
        self.slots[index] = UInt64(UInt(bitPattern: entry)) | Self.tag(hash)
        self.count += 1
    }

    /// Remove `key`; returns whether it was present.
    @discardableResult
    func remove(_ key: UnsafeRawBufferPointer) -> Bool {
        let (found, existed) = self.probe(key, hash: self.hasher.hash(key))
        guard existed else { return false }
        self.release(Self.entry(self.slots[found]))
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

        /// Visit every entry of the frozen view.
        func forEach(_ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Void) rethrows {
            for i in 0..<self.capacity where self.slots[i] != 0 {
                let entry = CompactMap.entry(self.slots[i])
                try body(CompactMap.key(of: entry), CompactMap.value(of: entry))
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
