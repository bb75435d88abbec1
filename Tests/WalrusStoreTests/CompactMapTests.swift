import Testing
@testable import WalrusStore

/// The store's map against a Dictionary model: growth, backward-shift deletion, snapshots.
struct CompactMapTests {
    /// A deterministic generator so a failure replays the same way.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            self.state &+= 0x9E37_79B9_7F4A_7C15
            var z = self.state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    func contents(_ map: CompactMap) -> [[UInt8]: [UInt8]] {
        var result: [[UInt8]: [UInt8]] = [:]
        map.forEach { key, value in result[Array(key)] = Array(value) }
        return result
    }

    /// Random sets, overwrites and deletes over a small key space (long probe runs, many
    /// deletions inside them) and a large one (many grows) agree with a Dictionary at every step.
    @Test(arguments: [50, 5000])
    func agreesWithADictionary(keySpace: Int) {
        var random = SplitMix(state: UInt64(keySpace))
        let map = CompactMap()
        var model: [[UInt8]: [UInt8]] = [:]
        for step in 0..<20_000 {
            let key = Array("k\(Int.random(in: 0..<keySpace, using: &random))".utf8)
            let roll = Int.random(in: 0..<10, using: &random)
            if roll < 6 {
                let value = [UInt8](repeating: UInt8(step & 0xff), count: Int.random(in: 0..<40, using: &random))
                key.withUnsafeBytes { k in value.withUnsafeBytes { v in map.set(k, v) } }
                model[key] = value
            } else if roll < 9 {
                let removed = key.withUnsafeBytes { map.remove($0) }
                #expect(removed == (model.removeValue(forKey: key) != nil))
            }
            let got = key.withUnsafeBytes { k in map.withValue(k) { $0.map { Array($0) } } }
            #expect(got == model[key], "step \(step)")
            #expect(map.count == model.count)
        }
        #expect(contents(map) == model)
        // Every key the model holds is found by lookup (no entry stranded by a deletion shift).
        for (key, value) in model {
            #expect(key.withUnsafeBytes { k in map.withValue(k) { $0.map { Array($0) } } } == value)
        }
    }

    /// Empty keys and values, and binary bytes, are ordinary keys and values.
    @Test func emptyAndBinaryKeys() {
        let map = CompactMap()
        let empty: [UInt8] = []
        let binary: [UInt8] = [0, 255, 0, 1]
        empty.withUnsafeBytes { k in binary.withUnsafeBytes { v in map.set(k, v) } }
        binary.withUnsafeBytes { k in empty.withUnsafeBytes { v in map.set(k, v) } }
        #expect(contents(map) == [empty: binary, binary: empty])
        #expect(empty.withUnsafeBytes { map.remove($0) })
        #expect(contents(map) == [binary: empty])
    }

    /// A snapshot keeps seeing the contents it was opened on while the map changes; entries
    /// replaced meanwhile are freed only when it closes.
    @Test func snapshotIsFrozenWhileTheMapChanges() {
        let map = CompactMap()
        for i in 0..<1000 {
            let key = Array("key-\(i)".utf8), value = Array("old-\(i)".utf8)
            key.withUnsafeBytes { k in value.withUnsafeBytes { v in map.set(k, v) } }
        }
        let snapshot = map.openSnapshot()
        for i in 0..<2000 {
            let key = Array("key-\(i)".utf8), value = Array("new-\(i)".utf8)
            key.withUnsafeBytes { k in value.withUnsafeBytes { v in map.set(k, v) } }
        }
        for i in stride(from: 0, to: 1000, by: 3) { _ = Array("key-\(i)".utf8).withUnsafeBytes { map.remove($0) } }
        var frozen: [String: String] = [:]
        snapshot.forEach { key, value, _ in frozen[String(decoding: key, as: UTF8.self)] = String(decoding: value, as: UTF8.self) }
        map.closeSnapshot()
        #expect(frozen.count == 1000)
        #expect(frozen.allSatisfy { $0.value == "old-" + $0.key.dropFirst(4) })
        #expect(map.count == 2000 - 334)
    }

    /// Deadlines against a model: set with and without one, change and remove it, delete; the
    /// expiry index holds exactly the keys that have a deadline, and sampling finds only those.
    @Test func deadlinesAndTheExpiryIndex() {
        var random = SplitMix(state: 7)
        let map = CompactMap()
        var model: [[UInt8]: ([UInt8], Int64?)] = [:]
        for step in 0..<20_000 {
            let key = Array("k\(Int.random(in: 0..<700, using: &random))".utf8)
            let deadline: Int64? = Bool.random(using: &random) ? Int64(step) : nil
            switch Int.random(in: 0..<10, using: &random) {
            case 0..<5:
                let value = [UInt8](repeating: UInt8(step & 0xff), count: Int.random(in: 0..<30, using: &random))
                key.withUnsafeBytes { k in value.withUnsafeBytes { v in map.set(k, v, deadline: deadline) } }
                model[key] = (value, deadline)
            case 5..<8:
                let changed = key.withUnsafeBytes { map.setDeadline($0, deadline) }
                #expect(changed == (model[key] != nil))
                if let old = model[key] { model[key] = (old.0, deadline) }
            default:
                _ = key.withUnsafeBytes { map.remove($0) }
                model[key] = nil
            }
            if step % 1000 == 0 {
                #expect(map.expiring.count == model.values.filter { $0.1 != nil }.count, "step \(step)")
            }
        }
        for (key, (value, deadline)) in model {
            let got = key.withUnsafeBytes { k in map.withEntry(k) { v, d in (Array(v), d) } }
            #expect(got?.0 == value && got?.1 == deadline)
        }
        let sample = map.sampleExpiring(50, from: random.next())
        #expect(sample.count == min(50, map.expiring.count))
        for (key, deadline) in sample { #expect(model[key]?.1 == deadline && deadline != nil) }
        map.removeAll()
        #expect(map.count == 0 && map.expiring.count == 0)
    }
    /// The expiry index against the map at every step, through everything that changes it:
    /// sets with and without deadlines, deadline changes, deletes, mass deletes (the index
    /// shrinks), FLUSHALL, growth, and all of these while a snapshot is open.
    @Test(arguments: [40, 3000])
    func expiryIndexStaysExact(keySpace: Int) {
        var random = SplitMix(state: UInt64(keySpace) &* 31)
        let map = CompactMap()
        var snapshot: CompactMap.Snapshot?
        for step in 0..<30_000 {
            let key = Array("k\(Int.random(in: 0..<keySpace, using: &random))".utf8)
            let deadline: Int64? = Int.random(in: 0..<3, using: &random) == 0 ? nil : Int64(step)
            switch Int.random(in: 0..<1000, using: &random) {
            case 0..<450:
                let value = [UInt8](repeating: 1, count: Int.random(in: 0..<20, using: &random))
                key.withUnsafeBytes { k in value.withUnsafeBytes { v in map.set(k, v, deadline: deadline) } }
            case 450..<700:
                _ = key.withUnsafeBytes { map.setDeadline($0, deadline) }
            case 700..<990:
                _ = key.withUnsafeBytes { map.remove($0) }
            case 990..<995:
                // Delete most keys at once: the index gives memory back.
                for i in 0..<keySpace where i % 10 != 0 { _ = Array("k\(i)".utf8).withUnsafeBytes { map.remove($0) } }
            case 995..<997:
                map.removeAll()
            default:
                if snapshot == nil {
                    snapshot = map.openSnapshot()
                } else {
                    snapshot = nil
                    map.closeSnapshot()
                }
            }
            if step % 97 == 0 || keySpace < 100 {
                #expect(map.expiryIndexIsConsistent(), "step \(step)")
                let sample = map.sampleExpiring(20, from: random.next())
                for (key, deadline) in sample {
                    #expect(key.withUnsafeBytes { k in map.withEntry(k) { _, d in d } } == .some(deadline), "step \(step)")
                }
            }
        }
        if snapshot != nil { map.closeSnapshot() }
        #expect(map.expiryIndexIsConsistent())
    }
}
