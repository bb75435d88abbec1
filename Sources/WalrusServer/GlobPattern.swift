/// Redis's glob (KEYS, SCAN MATCH, PSUBSCRIBE, CONFIG GET): `*`, `?`, `[abc]`, `[^a]`, `[a-z]`,
/// and `\` to escape.
///
/// Matching backtracks only to the last `*` seen (the classic wildcard algorithm), so a pattern
/// like `a*a*a*a*…b` against a long string costs O(pattern × text), not exponential time.
enum GlobPattern {
    static func matches(_ pattern: [UInt8], _ text: UnsafeRawBufferPointer) -> Bool {
        pattern.withUnsafeBytes { Self.matches(pattern: $0, text) }
    }

    static func matches(pattern: UnsafeRawBufferPointer, _ text: UnsafeRawBufferPointer) -> Bool {
        var p = 0
        var t = 0
        // Where to resume after the last star: the pattern after it, and the text it swallows to.
        var starPattern = -1
        var starText = 0
        while t < text.count {
            if p < pattern.count {
                let c = pattern[p]
                if c == UInt8(ascii: "*") {
                    while p < pattern.count && pattern[p] == UInt8(ascii: "*") { p += 1 }
                    if p == pattern.count { return true }
                    starPattern = p
                    starText = t
                    continue
                }
                if let next = Self.step(pattern, p, text[t]) {
                    p = next
                    t += 1
                    continue
                }
            }
            // Mismatch: let the last star swallow one more byte, or fail.
            guard starPattern >= 0 else { return false }
            starText += 1
            t = starText
            p = starPattern
        }
        while p < pattern.count && pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.count
    }

    /// If the pattern element at `p` matches `byte`, the position after it.
    private static func step(_ pattern: UnsafeRawBufferPointer, _ p: Int, _ byte: UInt8) -> Int? {
        switch pattern[p] {
        case UInt8(ascii: "?"):
            return p + 1
        case UInt8(ascii: "["):
            var q = p + 1
            let negate = q < pattern.count && pattern[q] == UInt8(ascii: "^")
            if negate { q += 1 }
            var matched = false
            while q < pattern.count && pattern[q] != UInt8(ascii: "]") {
                if pattern[q] == UInt8(ascii: "\\") && q + 1 < pattern.count {
                    q += 1
                    if pattern[q] == byte { matched = true }
                } else if q + 2 < pattern.count && pattern[q + 1] == UInt8(ascii: "-") && pattern[q + 2] != UInt8(ascii: "]") {
                    let (low, high) = (min(pattern[q], pattern[q + 2]), max(pattern[q], pattern[q + 2]))
                    if byte >= low && byte <= high { matched = true }
                    q += 2
                } else if pattern[q] == byte {
                    matched = true
                }
                q += 1
            }
            guard matched != negate else { return nil }
            return q < pattern.count ? q + 1 : q
        case UInt8(ascii: "\\") where p + 1 < pattern.count:
            return pattern[p + 1] == byte ? p + 2 : nil
        default:
            return pattern[p] == byte ? p + 1 : nil
        }
    }
}
