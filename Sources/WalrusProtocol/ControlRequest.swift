import Foundation

/// One control-socket request (one JSON object per line), checked before anything runs: the
/// verb is known and every argument has the type and range it needs. What `walrusctl` sends.
public enum ControlRequest: Sendable, Equatable, Encodable {
    case status
    case flush
    case checkpoint
    /// Read the level (nil) or set it (the name is checked by the daemon against swift-log's).
    case logLevel(String?)
    case reload
    case replicas
    case digest
    case promote(force: Bool)
    case follow(host: String, port: Int)
    case switchover(target: String, timeoutMilliseconds: Int)

    public static let verbs = [
        "status", "flush", "checkpoint", "log-level", "reload", "replicas", "digest", "promote", "follow", "switchover",
    ]

    /// A request refused before it runs, with what to send instead.
    public struct Invalid: Error, Sendable, Equatable {
        public var message: String
        public init(_ message: String) { self.message = message }
    }

    /// The deepest JSON nesting looked at; a request never needs more than 2.
    static let maxDepth = 16

    /// Parse one request line (without its newline).
    public static func parse(_ line: some Collection<UInt8>) throws(Invalid) -> ControlRequest {
        let bytes = Data(line)
        // Foundation's parser recurses once per level: bound the nesting before handing it over.
        guard Self.nestingDepth(bytes) <= Self.maxDepth else {
            throw Invalid("The request nests deeper than \(Self.maxDepth) levels; send one flat JSON object per line, e.g. {\"verb\":\"status\"}.")
        }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: bytes)
        } catch {
            throw Invalid("The request is not valid JSON (\(error.localizedDescription)); send one JSON object per line, e.g. {\"verb\":\"status\"}.")
        }
        guard let request = object as? [String: Any] else {
            throw Invalid("The request is not a JSON object; send e.g. {\"verb\":\"status\"}.")
        }
        guard let verb = request["verb"] as? String else {
            throw Invalid("The request has no \"verb\"; send one JSON object per line, e.g. {\"verb\":\"status\"}.")
        }
        switch verb {
        case "status": return .status
        case "flush": return .flush
        case "checkpoint": return .checkpoint
        case "reload": return .reload
        case "replicas": return .replicas
        case "digest": return .digest
        case "log-level":
            guard let level = request["level"] else { return .logLevel(nil) }
            guard let name = level as? String else { throw Invalid("\"level\" must be a string such as \"debug\".") }
            return .logLevel(name)
        case "promote":
            guard let force = request["force"] else { return .promote(force: false) }
            guard let flag = force as? Bool else { throw Invalid("\"force\" must be true or false.") }
            return .promote(force: flag)
        case "follow":
            guard let target = request["target"] as? String, let (host, port) = Self.hostPort(target) else {
                throw Invalid("follow needs \"target\": \"HOST:PORT\" (the primary's replication port, e.g. 10.0.0.1:7380).")
            }
            return .follow(host: host, port: port)
        case "switchover":
            guard let target = request["target"] as? String, !target.isEmpty else {
                throw Invalid("switchover needs \"target\": a follower's node id or host:port (see 'walrusctl replicas').")
            }
            var timeout = 10_000
            if let given = request["timeoutMilliseconds"] {
                guard let value = given as? Int, (1...3_600_000).contains(value) else {
                    throw Invalid("\"timeoutMilliseconds\" must be an integer from 1 to 3600000.")
                }
                timeout = value
            }
            return .switchover(target: target, timeoutMilliseconds: timeout)
        default:
            throw Invalid("Unknown verb '\(verb.prefix(64))'; the verbs are: \(Self.verbs.joined(separator: ", ")).")
        }
    }

    private enum Field: String, CodingKey { case verb, level, force, target, timeoutMilliseconds }

    /// The request as one JSON object (what walrusctl sends; `parse` reads it back).
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Field.self)
        switch self {
        case .status: try container.encode("status", forKey: .verb)
        case .flush: try container.encode("flush", forKey: .verb)
        case .checkpoint: try container.encode("checkpoint", forKey: .verb)
        case .reload: try container.encode("reload", forKey: .verb)
        case .replicas: try container.encode("replicas", forKey: .verb)
        case .digest: try container.encode("digest", forKey: .verb)
        case .logLevel(let level):
            try container.encode("log-level", forKey: .verb)
            try container.encodeIfPresent(level, forKey: .level)
        case .promote(let force):
            try container.encode("promote", forKey: .verb)
            try container.encode(force, forKey: .force)
        case .follow(let host, let port):
            try container.encode("follow", forKey: .verb)
            try container.encode(host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)", forKey: .target)
        case .switchover(let target, let timeout):
            try container.encode("switchover", forKey: .verb)
            try container.encode(target, forKey: .target)
            try container.encode(timeout, forKey: .timeoutMilliseconds)
        }
    }

    /// The request line: its JSON and a newline.
    public var line: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(self)) ?? Data()) + [10]
    }

    /// `HOST:PORT` or `[IPv6]:PORT`, port 1…65535, host not empty.
    public static func hostPort(_ target: String) -> (String, Int)? {
        guard let colon = target.lastIndex(of: ":"), colon > target.startIndex,
            let port = Int(target[target.index(after: colon)...]), (1...65535).contains(port)
        else { return nil }
        var host = String(target[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : (host, port)
    }

    /// The deepest `[`/`{` nesting outside strings.
    static func nestingDepth(_ bytes: Data) -> Int {
        var depth = 0
        var deepest = 0
        var inString = false
        var escaped = false
        for byte in bytes {
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                deepest = max(deepest, depth)
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
            default: break
            }
        }
        return deepest
    }
}
