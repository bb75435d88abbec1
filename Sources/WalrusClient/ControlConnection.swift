#if canImport(Glibc)
import Glibc
#endif

/// A connection to walrusd's control socket: one JSON request per line, one JSON reply per line.
public final class ControlConnection {
    private let fd: Int32
    public let path: String

    /// Connect to the socket at `path`.
    public init(path: String) throws {
        self.path = path
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw RESPConnection.ConnectionError(description: "socket() failed: \(String(cString: strerror(errno)))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(fd)
            throw RESPConnection.ConnectionError(description: "the socket path \(path) is too long")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw RESPConnection.ConnectionError(
                description: "cannot connect to \(path): \(reason) (is walrusd running? point at its socket with --socket PATH)")
        }
        var timeout = timeval(tv_sec: 300, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        self.fd = fd
    }

    deinit { close(self.fd) }

    /// Send one request line and read the reply line (without its newline).
    public func request(line: [UInt8]) throws -> [UInt8] {
        // A refused peer gets its error line and a closed connection at once, possibly before we
        // finish sending: then the reply is still there to read, so a failed send is not the end.
        let sendError: String? = line.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = send(self.fd, raw.baseAddress! + done, raw.count - done, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    return "send to \(self.path) failed: \(String(cString: strerror(errno)))"
                }
                done += n
            }
            return nil
        }
        var reply: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let n = recv(self.fd, &byte, 1, 0)
            if n < 0 && errno == EINTR { continue }
            guard n == 1 else {
                throw RESPConnection.ConnectionError(description: sendError ?? "walrusd closed the control connection without a reply")
            }
            if byte == 10 { break }
            reply.append(byte)
        }
        return reply
    }
}
