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
        // An error reply is one line: newlines in a message would break the protocol.
        self.writeString(text.replacingNewlines())
        self.writeStaticString("\r\n")
    }

    /// `:n\r\n`
    public mutating func writeIntegerReply(_ value: Int) {
        self.writeInteger(UInt8(ascii: ":"))
        self.writeString(String(value))
        self.writeStaticString("\r\n")
    }

    /// `$n\r\n<bytes>\r\n`, in one write (the GET reply: digits formatted in place, no String).
    public mutating func writeBulkReply(_ bytes: UnsafeRawBufferPointer) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: "$", up to 20 digits, CRLF
        let header = withUnsafeMutableBytes(of: &digits) { out -> Int in
            var value = bytes.count
            var reversed = 0
            var scratch: (UInt64, UInt64, UInt64) = (0, 0, 0)
            withUnsafeMutableBytes(of: &scratch) { tmp in
                repeat {
                    tmp[reversed] = UInt8(48 + value % 10)
                    value /= 10
                    reversed += 1
                } while value > 0
            }
            out[0] = UInt8(ascii: "$")
            withUnsafeBytes(of: scratch) { tmp in
                for i in 0..<reversed { out[1 + i] = tmp[reversed - 1 - i] }
            }
            out[1 + reversed] = 13
            out[2 + reversed] = 10
            return 3 + reversed
        }
        let total = header + bytes.count + 2
        self.reserveCapacity(minimumWritableBytes: total)
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: total) { out in
            withUnsafeBytes(of: digits) { out.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: header) }
            if bytes.count > 0 { (out.baseAddress! + header).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
            out[header + bytes.count] = 13
            out[header + bytes.count + 1] = 10
            return total
        }
    }

    /// `$n\r\n<bytes>\r\n` from a buffer.
    public mutating func writeBulkReply(_ bytes: ByteBuffer) {
        self.writeInteger(UInt8(ascii: "$"))
        self.writeString(String(bytes.readableBytes))
        self.writeStaticString("\r\n")
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
        self.writeInteger(UInt8(ascii: "*"))
        self.writeString(String(count))
        self.writeStaticString("\r\n")
    }
}

extension String {
    fileprivate func replacingNewlines() -> String {
        String(self.map { $0 == "\r" || $0 == "\n" ? " " : $0 })
    }
}
