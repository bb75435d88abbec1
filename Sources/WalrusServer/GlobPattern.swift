/// Redis's glob for `KEYS`: `*`, `?`, `[abc]`, `[^a]`, `[a-z]`, and `\` to escape.
enum GlobPattern {
    static func matches(_ pattern: [UInt8], _ text: UnsafeRawBufferPointer) -> Bool {
        Self.match(pattern[...], text, 0)
    }

    private static func match(_ pattern: ArraySlice<UInt8>, _ text: UnsafeRawBufferPointer, _ start: Int) -> Bool {
        var p = pattern.startIndex
        var t = start
        while p < pattern.endIndex {
            let c = pattern[p]
            switch c {
            case UInt8(ascii: "*"):
                // Collapse runs of stars; then try every split point.
                while p < pattern.endIndex && pattern[p] == UInt8(ascii: "*") { p += 1 }
                if p == pattern.endIndex { return true }
                for next in t...text.count where Self.match(pattern[p...], text, next) { return true }
                return false
            case UInt8(ascii: "?"):
                guard t < text.count else { return false }
                t += 1
                p += 1
            case UInt8(ascii: "["):
                guard t < text.count else { return false }
                var q = p + 1
                let negate = q < pattern.endIndex && pattern[q] == UInt8(ascii: "^")
                if negate { q += 1 }
                var matched = false
                while q < pattern.endIndex && pattern[q] != UInt8(ascii: "]") {
                    if pattern[q] == UInt8(ascii: "\\") && q + 1 < pattern.endIndex {
                        q += 1
                        if pattern[q] == text[t] { matched = true }
                    } else if q + 2 < pattern.endIndex && pattern[q + 1] == UInt8(ascii: "-") && pattern[q + 2] != UInt8(ascii: "]") {
                        let (low, high) = (min(pattern[q], pattern[q + 2]), max(pattern[q], pattern[q + 2]))
                        if text[t] >= low && text[t] <= high { matched = true }
                        q += 2
                    } else if pattern[q] == text[t] {
                        matched = true
                    }
                    q += 1
                }
                if matched == negate { return false }
                t += 1
                p = q < pattern.endIndex ? q + 1 : q
            case UInt8(ascii: "\\") where p + 1 < pattern.endIndex:
                guard t < text.count, text[t] == pattern[p + 1] else { return false }
                t += 1
                p += 2
            default:
                guard t < text.count, text[t] == c else { return false }
                t += 1
                p += 1
            }
        }
        return t == text.count
    }
}
