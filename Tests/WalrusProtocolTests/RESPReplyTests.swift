import NIOCore
import Testing

@testable import WalrusProtocol

/// Replies whose numbers are formatted in place, byte for byte as `String(value)` spells them.
struct RESPReplyTests {
    func written(_ body: (inout ByteBuffer) -> Void) -> String {
        var buffer = ByteBuffer()
        body(&buffer)
        return String(buffer: buffer)
    }

    @Test func numbersAreSpelledAsStringDoes() {
        for value in [0, 1, 9, 10, -1, -10, 99, 100, 123_456_789, Int.max, Int.min] {
            #expect(self.written { $0.writeIntegerReply(value) } == ":\(value)\r\n")
        }
        for count in [0, 1, 10, 1_000_000] {
            #expect(self.written { $0.writeArrayHeader(count) } == "*\(count)\r\n")
            #expect(self.written { $0.writePushHeader(count, resp3: true) } == ">\(count)\r\n")
        }
        for length in [0, 9, 10, 1234] {
            let text = String(repeating: "x", count: length)
            let expected = "$\(length)\r\n\(text)\r\n"
            #expect(self.written { $0.writeBulkReply(ByteBuffer(string: text)) } == expected)
            #expect(self.written { buffer in Array(text.utf8).withUnsafeBytes { buffer.writeBulkReply($0) } } == expected)
        }
    }
}
