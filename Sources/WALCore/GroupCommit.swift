/// The group committer's decisions, as a pure function of its inputs (no I/O, no clock), so the
/// rules can be tested with made-up times.
///
/// - `always`: whenever records are pending, write them all and fdatasync once. Records appended
///   while that fdatasync runs wait for the next one: one fdatasync covers many writers, and the
///   batch grows by itself with the load.
/// - `interval(ms)`: write pending records as they come (so a killed process loses nothing the
///   kernel has), and fdatasync when the period has passed since the last one, or when a caller
///   asked for a commit.
enum GroupCommit {
    /// What the flusher should do next.
    enum Action: Equatable {
        /// Take the pending bytes and write them; fdatasync afterwards if `sync`.
        case write(sync: Bool)
        /// Nothing to write, but written bytes need an fdatasync now.
        case sync
        /// Sleep until woken or until the deadline (monotonic ns), if any.
        case wait(untilNanoseconds: UInt64?)
        /// Nothing left to do and the log is closing.
        case exit
    }

    /// What the flusher knows when it decides.
    struct Inputs: Equatable {
        var mode: FsyncMode
        var hasPending: Bool
        var hasUnsyncedWrites: Bool
        var syncRequested: Bool
        var closing: Bool
        var nowNanoseconds: UInt64
        var lastSyncNanoseconds: UInt64
    }

    static func decide(_ input: Inputs) -> Action {
        switch input.mode {
        case .always:
            if input.hasPending { return .write(sync: true) }
            if input.hasUnsyncedWrites { return .sync }
            return input.closing ? .exit : .wait(untilNanoseconds: nil)
        case .interval(let milliseconds):
            let due = input.lastSyncNanoseconds &+ UInt64(max(milliseconds, 0)) * 1_000_000
            let syncNow = input.syncRequested || input.closing || input.nowNanoseconds >= due
            if input.hasPending { return .write(sync: syncNow) }
            if input.hasUnsyncedWrites {
                return syncNow ? .sync : .wait(untilNanoseconds: due)
            }
            return input.closing ? .exit : .wait(untilNanoseconds: nil)
        }
    }
}
