#if canImport(Glibc)
import Glibc
#endif

/// A blocking RESP2 connection over a TCP socket, for the CLIs and tests: send commands, read
/// replies. Every read has a timeout, so a silent server never hangs the caller.
public final class RESPConnection {
    /// A failure to connect, send or read, with where and why.
    public struct ConnectionError: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    private let fd: Int32
    private var buffer: [UInt8] = []
    private var position = 0
    /// How long a read may wait, in milliseconds.
    public var timeoutMilliseconds: Int32

    /// Connect to `host:port` (an IPv4 or IPv6 literal, or a name).
    public init(host: String, port: Int, timeoutMilliseconds: Int32 = 10_000) throws {
        self.timeoutMilliseconds = timeoutMilliseconds
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>? = nil
        let status = getaddrinfo(host, String(port), &hints, &result)
        guard status == 0, let first = result else {
            throw ConnectionError(description: "cannot resolve \(host): \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(result) }
        var lastError: Int32 = 0
        var info: UnsafeMutablePointer<addrinfo>? = first
        while let candidate = info {
            let fd = socket(candidate.pointee.ai_family, candidate.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), candidate.pointee.ai_protocol)
            if fd >= 0 {
                if connect(fd, candidate.pointee.ai_addr, candidate.pointee.ai_addrlen) == 0 {
                    var one: Int32 = 1
                    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                    self.fd = fd
                    return
                }
                lastError = errno
                close(fd)
            }
            info = candidate.pointee.ai_next
        }
        throw ConnectionError(
            description: "cannot connect to \(host):\(port): \(String(cString: strerror(lastError))) (is walrusd running?)")
    }

    deinit { close(self.fd) }

    /// Send one command (each argument a bulk string) and read its reply.
    public func command(_ arguments: [[UInt8]]) throws -> RESPValue {
        try self.send(arguments)
        return try self.readReply()
    }

    /// Send one command with string arguments and read its reply.
    public func command(_ arguments: String...) throws -> RESPValue {
        try self.command(arguments.map { Array($0.utf8) })
    }

    /// Send one command without reading its reply (pipelining).
    public func send(_ arguments: [[UInt8]]) throws {
        var bytes = Array("*\(arguments.count)\r\n".utf8)
        for argument in arguments {
            bytes += Array("$\(argument.count)\r\n".utf8)
            bytes += argument
            bytes += [13, 10]
        }
        try self.sendRaw(bytes)
    }

    /// Send bytes as they are (tests of malformed input).
    public func sendRaw(_ bytes: [UInt8]) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { Glibc.send(self.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ConnectionError(description: "send failed: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }

    /// Read one reply.
    public func readReply() throws -> RESPValue {
        let line = try self.readLine()
        guard let kind = line.first else { throw ConnectionError(description: "empty reply line") }
        let rest = String(decoding: line.dropFirst(), as: UTF8.self)
        switch kind {
        case UInt8(ascii: "+"): return .simple(rest)
        case UInt8(ascii: "-"): return .error(rest)
        case UInt8(ascii: ":"):
            guard let value = Int(rest) else { throw ConnectionError(description: "bad integer reply '\(rest)'") }
            return .integer(value)
        case UInt8(ascii: "$"):
            guard let length = Int(rest) else { throw ConnectionError(description: "bad bulk length '\(rest)'") }
            if length < 0 { return .bulk(nil) }
            let bytes = try self.readExactly(length + 2)
            return .bulk(Array(bytes.prefix(length)))
        case UInt8(ascii: "*"):
            guard let count = Int(rest) else { throw ConnectionError(description: "bad array length '\(rest)'") }
            if count < 0 { return .array(nil) }
            var values: [RESPValue] = []
            for _ in 0..<count { values.append(try self.readReply()) }
            return .array(values)
        default:
            throw ConnectionError(description: "unexpected reply type '\(String(decoding: [kind], as: UTF8.self))'")
        }
    }

    /// Whether the server closed the connection (reads return end of file within the timeout).
    public func isClosedByPeer() -> Bool {
        do {
            _ = try self.fill()
            return false
        } catch {
            return true
        }
    }

    private func readLine() throws -> [UInt8] {
        while true {
            if let newline = self.buffer[self.position...].firstIndex(of: 10) {
                var line = Array(self.buffer[self.position..<newline])
                if line.last == 13 { line.removeLast() }
                self.position = newline + 1
                return line
            }
            try self.fill()
        }
    }

    private func readExactly(_ count: Int) throws -> [UInt8] {
        while self.buffer.count - self.position < count { try self.fill() }
        let bytes = Array(self.buffer[self.position..<(self.position + count)])
        self.position += count
        return bytes
    }

    @discardableResult
    private func fill() throws -> Int {
        if self.position > 0 {
            self.buffer.removeFirst(self.position)
            self.position = 0
        }
        var poller = pollfd(fd: self.fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&poller, 1, self.timeoutMilliseconds)
        guard ready > 0 else { throw ConnectionError(description: "no reply within \(self.timeoutMilliseconds) ms") }
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress, $0.count, 0) }
        if n == 0 { throw ConnectionError(description: "the server closed the connection") }
        if n < 0 { throw ConnectionError(description: "recv failed: \(String(cString: strerror(errno)))") }
        self.buffer += chunk[0..<n]
        return n
    }
}
