import Foundation
import Testing
import WalrusClient
import WalrusTestKit

/// The Prometheus endpoint (`--metrics-port`): scraped with a real HTTP client before and after a
/// load; the names are there, the counters move, per-follower lag appears, and INFO reports the
/// same command count.
@Suite(.serialized)
struct MetricsTests {
    /// GET a URL with Python's HTTP client; returns (status, body).
    static func get(_ url: String) throws -> (Int, String) {
        let script = """
            import sys, urllib.request, urllib.error
            try:
                r = urllib.request.urlopen(sys.argv[1], timeout=10); print(r.status); print(r.read().decode())
            except urllib.error.HTTPError as e:
                print(e.code); print(e.read().decode())
            """
        let result = try run("/usr/bin/env", ["python3", "-c", script, url], seconds: 30)
        let lines = result.output.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
        return (Int(lines.first ?? "") ?? 0, lines.count > 1 ? String(lines[1]) : "")
    }

    /// The value of the first sample line starting with `series`.
    static func value(_ body: String, _ series: String) -> Double? {
        body.split(separator: "\n").first { $0.hasPrefix(series + " ") }
            .flatMap { Double($0.split(separator: " ").last ?? "") }
    }

    @Test func scrapeShowsLoad() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let primary = try DaemonProcess(data: directory.file("primary"), arguments: ["--metrics-port", "0", "--log-level", "info"])
        defer { primary.stop() }
        let follower = try DaemonProcess(data: directory.file("follower"), arguments: primary.followArguments)
        defer { follower.stop() }
        let range = try #require(primary.log.range(of: #"metrics\.port=(\d+)"#, options: .regularExpression))
        let url = "http://127.0.0.1:\(primary.log[range].split(separator: "=")[1])/metrics"

        let (status, before) = try Self.get(url)
        #expect(status == 200)
        for name in [
            "walrus_wal_appended_records_total", "walrus_wal_written_bytes_total", "walrus_wal_fsyncs_total",
            "walrus_wal_segments", "walrus_keys", "walrus_snapshot_age_seconds", "walrus_connected_clients",
            "walrus_rejected_connections_total", "walrus_replication_refused_peers_total", "walrus_is_primary",
        ] {
            #expect(before.contains("\n" + name) || before.hasPrefix(name), "\(name) missing")
        }

        let client = try primary.connect()
        for i in 0..<200 { #expect(try client.command("SET", "k\(i)", "v\(i)") == .simple("OK")) }
        for i in 0..<50 { _ = try client.command("GET", "k\(i)") }
        _ = try client.command("NOSUCHCOMMAND")
        // The follower catches up, then its lag shows (as 0) under its node id.
        let deadline = Date().addingTimeInterval(20)
        var after = ""
        while Date() < deadline {
            after = try Self.get(url).1
            if after.contains("walrus_replication_lag_records{follower=") && Self.value(after, "walrus_keys") == 200 { break }
            usleep(200_000)
        }
        #expect(after.contains("walrus_replication_lag_records{follower="), "\(after)")
        #expect(after.contains("walrus_replication_lag_bytes{follower="))
        #expect(after.contains("walrus_replication_lag_seconds{follower="))
        #expect(Self.value(after, "walrus_keys") == 200)
        #expect(Self.value(after, #"walrus_commands_total{command="SET",outcome="ok"}"#) == 200, "\(after)")
        #expect(Self.value(after, #"walrus_commands_total{command="GET",outcome="ok"}"#) == 50)
        #expect((Self.value(after, #"walrus_commands_total{command="other",outcome="error"}"#) ?? 0) >= 1)
        #expect((Self.value(after, #"walrus_command_duration_seconds_count{command="SET"}"#) ?? 0) == 200)
        let appended = Self.value(after, "walrus_wal_appended_records_total") ?? 0
        #expect(appended >= 200 + (Self.value(before, "walrus_wal_appended_records_total") ?? 0))
        #expect((Self.value(after, "walrus_wal_fsync_seconds_count") ?? 0) >= 1, "fdatasync histogram did not move")
        #expect((Self.value(after, "walrus_wal_group_commit_records_sum") ?? 0) >= 200)

        // INFO counts the same commands (INFO itself is the one more).
        let scraped = Self.value(try Self.get(url).1, "walrus_commands_processed_total") ?? -1
        let info = try client.command("INFO").text ?? ""
        let line = info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("total_commands_processed:") } ?? ""
        #expect(Double(line.split(separator: ":").last ?? "") == scraped + 1, "\(line) vs \(scraped)")

        // Anything but GET /metrics is refused clearly.
        #expect(try Self.get(url.replacingOccurrences(of: "/metrics", with: "/nope")).0 == 404)
    }
}
