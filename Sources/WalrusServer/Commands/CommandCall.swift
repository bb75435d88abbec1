import NIOCore
import WalrusProtocol
import WalrusStore

/// One command being run: its words, the reply it writes, the connection's session and the
/// server's parts. Handlers read their arguments through the helpers here, which refuse with
/// Redis's error texts.
struct CommandCall {
    let spec: CommandSpec
    /// Every word of the request, the command name first (Redis's argv).
    let arguments: [ByteBuffer]
    /// The reply.
    var out: ByteBuffer
    let session: ClientSession
    let executor: CommandExecutor
    /// Where reply buffers come from.
    let allocator: ByteBufferAllocator
    /// Inside EXEC (or a script): a command that would block answers at once (Redis's
    /// CLIENT_DENY_BLOCKING), and nothing may take the store's lock again.
    let inTransaction: Bool
    /// A script runs inline on its event loop, with a budget (`ScriptEngine.InlineAbort`).
    var inlineScript = false

    var resp3: Bool { self.session.resp3 }
    var count: Int { self.arguments.count }

    // MARK: Arguments

    /// The bytes of argument `index`. A handler whose body changes `call` (writes a reply, notifies)
    /// reads `call.arguments[index].withUnsafeReadableBytes` instead: with `call` borrowed for the
    /// body, Swift copied the whole call around it — ~23 retains and releases per INCR (callgrind).
    func withBytes<R>(_ index: Int, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try self.arguments[index].withUnsafeReadableBytes(body)
    }

    func bytes(_ index: Int) -> [UInt8] { Array(self.arguments[index].readableBytesView) }

    func string(_ index: Int) -> String { String(decoding: self.arguments[index].readableBytesView, as: UTF8.self) }

    /// The word upper-cased as ASCII (option names compare case-insensitively, as Redis's strcasecmp).
    func upper(_ index: Int) -> String {
        String(decoding: self.arguments[index].readableBytesView.map { $0 >= 97 && $0 <= 122 ? $0 - 32 : $0 }, as: UTF8.self)
    }

    /// Whether word `index` is `option`, case-insensitively (`option` upper-case).
    func isOption(_ index: Int, _ option: StaticString) -> Bool {
        let wanted = UnsafeRawBufferPointer(start: option.utf8Start, count: option.utf8CodeUnitCount)
        return self.withBytes(index) { word in
            guard word.count == wanted.count else { return false }
            for i in 0..<word.count where (word[i] >= 97 && word[i] <= 122 ? word[i] - 32 : word[i]) != wanted[i] { return false }
            return true
        }
    }

    /// An integer argument (Redis's `string2ll`), or "value is not an integer or out of range".
    func integer(_ index: Int) throws -> Int64 {
        guard let value = self.withBytes(index, RedisNumbers.int64) else { throw CommandError.notInteger }
        return value
    }

    /// A float argument (Redis's `string2ld`), or "value is not a valid float".
    func longDouble(_ index: Int) throws -> Float80 {
        guard let value = self.withBytes(index, RedisNumbers.longDouble) else { throw CommandError.notFloat }
        return value
    }

    /// A Redis error naming this command: "… in 'expire' command".
    func error(_ text: String) -> CommandError { CommandError(text) }

    var arityError: CommandError { .arity(self.spec.fullName) }

    // MARK: Replies

    mutating func ok() { self.out.writeStaticString("+OK\r\n") }
    mutating func integer(reply value: Int) { self.out.writeIntegerReply(value) }
    mutating func integer(reply value: Int64) { self.out.writeIntegerReply(Int(value)) }
    mutating func bulk(_ bytes: UnsafeRawBufferPointer) { self.out.writeBulkReply(bytes) }
    mutating func bulk(_ bytes: [UInt8]) { bytes.withUnsafeBytes { self.out.writeBulkReply($0) } }
    mutating func bulk(_ text: String) { self.out.writeBulkReply(text) }
    mutating func null() { self.out.writeNullReply(resp3: self.resp3) }
    mutating func nullArray() {
        if self.resp3 { self.out.writeStaticString("_\r\n") } else { self.out.writeStaticString("*-1\r\n") }
    }
    mutating func array(_ count: Int) { self.out.writeArrayHeader(count) }
    mutating func map(_ pairs: Int) { self.out.writeMapHeader(pairs, resp3: self.resp3) }
    mutating func status(_ text: String) { self.out.writeSimpleString(text) }
    mutating func error(reply text: String) { self.out.writeErrorReply(text) }
}
