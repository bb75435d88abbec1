import DequeModule

/// The log's newest written bytes, kept in memory after their write so that the readers tailing
/// the log (replication's cursors, one per follower) copy them from here instead of reading the
/// segment file: no `pread` per streamed batch, and — with direct I/O, which leaves nothing of the
/// log in the page cache — no disk read either.
///
/// It holds the written batches' own buffers (no copy), each run under its segment and file
/// offset, newest last, up to `budget` bytes of buffer capacity; the oldest go first, and one
/// that nothing else references any more is handed back (`takeReusable`) to become the next
/// pending buffer, so the steady state allocates nothing. Readers bound what they ask for by the
/// sealed size, so bytes written but not yet fdatasync'ed (interval mode) are never handed out.
///
/// Thread-safe: the writer adds under the log's I/O mutex, readers copy from any thread; the
/// lock is held for a copy of at most one read's worth of bytes.
final class RecentWrites: @unchecked Sendable {
    private struct Run {
        var segment: Int
        /// Where `buffer[start]` is in the segment file.
        var offset: Int64
        var buffer: RecordBuffer
        var start: Int
        var count: Int
    }

    private let mutex = PlainMutex()
    private var runs = Deque<Run>()
    private var heldCapacity = 0
    private var reusable: RecordBuffer?
    private let budget: Int

    /// Keep at most `budget` bytes of buffer capacity (the newest batch always stays).
    init(budget: Int = 4 << 20) {
        self.budget = budget
    }

    /// `buffer[start..<start+count]` is now in segment `segment` at `offset` (called in write
    /// order; the buffer must not change while it is held).
    func add(_ buffer: RecordBuffer, start: Int, count: Int, segment: Int, offset: Int64) {
        guard count > 0 else { return }
        self.mutex.lock()
        defer { self.mutex.unlock() }
        // A buffer's runs arrive one after another (a batch that crosses segments has several):
        // its capacity counts from its first run to its last.
        if self.runs.last?.buffer !== buffer { self.heldCapacity += buffer.capacity }
        self.runs.append(Run(segment: segment, offset: offset, buffer: buffer, start: start, count: count))
        // (No binding of the oldest run here: a second reference would make no buffer unique.)
        while self.heldCapacity > self.budget, !self.runs.isEmpty, self.runs[0].buffer !== buffer {
            var run = self.runs.removeFirst()
            if self.runs.first?.buffer === run.buffer { continue }  // more of it behind
            self.heldCapacity -= run.buffer.capacity
            // Reused only if nothing else holds it (a batch a full disk held back does).
            if self.reusable == nil && isKnownUniquelyReferenced(&run.buffer) {
                run.buffer.removeAll()
                self.reusable = run.buffer
            }
        }
    }

    /// A buffer no longer held, emptied, to append into; nil if none.
    func takeReusable() -> RecordBuffer? {
        self.mutex.lock()
        defer { self.mutex.unlock() }
        defer { self.reusable = nil }
        return self.reusable
    }

    /// Copy up to `count` bytes of segment `segment` from `offset` on into `destination`, as far
    /// as they are held here contiguously; returns how many (0: the offset is not held).
    func copy(segment: Int, offset: Int64, into destination: UnsafeMutableRawPointer, count: Int) -> Int {
        self.mutex.lock()
        defer { self.mutex.unlock() }
        // Readers tail the log: look from the newest end.
        var position = self.runs.count - 1
        while position >= 0 {
            let run = self.runs[position]
            if run.segment == segment && run.offset <= offset && offset < run.offset + Int64(run.count) { break }
            if run.segment < segment || (run.segment == segment && run.offset + Int64(run.count) <= offset) { return 0 }
            position -= 1
        }
        guard position >= 0 else { return 0 }
        var copied = 0
        var at = offset
        while copied < count && position < self.runs.count {
            let run = self.runs[position]
            guard run.segment == segment, run.offset <= at, at < run.offset + Int64(run.count) else { break }
            let skip = Int(at - run.offset)
            let n = min(run.count - skip, count - copied)
            (destination + copied).copyMemory(from: run.buffer.base + run.start + skip, byteCount: n)
            copied += n
            at += Int64(n)
            position += 1
        }
        return copied
    }

    /// Forget everything (the log was cut back or restarted: offsets now mean other bytes).
    func removeAll() {
        self.mutex.lock()
        defer { self.mutex.unlock() }
        self.runs.removeAll()
        self.heldCapacity = 0
        self.reusable = nil
    }

    /// Bytes of records held, and the buffer capacity holding them (tests).
    var held: (bytes: Int, capacity: Int) {
        self.mutex.lock()
        defer { self.mutex.unlock() }
        return (self.runs.reduce(0) { $0 + $1.count }, self.heldCapacity)
    }
}
