#if canImport(Glibc)
import Glibc
#endif

/// Where the shell prints, with the original's colours when (and only when) stdout is a terminal.
struct ShellOutput: Sendable {
    enum Style: String {
        case success = "\u{1B}[32m"
        case error = "\u{1B}[31m"
        case info = "\u{1B}[36m"
        case warning = "\u{1B}[33m"
        case gray = "\u{1B}[37m"
        case bold = "\u{1B}[1m"
        case purple = "\u{1B}[35m"
    }

    static let reset = "\u{1B}[0m"
    var colors: Bool

    func paint(_ text: String, _ style: Style) -> String {
        self.colors ? style.rawValue + text + Self.reset : text
    }

    func line(_ text: String, _ style: Style? = nil) {
        let painted = style.map { self.paint(text, $0) } ?? text
        print(painted)
        fflush(nil)
    }

    func success(_ text: String) { self.line(text, .success) }
    func error(_ text: String) { self.line(text, .error) }
    func info(_ text: String) { self.line(text, .info) }
    func warning(_ text: String) { self.line(text, .warning) }

    func banner() {
        let art = #"""
             ___       __   ________  ___       ________  ___  ___  ________
            |\  \     |\  \|\   __  \|\  \     |\   __  \|\  \|\  \|\   ____\
            \ \  \    \ \  \ \  \|\  \ \  \    \ \  \|\  \ \  \\\  \ \  \___|_
             \ \  \  __\ \  \ \   __  \ \  \    \ \   _  _\ \  \\\  \ \_____  \
              \ \  \|\__\_\  \ \  \ \  \ \  \____\ \  \\  \\ \  \\\  \|____|\  \
               \ \____________\ \__\ \__\ \_______\ \__\\ _\\ \_______\____\_\  \
                \|____________|\|__|\|__|\|_______|\|__|\|__|\|_______|\_________\
                                                                      \|_________|

            """#
        print(self.paint(art, .info))
        print(self.paint("A persistent key-value store with a write-ahead log", .gray))
        print(self.paint("Type 'help' for available commands", .gray))
        print("")
        fflush(nil)
    }

    func help() {
        let commands: [(String, String)] = [
            ("SET", "<key> <value>     Store a key-value pair"),
            ("GET", "<key>             Retrieve value for a key"),
            ("DELETE", "<key>          Remove a key (also DEL)"),
            ("HAS", "<key>             Check if key exists (also EXISTS)"),
            ("KEYS", "                 List all keys"),
            ("LEN", "                  Show number of keys (also COUNT)"),
            ("COMMIT", "               Flush all pending writes"),
            ("CLEAR", "                Clear the screen (also CLS)"),
            ("HELP", "                 Show this help message (also ?)"),
            ("EXIT", "                 Exit the CLI (also QUIT, Q)"),
        ]
        print("")
        print(self.paint("Available Commands:", .bold))
        print("")
        for (word, rest) in commands { print("  " + self.paint(word, .success) + " " + rest) }
        print("")
        print(self.paint("Examples:", .bold))
        print("  walrus> SET name jerk")
        print("  walrus> SET greeting \"hello world\\n\"")
        print("  walrus> GET name")
        print("  walrus> DELETE name")
        print("  walrus> KEYS")
        print("")
        fflush(nil)
    }
}
