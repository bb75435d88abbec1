#if canImport(Glibc)
import Glibc
#endif

/// The map's entries that have a deadline: an open-addressing set of entry addresses, keyed by
/// the entry's key hash, that the expiry cycle samples at random (Redis keeps an `expires` dict
/// beside its keyspace for the same reason: sampling the whole keyspace would mostly find keys
/// that never expire).
///
/// A slot is 8 bytes — the entry's address (low 48 bits) and 16 bits of its hash — so a key with
/// a deadline costs about 9.4 bytes here at the 85% load limit, plus the 8-byte deadline in its
/// entry; Redis's `expires` dict costs a 24-byte dictEntry and an 8-byte bucket per such key.
///
/// - Important: not thread-safe; `CompactMap` (under the store's lock) owns it.
final class ExpiryIndex: @unchecked Sendable {
    private static let addressMask: UInt64 = (1 << 48) - 1
    private let hasher: KeyHasher
    @exclusivity(unchecked) private var slots: UnsafeMutablePointer<UInt64>
    @exclusivity(unchecked) private var capacity = 16
    /// Entries in the index.
    @exclusivity(unchecked) private(set) var count = 0

    init(hasher: KeyHasher) {
        self.hasher = hasher
        self.slots = calloc(16, 8)!.bindMemory(to: UInt64.self, capacity: 16)
    }

    deinit { free(self.slots) }

    @inline(__always)
    private func home(_ hash: UInt64) -> Int {
        Int(truncatingIfNeeded: hash.multipliedFullWidth(by: UInt64(self.capacity)).high)
    }

    @inline(__always)
    private static func slot(_ entry: UnsafeMutableRawPointer, _ hash: UInt64) -> UInt64 {
        UInt64(UInt(bitPattern: entry)) | (hash << 48)
    }

    /// The slot holding `entry`; it must be present.
    private func position(of entry: UnsafeMutableRawPointer, hash: UInt64) -> Int {
        let wanted = Self.slot(entry, hash)
        var index = self.home(hash)
        while self.slots[index] != wanted {
            precondition(self.slots[index] != 0, "an entry with a deadline is missing from the expiry index")
            index += 1
            if index == self.capacity { index = 0 }
        }
        return index
    }

    func insert(_ entry: UnsafeMutableRawPointer, hash: UInt64) {
        if (self.count + 1) * 100 > self.capacity * 85 { self.resize(to: self.capacity * 2) }
        var index = self.home(hash)
        while self.slots[index] != 0 {
            index += 1
            if index == self.capacity { index = 0 }
        }
        self.slots[index] = Self.slot(entry, hash)
        self.count += 1
    }

    /// `old` was replaced by `new` for the same key (same hash): the slot is reused.
    func replace(_ old: UnsafeMutableRawPointer, with new: UnsafeMutableRawPointer, hash: UInt64) {
        self.slots[self.position(of: old, hash: hash)] = Self.slot(new, hash)
    }

    func remove(_ entry: UnsafeMutableRawPointer, hash: UInt64) {
        var hole = self.position(of: entry, hash: hash)
        var next = hole
        // Backward-shift deletion, as in `CompactMap.remove`.
        while true {
            next += 1
            if next == self.capacity { next = 0 }
            let slot = self.slots[next]
            if slot == 0 { break }
            let entry = UnsafeMutableRawPointer(bitPattern: UInt(slot & Self.addressMask))!
            let home = self.home(self.hasher.hash(CompactMap.key(of: entry)))
            let homeInRange = hole <= next ? (home > hole && home <= next) : (home > hole || home <= next)
            if !homeInRange {
                self.slots[hole] = slot
                hole = next
            }
        }
        self.slots[hole] = 0
        self.count -= 1
        // Give memory back after a mass expiry (never below 16 slots).
        if self.capacity > 64 && self.count * 100 < self.capacity * 10 { self.resize(to: max(16, self.capacity / 4)) }
    }

    func removeAll() {
        free(self.slots)
        self.capacity = 16
        self.slots = calloc(16, 8)!.bindMemory(to: UInt64.self, capacity: 16)
        self.count = 0
    }

    /// Up to `count` entries, read onwards from the slot `point` (a random 64-bit number) falls
    /// on (Redis samples its expires dict the same way: random buckets, then the entries that
    /// follow).
    func sample(_ count: Int, from point: UInt64) -> [UnsafeMutableRawPointer] {
        guard self.count > 0 else { return [] }
        var result: [UnsafeMutableRawPointer] = []
        let wanted = min(count, self.count)
        result.reserveCapacity(wanted)
        var index = self.home(point)
        var visited = 0
        while result.count < wanted && visited < self.capacity {
            let slot = self.slots[index]
            if slot != 0 { result.append(UnsafeMutableRawPointer(bitPattern: UInt(slot & Self.addressMask))!) }
            visited += 1
            index += 1
            if index == self.capacity { index = 0 }
        }
        return result
    }

    /// Every entry in the index, in slot order (tests check it against the map).
    func entries() -> [UnsafeMutableRawPointer] {
        (0..<self.capacity).compactMap { i in
            self.slots[i] == 0 ? nil : UnsafeMutableRawPointer(bitPattern: UInt(self.slots[i] & Self.addressMask))!
        }
    }

    private func resize(to newCapacity: Int) {
        let old = self.slots
        let oldCapacity = self.capacity
        self.capacity = newCapacity
        self.slots = calloc(newCapacity, 8)!.bindMemory(to: UInt64.self, capacity: newCapacity)
        for i in 0..<oldCapacity where old[i] != 0 {
            let entry = UnsafeMutableRawPointer(bitPattern: UInt(old[i] & Self.addressMask))!
            var index = self.home(self.hasher.hash(CompactMap.key(of: entry)))
            while self.slots[index] != 0 {
                index += 1
                if index == newCapacity { index = 0 }
            }
            self.slots[index] = old[i]
        }
        free(old)
    }
}
