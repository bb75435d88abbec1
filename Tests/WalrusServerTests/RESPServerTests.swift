import Testing
import WALCore
import WalrusClient
import WalrusServer
import WalrusStore
import WalrusTestKit

/// The client port end to end: real TCP on loopback, a real store on disk.
struct RESPServerTests {
    /// The commands DESIGN.md lists, with Redis's replies, and the original's aliases.
    @Test func commandsAnswerLikeRedis() async throws {
        try await withServer { port, _ in
            let client = try connect(port)
            #expect(try client.command("PING") == .simple("PONG"))
            #expect(try client.command("PING", "hi") == .bulk(bytes("hi")))
            #expect(try client.command("ECHO", "x y") == .bulk(bytes("x y")))
            #expect(try client.command("SET", "name", "jerk") == .simple("OK"))
            #expect(try client.command("GET", "name") == .bulk(bytes("jerk")))
            #expect(try client.command("GET", "nope") == .bulk(nil))
            #expect(try client.command("MSET", "a", "1", "b", "2") == .simple("OK"))
            #expect(try client.command("MGET", "a", "nope", "b") == .array([.bulk(bytes("1")), .bulk(nil), .bulk(bytes("2"))]))
            #expect(try client.command("EXISTS", "a", "b", "nope", "a") == .integer(3))
            #expect(try client.command("HAS", "a") == .integer(1))
            #expect(try client.command("DBSIZE") == .integer(3))
            #expect(try client.command("LEN") == .integer(3))
            guard case .array(let keys?) = try client.command("KEYS", "[ab]") else {
                Issue.record("KEYS did not return an array")
                return
            }
            #expect(Set(keys.compactMap(\.text)) == ["a", "b"])
            #expect(try client.command("DEL", "a", "nope") == .integer(1))
            #expect(try client.command("DELETE", "b") == .integer(1))
            #expect(try client.command("COMMIT") == .simple("OK"))
            #expect(try client.command("SELECT", "0") == .simple("OK"))
            #expect(try client.command("CLIENT", "SETNAME", "me") == .simple("OK"))
            #expect(try client.command("CONFIG", "GET", "appendfsync") == .array([.bulk(bytes("appendfsync")), .bulk(bytes("always"))]))
            #expect(try client.command("ROLE") == .array([.bulk(bytes("master")), .integer(4), .array([])]))
            #expect(try client.command("HELLO", "4") == .error("NOPROTO unsupported protocol version"))
            guard case .bulk(let info?) = try client.command("INFO") else {
                Issue.record("INFO did not return text")
                return
            }
            let text = String(decoding: info, as: UTF8.self)
            for field in ["# Server", "redis_version:", "# Clients", "connected_clients:1", "# Persistence", "# Stats", "# Replication", "role:master"] {
                #expect(text.contains(field), "INFO lacks \(field)")
            }
            #expect(try client.command("SET", "k") == .error("ERR wrong number of arguments for 'set' command"))
            #expect(try client.command("SET", "k", "v", "EX", "10") == .simple("OK"))
            #expect(try client.command("SET", "k", "v", "EX", "0") == .error("ERR invalid expire time in 'set' command"))
            #expect(try client.command("SET", "k", "v", "NX", "XX") == .error("ERR syntax error"))
            #expect(try client.command("NOSUCH", "x").description.contains("unknown command 'NOSUCH'"))
            // A name followed by NUL bytes is another name, as in Redis (found by the commands fuzz target).
            #expect(try client.command("SUBSCRIBE\u{0}", "x") == .error("ERR unknown command 'SUBSCRIBE', with args beginning with: 'x' "))
            #expect(try client.command("GET\u{0}\u{0}", "x").description.contains("unknown command"))
            #expect(try client.command("QUIT") == .simple("OK"))
            #expect(client.isClosedByPeer())
        }
    }

    /// Pipelined requests get their replies in order, and a GET sees the SET before it, also
    /// when the SET waits for its fdatasync — with the quick GET/SET path (batched replies, one
    /// commit per read) interleaved with commands the executor answers.
    @Test(arguments: [FsyncMode.always, .interval(milliseconds: 50)])
    func pipelinedRepliesKeepRequestOrder(fsync: FsyncMode) async throws {
        try await withServer(fsync: fsync) { port, _ in
            let client = try connect(port)
            for i in 0..<200 {
                try client.send([bytes(i % 2 == 0 ? "SET" : "set"), bytes("k\(i % 5)"), bytes("v\(i)")])
                try client.send([bytes("GET"), bytes("k\(i % 5)")])
                if i % 7 == 0 {
                    try client.send([bytes("PING")])
                    try client.send([bytes("DEL"), bytes("k\(i % 5)")])
                    try client.send([bytes("GeT"), bytes("k\(i % 5)")])
                    try client.send([bytes("SET"), bytes("k\(i % 5)"), bytes("v\(i)"), bytes("NX")])
                }
            }
            for i in 0..<200 {
                #expect(try client.readReply() == .simple("OK"))
                #expect(try client.readReply() == .bulk(bytes("v\(i)")))
                if i % 7 == 0 {
                    #expect(try client.readReply() == .simple("PONG"))
                    #expect(try client.readReply() == .integer(1))
                    #expect(try client.readReply() == .bulk(nil))
                    // The key was just deleted: SET … NX sets it (the executor's SET with options).
                    #expect(try client.readReply() == .simple("OK"))
                }
            }
            #expect(try client.command("INFO", "stats").description.contains("total_commands_processed:"))
        }
    }

    /// A client that sends without reading: its replies pile up in NIO's queue once the socket
    /// buffers are full, each read's batch still queued when the next read comes. The next read
    /// writes into the last batch, which gets fresh storage while NIO still holds the old (copy-on-
    /// write): every reply arrives whole and in order, end to end, queued or not.
    @Test(arguments: [FsyncMode.always, .interval(milliseconds: 50)])
    func batchesStillQueuedAreNotReused(fsync: FsyncMode) async throws {
        try await withServer(fsync: fsync) { port, _ in
            let client = try connect(port)
            let values = (0..<8).map { i in [UInt8](repeating: UInt8(ascii: "a") + UInt8(i), count: 1000) }
            for (i, value) in values.enumerated() { #expect(try client.command([bytes("SET"), bytes("k\(i)"), value]) == .simple("OK")) }
            // 16 MB of replies: more than loopback's socket buffers hold, so NIO queues the rest.
            let sends = 8000
            for n in 0..<sends { try client.sendRaw(bytes(request("GET", "k\(n % 8)") + request("GET", "k\((n + 3) % 8)"))) }
            for n in 0..<sends {
                let first = try client.readReply()
                let second = try client.readReply()
                guard first == .bulk(values[n % 8]), second == .bulk(values[(n + 3) % 8]) else {
                    Issue.record("send \(n): replies \(first.description.prefix(12)), \(second.description.prefix(12))")
                    return
                }
            }
            #expect(try client.command("PING") == .simple("PONG"))
        }
    }

    /// One read of many commands through the executor: replies ready at once join the read's
    /// batch, replies that wait (a durable write) queue, and replies behind them are gathered
    /// into one write when the commit answers — in request order either way, with CLIENT REPLY
    /// SKIP, errors and a reply too large to gather among them.
    @Test(arguments: [FsyncMode.always, .interval(milliseconds: 50)])
    func repliesOfOneReadKeepTheirOrder(fsync: FsyncMode) async throws {
        try await withServer(fsync: fsync) { port, _ in
            // Over the 4 KiB a gathered reply may be (`RESPConnectionHandler.coalescedReplyLimit`).
            let large = String(repeating: "x", count: 4097)
            let client = try connect(port)
            for round in 0..<3 {
                let pipeline =
                    request("PING") + request("INCR", "c") + request("GET", "c") + request("EXISTS", "c")
                    + request("SET", "k", "v\(round)") + request("STRLEN", "k") + request("INCR", "k")
                    + request("CLIENT", "REPLY", "SKIP") + request("INCR", "c") + request("NOSUCH")
                    + request("ECHO", large) + request("INCRBY", "c", "10") + request("GET", "k")
                    + request("MGET", "c", "k") + request("DEL", "none") + request("ECHO", "end")
                try client.sendRaw(bytes(pipeline))
                let c = round * 12
                #expect(try client.readReply() == .simple("PONG"))
                #expect(try client.readReply() == .integer(c + 1))
                #expect(try client.readReply() == .bulk(bytes("\(c + 1)")))
                #expect(try client.readReply() == .integer(1))
                #expect(try client.readReply() == .simple("OK"))
                #expect(try client.readReply() == .integer(2))
                #expect(try client.readReply() == .error("ERR value is not an integer or out of range"))
                // CLIENT REPLY SKIP: no reply, and none for the INCR after it.
                #expect(try client.readReply() == .error("ERR unknown command 'NOSUCH', with args beginning with: "))
                #expect(try client.readReply() == .bulk(bytes(large)))
                #expect(try client.readReply() == .integer(c + 12))
                #expect(try client.readReply() == .bulk(bytes("v\(round)")))
                #expect(try client.readReply() == .array([.bulk(bytes("\(c + 12)")), .bulk(bytes("v\(round)"))]))
                #expect(try client.readReply() == .integer(0))
                #expect(try client.readReply() == .bulk(bytes("end")))
            }
            #expect(try client.command("PING") == .simple("PONG"))
        }
    }

    /// Binary values (NUL, CRLF, every byte) and empty values survive the round trip and a restart.
    @Test func binaryAndEmptyValuesSurviveARestart() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let value: [UInt8] = (0...255).map { UInt8($0) } + [13, 10, 0]
        try await withServer(directory: directory) { port, _ in
            let client = try connect(port)
            #expect(try client.command([bytes("SET"), [0, 1, 13, 10], value]) == .simple("OK"))
            #expect(try client.command([bytes("SET"), bytes("empty"), []]) == .simple("OK"))
        }
        try await withServer(directory: directory) { port, _ in
            let client = try connect(port)
            #expect(try client.command([bytes("GET"), [0, 1, 13, 10]]) == .bulk(value))
            #expect(try client.command("GET", "empty") == .bulk([]))
        }
    }

    /// A malformed request gets a RESP error and its connection is closed; another client on the
    /// same server never notices.
    @Test(arguments: [
        "*1\r\n$4294967296\r\n", "*-x\r\n", "*1\r\n$3\r\nabcdef", "*3000000\r\n", "*1\r\n:12\r\n",
    ])
    func malformedRequestsCloseOnlyTheirConnection(input: String) async throws {
        try await withServer { port, _ in
            let bystander = try connect(port)
            #expect(try bystander.command("SET", "safe", "1") == .simple("OK"))
            let attacker = try connect(port)
            try attacker.sendRaw(bytes(input))
            guard case .error(let message) = try attacker.readReply() else {
                Issue.record("no error reply for \(input.debugDescription)")
                return
            }
            #expect(message.hasPrefix("ERR Protocol error"))
            #expect(attacker.isClosedByPeer())
            #expect(try bystander.command("GET", "safe") == .bulk(bytes("1")))
        }
    }

    /// 10 MB of random bytes on one connection: answered or cut off, the server keeps serving.
    @Test func randomBytesDoNotHurtTheServer() async throws {
        try await withServer { port, _ in
            var generator = SystemRandomNumberGenerator()
            var noise = [UInt8](repeating: 0, count: 10 << 20)
            noise.withUnsafeMutableBytes { raw in
                let words = raw.bindMemory(to: UInt64.self)
                for i in words.indices { words[i] = generator.next() }
            }
            let attacker = try connect(port)
            try? attacker.sendRaw(noise)
            _ = attacker.isClosedByPeer()
            let client = try connect(port)
            #expect(try client.command("PING") == .simple("PONG"))
        }
    }

    /// Past max clients a connection is told so and closed; the others keep working.
    @Test func maxClientsIsEnforced() async throws {
        try await withServer(configure: { $0.maxClients = 2 }) { port, _ in
            let first = try connect(port)
            let second = try connect(port)
            #expect(try first.command("PING") == .simple("PONG"))
            #expect(try second.command("PING") == .simple("PONG"))
            let third = try connect(port)
            #expect(try third.readReply() == .error("ERR max number of clients reached"))
            #expect(third.isClosedByPeer())
            #expect(try first.command("PING") == .simple("PONG"))
        }
    }

    /// A client idle past idle-timeout is disconnected; an active one is not.
    @Test func idleClientsAreClosed() async throws {
        try await withServer(configure: { $0.idleTimeoutSeconds = 1 }) { port, _ in
            let idle = try connect(port)
            #expect(try idle.command("PING") == .simple("PONG"))
            // The server closes it about a second later; the read below waits (bounded) for that.
            #expect(idle.isClosedByPeer())
            let fresh = try connect(port)
            #expect(try fresh.command("PING") == .simple("PONG"))
        }
    }

    /// Keys and values over the store's limits are refused with the limit named; nothing is written.
    @Test func oversizedValuesAreRefused() async throws {
        try await withServer { port, store in
            let client = try connect(port)
            let reply = try client.command([bytes("SET"), bytes("big"), [UInt8](repeating: 1, count: 17 << 20)])
            #expect(reply.description.contains("max-value-bytes"))
            #expect(store.wal.lastIndex == 0)
        }
    }

    /// In fsync=always mode an OK means the record is sealed: it is in the log on disk by then.
    @Test func okMeansSealed() async throws {
        try await withServer { port, store in
            let client = try connect(port)
            for i in 0..<50 {
                #expect(try client.command("SET", "key\(i)", "value\(i)") == .simple("OK"))
                #expect(store.wal.sealedIndex >= UInt64(i + 1))
            }
        }
    }

    /// `commit-gather` (100 ms here, set live) holds a pass's fdatasync back only while writers
    /// the last pass answered have yet to send again: a writer that went quiet costs the next pass
    /// one window at most and a lone writer none; writers in lockstep are all answered, and an OK
    /// still means sealed.
    @Test func commitGatherWaitsOnlyForWritersStillToCome() async throws {
        try await withServer { port, store in
            let quiet = try connect(port), lone = try connect(port)
            #expect(try quiet.command("CONFIG", "SET", "commit-gather", "100000") == .simple("OK"))
            #expect(try quiet.command("CONFIG", "GET", "commit-gather") == .array([.bulk(bytes("commit-gather")), .bulk(bytes("100000"))]))
            #expect(try quiet.command("SET", "quiet", "1") == .simple("OK"))
            for i in 0..<30 {
                #expect(try lone.command("SET", "lone\(i)", "v") == .simple("OK"))
                #expect(store.wal.sealedIndex >= UInt64(i + 2))
            }
            // Held back once at most — the pass after the quiet writer's, if both share a loop —
            // and then for the whole window, since the quiet writer never came back.
            let gathers = Self.info(lone, "walrus_commit_gathers"), timeouts = Self.info(lone, "walrus_commit_gather_timeouts")
            #expect(gathers >= 0 && gathers <= 1 && timeouts == gathers, "held \(gathers) passes, \(timeouts) to the window's end")
            let writers = try (0..<8).map { _ in try connect(port) }
            for round in 0..<20 {
                for (n, writer) in writers.enumerated() { try writer.send([bytes("SET"), bytes("w\(n)"), bytes("\(round)")]) }
                for writer in writers { #expect(try writer.readReply() == .simple("OK")) }
                #expect(store.wal.sealedIndex >= UInt64(31 + 8 * (round + 1)))
            }
            #expect(try lone.command("GET", "w7") == .bulk(bytes("19")))
        }
    }

    /// In `always` mode a connection's read waits until the loop has read every socket (the keys
    /// of all of them are prefetched together, `LoopCommits.runReads`): pipelines from many
    /// connections still answer in order, and requests that arrive with their connection's close
    /// still run, as they did when each read ran at once.
    @Test func readsWaitingForTheLoopRunInOrderAndBeforeAClose() async throws {
        try await withServer { port, _ in
            let clients = try (0..<8).map { _ in try connect(port) }
            for round in 0..<10 {
                for (n, client) in clients.enumerated() {
                    let pipeline = request("SET", "k\(n)", "\(round)") + request("GET", "k\(n)") + request("INCR", "n\(n)")
                    try client.sendRaw(bytes(pipeline))
                }
                for client in clients {
                    #expect(try client.readReply() == .simple("OK"))
                    #expect(try client.readReply() == .bulk(bytes("\(round)")))
                    #expect(try client.readReply() == .integer(round + 1))
                }
            }
            // Sent and closed at once: the SET and the FIN often arrive in one read.
            for i in 0..<20 {
                let once = try connect(port)
                try once.sendRaw(bytes(request("SET", "bye\(i)", "1")))
            }
            let check = try connect(port)
            let deadline = ContinuousClock.now + .seconds(30)
            for i in 0..<20 {
                var value = try check.command("GET", "bye\(i)")
                while value != .bulk(bytes("1")) && ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(10))
                    value = try check.command("GET", "bye\(i)")
                }
                #expect(value == .bulk(bytes("1")), "the SET sent with its connection's close was lost")
            }
            // …and before the connection's teardown: a SUBSCRIBE sent with the close must not
            // outlive it (run after the teardown, it would leave a subscriber nobody reads).
            for i in 0..<20 {
                let once = try connect(port)
                try once.sendRaw(bytes(request("SUBSCRIBE", "gone\(i)")))
            }
            for i in 0..<20 {
                var count = try check.command("PUBSUB", "NUMSUB", "gone\(i)")
                while count != .array([.bulk(bytes("gone\(i)")), .integer(0)]) && ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(10))
                    count = try check.command("PUBSUB", "NUMSUB", "gone\(i)")
                }
                #expect(count == .array([.bulk(bytes("gone\(i)")), .integer(0)]), "a closed connection's subscription stayed")
            }
        }
    }

    /// An integer field of INFO.
    private static func info(_ connection: RESPConnection, _ field: String) -> Int {
        guard let text = try? connection.command("INFO", "persistence").description else { return -1 }
        let line = text.split(whereSeparator: \.isNewline).first { $0.hasPrefix(field + ":") }
        return line.flatMap { Int($0.dropFirst(field.count + 1)) } ?? -1
    }
}
