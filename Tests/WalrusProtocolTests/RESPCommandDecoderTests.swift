import NIOCore
import NIOEmbedded
import Testing
@testable import WalrusProtocol

/// The RESP request decoder: every way a client sends a request, and every malformed one.
struct RESPCommandDecoderTests {
    func words(_ command: RESPCommand) -> [String] {
        command.arguments.map { String(decoding: $0.readableBytesView, as: UTF8.self) }
    }

    /// Decode `input` fed in pieces of `chunk` bytes through a real channel pipeline.
    func decodeAll(_ input: [UInt8], chunk: Int, limits: RESPLimits = RESPLimits()) throws -> [RESPCommand] {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPCommandDecoder(limits: limits)))
        var offset = 0
        while offset < input.count {
            let end = min(offset + chunk, input.count)
            try channel.writeInbound(ByteBuffer(bytes: input[offset..<end]))
            offset = end
        }
        var commands: [RESPCommand] = []
        while let command = try channel.readInbound(as: RESPCommand.self) { commands.append(command) }
        #expect(try channel.finish().isClean)
        return commands
    }

    static let pipeline = Array(
        ("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n" + "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" + "PING\r\n"
            + "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n").utf8)

    /// One byte at a time, everything at once, and one request per buffer give the same commands.
    @Test(arguments: [1, 2, 7, 1000])
    func decodesPipelinedRequestsInAnyChunking(chunk: Int) throws {
        let commands = try self.decodeAll(Self.pipeline, chunk: chunk)
        #expect(commands.map(self.words) == [["SET", "k", "hello"], ["GET", "k"], ["PING"], ["ECHO", ""]])
    }

    /// A request that has fully arrived is read in one pass (`decodeWhole`), one that has not
    /// step by step: split at every byte, the two give the same commands — empty requests, leading
    /// zeros and values at the length limit included — and refuse the same lengths over it.
    @Test func wholeAndStepByStepReadsAgree() throws {
        var limits = RESPLimits()
        limits.maxBulkBytes = 5
        let input = Array(
            ("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n" + "*0\r\n" + "*02\r\n$003\r\nGET\r\n$1\r\nk\r\n"
                + "*-1\r\n" + "*1\r\n$0\r\n\r\n").utf8)
        let expected = [["SET", "k", "hello"], ["GET", "k"], [""]]
        for split in 0...input.count {
            let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPCommandDecoder(limits: limits)))
            try channel.writeInbound(ByteBuffer(bytes: input[..<split]))
            try channel.writeInbound(ByteBuffer(bytes: input[split...]))
            var commands: [[String]] = []
            while let command = try channel.readInbound(as: RESPCommand.self) { commands.append(self.words(command)) }
            #expect(commands == expected, "split at \(split)")
            #expect(try channel.finish().isClean)
        }
        for input in ["*1\r\n$6\r\nhello!\r\n", "*1\r\n$6\r\nhel"] {
            let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPCommandDecoder(limits: limits)))
            #expect(throws: RESPProtocolError.self) { try channel.writeInbound(ByteBuffer(string: input)) }
            _ = try? channel.finish()
        }
    }

    /// Bulk strings are binary-safe: CRLF and NUL inside a value are just bytes.
    @Test func bulkStringsAreBinarySafe() throws {
        let value: [UInt8] = [0, 13, 10, 255, 36, 42]
        let input = Array("*2\r\n$4\r\nECHO\r\n$6\r\n".utf8) + value + Array("\r\n".utf8)
        let commands = try self.decodeAll(input, chunk: 3)
        #expect(commands.count == 1)
        #expect(Array(commands[0].arguments[1].readableBytesView) == value)
    }

    /// Inline commands split on spaces; empty lines are ignored.
    @Test func inlineCommands() throws {
        let commands = try self.decodeAll(Array("SET  a   b\r\n\r\nGET a\n".utf8), chunk: 4)
        #expect(commands.map(self.words).filter { !$0.isEmpty } == [["SET", "a", "b"], ["GET", "a"]])
    }

    /// Malformed requests throw a protocol error with Redis's wording, before allocating.
    @Test(arguments: [
        ("huge bulk length", "*1\r\n$4294967296\r\n", "invalid bulk length"),
        ("negative bulk length", "*1\r\n$-5\r\n", "invalid bulk length"),
        ("non-digit bulk length", "*1\r\n$1x\r\n", "invalid bulk length"),
        ("non-digit multibulk length", "*x\r\n", "invalid multibulk length"),
        ("too many arguments", "*2000000\r\n", "invalid multibulk length"),
        ("missing $", "*1\r\n+OK\r\n", "expected '$'"),
        ("bulk not followed by CRLF", "*1\r\n$1\r\nabc\r\n", "not followed by CRLF"),
        ("length line without CR", "*1\n", "invalid multibulk length"),
        ("endless length line", "*11111111111111111111111111111111111", "invalid multibulk length"),
    ])
    func rejectsMalformedRequests(name: String, input: String, expected: String) {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPCommandDecoder()))
        do {
            try channel.writeInbound(ByteBuffer(string: input))
            Issue.record("\(name): accepted")
        } catch let error as RESPProtocolError {
            #expect(error.message.contains(expected), "\(name): \(error.message)")
        } catch {
            Issue.record("\(name): unexpected \(error)")
        }
        _ = try? channel.finish()
    }

    /// An inline line longer than the limit is refused even before its newline arrives.
    @Test func rejectsEndlessInlineLine() {
        var limits = RESPLimits()
        limits.maxInlineBytes = 100
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPCommandDecoder(limits: limits)))
        #expect(throws: RESPProtocolError.self) { try channel.writeInbound(ByteBuffer(string: String(repeating: "a", count: 200))) }
        _ = try? channel.finish()
    }

    /// Replies are encoded as RESP2.
    @Test func repliesAreRESP2() {
        var buffer = ByteBuffer()
        buffer.writeSimpleString("OK")
        buffer.writeErrorReply("ERR bad\nthing")
        buffer.writeIntegerReply(-3)
        buffer.writeBulkReply("hi")
        buffer.writeNullReply()
        buffer.writeArrayHeader(2)
        #expect(String(buffer: buffer) == "+OK\r\n-ERR bad thing\r\n:-3\r\n$2\r\nhi\r\n$-1\r\n*2\r\n")
    }
}
