import Foundation
import Logging
import Testing
import WALCore
import WalrusStore
import WalrusTestKit

/// The `walrus` shell as a person and a script use it: over a pipe and on a terminal.
@Suite(.serialized)
struct ShellTests {
    /// Piped input: the original's replies, one per command, no banner or colours, exit 0.
    @Test func pipedCommandsGetTheOriginalsReplies() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let data = directory.file("data")
        let script = """
            SET name jerk
            GET name
            SET k a b c
            GET k
            SET "spaced key" "two  spaces\\tand a tab"
            GET "spaced key"
            HAS name
            HAS nope
            KEYS
            LEN
            DELETE name
            DEL name
            GET name
            COMMIT

            """
        let result = try ShellProcess.runPiped(["--data", data], input: script, home: directory.path)
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(
            lines == [
                "OK (set 'name' = 'jerk')", "jerk", "OK (set 'k' = 'a b c')", "a b c",
                "OK (set 'spaced key' = 'two  spaces\\tand a tab')", "two  spaces\\tand a tab", "Key 'name' exists",
                "Key 'nope' does not exist", "Keys (3 total):", "  1. k", "  2. name", "  3. spaced key", "Total keys: 3",
                "OK (deleted 'name')", "Key 'name' does not exist", "Key 'name' not found", "OK (all writes flushed to disk)",
                "",
            ])
        #expect(!result.stdout.contains("\u{1B}["))
        // The data is there for the next run.
        let again = try ShellProcess.runPiped(["--data", data], input: "GET k\nLEN\n", home: directory.path)
        #expect(again.stdout == "a b c\nTotal keys: 2\n")
    }

    /// A failed command makes the exit status non-zero, and later commands still run.
    @Test func pipedFailuresSetTheExitStatus() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let result = try ShellProcess.runPiped(
            ["--data", directory.file("data")], input: "BOGUS\nSET onlykey\nSET a \"unterminated\nSET a 1\nGET a\n",
            home: directory.path)
        #expect(result.status == 1)
        #expect(result.stdout.contains("Unknown command: BOGUS"))
        #expect(result.stdout.contains("Usage: SET <key> <value>"))
        #expect(result.stdout.contains("Unterminated double quote"))
        #expect(result.stdout.hasSuffix("OK (set 'a' = '1')\n1\n"))
    }

    /// Writes made in interval mode are committed when input ends.
    @Test func intervalModeCommitsAtEndOfInput() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let data = directory.file("data")
        let result = try ShellProcess.runPiped(
            ["--data", data, "--fsync", "interval", "--fsync-interval", "60000"], input: "SET a 1\nSET b 2\n",
            home: directory.path)
        #expect(result.status == 0)
        let again = try ShellProcess.runPiped(["--data", data], input: "LEN\n", home: directory.path)
        #expect(again.stdout == "Total keys: 2\n")
    }

    /// On a terminal: banner, completion of command words, history recall with the Up arrow, and
    /// Ctrl-C ends the shell with "Goodbye!" after committing; the history file keeps the lines.
    @Test func terminalCompletionHistoryAndCtrlC() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let data = directory.file("data")
        _ = try ShellProcess.runPiped(["--data", data], input: "SET seed 1\n", home: directory.path)

        let terminal = try TerminalSession(arguments: ["--data", data, "--fsync", "interval", "--fsync-interval", "60000"], home: directory.path)
        try terminal.waitFor("Recovered 1 key(s) from disk")
        try terminal.waitFor("walrus>")
        // Tab completes "SE" to "SET "; the reply proves the command word was completed.
        terminal.type("SE\t")
        terminal.type("fruit apple\r")
        try terminal.waitFor("OK (set 'fruit' = 'apple')")
        try terminal.waitFor("walrus>")
        terminal.type("GET fruit\r")
        try terminal.waitFor("apple")
        try terminal.waitFor("walrus>")
        terminal.type("\u{1B}[A\r")  // Up arrow recalls "GET fruit"
        try terminal.waitFor("GET fruit")
        try terminal.waitFor("apple")
        try terminal.waitFor("walrus>")
        terminal.type("\u{03}")  // Ctrl-C
        try terminal.waitFor("Goodbye!")
        #expect(try terminal.waitForExit() == 0)

        let history = String(decoding: TestFiles.read(directory.file(".walrus_history")), as: UTF8.self)
        #expect(history.contains("GET\\040fruit"))
        // Ctrl-C committed the interval-mode write.
        let again = try ShellProcess.runPiped(["--data", data], input: "GET fruit\n", home: directory.path)
        #expect(again.stdout == "apple\n")
    }

    /// Ctrl-D on an empty line ends the shell the same way.
    @Test func terminalCtrlDSaysGoodbye() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let terminal = try TerminalSession(arguments: ["--data", directory.file("data")], home: directory.path)
        try terminal.waitFor("walrus>")
        terminal.type("SET x y\r")
        try terminal.waitFor("OK (set 'x' = 'y')")
        try terminal.waitFor("walrus>")
        terminal.type("\u{04}")
        try terminal.waitFor("Goodbye!")
        #expect(try terminal.waitForExit() == 0)
    }

    /// While a shell holds a directory, opening it in another process fails and names that pid.
    @Test func secondProcessIsRefusedNamingThePid() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let data = directory.file("data")
        let terminal = try TerminalSession(arguments: ["--data", data], home: directory.path)
        try terminal.waitFor("walrus>")
        // The holder wrote its pid into LOCK; it must be the walrus process, and the refusal names it.
        let pid = String(decoding: TestFiles.read(data + "/LOCK"), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let command = String(decoding: TestFiles.read("/proc/\(pid)/comm"), as: UTF8.self)
        #expect(command.hasPrefix("walrus"))
        do {
            let store = try KeyValueStore.open(StoreConfiguration(directory: data), logger: Logger(label: "t") { _ in SwiftLogNoOpLogHandler() })
            store.close()
            Issue.record("opened a directory another process holds")
        } catch let error as WALError {
            #expect(error.code == .directoryLocked)
            #expect(error.message.contains("process \(pid)"), "\(error.message)")
        }
        let piped = try ShellProcess.runPiped(["--data", data], input: "LEN\n", home: directory.path)
        #expect(piped.status == 2)
        #expect(piped.stdout.contains("is in use by process \(pid)"))
        terminal.type("EXIT\r")
        try terminal.waitFor("Goodbye!")
        #expect(try terminal.waitForExit() == 0)
    }
}
