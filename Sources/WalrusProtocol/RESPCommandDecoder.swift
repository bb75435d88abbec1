public import NIOCore

/// Decodes RESP2 requests: multibulk (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what every client sends)
/// and inline commands (`GET k\r\n`, what a person types into telnet).
///
/// Lengths are checked against `RESPLimits` as soon as their digits are read, so a request claiming
/// a 4 GiB bulk string or a billion arguments is refused before any memory is reserved for it.
/// Progress is kept between calls, so a large value arriving in many packets is scanned once.
public struct RESPCommandDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = RESPCommand

    private let limits: RESPLimits
    /// Arguments of the multibulk request being read, and how many it announced.
    private var arguments: [ByteBuffer] = []
    private var expected: Int? = nil
    /// The length of the bulk string whose header was read but whose bytes have not all arrived.
    private var pendingBulk: Int? = nil

    public init(limits: RESPLimits = RESPLimits()) { self.limits = limits }

    /// No request is half-read: the next bytes start a new request (so `RESPQuickRequest.parse`
    /// may look at them first).
    public var isIdle: Bool { self.expected == nil && self.pendingBulk == nil }

    public mutating func decode(buffer: inout ByteBuffer) throws -> RESPCommand? {
        while true {
            if let expected = self.expected {
                if self.arguments.count == expected {
                    let command = RESPCommand(arguments: self.arguments)
                    self.arguments = []
                    self.expected = nil
                    return command
                }
                guard let argument = try self.readBulk(&buffer) else { return nil }
                self.arguments.append(argument)
                continue
            }
            guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
            if first == UInt8(ascii: "*") {
                guard let count = try self.readLength(&buffer, prefix: "*", limit: self.limits.maxArguments, what: "multibulk")
                else { return nil }
                if count <= 0 { continue }  // "*0" and "*-1" are empty requests: ignored, as Redis does
                self.expected = count
                self.arguments.reserveCapacity(min(count, 1024))
                continue
            }
            return try self.readInline(&buffer)
        }
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> RESPCommand? {
        try self.decode(buffer: &buffer)
    }

    /// `$<n>\r\n<n bytes>\r\n`, or nil until all of it has arrived.
    private mutating func readBulk(_ buffer: inout ByteBuffer) throws -> ByteBuffer? {
        if self.pendingBulk == nil {
            guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
            guard first == UInt8(ascii: "$") else {
                throw RESPProtocolError("Protocol error: expected '$', got '\(Self.show(first))'")
            }
            guard let length = try self.readLength(&buffer, prefix: "$", limit: self.limits.maxBulkBytes, what: "bulk")
            else { return nil }
            guard length >= 0 else { throw RESPProtocolError("Protocol error: invalid bulk length") }
            self.pendingBulk = length
        }
        let length = self.pendingBulk!
        guard buffer.readableBytes >= length + 2 else { return nil }
        guard buffer.getInteger(at: buffer.readerIndex + length, as: UInt16.self) == 0x0D0A else {
            throw RESPProtocolError("Protocol error: bulk string of \(length) bytes is not followed by CRLF")
        }
        let bulk = buffer.readSlice(length: length)!
        buffer.moveReaderIndex(forwardBy: 2)
        self.pendingBulk = nil
        return bulk
    }

    /// `<prefix><digits>\r\n` → the number, or nil if the line is not complete yet. Scans the
    /// bytes in place (this runs twice per argument: no views, no copies).
    private func readLength(_ buffer: inout ByteBuffer, prefix: Character, limit: Int, what: String) throws -> Int? {
        enum Scan { case incomplete, invalid, tooLarge, value(Int, consumed: Int) }
        let scan = buffer.withUnsafeReadableBytes { bytes -> Scan in
            // A length line is short; refuse one that keeps going without CRLF.
            let window = min(bytes.count, 32)
            var newline = -1
            for i in 0..<window where bytes[i] == 10 {
                newline = i
                break
            }
            guard newline >= 0 else { return bytes.count >= 32 ? .invalid : .incomplete }
            guard newline >= 2, bytes[newline - 1] == 13 else { return .invalid }
            var position = 1
            let end = newline - 1
            var negative = false
            if position < end && bytes[position] == UInt8(ascii: "-") {
                negative = true
                position += 1
            }
            guard position < end else { return .invalid }
            var value = 0
            while position < end {
                let byte = bytes[position]
                guard byte >= 48 && byte <= 57 else { return .invalid }
                value = value * 10 + Int(byte - 48)
                if value > limit { return .tooLarge }
                position += 1
            }
            return .value(negative ? -value : value, consumed: newline + 1)
        }
        switch scan {
        case .incomplete:
            return nil
        case .invalid:
            throw RESPProtocolError("Protocol error: invalid \(what) length")
        case .tooLarge:
            throw RESPProtocolError(
                what == "bulk"
                    ? "Protocol error: invalid bulk length (over the \(limit)-byte limit, proto-max-bulk-len)"
                    : "Protocol error: invalid multibulk length (over the \(limit)-argument limit)")
        case .value(let value, let consumed):
            buffer.moveReaderIndex(forwardBy: consumed)
            return value
        }
    }

    /// An inline command: words separated by spaces, up to `\n`.
    private func readInline(_ buffer: inout ByteBuffer) throws -> RESPCommand? {
        let view = buffer.readableBytesView
        guard let newline = view.firstIndex(of: UInt8(ascii: "\n")) else {
            if view.count > self.limits.maxInlineBytes { throw RESPProtocolError("Protocol error: too big inline request") }
            return nil
        }
        let length = newline - view.startIndex
        guard length <= self.limits.maxInlineBytes else { throw RESPProtocolError("Protocol error: too big inline request") }
        var line = buffer.readSlice(length: length + 1)!
        line.moveWriterIndex(to: line.writerIndex - 1)
        if line.readableBytesView.last == 13 { line.moveWriterIndex(to: line.writerIndex - 1) }
        var words: [ByteBuffer] = []
        var start: Int? = nil
        let bytes = line.readableBytesView
        for index in bytes.indices {
            let isSpace = bytes[index] == UInt8(ascii: " ") || bytes[index] == UInt8(ascii: "\t")
            if isSpace, let s = start {
                words.append(line.getSlice(at: s, length: index - s)!)
                start = nil
            } else if !isSpace && start == nil {
                start = index
            }
        }
        if let s = start { words.append(line.getSlice(at: s, length: bytes.endIndex - s)!) }
        // An empty line is ignored, as Redis does.
        return words.isEmpty ? RESPCommand(arguments: []) : RESPCommand(arguments: words)
    }

    private static func show(_ byte: UInt8) -> String {
        byte >= 32 && byte < 127 ? String(UnicodeScalar(byte)) : "\\x" + String(byte, radix: 16)
    }
}
