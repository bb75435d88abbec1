@preconcurrency import CEditLine
#if canImport(Glibc)
import Glibc
#endif

/// Line editing through libedit's readline interface: history in a file, tab completion of the
/// command words.
enum LineEditor {
    nonisolated(unsafe) private static var completionWords: [String] = []

    /// Set up completion and load the history file.
    static func start(words: [String], historyPath: String) {
        completionWords = words
        rl_readline_name = UnsafePointer(strdup("walrus"))
        // We handle SIGINT ourselves (see `ShellSignals`), so libedit must not install handlers.
        rl_catch_signals = 0
        rl_attempted_completion_function = { text, start, _ in
            // Only the first word is a command.
            guard start == 0, let text else { return nil }
            rl_attempted_completion_over = 1
            return rl_completion_matches(text) { partial, state in
                // libedit calls us with state 0, 1, 2, … until we return nil.
                guard let partial else { return nil }
                let prefix = String(cString: partial).uppercased()
                let matches = LineEditor.completionWords.filter { $0.hasPrefix(prefix) }
                guard Int(state) < matches.count else { return nil }
                return strdup(matches[Int(state)])
            }
        }
        _ = read_history(historyPath)
    }

    /// Read one line; nil at end of input (Ctrl-D).
    static func readLine(prompt: String) -> String? {
        guard let raw = readline(prompt) else { return nil }
        defer { free(raw) }
        let line = String(cString: raw)
        if !line.allSatisfy(\.isWhitespace) { add_history(raw) }
        return line
    }

    /// Save the history (the last 1000 lines).
    static func save(historyPath: String) {
        _ = write_history(historyPath)
        _ = history_truncate_file(historyPath, 1000)
    }
}
