public import NIOCore

/// Writes RESP2 replies into a buffer.
extension ByteBuffer {
    /// `+text\r\n`
    public mutating func writeSimpleString(_ text: String) {
        self.writeInteger(UInt8(ascii: "+"))
        self.writeString(text)
        self.writeStaticString("\r\n")
    }

    /// `-text\r\n` (text starts with an error code such as `ERR`, `READONLY`, `WRONGTYPE`).
    public mutating func writeErrorReply(_ text: String) {
        self.writeInteger(UInt8(ascii: "-"))
        // An error reply is one line: a CR or LF in a message (a command name a client sent, say)
        // would end it early. Replaced byte by byte: "\r\n" is one Character in Swift, so a
        // Character comparison misses it.
        self.writeBytes(text.utf8.map { $0 == 13 || $0 == 10 ? UInt8(ascii: " ") : $0 })
        self.writeStaticString("\r\n")
    }

    /// `:n\r\n`
    public mutating func writeIntegerReply(_ value: Int) {
        self.writeDecimalLine(UInt8(ascii: ":"), value)
    }

    /// `<prefix><value in decimal>\r\n` in one write, the digits formatted in place: a String for
    /// them was an allocation per INCR reply.
    mutating func writeDecimalLine(_ prefix: UInt8, _ value: Int) {
        let sign = value < 0 ? 1 : 0
        let digits = Self.decimalDigits(value.magnitude)
        let total = 1 + sign + digits + 2
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: total) { out in
            out[0] = prefix
            if sign == 1 { out[1] = UInt8(ascii: "-") }
            Self.putDecimal(value.magnitude, digits: digits, at: 1 + sign, in: out)
            out[total - 2] = 13
            out[total - 1] = 10
            return total
        }
    }

    /// How many decimal digits `value` takes.
    @inline(__always)
    static func decimalDigits(_ value: UInt) -> Int {
        var digits = 1
        var rest = value
        while rest >= 10 {
            rest /= 10
            digits += 1
        }
        return digits
    }

    /// `value`'s `digits` decimal digits at `start` in `out`.
    @inline(__always)
    static func putDecimal(_ value: UInt, digits: Int, at start: Int, in out: UnsafeMutableRawBufferPointer) {
        var remaining = value
        for position in stride(from: start + digits - 1, through: start, by: -1) {
            out[position] = UInt8(48 + remaining % 10)
            remaining /= 10
        }
    }

    /// `$n\r\n<bytes>\r\n`, in one write with the length formatted in place (the GET reply; a
    /// String for the digits and five separate writes showed in profiles).
    public mutating func writeBulkReply(_ bytes: UnsafeRawBufferPointer) {
        let digits = Self.decimalDigits(UInt(bytes.count))
        let header = 1 + digits + 2
        let total = header + bytes.count + 2
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: total) { out in
            out[0] = UInt8(ascii: "$")
            Self.putDecimal(UInt(bytes.count), digits: digits, at: 1, in: out)
            out[digits + 1] = 13
            out[digits + 2] = 10
            if bytes.count > 0 { (out.baseAddress! + header).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
            out[total - 2] = 13
            out[total - 1] = 10
            return total
        }
    }

    /// `$n\r\n<bytes>\r\n` from a buffer.
    public mutating func writeBulkReply(_ bytes: ByteBuffer) {
        self.writeDecimalLine(UInt8(ascii: "$"), bytes.readableBytes)
        self.writeImmutableBuffer(bytes)
        self.writeStaticString("\r\n")
    }

    /// `$n\r\n<text>\r\n`
    public mutating func writeBulkReply(_ text: String) {
        var text = text
        text.withUTF8 { self.writeBulkReply(UnsafeRawBufferPointer($0)) }
    }

    /// The null reply: `$-1\r\n` in RESP2, `_\r\n` in RESP3.
    public mutating func writeNullReply(resp3: Bool = false) {
        if resp3 { self.writeStaticString("_\r\n") } else { self.writeStaticString("$-1\r\n") }
    }

    /// A map header: `%n\r\n` in RESP3 (n key/value pairs follow), `*2n\r\n` in RESP2.
    public mutating func writeMapHeader(_ pairs: Int, resp3: Bool) {
        self.writeInteger(UInt8(ascii: resp3 ? "%" : "*"))
        self.writeString(String(resp3 ? pairs : pairs * 2))
        self.writeStaticString("\r\n")
    }

    /// `*n\r\n`, to be followed by n replies.
    public mutating func writeArrayHeader(_ count: Int) {
        self.writeDecimalLine(UInt8(ascii: "*"), count)
    }

    /// A pub/sub notification's header: a RESP3 push (`>`), or in RESP2 a plain array.
    public mutating func writePushHeader(_ count: Int, resp3: Bool) {
        guard resp3 else { return self.writeArrayHeader(count) }
        self.writeDecimalLine(UInt8(ascii: ">"), count)
    }
}


