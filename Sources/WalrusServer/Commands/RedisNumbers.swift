#if canImport(Glibc)
import Glibc
#endif

/// Numbers as Redis reads and writes them, so INCR, EXPIRE and INCRBYFLOAT accept and print
/// exactly what redis-server does.
enum RedisNumbers {
    /// Redis's `string2ll`: an optional `-`, then digits with no leading zero (or just "0"); no
    /// `+`, no spaces, at most 20 characters, within Int64.
    static func int64(_ bytes: UnsafeRawBufferPointer) -> Int64? {
        let count = bytes.count
        guard count > 0, count < 21 else { return nil }
        if count == 1 && bytes[0] == UInt8(ascii: "0") { return 0 }
        var position = 0
        let negative = bytes[0] == UInt8(ascii: "-")
        if negative {
            position = 1
            guard count > 1 else { return nil }
        }
        guard bytes[position] >= UInt8(ascii: "1") && bytes[position] <= UInt8(ascii: "9") else { return nil }
        var magnitude: UInt64 = 0
        while position < count {
            let byte = bytes[position]
            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { return nil }
            let (times, overflow1) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times.addingReportingOverflow(UInt64(byte - UInt8(ascii: "0")))
            guard !overflow1 && !overflow2 else { return nil }
            magnitude = sum
            position += 1
        }
        if negative {
            guard magnitude <= UInt64(Int64.max) + 1 else { return nil }
            return magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
        }
        guard magnitude <= UInt64(Int64.max) else { return nil }
        return Int64(magnitude)
    }

    /// `value` in decimal, as `String(value)` spells it, in a buffer on the stack (valid only in
    /// `body`): the text INCR stores, without a String and an Array per increment.
    static func withDecimal<R>(_ value: Int64, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        // 20 digits and a sign at most.
        var storage: (UInt64, UInt64, UInt64) = (0, 0, 0)
        return try withUnsafeMutableBytes(of: &storage) { buffer in
            var magnitude = value.magnitude
            var start = buffer.count
            repeat {
                start -= 1
                buffer[start] = UInt8(48 + magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            if value < 0 {
                start -= 1
                buffer[start] = UInt8(ascii: "-")
            }
            return try body(UnsafeRawBufferPointer(rebasing: buffer[start...]))
        }
    }

    /// Redis's `string2ld`: what `strtold` reads from the whole string — no leading space, no
    /// trailing bytes, not NaN, no overflow to infinity or underflow to zero. (`inf` itself is a
    /// number here, as in Redis; INCRBYFLOAT then refuses the infinite result.)
    static func longDouble(_ bytes: UnsafeRawBufferPointer) -> Float80? {
        guard bytes.count > 0, bytes.count < 5 * 1024 else { return nil }
        if bytes[0] == 32 || (bytes[0] >= 9 && bytes[0] <= 13) { return nil }
        // strtold needs a NUL-terminated copy; an embedded NUL ends the number early and fails the length check.
        var text = [CChar](repeating: 0, count: bytes.count + 1)
        for i in 0..<bytes.count { text[i] = CChar(bitPattern: bytes[i]) }
        return text.withUnsafeMutableBufferPointer { buffer -> Float80? in
            var end: UnsafeMutablePointer<CChar>? = nil
            errno = 0
            let value = strtold(buffer.baseAddress!, &end)
            guard let end, end - buffer.baseAddress! == bytes.count else { return nil }
            if errno == ERANGE && (value.isInfinite || value == 0) { return nil }
            if errno == EINVAL || value.isNaN { return nil }
            return value
        }
    }

    /// Redis's human-friendly long double (`ld2string` LD_STR_HUMAN): `%.17Lf` with trailing
    /// zeros and a bare point removed, "-0" printed as "0", infinities as inf / -inf.
    static func format(_ value: Float80) -> String {
        if value.isInfinite { return value > 0 ? "inf" : "-inf" }
        var buffer = [CChar](repeating: 0, count: 5200)
        let length = withVaList([value]) { vsnprintf(&buffer, buffer.count, "%.17Lf", $0) }
        var text = String(cString: buffer)
        guard length > 0 else { return "0" }
        if text.contains(".") {
            while text.hasSuffix("0") { text.removeLast() }
            if text.hasSuffix(".") { text.removeLast() }
        }
        if text == "-0" { return "0" }
        return text
    }

    /// A double as Redis's `%.17g` (RESP3 doubles, INFO), inf / -inf / nan as Redis writes them.
    static func format(double value: Double) -> String {
        if value.isInfinite { return value > 0 ? "inf" : "-inf" }
        if value.isNaN { return "nan" }
        var buffer = [CChar](repeating: 0, count: 64)
        _ = withVaList([value]) { vsnprintf(&buffer, buffer.count, "%.17g", $0) }
        return String(cString: buffer)
    }

    /// Two decimals (INFO's usec_per_call, as Redis's %.2f).
    static func format2(_ value: Double) -> String {
        var buffer = [CChar](repeating: 0, count: 64)
        _ = withVaList([value]) { vsnprintf(&buffer, buffer.count, "%.2f", $0) }
        return String(cString: buffer)
    }
}
