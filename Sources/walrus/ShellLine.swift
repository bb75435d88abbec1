/// Splits a shell line into words: whitespace separates, double quotes group and take escapes
/// (`\"`, `\\`, `\n`, `\r`, `\t`, `\xHH`), single quotes group literally (as in redis-cli).
enum ShellLine {
    /// A line that cannot be split.
    struct SyntaxError: Error, CustomStringConvertible {
        var description: String
    }

    static func split(_ line: String) throws -> [[UInt8]] {
        var words: [[UInt8]] = []
        var current: [UInt8] = []
        var inWord = false
        var bytes = Array(line.utf8)[...]
        while let byte = bytes.popFirst() {
            switch byte {
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"), UInt8(ascii: "\n"):
                if inWord {
                    words.append(current)
                    current = []
                    inWord = false
                }
            case UInt8(ascii: "\""):
                inWord = true
                var closed = false
                while let next = bytes.popFirst() {
                    if next == UInt8(ascii: "\"") {
                        closed = true
                        break
                    }
                    guard next == UInt8(ascii: "\\") else {
                        current.append(next)
                        continue
                    }
                    guard let escaped = bytes.popFirst() else { break }
                    switch escaped {
                    case UInt8(ascii: "n"): current.append(10)
                    case UInt8(ascii: "r"): current.append(13)
                    case UInt8(ascii: "t"): current.append(9)
                    case UInt8(ascii: "0"): current.append(0)
                    case UInt8(ascii: "x"):
                        let hex = String(decoding: bytes.prefix(2), as: UTF8.self)
                        guard hex.count == 2, let value = UInt8(hex, radix: 16) else {
                            throw SyntaxError(description: "Bad escape \\x\(hex): use two hex digits, e.g. \\x0a")
                        }
                        bytes = bytes.dropFirst(2)
                        current.append(value)
                    default: current.append(escaped)
                    }
                }
                guard closed else { throw SyntaxError(description: "Unterminated double quote") }
            case UInt8(ascii: "'"):
                inWord = true
                var closed = false
                while let next = bytes.popFirst() {
                    if next == UInt8(ascii: "'") {
                        closed = true
                        break
                    }
                    current.append(next)
                }
                guard closed else { throw SyntaxError(description: "Unterminated single quote") }
            default:
                inWord = true
                current.append(byte)
            }
        }
        if inWord { words.append(current) }
        return words
    }
}
