import NIOCore
import WalrusStore

/// Bitmaps — strings read bit by bit, the most significant bit of byte 0 first — with Redis's
/// SETBIT, GETBIT, BITCOUNT, BITPOS and BITOP (bitops.c).
enum BitCommands {
    /// A bit offset: a non-negative integer whose byte lies within max-value-bytes (Redis's
    /// proto-max-bulk-len rule).
    static func offset(_ call: CommandCall, _ index: Int) throws -> Int {
        let error = CommandError("ERR bit offset is not an integer or out of range")
        guard let value = call.withBytes(index, RedisNumbers.int64), value >= 0,
            value >> 3 < Int64(call.executor.store.maxValueBytes)
        else { throw error }
        return Int(value)
    }

    /// SETBIT key offset 0|1: the bit's old value; the string grows with zero bytes; the key's
    /// deadline stays.
    @Sendable static func setbit(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        let offset = try Self.offset(call, 2)
        let bit: UInt8
        if call.withBytes(3, { $0.count == 1 && $0[0] == UInt8(ascii: "0") }) {
            bit = 0
        } else if call.withBytes(3, { $0.count == 1 && $0[0] == UInt8(ascii: "1") }) {
            bit = 1
        } else {
            throw CommandError("ERR bit is not an integer or out of range")
        }
        try call.arguments[1].withUnsafeReadableBytes { key in
            let old = try store.entry(key)
            var value = old?.value ?? []
            let byte = offset >> 3
            if value.count <= byte { value.append(contentsOf: repeatElement(0, count: byte + 1 - value.count)) }
            let mask = UInt8(0x80) >> UInt8(offset & 7)
            let previous = value[byte] & mask != 0 ? 1 : 0
            if bit == 1 { value[byte] |= mask } else { value[byte] &= ~mask }
            if old == nil { try call.notifyNew(key, &store) }
            try store.set(key, value, deadline: old?.deadline)
            call.notify(.string, "setbit", key: key)
            call.integer(reply: previous)
        }
    }

    /// GETBIT key offset: 0 past the end.
    @Sendable static func getbit(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        let offset = try Self.offset(call, 2)
        let bit = try call.arguments[1].withUnsafeReadableBytes { key in
            try store.withEntry(key) { value, _ -> Int in
                guard let value, offset >> 3 < value.count else { return 0 }
                return value[offset >> 3] & (UInt8(0x80) >> UInt8(offset & 7)) != 0 ? 1 : 0
            }
        }
        call.integer(reply: bit)
    }

    /// A [start, end] range in bytes or bits, negative from the end, clamped; nil when empty.
    private static func range(_ start: Int64, _ end: Int64, length: Int64) -> (Int64, Int64)? {
        var (start, end) = (start, end)
        if start < 0 && end < 0 && start > end { return nil }
        if start < 0 { start += length }
        if end < 0 { end += length }
        start = max(start, 0)
        end = max(end, 0)
        if end >= length { end = length - 1 }
        return start <= end ? (start, end) : nil
    }

    private static func bit(_ value: UnsafeRawBufferPointer, _ position: Int64) -> Bool {
        value[Int(position >> 3)] & (UInt8(0x80) >> UInt8(position & 7)) != 0
    }

    /// BITCOUNT key [start end [BYTE | BIT]]
    @Sendable static func bitcount(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        guard call.count == 2 || call.count == 4 || call.count == 5 else { throw CommandError.syntax }
        var inBits = false
        var bounds: (Int64, Int64)?
        if call.count >= 4 {
            bounds = (try call.integer(2), try call.integer(3))
            if call.count == 5 {
                if call.isOption(4, "BIT") { inBits = true } else if !call.isOption(4, "BYTE") { throw CommandError.syntax }
            }
        }
        let count = try call.arguments[1].withUnsafeReadableBytes { key in
            try store.withEntry(key) { value, _ -> Int in
                guard let value else { return 0 }
                let length = Int64(value.count) * (inBits ? 8 : 1)
                guard let (start, end) = bounds.map({ Self.range($0.0, $0.1, length: length) }) ?? (length > 0 ? (0, length - 1) : nil)
                else { return 0 }
                if inBits {
                    var count = 0
                    for position in start...end where Self.bit(value, position) { count += 1 }
                    return count
                }
                return value[Int(start)...Int(end)].reduce(0) { $0 + $1.nonzeroBitCount }
            }
        }
        call.integer(reply: count)
    }

    /// BITPOS key 0|1 [start [end [BYTE | BIT]]]
    @Sendable static func bitpos(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        let wanted = try call.integer(2)
        guard wanted == 0 || wanted == 1 else { throw CommandError("ERR The bit argument must be 1 or 0.") }
        guard call.count <= 6 else { throw CommandError.syntax }
        var inBits = false
        if call.count == 6 {
            if call.isOption(5, "BIT") { inBits = true } else if !call.isOption(5, "BYTE") { throw CommandError.syntax }
        }
        let start = call.count >= 4 ? try call.integer(3) : 0
        let end = call.count >= 5 ? try call.integer(4) : -1
        let endGiven = call.count >= 5
        let position = try call.arguments[1].withUnsafeReadableBytes { key in
            try store.withEntry(key) { value, _ -> Int64 in
                guard let value, value.count > 0 else { return wanted == 1 ? -1 : 0 }
                let length = Int64(value.count) * (inBits ? 8 : 1)
                guard let (first, last) = Self.range(start, end, length: length) else { return -1 }
                let (fromBit, toBit) = inBits ? (first, last) : (first * 8, last * 8 + 7)
                for position in fromBit...toBit where Self.bit(value, position) == (wanted == 1) { return position }
                // Looking for a 0 without an end: the bits after the string are zeros.
                if wanted == 0 && !endGiven { return toBit + 1 }
                return -1
            }
        }
        call.integer(reply: position)
    }

    /// BITOP AND | OR | XOR | NOT destkey key [key …]: the result's length; an empty result
    /// deletes destkey.
    @Sendable static func bitop(_ call: inout CommandCall, _ store: inout StoreTransaction) throws {
        let operation = call.upper(1)
        guard ["AND", "OR", "XOR", "NOT"].contains(operation) else { throw CommandError.syntax }
        if operation == "NOT" && call.count != 4 {
            throw CommandError("ERR BITOP NOT must be called with a single source key.")
        }
        var sources: [[UInt8]] = []
        for index in 3..<call.count { sources.append(try call.withBytes(index) { try store.entry($0)?.value } ?? []) }
        let length = sources.map(\.count).max() ?? 0
        var result = [UInt8](repeating: 0, count: length)
        for position in 0..<length {
            let bytes = sources.map { position < $0.count ? $0[position] : 0 }
            switch operation {
            case "AND": result[position] = bytes.reduce(0xFF, &)
            case "OR": result[position] = bytes.reduce(0, |)
            case "XOR": result[position] = bytes.reduce(0, ^)
            default: result[position] = ~bytes[0]
            }
        }
        try call.arguments[2].withUnsafeReadableBytes { destination in
            if result.isEmpty {
                if try store.delete(destination) { call.notify(.generic, "del", key: destination) }
            } else {
                try call.notifyNew(destination, &store)
                try store.set(destination, result)
                call.notify(.string, "set", key: destination)
            }
        }
        call.integer(reply: length)
    }
}
