import NIOCore
import WALCore
import WalrusStore

/// The keyspace commands (Redis's "generic" group: db.c and expire.c are the reference).
enum KeyCommands {
    /// DEL / UNLINK key [key …]: how many existed. One record for all of them.
    @Sendable static func del(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        var deleted = 0
        for index in 1..<call.count where try call.withBytes(index, { try store.delete($0) }) {
            deleted += 1
            call.withBytes(index) { call.notify(.generic, "del", key: $0) }
        }
        call.integer(reply: deleted)
    }

    /// EXISTS key [key …]: a key named twice counts twice.
    @Sendable static func exists(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        var found = 0
        for index in 1..<call.count where try call.withBytes(index, { try store.exists($0) }) { found += 1 }
        call.integer(reply: found)
    }

    /// TOUCH key [key …]: how many exist (walrus keeps no access times).
    @Sendable static func touch(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        try Self.exists(&call, &store)
    }

    /// TYPE key: "string", or "none".
    @Sendable static func type(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        let exists = try call.withBytes(1) { try store.exists($0) }
        call.status(exists ? "string" : "none")
    }

    // MARK: Expiry

    /// EXPIRE / PEXPIRE / EXPIREAT / PEXPIREAT key time [NX | XX | GT | LT], logged as an
    /// absolute deadline (or as a delete when it is already past, as Redis logs a DEL).
    static func expire(milliseconds: Bool, absolute: Bool) -> @Sendable (inout CommandCall, inout StoreTransaction) throws -> Void {
        { call, store in
            var nx = false, xx = false, gt = false, lt = false
            for index in 3..<max(call.count, 3) {
                if call.isOption(index, "NX") {
                    nx = true
                } else if call.isOption(index, "XX") {
                    xx = true
                } else if call.isOption(index, "GT") {
                    gt = true
                } else if call.isOption(index, "LT") {
                    lt = true
                } else {
                    throw CommandError("ERR Unsupported option \(call.string(index))")
                }
            }
            if nx && (xx || gt || lt) { throw CommandError("ERR NX and XX, GT or LT options at the same time are not compatible") }
            if gt && lt { throw CommandError("ERR GT and LT options at the same time are not compatible") }
            var when = try call.integer(2)
            // Worded only when thrown (an interpolated String is an allocation on every SET EX).
            func invalid() -> CommandError { CommandError("ERR invalid expire time in '\(call.spec.fullName)' command") }
            if !milliseconds {
                guard when <= Int64.max / 1000 && when >= Int64.min / 1000 else { throw invalid() }
                when *= 1000
            }
            let base = absolute ? 0 : store.now
            guard when <= Int64.max - base else { throw invalid() }
            when += base
            try call.arguments[1].withUnsafeReadableBytes { key in
                guard let current = try store.deadline(key) else { return call.integer(reply: 0) }
                if nx && current != nil { return call.integer(reply: 0) }
                if xx && current == nil { return call.integer(reply: 0) }
                // No deadline counts as infinite: GT never passes it, LT always does.
                if gt && (current == nil || when <= current!) { return call.integer(reply: 0) }
                if lt, let current, when >= current { return call.integer(reply: 0) }
                if when <= store.now {
                    try store.delete(key)
                    call.notify(.generic, "del", key: key)
                } else {
                    try store.setDeadline(key, when)
                    call.notify(.generic, "expire", key: key)
                }
                call.integer(reply: 1)
            }
        }
    }

    /// TTL / PTTL / EXPIRETIME / PEXPIRETIME key: -2 absent, -1 without a deadline.
    static func ttl(milliseconds: Bool, absolute: Bool) -> @Sendable (inout CommandCall, inout StoreTransaction) throws -> Void {
        { call, store in
            guard let found = try call.withBytes(1, { try store.deadline($0) }) else { return call.integer(reply: -2) }
            guard let deadline = found else { return call.integer(reply: -1) }
            let left = max(absolute ? deadline : deadline - store.now, 0)
            call.integer(reply: milliseconds ? left : (left + 500) / 1000)
        }
    }

    /// PERSIST key: 1 if a deadline was removed.
    @Sendable static func persist(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        try call.arguments[1].withUnsafeReadableBytes { key in
            guard let deadline = try store.deadline(key), deadline != nil else { return call.integer(reply: 0) }
            try store.setDeadline(key, nil)
            call.notify(.generic, "persist", key: key)
            call.integer(reply: 1)
        }
    }

    // MARK: Renaming and copying (the deadline goes with the value)

    /// RENAME / RENAMENX source destination.
    static func rename(onlyIfAbsent nx: Bool) -> @Sendable (inout CommandCall, inout StoreTransaction) throws -> Void {
        { call, store in
            try call.arguments[1].withUnsafeReadableBytes { source in
                guard let entry = try store.entry(source) else { throw CommandError.noSuchKey }
                try call.arguments[2].withUnsafeReadableBytes { destination in
                    if source.elementsEqual(destination) { return nx ? call.integer(reply: 0) : call.ok() }
                    if nx, try store.exists(destination) { return call.integer(reply: 0) }
                    // Redis deletes the destination and adds it anew: "new" either way.
                    call.notify(.new, "new", key: destination)
                    try store.set(destination, entry.value, deadline: entry.deadline)
                    try store.delete(source)
                    call.notify(.generic, "rename_from", key: source)
                    call.notify(.generic, "rename_to", key: destination)
                    if nx { call.integer(reply: 1) } else { call.ok() }
                }
            }
        }
    }

    /// COPY source destination [DB 0] [REPLACE]
    @Sendable static func copy(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        var replace = false
        var index = 3
        while index < call.count {
            if call.isOption(index, "REPLACE") {
                replace = true
            } else if call.isOption(index, "DB") && index + 1 < call.count {
                let database = try call.integer(index + 1)
                guard database == 0 else { throw CommandError("ERR DB index is out of range") }
                index += 1
            } else {
                throw CommandError.syntax
            }
            index += 1
        }
        try call.arguments[1].withUnsafeReadableBytes { source in
            try call.arguments[2].withUnsafeReadableBytes { destination in
                if source.elementsEqual(destination) { throw CommandError.sameObject }
                guard let entry = try store.entry(source) else { return call.integer(reply: 0) }
                if !replace, try store.exists(destination) { return call.integer(reply: 0) }
                // (REPLACE deletes the destination and adds it anew, as Redis: "new" either way.)
                call.notify(.new, "new", key: destination)
                try store.set(destination, entry.value, deadline: entry.deadline)
                call.notify(.generic, "copy_to", key: destination)
                call.integer(reply: 1)
            }
        }
    }

    // MARK: The whole keyspace

    /// RANDOMKEY
    @Sendable static func randomkey(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        if let key = try store.randomKey() { call.bulk(key) } else { call.null() }
    }

    /// KEYS pattern: every live key matching it.
    @Sendable static func keys(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        let pattern = call.bytes(1)
        let all = pattern == [UInt8(ascii: "*")]
        var matched: [[UInt8]] = []
        try store.forEachKey { key, _ in
            if all || GlobPattern.matches(pattern, key) { matched.append(Array(key)) }
        }
        call.array(matched.count)
        for key in matched { call.bulk(key) }
    }

    /// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]: every key present for the whole
    /// scan is returned at least once, also while the table grows or shrinks (see
    /// `CompactMap.scan`).
    @Sendable static func scan(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        guard let cursor = Self.cursor(call.bytes(1)) else { throw CommandError("ERR invalid cursor") }
        var count = 10
        var pattern: [UInt8]?
        var type: String?
        var index = 2
        while index < call.count {
            guard index + 1 < call.count else { throw CommandError.syntax }
            if call.isOption(index, "COUNT") {
                let value = try call.integer(index + 1)
                guard value >= 1 else { throw CommandError.syntax }
                // A huge COUNT is bounded by the keyspace anyway; cap the step's work.
                count = Int(min(value, 1 << 24))
            } else if call.isOption(index, "MATCH") {
                pattern = call.bytes(index + 1)
            } else if call.isOption(index, "TYPE") {
                type = call.upper(index + 1)
            } else {
                throw CommandError.syntax
            }
            index += 2
        }
        var keys: [[UInt8]] = []
        let matchAll = pattern == nil || pattern == [UInt8(ascii: "*")]
        let next = store.scan(cursor: cursor, count: count) { key, _ in
            if type != nil && type != "STRING" { return }
            if matchAll || GlobPattern.matches(pattern!, key) { keys.append(Array(key)) }
        }
        call.array(2)
        call.bulk(String(next))
        call.array(keys.count)
        for key in keys { call.bulk(key) }
    }

    /// A cursor as Redis's `strtoul` reads it: digits, optionally signed, nothing else.
    static func cursor(_ bytes: [UInt8]) -> UInt64? {
        var digits = bytes[...]
        var negative = false
        if let first = digits.first, first == UInt8(ascii: "-") || first == UInt8(ascii: "+") {
            negative = first == UInt8(ascii: "-")
            digits = digits.dropFirst()
        }
        guard !digits.isEmpty, digits.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        guard let value = UInt64(String(decoding: digits, as: UTF8.self)) else { return nil }
        return negative ? (~value &+ 1) : value
    }

    /// DBSIZE
    @Sendable static func dbsize(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        call.integer(reply: store.count())
    }

    /// FLUSHALL / FLUSHDB [ASYNC | SYNC]: one record; every key goes.
    @Sendable static func flushall(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        if call.count > 2 || (call.count == 2 && !call.isOption(1, "ASYNC") && !call.isOption(1, "SYNC")) {
            throw CommandError.syntax
        }
        try store.removeAll()
        call.ok()
    }

    /// MEMORY USAGE key [SAMPLES count]: bytes the key takes (its entry's malloc chunk and its
    /// table slots), null when absent.
    @Sendable static func memoryUsage(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        if call.count > 3 {
            guard call.count == 5, call.isOption(3, "SAMPLES") else { throw CommandError.syntax }
            _ = try call.integer(4)
        }
        if let bytes = try call.withBytes(2, { try store.memoryUsage($0) }) { call.integer(reply: bytes) } else { call.null() }
    }
}
