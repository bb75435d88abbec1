import Foundation
import Testing
import WalrusClient
import WalrusTestKit
#if canImport(Glibc)
import Glibc
#endif

/// The control socket and walrusctl against a running walrusd.
@Suite(.serialized)
struct ControlSocketTests {
    static var walrusctl: String { DaemonProcess.binaryDirectory + "/walrusctl" }

    /// status (table and JSON), flush, checkpoint, log-level and reload through walrusctl.
    @Test func walrusctlVerbs() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let data = directory.file("data")
        let daemon = try DaemonProcess(data: data)
        defer { daemon.stop() }
        let socket = data + "/control.sock"
        let client = try daemon.connect()
        for i in 0..<10 { _ = try client.command("SET", "k\(i)", "v") }

        let status = try run(Self.walrusctl, ["status", "--socket", socket])
        #expect(status.status == 0, "\(status.output)")
        // Columns are aligned to the longest label; compare with runs of spaces collapsed.
        let rows = status.output.replacingOccurrences(of: " +", with: " ", options: .regularExpression)
        for row in ["role primary", "last index 10", "sealed index 10", "keys 10", "fsync always", "epoch history 1 from 1"] {
            #expect(rows.contains(row), "status lacks '\(row)':\n\(status.output)")
        }
        // How the log is written (direct I/O where the filesystem takes O_DIRECT).
        #expect(rows.contains("fsync always, direct I/O") || rows.contains("fsync always, through the page cache"), "\(status.output)")
        let json = try run(Self.walrusctl, ["status", "--json", "--socket", socket])
        let object = try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any]
        #expect(object?["keys"] as? Int == 10)
        #expect(object?["role"] as? String == "primary")

        #expect(try run(Self.walrusctl, ["flush", "--socket", socket]).output.contains("sealed through index 10"))
        let checkpoint = try run(Self.walrusctl, ["checkpoint", "--socket", socket])
        #expect(checkpoint.status == 0 && checkpoint.output.contains("snapshot-10.snap"), "\(checkpoint.output)")
        #expect(FileManager.default.fileExists(atPath: data + "/snapshot-10.snap"))
        #expect(try run(Self.walrusctl, ["log-level", "debug", "--socket", socket]).output.contains("info → debug"))
        #expect(try run(Self.walrusctl, ["log-level", "--socket", socket]).output.contains("log level debug"))
        let badLevel = try run(Self.walrusctl, ["log-level", "loud", "--socket", socket])
        #expect(badLevel.status == 1 && badLevel.output.contains("Unknown log level 'loud'"))
        #expect(try run(Self.walrusctl, ["reload", "--socket", socket]).status == 0)
        // The socket is mode 0660.
        var info = stat()
        #expect(stat(socket, &info) == 0 && info.st_mode & 0o777 == 0o660)
    }

    /// Not running: a non-zero exit and one clear line.
    @Test func walrusctlWithoutADaemon() throws {
        let result = try run(Self.walrusctl, ["status", "--socket", "/nonexistent/control.sock"])
        #expect(result.status == 1)
        #expect(result.output.contains("cannot connect to /nonexistent/control.sock") && result.output.contains("is walrusd running?"))
    }

    /// Malformed JSON, a non-object, an unknown verb and an over-long line get JSON errors.
    @Test func malformedRequests() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let daemon = try DaemonProcess(data: directory.file("data"))
        defer { daemon.stop() }
        let socket = directory.file("data") + "/control.sock"
        let script = """
            import socket, json
            def ask(payload):
                s = socket.socket(socket.AF_UNIX); s.connect("\(socket)"); s.sendall(payload)
                data = b""
                while not data.endswith(b"\\n"):
                    chunk = s.recv(65536)
                    if not chunk: break
                    data += chunk
                return json.loads(data)
            for payload in [b"{nope\\n", b"[1,2]\\n", b"{\\"verb\\": \\"explode\\"}\\n", b"{}\\n", b"x" * 70000 + b"\\n"]:
                reply = ask(payload)
                assert reply["ok"] is False and reply["error"], reply
                print(reply["error"][:60])
            assert ask(b'{"verb":"status"}\\n')["ok"] is True
            """
        let result = try run("/usr/bin/env", ["python3", "-c", script])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("not valid JSON"))
        #expect(result.output.contains("Unknown verb 'explode'"))
        #expect(result.output.contains("longer than 64 KiB"))
    }

    /// A peer of another uid that can reach the socket (its mode widened on purpose) is refused by
    /// the SO_PEERCRED check, and the refusal is logged.
    @Test(.enabled(if: getuid() == 0, "needs root to run a client as another uid"))
    func otherUIDIsRefused() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let data = directory.file("data")
        let daemon = try DaemonProcess(data: data)
        defer { daemon.stop() }
        let socket = data + "/control.sock"
        chmod(directory.path, 0o755)
        chmod(data, 0o755)
        chmod(socket, 0o666)
        let result = try run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", Self.walrusctl, "status", "--socket", socket])
        #expect(result.status == 1)
        #expect(result.output.contains("Permission denied: uid 65534"), "\(result.output)")
        let deadline = Date().addingTimeInterval(5)
        while !daemon.log.contains("Refused a control connection") && Date() < deadline { usleep(20_000) }
        #expect(daemon.log.contains("Refused a control connection"))
    }

    /// wal verify passes a healthy directory and fails a damaged one with the file and offset;
    /// wal dump prints records; neither changes the directory.
    @Test func walVerifyAndDump() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let data = directory.file("data")
        let daemon = try DaemonProcess(data: data)
        let client = try daemon.connect()
        _ = try client.command("SET", "name", "jerk")
        _ = try client.command("MSET", "a", "1", "b", "2")
        _ = try client.command("DEL", "a")
        daemon.stop()
        let verify = try run(Self.walrusctl, ["wal", "verify", "--data", data])
        #expect(verify.status == 0 && verify.output.contains("3 records") && verify.output.contains("ok: every record checks out"))
        let dump = try run(Self.walrusctl, ["wal", "dump", "--data", data, "--from", "2"])
        #expect(dump.output == "2  set a = 1; set b = 2\n3  delete a\n", "\(dump.output)")
        var bytes = TestFiles.read(data + "/wal-0001.log")
        bytes[30] ^= 0xFF
        TestFiles.write(data + "/wal-0001.log", bytes)
        let damaged = try run(Self.walrusctl, ["wal", "verify", "--data", data])
        #expect(damaged.status == 1)
        #expect(damaged.output.contains("DAMAGED") && damaged.output.contains("wal-0001.log") && damaged.output.contains("offset 29"))
        #expect(TestFiles.read(data + "/wal-0001.log") == bytes)
    }
}

/// Reload through walrusctl re-reads the config file and applies what can change live.
@Suite(.serialized)
struct ReloadTests {
    @Test func reloadAppliesLiveKeysAndNamesTheRest() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let config = directory.file("walrusd.toml")
        let data = directory.file("data")
        TestFiles.write(config, Array("fsync = \"interval\"\nfsync-interval = 1000\nmax-value-bytes = 100\nlog-level = \"info\"\n".utf8))
        let daemon = try DaemonProcess(data: data, arguments: ["--config", config])
        defer { daemon.stop() }
        let client = try daemon.connect()
        let big = [UInt8](repeating: 7, count: 200)
        #expect(try client.command([Array("SET".utf8), Array("k".utf8), big]).description.contains("max-value-bytes"))

        TestFiles.write(
            config,
            Array("fsync = \"interval\"\nfsync-interval = 50\nmax-value-bytes = 1000\nlog-level = \"debug\"\nidle-timeout = 5\n".utf8))
        let socket = data + "/control.sock"
        let reload = try run(ControlSocketTests.walrusctl, ["reload", "--socket", socket])
        #expect(reload.status == 0, "\(reload.output)")
        #expect(reload.output.contains("applied fsync-interval, log-level, max-value-bytes"), "\(reload.output)")
        #expect(reload.output.contains("needs a restart: idle-timeout"), "\(reload.output)")
        #expect(try client.command([Array("SET".utf8), Array("k".utf8), big]) == .simple("OK"))
        let status = try run(ControlSocketTests.walrusctl, ["status", "--socket", socket])
        let rows = status.output.replacingOccurrences(of: " +", with: " ", options: .regularExpression)
        #expect(rows.contains("interval 50 ms") && rows.contains("log level debug"), "\(status.output)")

        // A config that no longer parses changes nothing and says why.
        TestFiles.write(config, Array("fsync-interval = soon\n".utf8))
        let broken = try run(ControlSocketTests.walrusctl, ["reload", "--socket", socket])
        #expect(broken.output.contains("nothing changed") && broken.output.contains("line 1"), "\(broken.output)")
    }
}
