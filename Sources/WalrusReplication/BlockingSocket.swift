import Synchronization
import WALCore
#if canImport(Glibc)
import Glibc
#endif

/// A TCP connection for the follower's replication thread: connect with a timeout, receive with
/// a timeout, send under a lock (the reader thread and the ACK thread both send).
final class BlockingSocket: @unchecked Sendable {
    private let fd: Int32
    /// Serialises senders (reader and acker threads); holds the bytes sent so far.
    private let sendLock = LockedValue<Int>(0)
    private let closed = Atomic<Bool>(false)
    let peer: String

    private init(fd: Int32, peer: String) {
        self.fd = fd
        self.peer = peer
    }

    deinit { close(self.fd) }

    /// Connect to `host:port`, trying each address for up to `timeoutMilliseconds`.
    static func connect(host: String, port: Int, timeoutMilliseconds: Int32) throws -> BlockingSocket {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>? = nil
        let status = getaddrinfo(host, String(port), &hints, &result)
        guard status == 0, let first = result else {
            throw ReplicationError("cannot resolve \(host): \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(result) }
        var lastError = "no address"
        var info: UnsafeMutablePointer<addrinfo>? = first
        while let candidate = info {
            info = candidate.pointee.ai_next
            let fd = socket(
                candidate.pointee.ai_family, candidate.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue),
                candidate.pointee.ai_protocol)
            guard fd >= 0 else { continue }
            var ok = Glibc.connect(fd, candidate.pointee.ai_addr, candidate.pointee.ai_addrlen) == 0
            if !ok && errno == EINPROGRESS {
                var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                if poll(&poller, 1, timeoutMilliseconds) == 1 {
                    var code: Int32 = 0
                    var length = socklen_t(MemoryLayout<Int32>.size)
                    getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &length)
                    ok = code == 0
                    if !ok { lastError = String(cString: strerror(code)) }
                } else {
                    lastError = "timed out after \(timeoutMilliseconds) ms"
                }
            } else if !ok {
                lastError = String(cString: strerror(errno))
            }
            guard ok else {
                close(fd)
                continue
            }
            // Back to blocking; reads wait in poll() with their own timeouts.
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~Int32(O_NONBLOCK))
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            var size: Int32 = 4 << 20
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            var timeout = timeval(tv_sec: 10, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            return BlockingSocket(fd: fd, peer: "\(host):\(port)")
        }
        throw ReplicationError("cannot connect to \(host):\(port): \(lastError)")
    }

    /// Receive into `buffer` (up to its free capacity), waiting at most `timeoutMilliseconds`;
    /// returns the count, 0 on timeout; throws when the peer closed or on error.
    func receive(into buffer: UnsafeMutableRawBufferPointer, timeoutMilliseconds: Int32) throws -> Int {
        var poller = pollfd(fd: self.fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&poller, 1, timeoutMilliseconds)
        if ready == 0 { return 0 }
        if ready < 0 {
            if errno == EINTR { return 0 }
            throw ReplicationError("poll failed: \(String(cString: strerror(errno)))")
        }
        let n = recv(self.fd, buffer.baseAddress, buffer.count, 0)
        if n == 0 { throw ReplicationError("the primary closed the connection") }
        if n < 0 {
            if errno == EINTR || errno == EAGAIN { return 0 }
            throw ReplicationError("receive failed: \(String(cString: strerror(errno)))")
        }
        return n
    }

    /// Send all of `bytes`.
    func send(_ bytes: UnsafeRawBufferPointer) throws {
        try self.sendLock.withLock { sent in
            defer { sent &+= bytes.count }
            var done = 0
            while done < bytes.count {
                let n = Glibc.send(self.fd, bytes.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw ReplicationError("send failed: \(String(cString: strerror(errno)))")
                }
                done += n
            }
        }
    }

    /// Wake a thread blocked on this socket and refuse further use.
    func shutdownBoth() {
        guard !self.closed.exchange(true, ordering: .relaxed) else { return }
        shutdown(self.fd, Int32(SHUT_RDWR))
    }
}
