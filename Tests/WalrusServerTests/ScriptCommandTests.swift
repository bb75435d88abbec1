import Logging
import Testing
import WalrusServer
import WalrusStore
import WalrusTestKit

/// EVAL's conversions, sandbox and bad input, in-process (CommandRunner, no socket): the RESP
/// bytes a client would read, compared with what redis-server 7.0 answers.
struct ScriptCommandTests {
    private func withRunner(_ body: (CommandRunner) throws -> Void) throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var configuration = StoreConfiguration(directory: directory.path)
        configuration.wal.fsyncMode = .interval(milliseconds: 1000)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let store = try KeyValueStore.open(configuration, logger: logger)
        defer { store.close() }
        let runner = CommandRunner(store: store, scriptTimeLimitMilliseconds: 500)
        try body(runner)
        runner.end()
    }

    private func reply(_ runner: CommandRunner, _ words: String...) -> String {
        String(decoding: runner.run(words.map { Array($0.utf8) }), as: UTF8.self)
    }

    @Test func conversionsBothWays() throws {
        try self.withRunner { r in
            #expect(self.reply(r, "EVAL", "return 100.5", "0") == ":100\r\n")
            #expect(self.reply(r, "EVAL", "return -3.9", "0") == ":-3\r\n")
            #expect(self.reply(r, "EVAL", "return 'hello'", "0") == "$5\r\nhello\r\n")
            #expect(self.reply(r, "EVAL", "return true", "0") == ":1\r\n")
            #expect(self.reply(r, "EVAL", "return false", "0") == "$-1\r\n")
            #expect(self.reply(r, "EVAL", "return nil", "0") == "$-1\r\n")
            #expect(self.reply(r, "EVAL", "return {ok='fine'}", "0") == "+fine\r\n")
            #expect(self.reply(r, "EVAL", "return {err='MYERR bad\\r\\nthing'}", "0") == "-MYERR bad  thing\r\n")
            // Arrays stop at the first nil.
            #expect(self.reply(r, "EVAL", "return {1,2,nil,4}", "0") == "*2\r\n:1\r\n:2\r\n")
            #expect(self.reply(r, "EVAL", "return {1,{2,'x'},{}}", "0") == "*3\r\n:1\r\n*2\r\n:2\r\n$1\r\nx\r\n*0\r\n")
            #expect(self.reply(r, "EVAL", "return {KEYS[1],KEYS[2],ARGV[1]}", "2", "a", "b", "c") == "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n")
            // Replies to Lua: integer → number, bulk → string, nil → false, status → {ok}, error → {err}.
            #expect(self.reply(r, "SET", "n", "41") == "+OK\r\n")
            #expect(self.reply(r, "EVAL", "return type(redis.call('INCR','n'))", "0") == "$6\r\nnumber\r\n")
            #expect(self.reply(r, "EVAL", "return redis.call('GET','missing') == false", "0") == ":1\r\n")
            #expect(self.reply(r, "EVAL", "return redis.call('SET','s','v').ok", "0") == "$2\r\nOK\r\n")
            #expect(
                self.reply(r, "EVAL", "return redis.pcall('INCR','s').err", "0") == "$43\r\nERR value is not an integer or out of range\r\n")
            #expect(self.reply(r, "EVAL", "return redis.call('MGET','n','missing','s')", "0") == "*3\r\n$2\r\n42\r\n$-1\r\n$1\r\nv\r\n")
            // Numbers go to commands with 17 digits (Lua's own format would lose precision).
            #expect(self.reply(r, "EVAL", "redis.call('SET','big',9007199254740991) return redis.call('GET','big')", "0") == "$16\r\n9007199254740991\r\n")
            // Whole numbers below 2^53 are formatted without snprintf; the rest, and -0, with it.
            // Each as redis-server 7.0 stores it.
            for (number, stored) in [
                ("60000", "60000"), ("-12345", "-12345"), ("0", "0"), ("-0", "-0"), ("1.5", "1.5"), ("1e20", "1e+20"),
                ("9007199254740993", "9007199254740992"), ("123456789012345678", "1.2345678901234568e+17"),
                ("0.1", "0.10000000000000001"),
            ] {
                #expect(
                    self.reply(r, "EVAL", "redis.call('SET','num',\(number)) return redis.call('GET','num')", "0")
                        == "$\(stored.utf8.count)\r\n\(stored)\r\n", "redis.call with the number \(number)")
            }
            #expect(self.reply(r, "EVAL", "return {-5, 3.7, -0}", "0") == "*3\r\n:-5\r\n:3\r\n:0\r\n")
            // A value past the engine's kept buffers (ScriptEngine.keptCallBytes), then small calls again.
            let big = String(repeating: "v", count: (1 << 20) + 1)
            #expect(
                self.reply(r, "EVAL", "redis.call('SET', KEYS[1], ARGV[1]) return #redis.call('GET', KEYS[1])", "1", "big", big)
                    == ":\(big.utf8.count)\r\n")
            #expect(self.reply(r, "EVAL", "return redis.call('INCR', KEYS[1])", "1", "after-big") == ":1\r\n")
            // RESP3 from the script's side, converted for a RESP2 caller.
            #expect(self.reply(r, "EVAL", "redis.setresp(3) return {double=3.5}", "0") == "$3\r\n3.5\r\n")
            #expect(self.reply(r, "EVAL", "return {map={a=1}}", "0") == "*2\r\n$1\r\na\r\n:1\r\n")
            #expect(self.reply(r, "EVAL", "return redis.sha1hex('')", "0") == "$40\r\nda39a3ee5e6b4b0d3255bfef95601890afd80709\r\n")
            #expect(self.reply(r, "EVAL", "return cjson.encode({1,'a'})", "0") == "$7\r\n[1,\"a\"]\r\n")
            #expect(self.reply(r, "EVAL", "return bit.bxor(5, 3)", "0") == ":6\r\n")
        }
    }

    @Test func sandboxAsRedis() throws {
        try self.withRunner { r in
            #expect(self.reply(r, "EVAL", "return a", "0").hasPrefix("-ERR user_script:1: Script attempted to access nonexistent global variable 'a'"))
            #expect(self.reply(r, "EVAL", "a = 1", "0").hasPrefix("-ERR user_script:1: Attempt to modify a readonly table"))
            for trick in [
                "setmetatable(_G, {})", "getmetatable(_G).__index = {}", "redis = 1", "_G = {}", "redis.call = nil", "cjson.encode = nil",
                "bit.band = nil", "string.rep = nil", "rawset(_G, 'x', 1)", "setfenv(0, {})", "getfenv(tostring).redis = nil",
                "getmetatable('').__index = {}", "loadstring('redis = 1')()",
            ] {
                #expect(self.reply(r, "EVAL", trick, "0").contains("Attempt to modify a readonly table"), "\(trick)")
            }
            for missing in ["os", "io", "loadfile", "dofile", "require", "print", "debug", "package"] {
                #expect(self.reply(r, "EVAL", "return \(missing)", "0").contains("nonexistent global variable '\(missing)'"), "\(missing)")
            }
            #expect(self.reply(r, "EVAL", "return loadstring(string.dump(function() return 1 end))", "0") == "$-1\r\n")
            // The protection holds for the next script too.
            #expect(self.reply(r, "EVAL", "return redis.call('PING')", "0") == "+PONG\r\n")
        }
    }

    @Test func badScriptsAnswerWithRedisErrors() throws {
        try self.withRunner { r in
            #expect(self.reply(r, "EVAL", "return (", "0").hasPrefix("-ERR Error compiling script (new function): user_script:1:"))
            #expect(self.reply(r, "EVAL", "local function f() return f() + 1 end return f()", "0").contains("stack overflow"))
            #expect(self.reply(r, "EVAL", "return redis.call('nosuch')", "0").hasPrefix("-ERR Unknown Redis command called from script"))
            #expect(self.reply(r, "EVAL", "return redis.call('GET')", "0").hasPrefix("-ERR Wrong number of args calling Redis command from script"))
            #expect(self.reply(r, "EVAL", "return redis.call('MULTI')", "0").hasPrefix("-ERR This Redis command is not allowed from script"))
            #expect(self.reply(r, "EVAL", "return redis.call('EVAL', 'return 1', '0')", "0").hasPrefix("-ERR This Redis command is not allowed from script"))
            #expect(self.reply(r, "EVAL", "return redis.call({})", "0").hasPrefix("-ERR Lua redis lib command arguments must be strings or integers"))
            #expect(self.reply(r, "EVAL", "return 1", "-1") == "-ERR Number of keys can't be negative\r\n")
            #expect(self.reply(r, "EVAL", "return 1", "2", "a") == "-ERR Number of keys can't be greater than number of args\r\n")
            #expect(self.reply(r, "EVAL", "return 1", "x") == "-ERR value is not an integer or out of range\r\n")
            #expect(self.reply(r, "EVALSHA", "not-hex-not-forty", "0") == "-NOSCRIPT No matching script. Please use EVAL.\r\n")
            #expect(self.reply(r, "EVALSHA", String(repeating: "z", count: 40), "0") == "-NOSCRIPT No matching script. Please use EVAL.\r\n")
            #expect(self.reply(r, "EVAL", "#!lua flags=bogus\nreturn 1", "0") == "-ERR Unexpected flag in script shebang: bogus\r\n")
            #expect(self.reply(r, "EVAL", "#!lua name=x\nreturn 1", "0") == "-ERR Unknown lua shebang option: name=x\r\n")
            // An endless loop is stopped (this runner's limit) and writes nothing.
            #expect(self.reply(r, "EVAL", "redis.call('SET','loop','1') while true do end", "0").contains("time limit"))
            #expect(self.reply(r, "GET", "loop") == "$-1\r\n")
            // Past the Lua heap's bound: "not enough memory", and the next script runs.
            #expect(self.reply(r, "CONFIG", "SET", "script-memory-bytes", "16777216") == "+OK\r\n")
            #expect(
                self.reply(r, "EVAL", "local t = {} for i = 1, 1000 do t[i] = string.rep('x', 1048576) .. i end return #t", "0").contains(
                    "not enough memory"))
            #expect(self.reply(r, "EVAL", "return 'still here'", "0") == "$10\r\nstill here\r\n")
            // A 100 MB return value with room for it.
            #expect(self.reply(r, "CONFIG", "SET", "script-memory-bytes", "536870912") == "+OK\r\n")
            let big = r.run(["EVAL", "return string.rep('x', 100 * 1024 * 1024)", "0"].map { Array($0.utf8) })
            #expect(big.count == 100 * 1024 * 1024 + 14)
            #expect(big.prefix(12) == Array("$104857600\r\n".utf8)[...])
        }
    }

    @Test func scriptCacheAndTransactions() throws {
        try self.withRunner { r in
            let sha = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
            #expect(self.reply(r, "SCRIPT", "EXISTS", sha) == "*1\r\n:0\r\n")
            #expect(self.reply(r, "SCRIPT", "LOAD", "return 1") == "$40\r\n\(sha)\r\n")
            #expect(self.reply(r, "SCRIPT", "EXISTS", sha.uppercased(), "ffff") == "*2\r\n:1\r\n:0\r\n")
            #expect(self.reply(r, "EVALSHA", sha.uppercased(), "0") == ":1\r\n")
            #expect(self.reply(r, "SCRIPT", "FLUSH") == "+OK\r\n")
            #expect(self.reply(r, "EVALSHA", sha, "0") == "-NOSCRIPT No matching script. Please use EVAL.\r\n")
            #expect(self.reply(r, "SCRIPT", "KILL") == "-NOTBUSY No scripts in execution right now.\r\n")
            // Inside MULTI: queued, run by EXEC in its transaction.
            #expect(self.reply(r, "MULTI") == "+OK\r\n")
            #expect(self.reply(r, "EVAL", "return redis.call('INCR', KEYS[1])", "1", "c") == "+QUEUED\r\n")
            #expect(self.reply(r, "INCR", "c") == "+QUEUED\r\n")
            #expect(self.reply(r, "EVAL", "return redis.call('INCR', KEYS[1])", "1", "c") == "+QUEUED\r\n")
            #expect(self.reply(r, "EXEC") == "*3\r\n:1\r\n:2\r\n:3\r\n")
            // A runtime error after a write keeps the write (Redis has no rollback either).
            #expect(self.reply(r, "EVAL", "redis.call('SET','kept','1') error('late')", "0").contains("late"))
            #expect(self.reply(r, "GET", "kept") == "$1\r\n1\r\n")
        }
    }
}
