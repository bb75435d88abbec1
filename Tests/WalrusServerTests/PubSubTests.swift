import Foundation
import Testing
import WalrusClient
import WalrusTestKit

/// Pub/sub as applications use it, through redis-py: messages and pattern messages in RESP2 and
/// RESP3, a primary's publishes reaching a follower's subscribers, CLIENT LIST / KILL TYPE pubsub,
/// a subscriber that stops reading cut off at its limit while the others go on.
struct PubSubTests {
    @Test(.serverTest, arguments: [2, 3])
    func redisPyPubSubWithFollower(protocol version: Int) throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let primary = try DaemonProcess(data: directory.file("p"))
        defer { primary.stop() }
        let follower = try DaemonProcess(data: directory.file("f"), arguments: primary.followArguments)
        defer { follower.stop() }
        let script = """
            import redis, time
            def wait_for(pubsub, wanted, seconds=5):
                deadline = time.time() + seconds
                while time.time() < deadline:
                    m = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                    if m is not None:
                        return m
                raise SystemExit("no message for " + wanted)
            p = redis.Redis(host="127.0.0.1", port=\(primary.port), protocol=\(version))
            f = redis.Redis(host="127.0.0.1", port=\(follower.port), protocol=\(version))
            here = p.pubsub()
            here.subscribe("news")
            here.psubscribe("news.*")
            there = f.pubsub()
            there.subscribe("news")
            for ps in (here, there):
                deadline = time.time() + 5
                while ps.subscribed is False and time.time() < deadline:
                    ps.get_message(timeout=0.1)
            time.sleep(0.2)
            # Subscriptions to a channel count once per client, patterns once per match.
            assert p.publish("news", "hello") == 1
            m = wait_for(here, "news")
            assert m["type"] == "message" and m["channel"] == b"news" and m["data"] == b"hello", m
            m = wait_for(there, "news on the follower")
            assert m["type"] == "message" and m["data"] == b"hello", m
            assert p.publish("news.sport", "goal") == 1
            m = wait_for(here, "news.sport")
            assert m["type"] == "pmessage" and m["pattern"] == b"news.*" and m["channel"] == b"news.sport", m
            # A follower's own publish stays on the follower.
            assert f.publish("news", "local") == 1
            m = wait_for(there, "local")
            assert m["data"] == b"local", m
            assert here.get_message(ignore_subscribe_messages=True, timeout=0.3) is None
            assert p.pubsub_channels() == [b"news"], p.pubsub_channels()
            assert p.pubsub_numsub("news", "none") == [(b"news", 1), (b"none", 0)]
            assert p.pubsub_numpat() == 1
            # Plain commands are refused while subscribed in RESP2 (redis-py sends them on
            # another connection; a raw one shows the rule).
            raw = redis.Redis(host="127.0.0.1", port=\(primary.port), protocol=2, single_connection_client=True)
            conn = raw.connection
            conn.send_command("SUBSCRIBE", "x")
            conn.read_response()
            conn.send_command("GET", "k")
            try:
                conn.read_response()
                if \(version) == 2: raise SystemExit("GET ran while subscribed")
            except redis.exceptions.ResponseError as e:
                assert "only (P|S)SUBSCRIBE" in str(e), str(e)
            # CLIENT KILL TYPE pubsub closes every subscriber, here three.
            lines = p.execute_command("CLIENT", "LIST", "TYPE", "pubsub")
            assert len([l for l in lines.decode().splitlines() if l]) == 2, lines
            assert p.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 2
            here.close(); there.close()
            print("ok")
            """
        let result = try run("/usr/bin/env", ["python3", "-c", script])
        #expect(result.status == 0 && result.output.contains("ok"), "\(result.output)")
    }

    /// A subscriber that never reads is disconnected once its unsent messages pass
    /// pubsub-output-limit-bytes; the publisher and a reading subscriber go on.
    @Test(.serverTest) func slowSubscriberIsCutOff() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let server = try DaemonProcess(data: directory.file("p"), arguments: ["--pubsub-output-limit-bytes", "2000000"])
        defer { server.stop() }
        let script = """
            import redis, socket, time
            slow = socket.create_connection(("127.0.0.1", \(server.port)))
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow.sendall(b"*2\\r\\n$9\\r\\nSUBSCRIBE\\r\\n$4\\r\\nfeed\\r\\n")
            time.sleep(0.2)
            r = redis.Redis(host="127.0.0.1", port=\(server.port))
            fast = r.pubsub(ignore_subscribe_messages=True)
            fast.subscribe("feed")
            fast.get_message(timeout=1)
            payload = b"x" * 10000
            received = 0
            deadline = time.time() + 30
            while time.time() < deadline:
                r.publish("feed", payload)
                while fast.get_message(timeout=0) is not None:
                    received += 1
                if r.pubsub_numsub("feed")[0][1] == 1:
                    break
            assert r.pubsub_numsub("feed")[0][1] == 1, "the slow subscriber is still subscribed"
            # The reading subscriber still gets messages, and the server answers.
            r.publish("feed", "after")
            got = None
            deadline = time.time() + 5
            while time.time() < deadline and got != b"after":
                m = fast.get_message(timeout=0.1)
                if m is not None: got = m["data"]
            assert got == b"after", got
            assert r.ping()
            print("ok", received)
            """
        let result = try run("/usr/bin/env", ["python3", "-c", script])
        #expect(result.status == 0 && result.output.contains("ok"), "\(result.output)")
        #expect(server.log.contains("Disconnecting a subscriber that does not read its messages"))
    }
    /// The application pattern for keyspace notifications: listen for keys that expire (the
    /// active cycle deletes them with nobody reading them) and for writes to a key.
    @Test(.serverTest) func expiredAndWrittenKeysAreAnnounced() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let server = try DaemonProcess(data: directory.file("p"), arguments: ["--notify-keyspace-events", "KEx$g"])
        defer { server.stop() }
        let script = """
            import redis, time
            r = redis.Redis(host="127.0.0.1", port=\(server.port))
            assert r.config_get("notify-keyspace-events") == {"notify-keyspace-events": "g$xKE"}, r.config_get("notify-keyspace-events")
            p = r.pubsub(ignore_subscribe_messages=True)
            p.psubscribe("__keyevent@0__:expired", "__keyspace@0__:session:*")
            p.get_message(timeout=1)
            r.set("session:1", "v", px=150)
            r.incr("session:2")
            seen = []
            deadline = time.time() + 10
            while time.time() < deadline and ("expired", b"session:1") not in seen:
                m = p.get_message(timeout=0.1)
                if m is not None:
                    seen.append((m["channel"].decode().split(":", 1)[1], m["data"]))
            assert ("session:1", b"set") in seen, seen
            assert ("session:1", b"expire") in seen, seen
            assert ("session:2", b"incrby") in seen, seen
            assert ("expired", b"session:1") in seen, seen
            r.config_set("notify-keyspace-events", "")
            r.set("session:3", "v")
            assert p.get_message(timeout=0.3) is None
            print("ok")
            """
        let result = try run("/usr/bin/env", ["python3", "-c", script])
        #expect(result.status == 0 && result.output.contains("ok"), "\(result.output)")
    }

    /// Every keyspace event walrusd fires, in order, equals redis-server's for the same string
    /// and key commands (SET with options, counters, bits, COPY, RENAME, expiry, deletes).
    @Test(.serverTest) func keyspaceEventsMatchRedis() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let server = try DaemonProcess(data: directory.file("p"), arguments: ["--notify-keyspace-events", "KEAn"])
        defer { server.stop() }
        let redis = try DifferentialTests.RedisServer()
        let script = """
            import redis, sys, time
            r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]))
            r.config_set("notify-keyspace-events", "KEAn")
            p = r.pubsub(ignore_subscribe_messages=True)
            p.psubscribe("__key*__:*")
            p.get_message(timeout=1)
            r.set("a", "1"); r.set("a", "2", xx=True, ex=100); r.set("a", "3", keepttl=True); r.persist("a")
            r.incr("n"); r.incrbyfloat("n", 1.5); r.append("n", "0"); r.setrange("n", 0, "9"); r.getdel("n")
            r.setbit("bits:1", 7, 1); r.setbit("bits:1", 7, 0); r.bitop("and", "bits:2", "bits:1", "missing")
            r.bitop("or", "bits:3", "missing"); r.set("bits:4", "x"); r.bitop("not", "bits:4", "missing")
            r.copy("a", "c"); r.copy("a", "c", replace=True); r.rename("c", "d"); r.renamenx("d", "e")
            r.expire("e", 100); r.pexpire("e", 200000, gt=True); r.pexpire("e", 1000, gt=True); r.expire("e", 0); r.getex("a", px=5000); r.getex("a", persist=True)
            r.mset({"m1": "1", "m2": "2"}); r.msetnx({"m3": "3"}); r.setnx("m1", "x"); r.setex("s", 100, "v"); r.psetex("s", 100000, "w")
            r.getset("s", "z"); r.decrby("m1", 5); r.delete("m1", "m2", "missing"); r.unlink("m3")
            r.set("t", "v", px=30); time.sleep(0.3); r.get("t")
            events = []
            while True:
                m = p.get_message(timeout=0.3)
                if m is None: break
                events.append(m["channel"].decode() + " " + m["data"].decode())
            print(chr(10).join(events))
            """
        let ours = try run("/usr/bin/env", ["python3", "-c", script, String(server.port)])
        let theirs = try run("/usr/bin/env", ["python3", "-c", script, String(redis.port)])
        #expect(ours.status == 0 && theirs.status == 0, "\(ours.output)\n\(theirs.output)")
        #expect(ours.output.contains("setbit") && ours.output.contains("copy_to"), "\(ours.output)")
        #expect(ours.output == theirs.output, "walrusd:\n\(ours.output)\nredis-server:\n\(theirs.output)")
    }

    /// A RESP3 subscriber that publishes to its own channel gets the message in the same place
    /// as from redis-server: before its PUBLISH's count, after the replies ahead of it — also
    /// behind a durable write waiting for its fdatasync. The bytes of one pipelined read, compared.
    @Test(.serverTest) func ownPublishIsOrderedAsRedisOrdersIt() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let server = try DaemonProcess(data: directory.file("p"))
        defer { server.stop() }
        let redis = try DifferentialTests.RedisServer()
        let script = """
            import socket, sys, time
            def req(*w): return ("*%d\\r\\n" % len(w) + "".join("$%d\\r\\n%s\\r\\n" % (len(x), x) for x in w)).encode()
            def until(s, end):
                got = b""
                deadline = time.time() + 10
                while not got.endswith(end) and time.time() < deadline: got += s.recv(65536)
                return got
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
            s.settimeout(10)
            # HELLO 3's map ends with its empty module list, from both servers.
            s.sendall(req("HELLO", "3")); until(s, b"$7\\r\\nmodules\\r\\n*0\\r\\n")
            s.sendall(req("SUBSCRIBE", "ch")); until(s, b":1\\r\\n")
            s.sendall(req("PING") + req("ECHO", "a") + req("PUBLISH", "ch", "m") + req("PING") + req("INCR", "n")
                + req("SET", "k", "v") + req("GET", "k") + req("PUBLISH", "ch", "z") + req("ECHO", "end"))
            print(until(s, b"$3\\r\\nend\\r\\n"))
            """
        let ours = try run("/usr/bin/env", ["python3", "-c", script, String(server.port)])
        let theirs = try run("/usr/bin/env", ["python3", "-c", script, String(redis.port)])
        #expect(ours.status == 0 && theirs.status == 0, "\(ours.output)\n\(theirs.output)")
        #expect(theirs.output.contains("message"), "\(theirs.output)")
        #expect(ours.output == theirs.output, "walrusd:\n\(ours.output)\nredis-server:\n\(theirs.output)")
    }
}
