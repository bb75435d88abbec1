import NIOCore
import Testing

@testable import WalrusProtocol

/// The server's in-place GET/SET reader: it must take exactly what the full decoder takes, and
/// leave everything else to it untouched.
struct RESPQuickRequestTests {
    func parse(_ text: String, limits: RESPLimits = RESPLimits()) -> (words: [String], consumed: Int)? {
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { raw in
            guard let (request, consumed) = RESPQuickRequest.parse(raw, limits: limits) else { return nil }
            func word(_ range: Range<Int>) -> String { String(decoding: bytes[range], as: UTF8.self) }
            switch request {
            case .get(let key): return (["GET", word(key)], consumed)
            case .set(let key, let value): return (["SET", word(key), word(value)], consumed)
            }
        }
    }

    @Test func readsGetAndSetInAnyCase() {
        let get = "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"
        #expect(self.parse(get + "*1\r\n$4\r\nPING\r\n")! == (["GET", "key"], get.utf8.count))
        #expect(self.parse("*2\r\n$3\r\ngEt\r\n$0\r\n\r\n")! == (["GET", ""], 19))
        let set = "*3\r\n$3\r\nset\r\n$1\r\nk\r\n$5\r\nv\r\nxy\r\n"
        #expect(self.parse(set)! == (["SET", "k", "v\r\nxy"], set.utf8.count))
        #expect(self.parse("*2\r\n$03\r\nGET\r\n$1\r\nk\r\n")! == (["GET", "k"], 21))
    }

    @Test(arguments: [
        "*2\r\n$3\r\nGET\r\n$3\r\nke",  // incomplete
        "*2\r\n$3\r\nGET\r\n$3\r\nkeyX\n",  // no CRLF after the bulk
        "*3\r\n$3\r\nGET\r\n$1\r\nk\r\n$1\r\nv\r\n",  // GET with 2 arguments
        "*2\r\n$3\r\nSET\r\n$1\r\nk\r\n",  // SET without a value
        "*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nNX\r\n",  // SET with options
        "*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n",  // another command
        "*2\r\n$4\r\nGETX\r\n$1\r\nk\r\n",
        "*2\r\n$3\r\nGET\r\n$-1\r\n",  // null bulk: the decoder's error
        "*2\r\n$3\r\nGET\r\n$99999999999\r\n",  // over the limit: the decoder's error
        "GET k\r\n",  // inline: the decoder reads those
        "*12\r\n",
    ])
    func leavesEverythingElseToTheDecoder(_ text: String) {
        #expect(self.parse(text) == nil)
    }

    @Test func respectsTheBulkLimit() {
        var limits = RESPLimits()
        limits.maxBulkBytes = 4
        #expect(self.parse("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n", limits: limits) == nil)
        #expect(self.parse("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\nvalu\r\n", limits: limits) != nil)
    }

    @Test func decoderReportsIdleOnlyBetweenRequests() throws {
        var decoder = RESPCommandDecoder()
        var buffer = ByteBuffer(string: "*2\r\n$3\r\nGET\r\n$3\r\nke")
        #expect(decoder.isIdle)
        #expect(try decoder.decode(buffer: &buffer) == nil)
        #expect(!decoder.isIdle)
        buffer.writeString("y\r\n")
        #expect(try decoder.decode(buffer: &buffer) != nil)
        #expect(decoder.isIdle)
    }
}

/// The bulk reply formats its length in place; it must read as `$<n>\r\n<bytes>\r\n` for every n.
struct RESPBulkReplyTests {
    @Test(arguments: [0, 1, 9, 10, 99, 100, 101, 999, 1000, 65_536, 1_234_567])
    func formatsEveryLength(_ count: Int) {
        let payload = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var buffer = ByteBuffer(string: "x")
        payload.withUnsafeBytes { buffer.writeBulkReply($0) }
        let expected = Array("x$\(count)\r\n".utf8) + payload + [13, 10]
        #expect(Array(buffer.readableBytesView) == expected)
    }
}
