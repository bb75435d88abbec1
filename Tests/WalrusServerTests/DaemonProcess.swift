import Foundation
import Synchronization
import WalrusClient
import WalrusTestKit
#if canImport(Glibc)
import Glibc
#endif

/// A `walrusd` process started from the built binary, on a port it picks (`--port 0`) and
/// reports in its log.
final class DaemonProcess: @unchecked Sendable {
    let process = Process()
    let port: Int
    /// The replication port (`--repl-port 0` unless the arguments name one).
    let replicationPort: Int
    let data: String
    private let errors = Pipe()
    /// Signalled once the log reader has read the daemon's stderr to its end.
    private let drained = DispatchSemaphore(value: 0)
    private let logLock = NSLock()
    private var logText = ""

    static var binaryDirectory: String { TestEnvironment.binaryDirectory }

    /// Start walrusd on `data` with extra arguments; returns once it listens. With `launcher`,
    /// the command line is handed to it (e.g. a shell that sets up a mount namespace and execs it).
    init(data: String, arguments: [String] = [], launcher: ((_ commandLine: [String]) -> (String, [String]))? = nil) throws {
        self.data = data
        // Every daemon of a test run picks free ports; a later --repl-port in `arguments` wins.
        let commandLine = [Self.binaryDirectory + "/walrusd", "--data", data, "--port", "0", "--repl-port", "0"] + arguments
        if let launcher {
            let (executable, launchArguments) = launcher(commandLine)
            self.process.executableURL = URL(fileURLWithPath: executable)
            self.process.arguments = launchArguments
        } else {
            self.process.executableURL = URL(fileURLWithPath: commandLine[0])
            self.process.arguments = Array(commandLine.dropFirst())
        }
        self.process.standardError = self.errors
        self.process.standardOutput = FileHandle.nullDevice
        try self.process.run()
        // Read the log until the "Listening" line gives the port (bounded: a daemon that never
        // gets there is killed, which ends the read below).
        let deadline = Date().addingTimeInterval(30)
        let starting = self.process
        let ready = Atomic<Bool>(false)
        DispatchQueue.global().asyncAfter(deadline: .now() + 31) {
            if !ready.load(ordering: .relaxed) && starting.isRunning { kill(starting.processIdentifier, SIGKILL) }
        }
        defer { ready.store(true, ordering: .relaxed) }
        var text = ""
        let handle = self.errors.fileHandleForReading
        var port: Int? = nil
        // "Ready" is logged once every listener is bound (when READY=1 goes to systemd).
        while port == nil || !text.contains("] Ready") {
            guard Date() < deadline, self.process.isRunning else {
                throw RESPConnection.ConnectionError(description: "walrusd did not start: \(text)")
            }
            let chunk = handle.availableData
            if chunk.isEmpty { continue }
            text += String(decoding: chunk, as: UTF8.self)
            if port == nil, let range = text.range(of: #"server\.port=(\d+)"#, options: .regularExpression) {
                port = Int(text[range].split(separator: "=")[1])
            }
        }
        self.port = port!
        let replication = text.range(of: #"repl\.port=(\d+)"#, options: .regularExpression).map { text[$0].split(separator: "=")[1] }
        self.replicationPort = replication.flatMap { Int($0) } ?? 0
        self.logText = text
        // Keep draining the log so the daemon never blocks on a full pipe: a thread of its own
        // reading to end-of-file, holding the pipe open until then. (Not a readabilityHandler:
        // its dispatch source outlived the descriptor now and then, and libdispatch's event
        // loop crashed the whole test process on the recycled descriptor.)
        let pipe = self.errors
        let drained = self.drained
        let reader = Thread { [weak self] in
            let fd = pipe.fileHandleForReading.fileDescriptor
            var buffer = [UInt8](repeating: 0, count: 16_384)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { break }
                guard let self else { continue }
                self.logLock.lock()
                self.logText += String(decoding: buffer[0..<count], as: UTF8.self)
                self.logLock.unlock()
            }
            withExtendedLifetime(pipe) {}
            drained.signal()
        }
        reader.name = "walrusd-log"
        reader.start()
    }

    var log: String {
        self.logLock.lock()
        defer { self.logLock.unlock() }
        return self.logText
    }

    func connect() throws -> RESPConnection { try RESPConnection(host: "127.0.0.1", port: self.port) }

    /// The control socket (the default, under the data directory).
    var controlSocket: String { self.data + "/control.sock" }

    /// `--follow` arguments for a follower of this daemon.
    var followArguments: [String] { ["--follow", "127.0.0.1:\(self.replicationPort)"] }

    /// Send a signal and wait (bounded) for the process to end; returns its exit status.
    @discardableResult
    func stop(signal: Int32 = SIGTERM, seconds: Double = 20) -> Int32 {
        kill(self.process.processIdentifier, signal)
        let deadline = Date().addingTimeInterval(seconds)
        while self.process.isRunning && Date() < deadline { usleep(10_000) }
        if self.process.isRunning { kill(self.process.processIdentifier, SIGKILL) }
        // Not waitUntilExit: under load it has been seen to wait forever for an exit Foundation
        // had already noticed. isRunning turns false once the child is reaped.
        let reaped = Date().addingTimeInterval(10)
        while self.process.isRunning && Date() < reaped { usleep(10_000) }
        if !self.process.isRunning && !self.logComplete {
            // Its last lines in `log` before this returns (bounded: a descendant could hold stderr).
            self.logComplete = self.drained.wait(timeout: .now() + 5) == .success
        }
        return self.process.isRunning ? -1 : self.process.terminationStatus
    }

    /// Whether the log reader reached end-of-file (seen by `stop`).
    private var logComplete = false

    deinit {
        if self.process.isRunning { self.stop(signal: SIGKILL) }
    }
}

/// Run a command-line program to completion (bounded) and return its output and status.
func run(_ executable: String, _ arguments: [String], input: String? = nil, seconds: Double = 120) throws -> (output: String, status: Int32) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    let stdin = Pipe()
    process.standardInput = stdin
    try process.run()
    // A child that outlives the deadline is killed, which ends the reads below.
    let finished = Atomic<Bool>(false)
    DispatchQueue.global().asyncAfter(deadline: .now() + seconds) {
        if !finished.load(ordering: .relaxed) && process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
    defer { finished.store(true, ordering: .relaxed) }
    if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
    try stdin.fileHandleForWriting.close()
    var collected = Data()
    let deadline = Date().addingTimeInterval(seconds)
    while true {
        let chunk = output.fileHandleForReading.availableData
        if chunk.isEmpty { break }
        collected += chunk
        if Date() > deadline {
            kill(process.processIdentifier, SIGKILL)
            break
        }
    }
    let reaped = Date().addingTimeInterval(10)
    while process.isRunning && Date() < reaped { usleep(10_000) }
    return (String(decoding: collected, as: UTF8.self), process.isRunning ? -1 : process.terminationStatus)
}
