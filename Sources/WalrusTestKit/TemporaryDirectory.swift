#if canImport(Glibc)
import Glibc
#endif

/// A fresh directory under $TMPDIR (or /tmp) for one test, removed with everything in it on `remove()`.
public struct TemporaryDirectory: Sendable {
    /// Its path.
    public let path: String

    /// Create one; `prefix` shows up in the name to tell tests apart.
    public init(prefix: String = "walrus-test") {
        let base = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        var template = Array("\(base)/\(prefix)-XXXXXX".utf8CString)
        let result = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(result != nil, "mkdtemp failed: \(errno)")
        self.path = String(cString: result!)
    }

    /// A path inside the directory.
    public func file(_ name: String) -> String { self.path + "/" + name }

    /// Remove the directory tree.
    public func remove() {
        Self.removeTree(self.path)
    }

    static func removeTree(_ path: String) {
        guard let dir = opendir(path) else {
            unlink(path)
            return
        }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(cString: $0.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name == "." || name == ".." { continue }
            let child = path + "/" + name
            if entry.pointee.d_type == UInt8(DT_DIR) { removeTree(child) } else { unlink(child) }
        }
        closedir(dir)
        rmdir(path)
    }

    /// The names in the directory, sorted.
    public func names() -> [String] {
        guard let dir = opendir(self.path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(cString: $0.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }
}

/// Whole-file helpers for building fixtures and damaging logs on purpose.
public enum TestFiles {
    /// Read a file's bytes.
    public static func read(_ path: String) -> [UInt8] {
        guard let file = fopen(path, "rb") else { return [] }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
        }
        return bytes
    }

    /// Replace a file's bytes.
    public static func write(_ path: String, _ bytes: [UInt8]) {
        let file = fopen(path, "wb")!
        _ = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        fclose(file)
    }

    /// Whether a path exists.
    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// Delete a file.
    public static func remove(_ path: String) { unlink(path) }
}
