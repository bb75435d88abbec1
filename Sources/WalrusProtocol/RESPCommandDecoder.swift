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
                if let command = Self.decodeWhole(&buffer, limits: self.limits) { return command }
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

    /// A multibulk request that has fully arrived, read in one pass over its bytes: what nearly
    /// every request is. Nil, with nothing consumed, when it has not all arrived or anything about
    /// it is out of the ordinary (a sign, a length over a limit, a missing CRLF, an empty request):
    /// the step-by-step path then reads it from the same place, and words any error.
    @inline(__always)
    private static func decodeWhole(_ buffer: inout ByteBuffer, limits: RESPLimits) -> RESPCommand? {
        let base = buffer.readerIndex
        var arguments: [ByteBuffer] = []
        let consumed = buffer.withUnsafeReadableBytes { bytes -> Int in
            // The quick parser's readers of a length line and of a bulk string.
            var at = 0
            guard let count = RESPQuickRequest.length(bytes, &at, prefix: UInt8(ascii: "*"), limit: limits.maxArguments), count > 0
            else { return 0 }
            arguments.reserveCapacity(min(count, 1024))
            for _ in 0..<count {
                guard let range = RESPQuickRequest.bulk(bytes, &at, limits.maxBulkBytes) else { return 0 }
                arguments.append(buffer.getSlice(at: base + range.lowerBound, length: range.count)!)
            }
            return at
        }
        guard consumed > 0 else { return nil }
        buffer.moveReaderIndex(forwardBy: consumed)
        return RESPCommand(arguments: arguments)
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
        guard let words = Self.splitArguments(Array(line.readableBytesView)) else {
            throw RESPProtocolError("Protocol error: unbalanced quotes in request")
        }
        // An empty line is ignored, as Redis does.
        return RESPCommand(arguments: words.map { ByteBuffer(bytes: $0) })
    }

    /// Redis's `sdssplitargs`: words separated by white space; "double quotes" with \n \r \t
    /// \b \a \\ \" and \xHH escapes; 'single quotes' with \'. A closing quote must end the word.
    /// Nil for unbalanced quotes.
    static func splitArguments(_ line: [UInt8]) -> [[UInt8]]? {
        func isSpace(_ byte: UInt8) -> Bool { byte == 32 || (byte >= 9 && byte <= 13) }
        func hex(_ byte: UInt8) -> UInt8? {
            switch byte {
            case 48...57: byte - 48
            case 65...70: byte - 55
            case 97...102: byte - 87
            default: nil
            }
        }
        var words: [[UInt8]] = []
        var i = 0
        while true {
            while i < line.count && isSpace(line[i]) { i += 1 }
            guard i < line.count else { return words }
            var word: [UInt8] = []
            if line[i] == UInt8(ascii: "\"") {
                i += 1
                while true {
                    guard i < line.count else { return nil }
                    let byte = line[i]
                    if byte == UInt8(ascii: "\\") && i + 3 < line.count && line[i + 1] == UInt8(ascii: "x"),
                        let high = hex(line[i + 2]), let low = hex(line[i + 3])
                    {
                        word.append(high << 4 | low)
                        i += 4
                    } else if byte == UInt8(ascii: "\\") && i + 1 < line.count {
                        let escaped = line[i + 1]
                        switch escaped {
                        case UInt8(ascii: "n"): word.append(10)
                        case UInt8(ascii: "r"): word.append(13)
                        case UInt8(ascii: "t"): word.append(9)
                        case UInt8(ascii: "b"): word.append(8)
                        case UInt8(ascii: "a"): word.append(7)
                        default: word.append(escaped)
                        }
                        i += 2
                    } else if byte == UInt8(ascii: "\"") {
                        // The closing quote must be followed by a space or the end.
                        if i + 1 < line.count && !isSpace(line[i + 1]) { return nil }
                        i += 1
                        break
                    } else {
                        word.append(byte)
                        i += 1
                    }
                }
            } else if line[i] == UInt8(ascii: "'") {
                i += 1
                while true {
                    guard i < line.count else { return nil }
                    let byte = line[i]
                    if byte == UInt8(ascii: "\\") && i + 1 < line.count && line[i + 1] == UInt8(ascii: "'") {
                        word.append(UInt8(ascii: "'"))
                        i += 2
                    } else if byte == UInt8(ascii: "'") {
                        if i + 1 < line.count && !isSpace(line[i + 1]) { return nil }
                        i += 1
                        break
                    } else {
                        word.append(byte)
                        i += 1
                    }
                }
            } else {
                while i < line.count && !isSpace(line[i]) {
                    word.append(line[i])
                    i += 1
                }
            }
            words.append(word)
        }
    }

    private static func show(_ byte: UInt8) -> String {
        byte >= 32 && byte < 127 ? String(UnicodeScalar(byte)) : "\\x" + String(byte, radix: 16)
    }
}
