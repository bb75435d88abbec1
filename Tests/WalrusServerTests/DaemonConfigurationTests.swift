import Logging
import Testing
@testable import walrusd
import WalrusServer

/// The config file: every key, flags over the file, and clear errors with file and line.
struct DaemonConfigurationTests {
    /// The shipped example file parses and holds the defaults.
    @Test func exampleConfigParses() throws {
        var configuration = DaemonConfiguration()
        let example = SystemdIntegrationTests.repositoryRoot.appendingPathComponent("deploy/walrusd.toml").path
        try configuration.apply(file: example)
        #expect(configuration.port == 7379 && configuration.fsync == "always" && configuration.logLevel == .info)
        #expect(configuration.segmentSize == 10 * 1024 * 1024 && configuration.maxClients == 10_000)
    }

    /// Every config key is also a flag with the same meaning (README: "every option is a flag").
    @Test(arguments: [
        ("data", "/tmp/x"), ("bind", "0.0.0.0"), ("port", "7001"), ("control-socket", "/tmp/c.sock"),
        ("fsync", "interval"), ("fsync-interval", "50"), ("max-clients", "9"), ("idle-timeout", "30"),
        ("event-loops", "3"), ("log-level", "debug"), ("segment-size", "8192"), ("max-key-bytes", "100"),
        ("max-value-bytes", "1000"), ("retention-bytes", "4096"), ("retention-seconds", "60"), ("repl-bind", "0.0.0.0"),
        ("repl-port", "7002"), ("follow", "10.0.0.1:7380"), ("sync-replicas", "1"), ("sync-replicas-timeout", "99"),
        ("repl-auth-file", "/tmp/secret"), ("repl-timeout", "1000"), ("metrics-port", "9379"), ("metrics-bind", "0.0.0.0"),
        ("repl-snapshot-rate", "1000000"), ("repl-retention-bytes", "4096"), ("repl-retention-seconds", "60"),
    ])
    func everyKeyIsAFlag(key: String, value: String) throws {
        let fromFlag = try Walrusd.parse(["--\(key)", value]).resolve()
        #expect(fromFlag.changedKeys(from: DaemonConfiguration()) == [key])
        var fromFile = DaemonConfiguration()
        let literal = Int(value) != nil ? value : "\"\(value)\""
        try fromFile.apply(text: "\(key) = \(literal)", source: "walrusd.toml")
        #expect(fromFlag.changedKeys(from: fromFile).isEmpty)
    }

    /// Strings, integers with underscores, comments (not inside strings).
    @Test func parsesTheFlatTOMLSubset() throws {
        var configuration = DaemonConfiguration()
        try configuration.apply(
            text: """
                # comment
                bind = "0.0.0.0"   # trailing comment
                port = 7_380
                data = "/srv/wal#rus"
                fsync = "interval"
                fsync-interval = 50
                log-level = "warning"
                """, source: "test.toml")
        #expect(configuration.bind == "0.0.0.0" && configuration.port == 7380 && configuration.data == "/srv/wal#rus")
        #expect(configuration.fsync == "interval" && configuration.fsyncInterval == 50 && configuration.logLevel == .warning)
    }

    /// Mistakes name the file, the line and the problem; nothing is silently ignored.
    @Test(arguments: [
        ("port = 70000", "line 1: port must be an integer in 0…65535"),
        ("fsync = \"sometimes\"", "fsync must be \"always\" or \"interval\""),
        ("colour = \"blue\"", "unknown key 'colour'"),
        ("[server]", "tables are not used"),
        ("port 7379", "expected key = value"),
        ("bind = \"open", "unterminated string"),
        ("follow = \"10.0.0.1\"", "follow must be host:port"),
        ("sync-replicas = -1", "sync-replicas must be an integer"),
        ("metrics-port = 99999", "metrics-port must be an integer in 0…65535"),
    ])
    func reportsMistakes(line: String, expected: String) {
        var configuration = DaemonConfiguration()
        do {
            try configuration.apply(text: line, source: "walrusd.toml")
            Issue.record("accepted \(line)")
        } catch {
            #expect("\(error)".contains("walrusd.toml"), "\(error)")
            #expect("\(error)".contains(expected), "\(error)")
        }
    }

    /// A reload can tell which keys changed.
    @Test func changedKeys() throws {
        let before = DaemonConfiguration()
        var after = before
        try after.set("log-level", "debug")
        try after.set("port", "1234")
        #expect(after.changedKeys(from: before) == ["port", "log-level"])
    }
}

/// The README's key table is the key table: every key, its type, default, liveness and meaning
/// (DaemonSettings.keys), so the two cannot drift apart.
struct ConfigKeyTableTests {
    @Test func readmeTableIsTheKeyTable() throws {
        let readme = try String(contentsOf: SystemdIntegrationTests.repositoryRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let lines = readme.components(separatedBy: "\n")
        guard let start = lines.firstIndex(where: { $0.hasPrefix("| key / flag |") }) else {
            Issue.record("README has no key table")
            return
        }
        let table = lines[start...].prefix { $0.hasPrefix("|") }.joined(separator: "\n")
        #expect(table == DaemonSettings.markdownTable, "README's key table differs from DaemonSettings.keys; it should be:\n\(DaemonSettings.markdownTable)")
    }

    /// Every key is reachable under its Redis name too, where it has one (CONFIG GET/SET).
    @Test func redisNamesResolve() {
        for key in DaemonSettings.keys {
            if let redis = key.redisName { #expect(DaemonSettings.key(redis)?.name == key.name) }
            #expect(DaemonSettings.key(key.name)?.name == key.name)
        }
    }
}
