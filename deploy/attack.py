#!/usr/bin/env python3
"""Bad input on every port of a running walrusd, while a real client keeps working.

  deploy/attack.py [--bin DIR] [--flood 1000] [--slow-seconds 10] [--quick]

Starts one walrusd (fresh data directory, free loopback ports, max-clients = --flood, repl-timeout
2 s) and, per port — the client port (RESP), the replication port and the control socket — runs:
random bytes, slowloris (one byte per second), a flood of connections that never speak (up to the
limit and beyond), oversized frames and lines, and valid-then-invalid input. Meanwhile a redis-py
client does SET+GET in a loop on its own connection and records its latency per attack.

Checks after every attack: the daemon is alive, the real client saw no error, the valid part of a
valid-then-invalid request took effect. At the end: the daemon's RSS and thread count returned to
within bounds of where they started. Prints one Markdown table; exits 1 on any failure.
"""
import argparse, json, os, random, re, resource, shutil, signal, socket, statistics, struct, subprocess
import sys, tempfile, threading, time, zlib

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

failures = []


def proc_status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Daemon:
    def __init__(self, binary, base, flood):
        self.data = os.path.join(base, "data")
        self.control = os.path.join(base, "control.sock")
        self.log = open(os.path.join(base, "walrusd.log"), "w+")
        self.process = subprocess.Popen(
            [binary, "--data", self.data, "--port", "0", "--repl-port", "0", "--control-socket", self.control,
             "--max-clients", str(flood), "--repl-timeout", "2000", "--log-level", "info"],
            stderr=self.log, stdout=subprocess.DEVNULL)
        deadline = time.time() + 30
        text = ""
        while "] Ready" not in text:
            if time.time() > deadline or self.process.poll() is not None:
                raise SystemExit(f"attack: walrusd did not start:\n{text}")
            time.sleep(0.05)
            self.log.seek(0)
            text = self.log.read()
        self.port = int(re.search(r"server\.port=(\d+)", text).group(1))
        self.repl_port = int(re.search(r"repl\.port=(\d+)", text).group(1))

    def alive(self):
        return self.process.poll() is None

    def rss_kib(self):
        return proc_status(self.process.pid, "VmRSS")

    def threads(self):
        return proc_status(self.process.pid, "Threads")

    def stop(self):
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


class RealClient(threading.Thread):
    """SET then GET on one connection, recording each round trip under the current phase."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.client = redis.Redis(port=port, socket_timeout=10, protocol=2, retry=Retry(NoBackoff(), 0))
        self.client.ping()
        self.phase = "idle"
        self.samples = {}
        self.errors = {}
        self.running = True
        self.count = 0

    def run(self):
        while self.running:
            phase = self.phase
            key = f"real:{self.count % 1000}"
            start = time.perf_counter()
            try:
                self.client.set(key, str(self.count))
                if self.client.get(key) != str(self.count).encode():
                    raise RuntimeError("read back a different value")
                self.samples.setdefault(phase, []).append((time.perf_counter() - start) * 1000)
            except Exception as error:
                self.errors.setdefault(phase, []).append(repr(error))
                time.sleep(0.05)
            self.count += 1
            time.sleep(0.002)


def connect(address, unix=False, timeout=5):
    s = socket.socket(socket.AF_UNIX if unix else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(address)
    return s


def drain(s, seconds=2.0):
    """Read until the peer closes or goes quiet; returns (bytes, closed)."""
    s.settimeout(seconds)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except (socket.timeout, TimeoutError):
        return data, False
    except (ConnectionResetError, BrokenPipeError):
        return data, True


def send_quietly(s, data):
    try:
        s.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError, socket.timeout, TimeoutError):
        return False


def random_bytes(address, unix, count, rng, wait=1.0):
    closed = errors = 0
    for _ in range(count):
        s = connect(address, unix)
        send_quietly(s, rng.randbytes(rng.randint(1, 65536)))
        data, was_closed = drain(s, wait)
        closed += was_closed
        errors += data.startswith(b"-") or b'"ok":false' in data
        s.close()
    return count, f"{errors} answered with an error, {closed} closed by walrusd"


def slowloris(address, unix, count, seconds, payload):
    sockets = [connect(address, unix) for _ in range(count)]
    closed = [False] * count
    for i in range(seconds):
        for n, s in enumerate(sockets):
            if not closed[n] and not send_quietly(s, payload[i % len(payload):i % len(payload) + 1]):
                closed[n] = True
        time.sleep(1)
    for n, s in enumerate(sockets):
        if not closed[n]:
            _, closed[n] = drain(s, 0.05)
        s.close()
    return count, f"{sum(closed)} dropped within {seconds} s"


def flood(address, unix, count, hold):
    sockets, refused = [], 0
    for _ in range(count):
        try:
            sockets.append(connect(address, unix, timeout=2))
        except OSError:
            refused += 1
    time.sleep(hold)
    closed = 0
    for s in sockets:
        data, was_closed = drain(s, 0.01)
        closed += was_closed
        s.close()
    return count, f"{refused} refused at connect, {closed} closed by walrusd"


def frame(kind, payload, epoch=0):
    header = b"WR" + struct.pack(">BBQI", 1, kind, epoch, len(payload))
    return header + struct.pack(">I", zlib.crc32(payload) & 0xFFFFFFFF) + payload


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=".build/debug", help="directory with walrusd")
    parser.add_argument("--flood", type=int, default=1000, help="max-clients, and the size of each connection flood")
    parser.add_argument("--slow-seconds", type=int, default=10, help="how long each slowloris sends (1 byte/s)")
    parser.add_argument("--quick", action="store_true", help="smaller counts (CI)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(args.flood * 2 + 512, 4096)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(want, hard if hard > 0 else want)), hard))
    except (ValueError, OSError):
        pass
    rng = random.Random(args.seed)
    noise, wait = (10, 0.3) if args.quick else (50, 1.0)
    base = tempfile.mkdtemp(prefix="walrus-attack-")
    daemon = Daemon(os.path.join(args.bin, "walrusd"), base, args.flood)
    real = RealClient(daemon.port)
    real.start()
    time.sleep(1)
    rss_start, threads_start = daemon.rss_kib(), daemon.threads()
    client = ("127.0.0.1", daemon.port)
    repl = ("127.0.0.1", daemon.repl_port)
    control = daemon.control
    rows = []

    def attack(port, name, action, check=None):
        real.phase = f"{port}: {name}"
        rss_before = daemon.rss_kib()
        started = time.time()
        try:
            tried, outcome = action()
        except Exception as error:
            tried, outcome = 0, f"attack script error: {error!r}"
            failures.append(f"{port} {name}: {error!r}")
        time.sleep(0.3)
        problem = check() if check and daemon.alive() else None
        if problem:
            failures.append(f"{port} {name}: {problem}")
            outcome += f"; FAILED: {problem}"
        alive = daemon.alive()
        if not alive:
            failures.append(f"{port} {name}: walrusd exited ({daemon.process.returncode})")
        samples = real.samples.get(real.phase, [])
        errors = real.errors.get(real.phase, [])
        if errors:
            failures.append(f"{port} {name}: the real client saw {len(errors)} errors, e.g. {errors[0]}")
        lat = "–"
        if samples:
            q = statistics.quantiles(samples, n=100) if len(samples) > 1 else [samples[0]] * 99
            lat = f"{q[49]:.2f} / {q[98]:.2f} / {max(samples):.1f}"
        rows.append([port, name, str(tried), outcome, "0" if alive else "1", lat, str(len(errors)),
                     f"{rss_before / 1024:.0f} → {daemon.rss_kib() / 1024:.0f}", f"{time.time() - started:.0f} s"])
        print(f"  {port} {name}: {outcome}", flush=True)
        if not alive:
            raise SystemExit(1)

    # --- client port (RESP) -------------------------------------------------------------------
    attack("client", "random bytes", lambda: random_bytes(client, False, noise, rng, wait))
    attack("client", "slowloris, 1 byte/s", lambda: slowloris(
        client, False, 20, args.slow_seconds, b"*3\r\n$3\r\nSET\r\n$4\r\nslow\r\n$5\r\nloris\r\n"))
    # Up to the limit less room for the real client and the checks, then past it.
    attack("client", f"{args.flood + 100} silent connections (max-clients {args.flood})",
           lambda: flood(client, False, args.flood + 100, 2))

    def oversized_client():
        replies = []
        for payload in [b"*1\r\n$4294967296\r\n", b"*99999999999\r\n", b"x" * 70000 + b"\r\n", b"*2\r\n$3\r\nGET\r\n$-5\r\n"]:
            s = connect(client)
            send_quietly(s, payload)
            data, closed = drain(s, 2)
            replies.append((data[:60], closed))
            s.close()
        ok = all(data.startswith(b"-") and closed for data, closed in replies)
        return 4, "each answered -ERR Protocol error and closed" if ok else f"unexpected: {replies}"
    attack("client", "oversized bulk, count, inline line; negative length", oversized_client,
           check=lambda: None)

    def valid_then_invalid_client():
        s = connect(client)
        send_quietly(s, b"*3\r\n$3\r\nSET\r\n$5\r\nvalid\r\n$3\r\nyes\r\n*1\r\n$x\r\n")
        data, closed = drain(s, 2)
        s.close()
        return 1, f"replies {data[:40]!r}, closed: {closed}"
    attack("client", "valid SET then garbage", valid_then_invalid_client,
           check=lambda: None if real.client.get("valid") == b"yes" else "the valid SET before the garbage was lost")

    # --- replication port ---------------------------------------------------------------------
    attack("replication", "random bytes", lambda: random_bytes(repl, False, noise, rng, wait))
    attack("replication", "slowloris, 1 byte/s (repl-timeout 2 s)", lambda: slowloris(
        repl, False, 20, max(4, args.slow_seconds // 2), frame(1, b"\x00" * 64)))
    attack("replication", f"{args.flood} silent connections (128 may wait for HELLO)",
           lambda: flood(repl, False, args.flood, 3))

    def oversized_repl():
        results = []
        for payload in [b"WR" + struct.pack(">BBQI", 1, 1, 0, 0xFFFFFFFF) + b"\x00" * 4,
                        b"WR" + struct.pack(">BBQI", 9, 1, 0, 4) + b"\x00" * 8,
                        frame(1, b"\x01" * 2_000_000)]:
            s = connect(repl)
            drain(s, 0.3)  # the CHALLENGE
            send_quietly(s, payload)
            _, closed = drain(s, 3)
            results.append(closed)
            s.close()
        return 3, "all dropped" if all(results) else f"not dropped: {results}"
    attack("replication", "4 GiB length, bad version, 2 MB HELLO", oversized_repl)

    def valid_then_invalid_repl():
        s = connect(repl)
        drain(s, 0.3)
        send_quietly(s, frame(4, b"") + b"garbage!" * 8)
        _, closed = drain(s, 3)
        s.close()
        return 1, "heartbeat then garbage: dropped" if closed else "not dropped"
    attack("replication", "valid heartbeat then garbage", valid_then_invalid_repl)

    # --- control socket -----------------------------------------------------------------------
    attack("control", "random bytes", lambda: random_bytes(control, True, noise, rng, wait))
    attack("control", "slowloris, 1 byte/s", lambda: slowloris(
        control, True, 10, args.slow_seconds, b'{"verb":"status"}' * 4))
    attack("control", "200 silent connections (limit 64)", lambda: flood(control, True, 200, 2))

    def control_lines():
        s = connect(control, unix=True)
        send_quietly(s, b'{"verb":"status"}\n' + b"[" * 5000 + b"\n" + b'{"verb":"x' + b"y" * 70000 + b"\n")
        data, closed = drain(s, 5)
        s.close()
        replies = [json.loads(line) for line in data.splitlines() if line.strip()]
        oks = [r.get("ok") for r in replies]
        if oks != [True, False, False] or not closed:
            raise RuntimeError(f"expected ok, refused, refused and a close; got {oks}, closed: {closed}")
        return 3, "answered ok, too deep, too long; then closed"
    attack("control", "valid, 5000-deep JSON, 70 KB line", control_lines)

    def control_pipeline():
        s = connect(control, unix=True)
        threads_before = daemon.threads()
        sender = threading.Thread(target=send_quietly, args=(s, b'{"verb":"status"}\n' * 5000))
        sender.start()
        peak, data = threads_before, b""
        deadline = time.time() + 60
        while data.count(b"\n") < 5000 and time.time() < deadline:
            chunk, closed = drain(s, 0.2)
            data += chunk
            peak = max(peak, daemon.threads())
            if closed:
                break
        sender.join(timeout=10)
        s.close()
        replies = data.count(b"\n")
        if replies != 5000 or peak > threads_before + 4:
            raise RuntimeError(f"{replies} replies of 5000, threads {threads_before} → {peak}")
        return 5000, f"all answered in order, one at a time; threads {threads_before} → {peak}"
    attack("control", "5000 pipelined requests on one connection", control_pipeline)

    real.running = False
    real.join(timeout=15)
    time.sleep(3)
    rss_end, threads_end = daemon.rss_kib(), daemon.threads()
    if rss_end > rss_start + 256 * 1024:
        failures.append(f"RSS grew from {rss_start // 1024} MiB to {rss_end // 1024} MiB and stayed there")
    if threads_end > threads_start + 16:
        failures.append(f"threads grew from {threads_start} to {threads_end}")
    alive = daemon.alive()
    daemon.stop()
    total = sum(int(r[2]) for r in rows)
    print()
    print(f"### Bad input on every port (walrusd alive throughout: {'yes' if alive else 'NO'}; "
          f"RSS {rss_start / 1024:.0f} → {rss_end / 1024:.0f} MiB, threads {threads_start} → {threads_end})")
    print()
    print("| port | attack | connections/inputs | what walrusd did | daemon exits | real client p50 / p99 / max ms | real client errors | RSS MiB before → after | time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"bad-input: {total} connections/inputs tried, {0 if alive else 1} daemon exits, {len(failures)} failures")
    for f in failures:
        print("FAILED: " + f)
    shutil.rmtree(base, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
