import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Lets one piece of long exclusive work (a script, an EXEC holding one) run while no command
/// does, without blocking an event loop on the store's lock for as long as it runs.
///
/// Short work (an event loop's batch of commands, an expiry cycle, a follower applying records)
/// `enter`s and `exit`s around itself; an `enter` that fails means exclusive work runs now: the
/// caller parks its work and comes back when told (it must never wait here). Exclusive work
/// `close`s the gate — later enters fail — and waits for those inside to leave, then `open`s it
/// when done. A Dekker-style handshake on two sequentially consistent atomics: an enter that
/// raced a close either sees the gate closed, or is counted before the closer stops waiting.
public final class ExclusiveGate: Sendable {
    private let inside = Atomic<Int>(0)
    private let closed = Atomic<Bool>(false)

    public init() {}

    /// Enter for short work; false while exclusive work runs (do not wait: park and retry).
    @inline(__always)
    public func enter() -> Bool {
        self.inside.add(1, ordering: .sequentiallyConsistent)
        if self.closed.load(ordering: .sequentiallyConsistent) {
            self.inside.subtract(1, ordering: .sequentiallyConsistent)
            return false
        }
        return true
    }

    /// Leave after a successful `enter`.
    @inline(__always)
    public func exit() { self.inside.subtract(1, ordering: .sequentiallyConsistent) }

    /// Whether exclusive work holds the gate now.
    public var isClosed: Bool { self.closed.load(ordering: .sequentiallyConsistent) }

    /// Close the gate and wait until no short work is inside (one closer at a time; never from
    /// a thread that is inside).
    public func close() {
        self.closed.store(true, ordering: .sequentiallyConsistent)
        var spins = 0
        while self.inside.load(ordering: .sequentiallyConsistent) > 0 {
            spins += 1
            if spins < 100 { sched_yield() } else { usleep(20) }
        }
    }

    /// Open it again.
    public func open() { self.closed.store(false, ordering: .sequentiallyConsistent) }

    /// From inside (after `enter`): make this short work exclusive for a moment — close the gate
    /// and wait until no one else is inside. False when other exclusive work holds or wants the
    /// gate (then carry on as short work, or hand the work over). Undo with `downgrade`.
    public func tryUpgrade() -> Bool {
        guard self.closed.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged else {
            return false
        }
        var spins = 0
        while self.inside.load(ordering: .sequentiallyConsistent) > 1 {
            spins += 1
            if spins < 100 { sched_yield() } else { usleep(20) }
        }
        return true
    }

    /// End an upgrade: the caller is short work inside again.
    public func downgrade() { self.open() }
}
