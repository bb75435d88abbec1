#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import WALCore

/// The group committer's rules, with made-up times (no I/O, no clock).
struct GroupCommitTests {
    func inputs(
        _ mode: FsyncMode, pending: Bool = false, unsynced: Bool = false, requested: Bool = false,
        closing: Bool = false, now: UInt64 = 0, lastSync: UInt64 = 0
    ) -> GroupCommit.Inputs {
        GroupCommit.Inputs(
            mode: mode, hasPending: pending, hasUnsyncedWrites: unsynced, syncRequested: requested, closing: closing,
            nowNanoseconds: now, lastSyncNanoseconds: lastSync)
    }

    /// In always mode anything pending is written and synced at once.
    @Test func alwaysWritesAndSyncsPending() {
        #expect(GroupCommit.decide(inputs(.always, pending: true)) == .write(sync: true))
        #expect(GroupCommit.decide(inputs(.always)) == .wait(untilNanoseconds: nil))
        #expect(GroupCommit.decide(inputs(.always, closing: true)) == .exit)
    }

    /// In interval mode records wait in memory until the period is up (or a megabyte is pending).
    @Test func intervalBuffersUntilThePeriodIsUp() {
        let ms100: UInt64 = 100_000_000
        #expect(
            GroupCommit.decide(inputs(.interval(milliseconds: 100), pending: true, now: 10, lastSync: 0))
                == .wait(untilNanoseconds: ms100))
        #expect(GroupCommit.decide(inputs(.interval(milliseconds: 100), pending: true, now: ms100, lastSync: 0)) == .write(sync: true))
        var big = inputs(.interval(milliseconds: 100), pending: true, now: 10, lastSync: 0)
        big.pendingBytes = 2 << 20
        #expect(GroupCommit.decide(big) == .write(sync: false))
        #expect(
            GroupCommit.decide(inputs(.interval(milliseconds: 100), unsynced: true, now: 50, lastSync: 0))
                == .wait(untilNanoseconds: ms100))
        #expect(GroupCommit.decide(inputs(.interval(milliseconds: 100), unsynced: true, now: ms100 + 1, lastSync: 0)) == .sync)
    }

    /// A commit request syncs at once; closing syncs what is left, then exits.
    @Test func commitAndCloseSyncImmediately() {
        #expect(GroupCommit.decide(inputs(.interval(milliseconds: 100), unsynced: true, requested: true, now: 1)) == .sync)
        #expect(GroupCommit.decide(inputs(.interval(milliseconds: 100), pending: true, requested: true, now: 1)) == .write(sync: true))
        #expect(GroupCommit.decide(inputs(.interval(milliseconds: 100), unsynced: true, closing: true, now: 1)) == .sync)
        #expect(GroupCommit.decide(inputs(.interval(milliseconds: 100), closing: true, now: 1)) == .exit)
        // Idle in interval mode: a periodic wake-up, never an unbounded sleep.
        #expect(GroupCommit.decide(inputs(.interval(milliseconds: 100), now: 5)) == .wait(untilNanoseconds: 100_000_005))
    }
}

/// ConditionLock.wait(while:) sees another thread's change: it re-reads the state after each
/// wake-up (a loop on `wait` inside `withLock` could keep reading a stale copy).
@Suite struct ConditionLockTests {
    /// No deadline: a waiter that missed the change would sleep for ever, and the time limit fails it.
    /// The limit is generous on purpose: it counts from the test's start, and in a full run the
    /// suites that wait for child processes (the drill, the crash loop, bad input) can hold both
    /// cooperative threads of a 2-core machine for minutes before this body runs (260 s under
    /// ThreadSanitizer in CI).
    @Test(.timeLimit(.minutes(15))) func waitWhileSeesAnotherThreadsChange() {
        let lock = ConditionLock(0)
        let setter = DedicatedThread(name: "setter") {
            usleep(20_000)
            lock.withLock { value in
                value = 1
                lock.broadcast()
            }
        }
        lock.wait(while: { $0 == 0 }, untilMonotonicNanoseconds: nil)
        #expect(lock.withLock { $0 } == 1)
        setter.join()
    }
}
