/// The group committer's decisions, as a pure function of its inputs (no I/O, no clock), so the
/// rules can be tested with made-up times.
///
/// - `always`: whenever records are pending, write them all and fdatasync once. Records appended
///   while that fdatasync runs wait for the next one: one fdatasync covers many writers, and the
///   batch grows by itself with the load.
/// - `interval(ms)`: the original's behaviour. Records collect in memory and are written and
///   fdatasync'ed together when the period has passed since the last sync, when a caller asks
///   for a commit, or early (written, not yet synced) once `writeThresholdBytes` are pending, so
///   memory stays bounded. One write per period is what makes this mode fast; the price, as in
///   the original, is that a crash can lose one period of acknowledged writes.
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
        var pendingBytes: Int = 0
        var writeThresholdBytes: Int = 1 << 20
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
            if input.hasPending && (syncNow || input.pendingBytes >= input.writeThresholdBytes) {
                return .write(sync: syncNow)
            }
            if input.hasUnsyncedWrites && syncNow { return .sync }
            if input.hasPending || input.hasUnsyncedWrites { return .wait(untilNanoseconds: due) }
            // Idle: wake once a period anyway, so appenders never have to wake us (a futex wake
            // per first append would cost more than ten idle wake-ups a second).
            return input.closing ? .exit : .wait(untilNanoseconds: input.nowNanoseconds &+ UInt64(max(milliseconds, 1)) * 1_000_000)
        }
    }
}
