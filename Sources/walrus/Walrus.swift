import ArgumentParser
import Logging
import WALCore
import WalrusStore
#if canImport(Glibc)
import Glibc
#endif

/// `walrus`: the interactive shell of the original, on a data directory (embedded, by default
/// `./walrus-data`) — with history, completion, and a clean exit that commits everything.
@main
struct Walrus: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "walrus",
        abstract: "The walrus shell: SET/GET/DELETE/HAS/KEYS/LEN/COMMIT on a walrus data directory.",
        discussion: """
            Reads commands from the terminal (with history in ~/.walrus_history and tab completion) or, when
            standard input is not a terminal, one command per line with no banner and no colours; the exit
            status is 1 if any command failed.
            """)

    @Option(name: .long, help: "The data directory (opened in this process, as the original does; default ./walrus-data).")
    var data: String?

    @Option(name: .long, help: "Talk to a running walrusd at HOST:PORT instead of opening a directory.")
    var connect: String?

    @Option(name: .long, help: "When writes are acknowledged: always (after fdatasync) or interval.")
    var fsync: FsyncChoice = .always

    @Option(name: .customLong("fsync-interval"), help: "The interval in milliseconds for --fsync interval.")
    var fsyncInterval: Int = 100

    @Option(name: .customLong("segment-size"), help: "Rotate segments at this many bytes.")
    var segmentSize: Int = 10 * 1024 * 1024

    @Flag(name: .customLong("no-color"), help: "Never print colours.")
    var noColor = false

    enum FsyncChoice: String, ExpressibleByArgument, CaseIterable {
        case always, interval
    }

    func validate() throws {
        if self.connect != nil && self.data != nil { throw ValidationError("use --data or --connect, not both") }
        if let connect = self.connect, Self.split(connect) == nil {
            throw ValidationError("--connect takes HOST:PORT, e.g. 127.0.0.1:7379")
        }
        guard self.fsyncInterval > 0 else { throw ValidationError("--fsync-interval must be a positive number of milliseconds") }
        guard self.segmentSize >= 4096 else { throw ValidationError("--segment-size must be at least 4096 bytes") }
    }

    func run() throws {
        // Signals first, so every thread the store starts inherits the mask.
        ShellSignals.block()
        let interactive = isatty(0) == 1
        let output = ShellOutput(colors: interactive && isatty(1) == 1 && !self.noColor && getenv("NO_COLOR") == nil)

        let backend: any ShellBackend
        var recovered = 0
        if let connect = self.connect, let (host, port) = Self.split(connect) {
            do {
                backend = try RemoteBackend(host: host, port: port)
            } catch {
                output.error("Cannot connect to \(connect): \(error)")
                throw ExitCode(2)
            }
        } else {
            let data = self.data ?? "./walrus-data"
            var configuration = StoreConfiguration(directory: data)
            configuration.wal.fsyncMode = self.fsync == .always ? .always : .interval(milliseconds: self.fsyncInterval)
            configuration.wal.segmentSizeBytes = self.segmentSize
            var logger = Logger(label: "walrus") { StreamLogHandler.standardError(label: $0) }
            logger.logLevel = .warning
            do {
                let store = try KeyValueStore.open(configuration, logger: logger)
                recovered = store.count
                backend = EmbeddedBackend(store: store)
            } catch {
                output.error("Cannot open \(data): \(error)")
                throw ExitCode(2)
            }
        }
        let session = ShellSession(backend: backend, output: output)
        let historyPath = (getenv("HOME").map { String(cString: $0) } ?? ".") + "/.walrus_history"
        var savedTerminal = termios()
        let haveTerminal = interactive && tcgetattr(0, &savedTerminal) == 0

        let finish: @Sendable (String?) -> Never = { farewell in
            var code: Int32 = session.failures > 0 ? 1 : 0
            do {
                try backend.commit()
            } catch {
                output.error("Error: could not commit before exit: \(error)")
                code = 1
            }
            if interactive { LineEditor.save(historyPath: historyPath) }
            if let farewell { output.info(farewell) }
            backend.close()
            Glibc.exit(code)
        }
        ShellSignals.handle { _ in
            if haveTerminal {
                var terminal = savedTerminal
                tcsetattr(0, TCSANOW, &terminal)
                print("")
            }
            finish("Goodbye!")
        }

        if interactive {
            output.banner()
            if recovered > 0 {
                output.info("Recovered \(recovered) key(s) from disk")
                print("")
            }
            LineEditor.start(words: ShellSession.words, historyPath: historyPath)
            // \u{1}…\u{2} tell libedit the colour codes take no room on screen.
            let prompt = output.colors ? "\u{1}\u{1B}[35m\u{2}walrus>\u{1}\u{1B}[0m\u{2} " : "walrus> "
            while let line = LineEditor.readLine(prompt: prompt) {
                if case .exit = session.run(line: line) { finish("Goodbye!") }
            }
            print("")  // end of input (Ctrl-D) leaves the cursor after the prompt
            finish("Goodbye!")
        } else {
            while let line = Swift.readLine(strippingNewline: true) {
                if case .exit = session.run(line: line) { finish(nil) }
            }
            finish(nil)
        }
    }
}

extension ShellSession: @unchecked Sendable {}

extension Walrus {
    /// "host:port" (the host may be a bracketed IPv6 literal) → (host, port).
    static func split(_ address: String) -> (String, Int)? {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
            (1...65535).contains(port)
        else { return nil }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : (host, port)
    }
}
