import WALCore

/// The config file: `key = value` lines, a flat subset of TOML (strings in double quotes,
/// integers with optional underscores, comments with #). Every key is one of `DaemonSettings.keys`;
/// an unknown key is an error, never silently ignored.
extension DaemonSettings {
    /// Apply the lines of the file at `path`.
    public mutating func apply(file path: String) throws {
        let bytes: [UInt8]
        do {
            bytes = try FileIO.readFile(path)
        } catch let error as WALError {
            throw FileError(description: "Cannot read the config file \(path): \(FileIO.describe(error.errno ?? 0)).")
        }
        try self.apply(text: String(decoding: bytes, as: UTF8.self), source: path)
    }

    /// Apply config-file text; mistakes name `source`, the line and what to do.
    public mutating func apply(text: String, source: String) throws {
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = Self.stripComment(String(rawLine)).trimmed(" \t\r")
            if line.isEmpty { continue }
            func fail(_ why: String) -> FileError {
                FileError(description: "\(source), line \(number + 1): \(why) ('\(line)'). Fix the line or remove it.")
            }
            if line.hasPrefix("[") { throw fail("tables are not used by walrusd; every key is at the top level") }
            guard let equals = line.firstIndex(of: "=") else { throw fail("expected key = value") }
            let key = String(line[..<equals]).trimmed(" \t")
            let raw = String(line[line.index(after: equals)...]).trimmed(" \t")
            let value: String
            if raw.hasPrefix("\"") {
                guard raw.count >= 2, raw.hasSuffix("\"") else { throw fail("unterminated string") }
                value = String(raw.dropFirst().dropLast()).replacing("\\\"", with: "\"").replacing("\\\\", with: "\\")
            } else {
                value = raw
            }
            do {
                try self.set(key, value)
            } catch let error as FileError {
                throw fail(error.description)
            }
        }
    }

    /// Settings from a config file (if any) and `--key value` / `--key=value` flags (flags win).
    /// A flag that is not a key is an error naming it.
    public static func resolve(file: String?, flags: [String]) throws -> DaemonSettings {
        var settings = DaemonSettings()
        if let file { try settings.apply(file: file) }
        var index = 0
        while index < flags.count {
            let word = flags[index]
            guard word.hasPrefix("--") else {
                throw FileError(description: "unexpected argument '\(word)'; every setting is a --key value flag (see --help)")
            }
            var name = String(word.dropFirst(2))
            var value: String
            if let equals = name.firstIndex(of: "=") {
                value = String(name[name.index(after: equals)...])
                name = String(name[..<equals])
            } else {
                guard index + 1 < flags.count else { throw FileError(description: "--\(name) needs a value") }
                value = flags[index + 1]
                index += 1
            }
            guard Self.keys.contains(where: { $0.name == name }) else {
                throw FileError(description: "unknown option '--\(name)' (see --help for every key)")
            }
            do {
                try settings.set(name, value)
            } catch let error as FileError {
                throw FileError(description: "--\(name): \(error.description)")
            }
            index += 1
        }
        return settings
    }

    /// Every key as `--help` lists it.
    public static var flagHelp: String {
        Self.keys.map { key in
            "  --\(key.name) <\(key.type.replacing("`", with: "").replacing("\\|", with: "|"))>  \(key.doc.replacing("`", with: "")) "
                + "(default \(key.defaultText.replacing("`", with: ""))\(key.live ? "; live on reload" : ""))"
        }.joined(separator: "\n")
    }

    private static func stripComment(_ line: String) -> String {
        var inString = false
        var previous: Character = " "
        for (offset, character) in line.enumerated() {
            if character == "\"" && previous != "\\" { inString.toggle() }
            if character == "#" && !inString { return String(line.prefix(offset)) }
            previous = character
        }
        return line
    }
}

extension String {
    func trimmed(_ set: String) -> String {
        var result = Substring(self)
        while let first = result.first, set.contains(first) { result.removeFirst() }
        while let last = result.last, set.contains(last) { result.removeLast() }
        return String(result)
    }
}
