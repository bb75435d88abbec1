import Synchronization

/// INFO commandstats: calls, time, refusals and failures per command (subcommands as
/// `config|get`, as Redis names them), one set of counters per table entry made up front, so
/// counting takes no lock.
final class CommandStatistics: Sendable {
    final class Counters: Sendable {
        let calls = Atomic<Int>(0)
        let nanoseconds = Atomic<Int>(0)
        /// Refused before running (arity, a follower's READONLY, a MULTI's queueing rules).
        let rejected = Atomic<Int>(0)
        /// Ran and answered with an error.
        let failed = Atomic<Int>(0)
    }

    /// By the entries' statistics slots (`CommandTable.allEntries` order).
    private let slots: [Counters]
    private let counters: [String: Counters]

    init() {
        let entries = CommandTable.allEntries
        self.slots = entries.map { _ in Counters() }
        var counters: [String: Counters] = [:]
        for (slot, spec) in entries.enumerated() { counters[spec.fullName] = self.slots[slot] }
        self.counters = counters
    }

    func counters(for spec: CommandSpec) -> Counters? {
        spec.statisticsSlot >= 0 && spec.statisticsSlot < self.slots.count ? self.slots[spec.statisticsSlot] : nil
    }

    /// One command answered.
    func record(_ spec: CommandSpec, nanoseconds: UInt64, failed: Bool) {
        guard let counters = self.counters(for: spec) else { return }
        counters.calls.add(1, ordering: .relaxed)
        counters.nanoseconds.add(Int(nanoseconds), ordering: .relaxed)
        if failed { counters.failed.add(1, ordering: .relaxed) }
    }

    /// `count` commands of one kind answered in `nanoseconds` in all (the in-place GET/SET path
    /// counts a read's worth at once).
    func record(_ spec: CommandSpec, count: Int, nanoseconds: UInt64) {
        guard count > 0, let counters = self.counters(for: spec) else { return }
        counters.calls.add(count, ordering: .relaxed)
        counters.nanoseconds.add(Int(nanoseconds), ordering: .relaxed)
    }

    func rejected(_ spec: CommandSpec) {
        self.counters(for: spec)?.rejected.add(1, ordering: .relaxed)
    }

    /// `cmdstat_<name>:calls=…,usec=…,usec_per_call=…,rejected_calls=…,failed_calls=…` for every
    /// command called (or refused) since the start or CONFIG RESETSTAT.
    func infoFields() -> [(String, String)] {
        self.counters.sorted { $0.key < $1.key }.compactMap { name, counters in
            let calls = counters.calls.load(ordering: .relaxed)
            let rejected = counters.rejected.load(ordering: .relaxed)
            guard calls > 0 || rejected > 0 else { return nil }
            let microseconds = counters.nanoseconds.load(ordering: .relaxed) / 1000
            let perCall = calls == 0 ? 0 : Double(microseconds) / Double(calls)
            return (
                "cmdstat_\(name)",
                "calls=\(calls),usec=\(microseconds),usec_per_call=\(RedisNumbers.format2(perCall)),"
                    + "rejected_calls=\(rejected),failed_calls=\(counters.failed.load(ordering: .relaxed))"
            )
        }
    }

    func reset() {
        for counters in self.counters.values {
            counters.calls.store(0, ordering: .relaxed)
            counters.nanoseconds.store(0, ordering: .relaxed)
            counters.rejected.store(0, ordering: .relaxed)
            counters.failed.store(0, ordering: .relaxed)
        }
    }
}
