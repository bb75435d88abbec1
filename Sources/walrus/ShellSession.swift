/// Runs shell commands against a backend and prints the original's replies.
final class ShellSession {
    /// The command words, for completion.
    static let words = [
        "SET", "GET", "DELETE", "DEL", "HAS", "EXISTS", "KEYS", "LEN", "COUNT", "COMMIT", "CLEAR", "CLS", "HELP",
        "EXIT", "QUIT",
    ]

    let backend: any ShellBackend
    let output: ShellOutput
    /// Set once any command failed (usage, unknown command, storage error): the exit status.
    private(set) var failures = 0

    init(backend: any ShellBackend, output: ShellOutput) {
        self.backend = backend
        self.output = output
    }

    enum Outcome {
        case next
        case exit
    }

    /// Run one input line.
    func run(line: String) -> Outcome {
        let words: [[UInt8]]
        do {
            words = try ShellLine.split(line)
        } catch {
            self.fail("Error: \(error)")
            return .next
        }
        guard let first = words.first else { return .next }
        let command = String(decoding: first, as: UTF8.self).uppercased()
        let arguments = Array(words.dropFirst())
        do {
            return try self.run(command: command, arguments: arguments)
        } catch {
            self.fail("Error: \(error)")
            return .next
        }
    }

    private func run(command: String, arguments: [[UInt8]]) throws -> Outcome {
        switch command {
        case "SET":
            guard arguments.count >= 2 else { return self.usage("SET <key> <value>") }
            // The original joins every word after the key with one space: SET k a b c stores "a b c".
            let value = Array(arguments.dropFirst().joined(separator: [UInt8(ascii: " ")]))
            try self.backend.set(arguments[0], value)
            self.output.success("OK (set '\(Self.show(arguments[0]))' = '\(Self.show(value))')")
        case "GET":
            guard arguments.count == 1 else { return self.usage("GET <key>") }
            if let value = try self.backend.get(arguments[0]) {
                self.output.info(Self.show(value))
            } else {
                self.output.warning("Key '\(Self.show(arguments[0]))' not found")
            }
        case "DELETE", "DEL":
            guard arguments.count == 1 else { return self.usage("DELETE <key>") }
            if try self.backend.delete(arguments[0]) {
                self.output.success("OK (deleted '\(Self.show(arguments[0]))')")
            } else {
                self.output.warning("Key '\(Self.show(arguments[0]))' does not exist")
            }
        case "HAS", "EXISTS":
            guard arguments.count == 1 else { return self.usage("HAS <key>") }
            if try self.backend.has(arguments[0]) {
                self.output.success("Key '\(Self.show(arguments[0]))' exists")
            } else {
                self.output.warning("Key '\(Self.show(arguments[0]))' does not exist")
            }
        case "KEYS":
            guard arguments.isEmpty else { return self.usage("KEYS") }
            let keys = try self.backend.keys()
            if keys.isEmpty {
                self.output.warning("No keys stored")
            } else {
                self.output.line(self.output.paint("Keys (\(keys.count) total):", .bold))
                for (position, key) in keys.enumerated() {
                    self.output.line("  " + self.output.paint("\(position + 1).", .gray) + " " + Self.show(key))
                }
            }
        case "LEN", "COUNT":
            guard arguments.isEmpty else { return self.usage("LEN") }
            self.output.info("Total keys: \(try self.backend.count())")
        case "COMMIT":
            try self.backend.commit()
            self.output.success("OK (all writes flushed to disk)")
        case "CLEAR", "CLS":
            if self.output.colors {
                print("\u{1B}[H\u{1B}[2J", terminator: "")
                self.output.banner()
            }
        case "HELP", "?":
            self.output.help()
        case "EXIT", "QUIT", "Q":
            return .exit
        default:
            self.fail("Unknown command: \(command)")
            self.output.line("Type 'help' for available commands")
        }
        return .next
    }

    private func usage(_ text: String) -> Outcome {
        self.fail("Usage: \(text)")
        return .next
    }

    private func fail(_ text: String) {
        self.failures += 1
        self.output.error(text)
    }

    /// Bytes as text. Anything that is not valid UTF-8 without control characters is shown byte by
    /// byte, printable ASCII as is and the rest as \xHH (as redis-cli does).
    static func show(_ bytes: [UInt8]) -> String {
        let text = String(decoding: bytes, as: UTF8.self)
        if Array(text.utf8) == bytes && !bytes.contains(where: { $0 < 0x20 || $0 == 0x7F }) { return text }
        var shown = ""
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "\n"): shown += "\\n"
            case UInt8(ascii: "\r"): shown += "\\r"
            case UInt8(ascii: "\t"): shown += "\\t"
            case UInt8(ascii: "\\"): shown += "\\\\"
            case 0x20..<0x7F: shown.unicodeScalars.append(Unicode.Scalar(byte))
            default: shown += "\\x" + String(byte, radix: 16).leftPadded(2)
            }
        }
        return shown
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - self.count)) + self }
}
