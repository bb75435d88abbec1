/// Durations for people: at most three significant digits, in s or ms.
public enum DurationFormat {
    /// `0.428 s`, `12.3 s`, `428 ms` style text for `seconds`.
    public static func seconds(_ seconds: Double) -> String {
        if seconds < 0 { return "never" }
        if seconds < 1 {
            let milliseconds = seconds * 1000
            return Self.significant(milliseconds) + " ms"
        }
        return Self.significant(seconds) + " s"
    }

    /// Three significant digits, no trailing zeros after the point.
    public static func significant(_ value: Double) -> String {
        if value == 0 { return "0" }
        let magnitude = abs(value)
        let digits = magnitude >= 100 ? 0 : magnitude >= 10 ? 1 : magnitude >= 1 ? 2 : 3
        let scale = [1, 10, 100, 1000][digits]
        let scaled = Int((magnitude * Double(scale)).rounded())
        var text = String(scaled / scale)
        if digits > 0 {
            var fraction = String(scaled % scale)
            fraction = String(repeating: "0", count: digits - fraction.count) + fraction
            while fraction.hasSuffix("0") { fraction.removeLast() }
            if !fraction.isEmpty { text += "." + fraction }
        }
        return (value < 0 ? "-" : "") + text
    }
}
