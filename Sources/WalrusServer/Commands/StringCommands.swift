import NIOCore
import WalrusStore

/// The string commands, with Redis 7.0's options, replies and error texts (t_string.c is the
/// reference). Every deadline is absolute in the log: relative forms are turned into
/// milliseconds since the Unix epoch here, before the write is encoded.
enum StringCommands {
    /// SET/GETEX's expiry option: which one, and the word holding its number.
    enum Expiry {
        case seconds(Int), milliseconds(Int), unixSeconds(Int), unixMilliseconds(Int)

        var argument: Int {
            switch self {
            case .seconds(let i), .milliseconds(let i), .unixSeconds(let i), .unixMilliseconds(let i): i
            }
        }
        var isAbsolute: Bool {
            switch self {
            case .unixSeconds, .unixMilliseconds: true
            default: false
            }
        }
    }

    /// Redis's `getExpireMillisecondsOrReply`: positive, no overflow, relative ones from `now`.
    static func deadline(_ expiry: Expiry, _ call: CommandCall, now: Int64) throws -> Int64 {
        let value = try call.integer(expiry.argument)
        // Worded only when thrown (an interpolated String is an allocation on every SET EX).
        func invalid() -> CommandError { CommandError("ERR invalid expire time in '\(call.spec.fullName)' command") }
        let inSeconds: Bool
        switch expiry {
        case .seconds, .unixSeconds: inSeconds = true
        default: inSeconds = false
        }
        guard value > 0, !inSeconds || value <= Int64.max / 1000 else { throw invalid() }
        var milliseconds = inSeconds ? value * 1000 : value
        if !expiry.isAbsolute {
            let (sum, overflow) = milliseconds.addingReportingOverflow(now)
            guard !overflow else { throw invalid() }
            milliseconds = sum
        }
        guard milliseconds > 0 else { throw invalid() }
        return milliseconds
    }

    /// The options of SET (from word 3) or GETEX (from word 2), with Redis's rule that a
    /// conflicting or unknown option, or one missing its number, is a syntax error.
    struct Options {
        var nx = false, xx = false, get = false, keepTTL = false, persist = false
        var expiry: Expiry?

        init(_ call: CommandCall, from start: Int, forSet: Bool) throws {
            var j = start
            while j < call.count {
                let hasNext = j + 1 < call.count
                if forSet && !self.xx && call.isOption(j, "NX") {
                    self.nx = true
                } else if forSet && !self.nx && call.isOption(j, "XX") {
                    self.xx = true
                } else if forSet && call.isOption(j, "GET") {
                    self.get = true
                } else if forSet && !self.persist && self.expiry == nil && call.isOption(j, "KEEPTTL") {
                    self.keepTTL = true
                } else if !forSet && !self.keepTTL && self.expiry == nil && call.isOption(j, "PERSIST") {
                    self.persist = true
                } else if hasNext && !self.keepTTL && !self.persist && self.expiry == nil, let kind = Self.expiry(call, j) {
                    self.expiry = kind
                    j += 1
                } else {
                    throw CommandError.syntax
                }
                j += 1
            }
        }

        private static func expiry(_ call: CommandCall, _ j: Int) -> Expiry? {
            if call.isOption(j, "EX") { return .seconds(j + 1) }
            if call.isOption(j, "PX") { return .milliseconds(j + 1) }
            if call.isOption(j, "EXAT") { return .unixSeconds(j + 1) }
            if call.isOption(j, "PXAT") { return .unixMilliseconds(j + 1) }
            return nil
        }
    }

    // MARK: SET and friends

    /// SET key value [NX | XX] [GET] [EX s | PX ms | EXAT ts | PXAT ms-ts | KEEPTTL]
    @Sendable static func set(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        let options = try Options(call, from: 3, forSet: true)
        let deadline = try options.expiry.map { try Self.deadline($0, call, now: store.now) }
        try call.arguments[1].withUnsafeReadableBytes { key in
            let old = options.get ? try store.entry(key) : nil
            // (Only NX and XX ask whether the key is there: a plain SET looks nothing up.)
            let found = options.get ? old != nil : options.nx || options.xx ? try store.exists(key) : false
            if (options.nx && found) || (options.xx && !found) {
                if options.get { Self.reply(&call, old?.value) } else { call.null() }
                return
            }
            let kept = options.keepTTL ? (try store.deadline(key) ?? nil) : nil
            try call.notifyNew(key, &store)
            try call.withBytes(2) { value in try store.set(key, value, deadline: deadline ?? kept) }
            call.notify(.string, "set", key: key)
            if deadline != nil { call.notify(.generic, "expire", key: key) }
            if options.get { Self.reply(&call, old?.value) } else { call.ok() }
        }
    }

    /// SETNX key value: 1 if set, 0 if the key existed.
    @Sendable static func setnx(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        try call.arguments[1].withUnsafeReadableBytes { key in
            if try store.exists(key) { return call.integer(reply: 0) }
            try call.notifyNew(key, &store)
            try call.withBytes(2) { try store.set(key, $0) }
            call.notify(.string, "set", key: key)
            call.integer(reply: 1)
        }
    }

    /// SETEX key seconds value, PSETEX key milliseconds value.
    static func setWithExpiry(milliseconds: Bool) -> @Sendable (inout CommandCall, inout StoreTransaction) throws -> Void {
        { call, store in
            let deadline = try Self.deadline(milliseconds ? .milliseconds(2) : .seconds(2), call, now: store.now)
            try call.arguments[1].withUnsafeReadableBytes { key in
                try call.notifyNew(key, &store)
                try call.withBytes(3) { try store.set(key, $0, deadline: deadline) }
                call.notify(.string, "set", key: key)
                call.notify(.generic, "expire", key: key)
            }
            call.ok()
        }
    }

    /// GET key.
    @Sendable static func get(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        try call.arguments[1].withUnsafeReadableBytes { key in
            try store.withEntry(key) { value, _ in
                if let value { call.bulk(value) } else { call.null() }
            }
        }
    }

    /// GETSET key value: the old value; the new one has no deadline.
    @Sendable static func getset(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        try call.arguments[1].withUnsafeReadableBytes { key in
            let old = try store.entry(key)
            try call.notifyNew(key, &store)
            try call.withBytes(2) { try store.set(key, $0) }
            call.notify(.string, "set", key: key)
            Self.reply(&call, old?.value)
        }
    }

    /// GETDEL key.
    @Sendable static func getdel(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        try call.arguments[1].withUnsafeReadableBytes { key in
            let old = try store.entry(key)
            if old != nil {
                try store.delete(key)
                call.notify(.generic, "del", key: key)
            }
            Self.reply(&call, old?.value)
        }
    }

    /// GETEX key [EX s | PX ms | EXAT ts | PXAT ms-ts | PERSIST]
    @Sendable static func getex(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        let options = try Options(call, from: 2, forSet: false)
        try call.arguments[1].withUnsafeReadableBytes { key in
            guard let old = try store.entry(key) else { return call.null() }
            // The expiry is checked only once the key is known to exist (as Redis does).
            let deadline = try options.expiry.map { try Self.deadline($0, call, now: store.now) }
            call.bulk(old.value)
            if let deadline, options.expiry?.isAbsolute == true, deadline <= store.now {
                try store.delete(key)
                call.notify(.generic, "del", key: key)
            } else if let deadline {
                try store.setDeadline(key, deadline)
                call.notify(.generic, "expire", key: key)
            } else if options.persist {
                if old.deadline != nil { call.notify(.generic, "persist", key: key) }
                try store.setDeadline(key, nil)
            }
        }
    }

    /// MSET key value [key value …]: one record, all or none.
    @Sendable static func mset(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        guard call.count % 2 == 1 else { throw call.arityError }
        for pair in stride(from: 1, to: call.count, by: 2) {
            try call.arguments[pair].withUnsafeReadableBytes { key in
                try call.notifyNew(key, &store)
                try call.withBytes(pair + 1) { try store.set(key, $0) }
                call.notify(.string, "set", key: key)
            }
        }
        call.ok()
    }

    /// MSETNX key value [key value …]: 1 and every key set, or 0 and none when any exists.
    @Sendable static func msetnx(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        guard call.count % 2 == 1 else { throw call.arityError }
        for pair in stride(from: 1, to: call.count, by: 2) where try call.withBytes(pair, { try store.exists($0) }) {
            return call.integer(reply: 0)
        }
        for pair in stride(from: 1, to: call.count, by: 2) {
            try call.arguments[pair].withUnsafeReadableBytes { key in
                try call.notifyNew(key, &store)
                try call.withBytes(pair + 1) { try store.set(key, $0) }
                call.notify(.string, "set", key: key)
            }
        }
        call.integer(reply: 1)
    }

    /// MGET key [key …]
    @Sendable static func mget(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        call.array(call.count - 1)
        for index in 1..<call.count {
            try call.arguments[index].withUnsafeReadableBytes { key in
                try store.withEntry(key) { value, _ in
                    if let value { call.bulk(value) } else { call.null() }
                }
            }
        }
    }

    // MARK: Editing a value in place (the key's deadline stays)

    /// The largest string a command may build (Redis's proto-max-bulk-len is walrus's
    /// max-value-bytes), with Redis's error.
    private static func checkLength(_ size: Int64, _ call: CommandCall) throws {
        guard size <= Int64(call.executor.store.maxValueBytes) else {
            throw CommandError("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
        }
    }

    /// APPEND key value: the new length.
    @Sendable static func append(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        try call.arguments[1].withUnsafeReadableBytes { key in
            try call.arguments[2].withUnsafeReadableBytes { suffix in
                guard let old = try store.entry(key) else {
                    try call.notifyNew(key, &store)
                    try store.set(key, suffix)
                    call.notify(.string, "append", key: key)
                    return call.integer(reply: suffix.count)
                }
                try Self.checkLength(Int64(old.value.count) + Int64(suffix.count), call)
                let joined = old.value + Array(suffix)
                try store.set(key, joined, deadline: old.deadline)
                call.notify(.string, "append", key: key)
                call.integer(reply: joined.count)
            }
        }
    }

    /// STRLEN key
    @Sendable static func strlen(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        let length = try call.withBytes(1) { key in try store.withEntry(key) { value, _ in value?.count ?? 0 } }
        call.integer(reply: length)
    }

    /// SETRANGE key offset value: the new length; the gap before offset is zero bytes.
    @Sendable static func setrange(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        let offset = try call.integer(2)
        guard offset >= 0 else { throw CommandError("ERR offset is out of range") }
        try call.arguments[1].withUnsafeReadableBytes { key in
            try call.arguments[3].withUnsafeReadableBytes { patch in
                let old = try store.entry(key)
                if patch.count == 0 { return call.integer(reply: old?.value.count ?? 0) }
                let (end, overflow) = offset.addingReportingOverflow(Int64(patch.count))
                guard !overflow else { throw CommandError("ERR string exceeds maximum allowed size (proto-max-bulk-len)") }
                try Self.checkLength(end, call)
                var value = old?.value ?? []
                if value.count < Int(end) { value.append(contentsOf: repeatElement(0, count: Int(end) - value.count)) }
                value.withUnsafeMutableBytes { raw in
                    (raw.baseAddress! + Int(offset)).copyMemory(from: patch.baseAddress!, byteCount: patch.count)
                }
                if old == nil { try call.notifyNew(key, &store) }
                try store.set(key, value, deadline: old?.deadline)
                call.notify(.string, "setrange", key: key)
                call.integer(reply: value.count)
            }
        }
    }

    /// GETRANGE key start end (and SUBSTR): negative indexes count from the end.
    @Sendable static func getrange(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        var start = try call.integer(2)
        var end = try call.integer(3)
        try call.arguments[1].withUnsafeReadableBytes { key in
            try store.withEntry(key) { value, _ in
                let length = Int64(value?.count ?? 0)
                if start < 0 && end < 0 && start > end { return call.bulk("") }
                if start < 0 { start += length }
                if end < 0 { end += length }
                start = max(start, 0)
                end = max(end, 0)
                if end >= length { end = length - 1 }
                guard let value, start <= end, length > 0 else { return call.bulk("") }
                call.bulk(UnsafeRawBufferPointer(rebasing: value[Int(start)...Int(end)]))
            }
        }
    }

    // MARK: Counters

    /// INCR, DECR, INCRBY, DECRBY: the key as a 64-bit integer (absent is 0), its deadline kept.
    static func increment(by fixed: Int64?, negate: Bool) -> @Sendable (inout CommandCall, inout StoreTransaction) throws -> Void {
        { call, store in
            var delta = try fixed ?? call.integer(2)
            if negate {
                guard delta != .min else { throw CommandError("ERR decrement would overflow") }
                delta = -delta
            }
            try call.arguments[1].withUnsafeReadableBytes { key in
                // Read in place: a copy of the old value was an allocation per INCR.
                var exists = false
                var current: Int64? = 0
                var deadline: Int64?
                try store.readEntry(key) { value, stored in
                    guard let value else { return }
                    exists = true
                    current = RedisNumbers.int64(value)
                    deadline = stored
                }
                guard let current else { throw CommandError.notInteger }
                let (sum, overflow) = current.addingReportingOverflow(delta)
                guard !overflow else { throw CommandError("ERR increment or decrement would overflow") }
                if !exists { try call.notifyNew(key, &store) }
                try RedisNumbers.withDecimal(sum) { try store.set(key, $0, deadline: deadline) }
                call.notify(.string, "incrby", key: key)
                call.integer(reply: sum)
            }
        }
    }

    /// INCRBYFLOAT key increment: long double arithmetic and Redis's %.17Lf formatting, so the
    /// stored text is exactly redis-server's; the deadline is kept.
    @Sendable static func incrbyfloat(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        try call.arguments[1].withUnsafeReadableBytes { key in
            let old = try store.entry(key)
            let current: Float80
            if let old {
                guard let parsed = old.value.withUnsafeBytes(RedisNumbers.longDouble) else { throw CommandError.notFloat }
                current = parsed
            } else {
                current = 0
            }
            let increment = try call.longDouble(2)
            let result = current + increment
            guard !result.isNaN && !result.isInfinite else { throw CommandError("ERR increment would produce NaN or Infinity") }
            let text = RedisNumbers.format(result)
            if old == nil { try call.notifyNew(key, &store) }
            try store.set(key, Array(text.utf8), deadline: old?.deadline)
            call.notify(.string, "incrbyfloat", key: key)
            call.bulk(text)
        }
    }

    // MARK: LCS

    /// LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]
    @Sendable static func lcs(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        let a = try call.withBytes(1) { try store.entry($0)?.value } ?? []
        let b = try call.withBytes(2) { try store.entry($0)?.value } ?? []
        var wantLength = false, wantIndexes = false, withMatchLength = false
        var minimum: Int64 = 0
        var j = 3
        while j < call.count {
            if call.isOption(j, "IDX") {
                wantIndexes = true
            } else if call.isOption(j, "LEN") {
                wantLength = true
            } else if call.isOption(j, "WITHMATCHLEN") {
                withMatchLength = true
            } else if call.isOption(j, "MINMATCHLEN") && j + 1 < call.count {
                minimum = max(try call.integer(j + 1), 0)
                j += 1
            } else {
                throw CommandError.syntax
            }
            j += 1
        }
        if wantLength && wantIndexes {
            throw CommandError("ERR If you want both the length and indexes, please just use IDX.")
        }
        let cells = (a.count + 1) * (b.count + 1)
        guard cells * 4 <= max(call.executor.store.maxValueBytes, 512 << 20) else {
            throw CommandError("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len")
        }
        let result = LongestCommonSubsequence(a, b)
        if wantIndexes {
            let matches = result.matches(minimumLength: Int(minimum))
            call.map(2)
            call.bulk("matches")
            call.array(matches.count)
            for match in matches {
                call.array(withMatchLength ? 3 : 2)
                call.array(2)
                call.integer(reply: match.a.lowerBound)
                call.integer(reply: match.a.upperBound)
                call.array(2)
                call.integer(reply: match.b.lowerBound)
                call.integer(reply: match.b.upperBound)
                if withMatchLength { call.integer(reply: match.a.count) }
            }
            call.bulk("len")
            call.integer(reply: result.length)
        } else if wantLength {
            call.integer(reply: result.length)
        } else {
            call.bulk(result.sequence())
        }
    }

    /// A bulk reply of `value`, or null.
    static func reply(_ call: inout CommandCall, _ value: [UInt8]?) {
        if let value { call.bulk(value) } else { call.null() }
    }
}

/// The longest common subsequence of two byte strings by the textbook dynamic program, read
/// back from the end as Redis does (so IDX lists the matching ranges last to first).
struct LongestCommonSubsequence {
    let a: [UInt8]
    let b: [UInt8]
    /// table[i * (b.count + 1) + j]: the LCS length of a[..<i] and b[..<j].
    private var table: [UInt32]

    init(_ a: [UInt8], _ b: [UInt8]) {
        self.a = a
        self.b = b
        let width = b.count + 1
        var table = [UInt32](repeating: 0, count: (a.count + 1) * width)
        if !a.isEmpty && !b.isEmpty {
            for i in 1...a.count {
                for j in 1...b.count {
                    table[i * width + j] =
                        a[i - 1] == b[j - 1]
                        ? table[(i - 1) * width + j - 1] + 1 : max(table[(i - 1) * width + j], table[i * width + j - 1])
                }
            }
        }
        self.table = table
    }

    private func at(_ i: Int, _ j: Int) -> Int { Int(self.table[i * (self.b.count + 1) + j]) }

    var length: Int { self.at(self.a.count, self.b.count) }

    /// The subsequence itself.
    func sequence() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: self.length)
        var (i, j, k) = (self.a.count, self.b.count, self.length)
        while i > 0 && j > 0 {
            if self.a[i - 1] == self.b[j - 1] {
                out[k - 1] = self.a[i - 1]
                k -= 1
                i -= 1
                j -= 1
            } else if self.at(i - 1, j) > self.at(i, j - 1) {
                i -= 1
            } else {
                j -= 1
            }
        }
        return out
    }

    /// The runs of contiguous matches (inclusive ranges in a and b), last first, at least
    /// `minimumLength` long.
    func matches(minimumLength: Int) -> [(a: ClosedRange<Int>, b: ClosedRange<Int>)] {
        var result: [(a: ClosedRange<Int>, b: ClosedRange<Int>)] = []
        var (i, j) = (self.a.count, self.b.count)
        var run: (aStart: Int, aEnd: Int, bStart: Int, bEnd: Int)?
        func emit() {
            if let current = run, current.aEnd - current.aStart + 1 >= minimumLength {
                result.append((current.aStart...current.aEnd, current.bStart...current.bEnd))
            }
            run = nil
        }
        while i > 0 && j > 0 {
            if self.a[i - 1] == self.b[j - 1] {
                if let current = run, current.aStart == i, current.bStart == j {
                    // Extends the run backwards.
                    run = (i - 1, current.aEnd, j - 1, current.bEnd)
                } else {
                    emit()
                    run = (i - 1, i - 1, j - 1, j - 1)
                }
                i -= 1
                j -= 1
                if i == 0 || j == 0 { emit() }
            } else {
                if run != nil { emit() }
                if self.at(i - 1, j) > self.at(i, j - 1) { i -= 1 } else { j -= 1 }
            }
        }
        emit()
        return result
    }
}
