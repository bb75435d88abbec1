import Foundation
import WALCore

/// Timing, statistics and table printing for the benchmarks. Figures only; nothing is asserted.
enum Bench {
    /// Monotonic seconds.
    static func now() -> Double { Double(monotonicNanoseconds()) / 1e9 }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return .nan }
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    /// Run `executable` to its end: its standard output as text (with its errors if `errorsToo`)
    /// and its exit status. `input`: a file for its standard input.
    static func run(_ executable: String, _ arguments: [String], input: String? = nil, errorsToo: Bool = false) throws
        -> (text: String, status: Int32)
    {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let input { process.standardInput = try FileHandle(forReadingFrom: URL(fileURLWithPath: input)) }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = errorsToo ? output : FileHandle.nullDevice
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (text, process.terminationStatus)
    }

    /// Bind the TCP socket `fd` to a free port on 127.0.0.1; returns the port.
    static func bindLoopback(_ fd: Int32) -> UInt16 {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return UInt16(bigEndian: address.sin_port)
    }

    /// Resident set size of this process, in bytes (from /proc/self/statm).
    /// A process's CPU time so far (utime + stime of /proc/PID/stat, every thread), seconds.
    static func cpuSeconds(_ pid: Int32) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return .nan }
        // After "pid (comm)": state is field 3, utime 14, stime 15.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return .nan }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Context switches of every thread of `pid` so far (voluntary and involuntary).
    static func contextSwitches(_ pid: Int32) -> Int {
        guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") else { return 0 }
        var total = 0
        for task in tasks {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8) else { continue }
            for line in text.split(separator: "\n") where line.contains("ctxt_switches:") {
                total += Int(line.split(separator: "\t").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "") ?? 0
            }
        }
        return total
    }

    /// Counts a process's fdatasync and fsync calls while it runs (`perf stat` on the syscall
    /// tracepoints: counted in the kernel, no ptrace stop per call). Nil without perf.
    final class SyscallCounter {
        private let process = Process()
        private let output = Pipe()

        init?(pid: Int32) {
            guard FileManager.default.isExecutableFile(atPath: "/usr/bin/perf") else { return nil }
            // perf prints its counts on SIGINT, but a child started from a Dispatch thread
            // inherits that thread's blocked signals: unblock SIGINT before exec'ing perf.
            self.process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            self.process.arguments = [
                "-c",
                "import os, signal, sys; signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
                    + "signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv('/usr/bin/perf', ['perf'] + sys.argv[1:])",
                "stat", "-x", ",", "-e", "syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync", "-p", String(pid),
            ]
            self.process.standardError = self.output
            self.process.standardOutput = FileHandle.nullDevice
            do { try self.process.run() } catch { return nil }
            // perf attaches within a few ms; the run it counts lasts seconds.
            usleep(100_000)
        }

        /// Stop counting: the calls seen (NaN if perf could not count them).
        func stop() -> Double {
            kill(self.process.processIdentifier, SIGINT)
            let deadline = Date().addingTimeInterval(5)
            while self.process.isRunning && Date() < deadline { usleep(10_000) }
            if self.process.isRunning { kill(self.process.processIdentifier, SIGKILL) }
            let text = String(decoding: self.output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            var total = 0.0
            var seen = false
            for line in text.split(separator: "\n") where line.contains("syscalls:sys_enter_f") {
                guard let count = Double(line.split(separator: ",", omittingEmptySubsequences: false).first ?? "") else { return .nan }
                total += count
                seen = true
            }
            return seen ? total : .nan
        }
    }

    /// The time a process spends inside its disk writes and flushes (pwrite64, pwritev2,
    /// fdatasync, fsync) while it runs, from `perf trace -s` (every thread). An event loop that
    /// fdatasyncs inline serves nobody for that long, so it is the other half of what bounds a
    /// durable server besides its CPU. Tracing costs each system call of the process a little
    /// (the filter runs on every one), so it has a run of its own, not the measured ones. Nil
    /// without perf.
    final class DiskWaitTracer {
        private let process = Process()
        private let file: String
        static let calls: Set<Substring> = ["pwrite64", "pwritev2", "fdatasync", "fsync"]

        init?(pid: Int32, scratch: String) {
            guard FileManager.default.isExecutableFile(atPath: "/usr/bin/perf") else { return nil }
            self.file = scratch + "/perf-trace-\(pid).txt"
            // SIGINT unblocked before exec, as for SyscallCounter.
            self.process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            self.process.arguments = [
                "-c",
                "import os, signal, sys; signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
                    + "signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv('/usr/bin/perf', ['perf'] + sys.argv[1:])",
                "trace", "-s", "-e", Self.calls.sorted().joined(separator: ","), "-p", String(pid), "-o", self.file,
            ]
            self.process.standardError = FileHandle.nullDevice
            self.process.standardOutput = FileHandle.nullDevice
            do { try self.process.run() } catch { return nil }
            usleep(300_000)
        }

        /// Stop tracing: the seconds spent in those calls and how many flushes (fdatasync + fsync)
        /// there were; nil if perf printed no summary.
        func stop() -> (seconds: Double, flushes: Double)? {
            kill(self.process.processIdentifier, SIGINT)
            let deadline = Date().addingTimeInterval(10)
            while self.process.isRunning && Date() < deadline { usleep(10_000) }
            if self.process.isRunning { kill(self.process.processIdentifier, SIGKILL) }
            defer { try? FileManager.default.removeItem(atPath: self.file) }
            guard let text = try? String(contentsOfFile: self.file, encoding: .utf8) else { return nil }
            // "   fdatasync   3430   0   274.086   0.043   0.080   11.461   4.19%" per thread:
            // name, calls, errors, total ms, min, avg, max, stddev.
            var milliseconds = 0.0
            var flushes = 0.0
            var seen = false
            for line in text.split(separator: "\n") {
                let words = line.split(separator: " ")
                guard words.count >= 4, Self.calls.contains(words[0]), let calls = Double(words[1]), let total = Double(words[3])
                else { continue }
                milliseconds += total
                if words[0] == "fdatasync" || words[0] == "fsync" { flushes += calls }
                seen = true
            }
            return seen ? (milliseconds / 1000, flushes) : nil
        }
    }

    static func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    static func format(_ value: Double, decimals: Int = 1) -> String {
        guard value.isFinite else { return "–" }
        if abs(value) >= 1000 && decimals <= 1 {
            let rounded = Int(value.rounded())
            var digits = String(abs(rounded))
            var groups: [String] = []
            while digits.count > 3 {
                groups.insert(String(digits.suffix(3)), at: 0)
                digits = String(digits.dropLast(3))
            }
            groups.insert(digits, at: 0)
            return (rounded < 0 ? "-" : "") + groups.joined(separator: ",")
        }
        return String(format: "%.\(decimals)f", value)
    }

    static func ratio(_ value: Double, _ reference: Double) -> String {
        guard reference > 0, value.isFinite, reference.isFinite else { return "–" }
        return String(format: "%.2f×", value / reference)
    }

    /// A Markdown table.
    static func table(_ title: String, _ header: [String], _ rows: [[String]]) {
        print("")
        print("### \(title)")
        print("")
        print("| " + header.joined(separator: " | ") + " |")
        print("|" + header.map { _ in "---" }.joined(separator: "|") + "|")
        for row in rows { print("| " + row.joined(separator: " | ") + " |") }
        fflush(nil)
    }

    /// The release walrusd next to this walrus-bench; throws, saying how to build it, if absent.
    static func walrusdBeside() throws -> String {
        let binDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        let walrusd = binDirectory + "/walrusd"
        guard FileManager.default.fileExists(atPath: walrusd) else {
            throw RESPBenchmarks.BenchError("walrusd is not next to walrus-bench in \(binDirectory); build it in release mode too")
        }
        return walrusd
    }

    /// A fresh directory for one measurement (on the disk being measured, not a tmpfs).
    static func scratch(_ base: String, _ name: String) -> String {
        let path = base + "/" + name
        try? FileManager.default.removeItem(atPath: path)
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Block until the log has sealed everything appended so far.
    static func commitBlocking(_ wal: WriteAheadLog) {
        try? wal.commitBlocking()
    }

    static func machine() -> String {
        let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("model name") }?
            .split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
        return "\(ProcessInfo.processInfo.activeProcessorCount) × \(cpu), \(ProcessInfo.processInfo.physicalMemory >> 30) GiB"
    }
}
