/// A `GET key` or `SET key value` request read in place, without building a `RESPCommand`: what
/// a pipelining client sends by the thousand, answered without an allocation per request.
///
/// Ranges are byte offsets from the start of the bytes handed to `RESPQuickRequest.parse`.
public enum RESPQuickRequest: Sendable, Equatable {
    case get(key: Range<Int>)
    case set(key: Range<Int>, value: Range<Int>)

    /// The request at the start of `bytes` and how many bytes it takes, if it is a complete
    /// multibulk GET (2 words) or SET (3 words) within `limits`. Anything else — another command,
    /// more words, an incomplete or malformed request — returns nil without judging it: the full
    /// decoder reads it (and reports errors) from the same place.
    @inlinable
    public static func parse(_ bytes: UnsafeRawBufferPointer, limits: RESPLimits) -> (request: RESPQuickRequest, consumed: Int)? {
        // "*2\r\n" or "*3\r\n"
        guard bytes.count >= 4, bytes[0] == UInt8(ascii: "*"), bytes[2] == 13, bytes[3] == 10 else { return nil }
        let words = Int(bytes[1]) - 48
        guard words == 2 || words == 3 else { return nil }
        var position = 4
        guard let name = Self.bulk(bytes, &position, limits.maxBulkBytes), name.count == 3 else { return nil }
        // ASCII case-insensitive: clear bit 5 of letters.
        let b0 = bytes[name.lowerBound] & 0xDF
        let b1 = bytes[name.lowerBound + 1] & 0xDF
        let b2 = bytes[name.lowerBound + 2] & 0xDF
        guard b1 == UInt8(ascii: "E"), b2 == UInt8(ascii: "T") else { return nil }
        if b0 == UInt8(ascii: "G") && words == 2 {
            guard let key = Self.bulk(bytes, &position, limits.maxBulkBytes) else { return nil }
            return (.get(key: key), position)
        }
        if b0 == UInt8(ascii: "S") && words == 3 {
            guard let key = Self.bulk(bytes, &position, limits.maxBulkBytes),
                let value = Self.bulk(bytes, &position, limits.maxBulkBytes)
            else { return nil }
            return (.set(key: key, value: value), position)
        }
        return nil
    }

    /// `$<n>\r\n<n bytes>\r\n` at `position`: the bytes' range, `position` moved past it.
    @usableFromInline @inline(__always)
    static func bulk(_ bytes: UnsafeRawBufferPointer, _ position: inout Int, _ limit: Int) -> Range<Int>? {
        var start = position
        guard let length = Self.length(bytes, &start, prefix: UInt8(ascii: "$"), limit: limit) else { return nil }
        let end = start + length
        guard end + 2 <= bytes.count, bytes[end] == 13, bytes[end + 1] == 10 else { return nil }
        position = end + 2
        return start..<end
    }

    /// `<prefix><digits>\r\n` at `position` — at most 10 digits, no sign, at most `limit`: the
    /// number, `position` moved past its line. Nil for anything else, or a line not all there.
    @usableFromInline @inline(__always)
    static func length(_ bytes: UnsafeRawBufferPointer, _ position: inout Int, prefix: UInt8, limit: Int) -> Int? {
        var at = position
        guard at < bytes.count, bytes[at] == prefix else { return nil }
        at += 1
        var length = 0
        var digits = 0
        while at < bytes.count {
            let byte = bytes[at]
            if byte == 13 { break }
            guard byte >= 48 && byte <= 57, digits < 10 else { return nil }
            length = length * 10 + Int(byte - 48)
            digits += 1
            at += 1
        }
        guard digits > 0, length <= limit, at + 1 < bytes.count, bytes[at + 1] == 10 else { return nil }
        position = at + 2
        return length
    }
}
