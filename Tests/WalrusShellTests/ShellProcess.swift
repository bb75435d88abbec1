import Foundation
import WalrusTestKit
#if canImport(Glibc)
import Glibc
#endif

/// Runs the built `walrus` binary the way a person or a script would.
enum ShellProcess {
    static var binaryDirectory: String { TestEnvironment.binaryDirectory }

    static var walrus: String { binaryDirectory + "/walrus" }

    /// Run with `input` on a pipe; returns stdout, stderr and the exit status.
    static func runPiped(_ arguments: [String], input: String, home: String) throws -> (
        stdout: String, stderr: String, status: Int32
    ) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: walrus)
        process.arguments = arguments
        process.environment = ["HOME": home, "PATH": "/usr/bin:/bin"]
        let stdin = Pipe()
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try stdin.fileHandleForWriting.close()
        let out = stdout.fileHandleForReading.readDataToEndOfFile()
        let err = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self), process.terminationStatus)
    }
}

/// A `walrus` running on a pseudo-terminal that is its controlling terminal (via `setsid -c`),
/// so line editing, completion and Ctrl-C behave as for a person at a terminal.
final class TerminalSession {
    let master: Int32
    let process: Process
    private(set) var screen = ""

    // TIOCSPTLCK and TIOCGPTN are _IOW/_IOR macros Swift cannot import; these are their values
    // in the asm-generic ioctl encoding (x86_64, arm64).
    private static let setLock: UInt = 0x4004_5431
    private static let getNumber: UInt = 0x8004_5430

    init(arguments: [String], home: String) throws {
        // posix_openpt and friends are not in the Glibc module; /dev/ptmx and two ioctls are them.
        let master = open("/dev/ptmx", O_RDWR | O_NOCTTY)
        var unlock: Int32 = 0
        var number: UInt32 = 0
        guard master >= 0, ioctl(master, Self.setLock, &unlock) == 0, ioctl(master, Self.getNumber, &number) == 0 else {
            throw POSIXError(.EIO)
        }
        let slave = open("/dev/pts/\(number)", O_RDWR | O_NOCTTY)
        guard slave >= 0 else { throw POSIXError(.EIO) }
        var size = winsize(ws_row: 40, ws_col: 120, ws_xpixel: 0, ws_ypixel: 0)
        _ = ioctl(slave, UInt(TIOCSWINSZ), &size)
        let handle = FileHandle(fileDescriptor: slave, closeOnDealloc: true)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setsid")
        // -c: the pty becomes the controlling terminal (so Ctrl-C is a signal); -w: wait for walrus
        // and pass on its exit status (setsid forks when it is already a group leader).
        process.arguments = ["-w", "-c", ShellProcess.walrus] + arguments
        process.environment = ["HOME": home, "TERM": "xterm", "PATH": "/usr/bin:/bin"]
        process.standardInput = handle
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        self.master = master
        self.process = process
    }

    deinit {
        if self.process.isRunning { self.process.terminate() }
        close(self.master)
    }

    /// Type bytes as a person would, once the line editor is reading: keys typed while the
    /// terminal is still in canonical mode (between two prompts) would be cooked by the kernel
    /// (a Ctrl-D there is an end-of-file libedit never sees).
    func type(_ text: String) {
        self.waitForLineEditor()
        _ = text.utf8CString.withUnsafeBufferPointer { write(self.master, $0.baseAddress, $0.count - 1) }
    }

    /// Wait (bounded) until libedit has switched the terminal out of canonical mode; the master
    /// side of a pty reads the slave's settings.
    func waitForLineEditor(seconds: Double = 10) {
        let deadline = Date().addingTimeInterval(seconds)
        var settings = termios()
        while Date() < deadline, tcgetattr(self.master, &settings) == 0, settings.c_lflag & tcflag_t(ICANON) != 0 {
            var poller = pollfd(fd: self.master, events: Int16(POLLIN), revents: 0)
            if poll(&poller, 1, 5) > 0 {
                var buffer = [UInt8](repeating: 0, count: 4096)
                let n = read(self.master, &buffer, buffer.count)
                if n > 0 { self.screen += String(decoding: buffer[0..<n], as: UTF8.self) }
            }
        }
    }

    /// Read output until `text` has appeared (after what was already matched), or throw after `seconds`.
    @discardableResult
    func waitFor(_ text: String, seconds: Double = 10) throws -> String {
        let deadline = Date().addingTimeInterval(seconds)
        while !self.screen.contains(text) {
            guard Date() < deadline else {
                throw WaitError(description: "timed out waiting for \(text.debugDescription); screen: \(self.screen.debugDescription)")
            }
            var poller = pollfd(fd: self.master, events: Int16(POLLIN), revents: 0)
            if poll(&poller, 1, 100) > 0 {
                var buffer = [UInt8](repeating: 0, count: 4096)
                let n = read(self.master, &buffer, buffer.count)
                if n > 0 { self.screen += String(decoding: buffer[0..<n], as: UTF8.self) }
                if n <= 0 { break }
            }
        }
        guard self.screen.contains(text) else {
            throw WaitError(description: "the terminal closed before \(text.debugDescription) appeared; screen: \(self.screen.debugDescription)")
        }
        let matched = self.screen
        // Later waits look only at output after this match.
        self.screen = String(self.screen[self.screen.range(of: text)!.upperBound...])
        return matched
    }

    /// Wait for the process to end (bounded).
    func waitForExit(seconds: Double = 10) throws -> Int32 {
        let deadline = Date().addingTimeInterval(seconds)
        while self.process.isRunning {
            guard Date() < deadline else { throw WaitError(description: "walrus did not exit") }
            // Keep draining the terminal so the child never blocks on a full pty.
            var poller = pollfd(fd: self.master, events: Int16(POLLIN), revents: 0)
            if poll(&poller, 1, 50) > 0 {
                var buffer = [UInt8](repeating: 0, count: 4096)
                let n = read(self.master, &buffer, buffer.count)
                if n > 0 { self.screen += String(decoding: buffer[0..<n], as: UTF8.self) }
            }
        }
        return self.process.terminationStatus
    }

    struct WaitError: Error, CustomStringConvertible {
        var description: String
    }
}
