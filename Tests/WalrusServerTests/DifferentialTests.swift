import Foundation
import Testing
import WalrusClient
import WalrusTestKit
#if canImport(Glibc)
import Glibc
#endif

/// Random command sequences over the implemented string and keyspace commands, sent to
/// redis-server 7.0 and to walrusd, replies compared. Seeded (the seed is printed on a failure;
/// WALRUS_DIFF_SEED replays one), bounded in count and time, in both fsync modes.
///
/// Replies are compared as decoded RESP values (type and bytes: a RESP reply has one encoding,
/// so that is byte for byte), with two exceptions that are about time, not semantics: a TTL/PTTL
/// in flight may differ by the milliseconds between the two requests (compared within 2 s), and
/// KEYS lists keys in table order, which differs between servers (compared as sets). The peer
/// runs with `databases 1`: walrus has one database, as it says.
struct DifferentialTests {
    /// A deterministic generator.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            self.state &+= 0x9E37_79B9_7F4A_7C15
            var z = self.state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// A redis-server 7.0 on a free port, stopped on deinit.
    final class RedisServer {
        let process = Process()
        let port: Int
        let directory = TemporaryDirectory(prefix: "redis-peer")

        init() throws {
            self.port = TestEnvironment.freePort()
            self.process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
            self.process.arguments = [
                "--port", "\(self.port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--databases", "1", "--dir", self.directory.path,
            ]
            self.process.standardOutput = FileHandle.nullDevice
            self.process.standardError = FileHandle.nullDevice
            try self.process.run()
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline {
                if let connection = try? RESPConnection(host: "127.0.0.1", port: self.port), (try? connection.command("PING")) == .simple("PONG") {
                    return
                }
                usleep(20_000)
            }
            throw RESPConnection.ConnectionError(description: "redis-server did not start (is redis-server installed? deploy/setup.sh installs it)")
        }

        deinit {
            kill(self.process.processIdentifier, SIGTERM)
            let deadline = Date().addingTimeInterval(10)
            while self.process.isRunning && Date() < deadline { usleep(10_000) }
            if self.process.isRunning { kill(self.process.processIdentifier, SIGKILL) }
            self.directory.remove()
        }
    }

    /// The next random command.
    static func command(_ random: inout SplitMix) -> [String] {
        func key() -> String { "k\(Int.random(in: 0..<8, using: &random))" }
        func value() -> String {
            switch Int.random(in: 0..<6, using: &random) {
            case 0: String(Int.random(in: -20...20, using: &random))
            case 1: String(Int.random(in: Int(Int64.max - 3)...Int(Int64.max), using: &random))
            case 2: ["1.5", "-0.25", "3e2", "10.6", "abc", "", " 1", "01", "+1", "inf"][Int.random(in: 0..<10, using: &random)]
            case 3: String(repeating: "x", count: Int.random(in: 0..<40, using: &random))
            default: ["hello", "world", "foo", "bar"][Int.random(in: 0..<4, using: &random)]
            }
        }
        func number() -> String { String(Int.random(in: -5...30, using: &random)) }
        // Deadlines far enough out that they cannot pass during the run.
        func seconds() -> String { String(Int.random(in: 500...5000, using: &random)) }
        let now = Int(Date().timeIntervalSince1970)
        let options: [[String]] = [[], ["NX"], ["XX"], ["GET"], ["EX", seconds()], ["PX", seconds() + "000"], ["KEEPTTL"],
            ["EXAT", String(now + 5000)], ["NX", "GET"], ["XX", "KEEPTTL"], ["EX", "0"], ["EX", "abc"], ["PX", "-1"], ["NX", "XX"],
            ["BOGUS"]]
        // (SET … EXAT in the past stores a key that is already expired; when it is deleted depends
        // on each server's active expiry timing, not on semantics: GETEX and EXPIREAT in the past,
        // which delete at once on both, are generated instead.)
        switch Int.random(in: 0..<44, using: &random) {
        case 0, 1, 2: return ["SET", key(), value()] + options[Int.random(in: 0..<options.count, using: &random)]
        case 3, 4: return ["GET", key()]
        case 5: return ["SETNX", key(), value()]
        case 6: return ["SETEX", key(), [seconds(), "0", "-3", "x"][Int.random(in: 0..<4, using: &random)], value()]
        case 7: return ["PSETEX", key(), seconds() + "000", value()]
        case 8: return ["GETSET", key(), value()]
        case 9: return ["GETDEL", key()]
        case 10: return ["GETEX", key()] + [[], ["PERSIST"], ["EX", seconds()], ["PX", "0"], ["EXAT", String(now - 5)], ["FOO"]][Int.random(in: 0..<6, using: &random)]
        case 11: return ["MSET", key(), value(), key(), value()]
        case 12: return ["MSETNX", key(), value(), key(), value()]
        case 13: return ["MGET", key(), key(), key()]
        case 14: return ["APPEND", key(), value()]
        case 15: return ["STRLEN", key()]
        case 16: return ["GETRANGE", key(), number(), number()]
        case 17: return ["SETRANGE", key(), String(Int.random(in: -1...20, using: &random)), value()]
        case 18: return ["INCR", key()]
        case 19: return ["DECR", key()]
        case 20: return ["INCRBY", key(), [number(), "9223372036854775807", "x", "-9223372036854775808"][Int.random(in: 0..<4, using: &random)]]
        case 21: return ["DECRBY", key(), number()]
        case 22: return ["INCRBYFLOAT", key(), ["0.1", "-1.5", "3", "1e400", "nan", "x", "10.5"][Int.random(in: 0..<7, using: &random)]]
        case 23: return ["LCS", key(), key()] + [[], ["LEN"], ["IDX"], ["IDX", "MINMATCHLEN", "2", "WITHMATCHLEN"]][Int.random(in: 0..<4, using: &random)]
        case 24: return ["DEL", key(), key()]
        case 25: return ["UNLINK", key()]
        case 26: return ["EXISTS", key(), key(), key()]
        case 27: return ["EXPIRE", key(), [seconds(), "-1", "0", "x"][Int.random(in: 0..<4, using: &random)]] + [[], ["NX"], ["XX"], ["GT"], ["LT"], ["NX", "XX"], ["GT", "LT"], ["ZZ"]][Int.random(in: 0..<8, using: &random)]
        case 28: return ["PEXPIRE", key(), seconds() + "000"]
        case 29: return ["EXPIREAT", key(), String(now + [5000, -100][Int.random(in: 0..<2, using: &random)])]
        case 30: return ["PERSIST", key()]
        case 31: return ["TTL", key()]
        case 32: return ["PTTL", key()]
        case 33: return ["TYPE", key()]
        case 34: return ["RENAME", key(), key()]
        case 35: return ["RENAMENX", key(), key()]
        case 36: return ["COPY", key(), key()] + [[], ["REPLACE"], ["DB", "0"], ["DB", "1"]][Int.random(in: 0..<4, using: &random)]
        case 37: return ["TOUCH", key(), key()]
        case 38: return ["DBSIZE"]
        case 39: return ["KEYS", ["*", "k[0-3]", "k?", "x*"][Int.random(in: 0..<4, using: &random)]]
        case 40: return ["SETBIT", key(), String(Int.random(in: 0..<40, using: &random)), ["0", "1", "2"][Int.random(in: 0..<3, using: &random)]]
        case 41: return [["GETBIT", key(), number()], ["BITCOUNT", key()], ["BITCOUNT", key(), "0", "-1", "BIT"], ["BITPOS", key(), "1"]][Int.random(in: 0..<4, using: &random)]
        case 42: return Int.random(in: 0..<30, using: &random) == 0 ? ["FLUSHALL"] : ["EXPIRETIME", key()]
        default: return [["SET"], ["GET"], ["INCR", "a", "b"], ["EXPIRE", "k1"], ["NOSUCHCOMMAND", "x"], ["MSET", "a"]][Int.random(in: 0..<6, using: &random)]
        }
    }

    /// Whether two replies agree, allowing for time in flight and key order; an EXEC's replies
    /// are compared one by one with the commands it ran.
    static func agree(_ command: [String], _ a: RESPValue, _ b: RESPValue, queued: [[String]] = []) -> Bool {
        if a == b { return true }
        if command[0] == "EXEC", case .array(let x?) = a, case .array(let y?) = b, x.count == y.count, x.count == queued.count {
            return zip(queued, zip(x, y)).allSatisfy { Self.agree($0, $1.0, $1.1) }
        }
        switch (command[0], a, b) {
        case ("TTL", .integer(let x), .integer(let y)) where x >= 0 && y >= 0: return abs(x - y) <= 2
        case ("PTTL", .integer(let x), .integer(let y)) where x >= 0 && y >= 0: return abs(x - y) <= 2000
        // A relative deadline (EXPIRE, SET EX) is fixed when each server runs the command, a few
        // milliseconds apart (more under ThreadSanitizer), so the absolute second can differ by one.
        case ("EXPIRETIME", .integer(let x), .integer(let y)) where x >= 0 && y >= 0: return abs(x - y) <= 2
        case ("PEXPIRETIME", .integer(let x), .integer(let y)) where x >= 0 && y >= 0: return abs(x - y) <= 2000
        case ("KEYS", .array(let x?), .array(let y?)):
            return Set(x.map(\.description)) == Set(y.map(\.description)) && x.count == y.count
        default: return false
        }
    }

    @Test(.serverTest, arguments: ["always", "interval"])
    func repliesMatchRedis(fsync: String) throws {
        let seed = ProcessInfo.processInfo.environment["WALRUS_DIFF_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1...UInt64.max)
        let redis = try RedisServer()
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let walrus = try DaemonProcess(data: directory.path, arguments: ["--fsync", fsync, "--fsync-interval", "20"])
        defer { walrus.stop() }
        let toRedis = try RESPConnection(host: "127.0.0.1", port: redis.port)
        let toWalrus = try walrus.connect()
        var random = SplitMix(state: seed)
        let deadline = Date().addingTimeInterval(60)
        var sent = 0
        var history: [String] = []
        for step in 0..<4000 where Date() < deadline {
            var batch = [Self.command(&random)]
            // Now and then a transaction around a few commands (and sometimes a broken one).
            if Int.random(in: 0..<25, using: &random) == 0 {
                batch = [["MULTI"]] + (0..<Int.random(in: 1...4, using: &random)).map { _ in Self.command(&random) } + [["EXEC"]]
            }
            var queued: [[String]] = []
            for command in batch {
                if command[0] != "MULTI" && command[0] != "EXEC" { queued.append(command) }
                let bytes = command.map { Array($0.utf8) }
                let expected = try toRedis.command(bytes)
                history.append(command.joined(separator: " "))
                if history.count > 12 { history.removeFirst() }
                let got: RESPValue
                do {
                    got = try toWalrus.command(bytes)
                } catch {
                    Issue.record(
                        """
                        step \(step), seed \(seed) (WALRUS_DIFF_SEED=\(seed) replays it), fsync \(fsync): walrusd: \(error)
                        last commands: \(history.joined(separator: " | "))
                        """)
                    return
                }
                sent += 1
                guard Self.agree(command, expected, got, queued: queued) else {
                    Issue.record(
                        """
                        step \(step), seed \(seed) (WALRUS_DIFF_SEED=\(seed) replays it), fsync \(fsync):
                        \(command.joined(separator: " "))
                          redis-server: \(expected)
                          walrusd:      \(got)
                        last commands: \(history.joined(separator: " | "))
                        """)
                    return
                }
            }
        }
        #expect(sent > 500, "only \(sent) commands were compared in the time allowed")
        // The end states agree too.
        #expect(try toRedis.command("DBSIZE") == toWalrus.command("DBSIZE"))
    }
}
