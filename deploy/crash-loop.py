#!/usr/bin/env python3
"""Crash loop: SIGKILL the primary at random moments under a write/delete load and check, after
every restart, that the state is exactly what the acknowledged operations say.

  deploy/crash-loop.py [--bin DIR] [--iterations 25] [--seed N]

One client sends SET and DEL one at a time in fsync=always mode and records each acknowledged
operation. Only the operation in flight when the daemon died may or may not have happened, so after
a restart the state must equal the replay of every acknowledged operation, or that replay plus the
one in flight — anything else is a lost acknowledged write or a phantom. A follower is attached; after
every restart its digest must equal the primary's. Prints one Markdown row; exits 1 on any failure.
"""
import argparse, os, random, re, shutil, signal, socket, subprocess, sys, tempfile, time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, binary, data, port, repl_port, extra=()):
        self.binary, self.data, self.port, self.repl_port, self.extra = binary, data, port, repl_port, list(extra)
        self.process = None

    def start(self):
        log = open(os.path.join(os.path.dirname(self.data), os.path.basename(self.data) + ".log"), "a")
        self.process = subprocess.Popen(
            [self.binary, "--data", self.data, "--port", str(self.port), "--repl-port", str(self.repl_port),
             "--log-level", "warning", "--fsync", "always"] + self.extra, stderr=log, stdout=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if self.client().ping():
                    return
            except Exception:
                time.sleep(0.02)
        raise SystemExit(f"crash-loop: walrusd on {self.data} did not start")

    def client(self, timeout=5):
        return redis.Redis(port=self.port, socket_timeout=timeout, socket_connect_timeout=1, protocol=2,
                           retry=Retry(NoBackoff(), 0))

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def state(node, keyspace):
    client = node.client()
    values = client.mget([f"k{i}" for i in range(keyspace)])
    return {f"k{i}": v.decode() for i, v in enumerate(values) if v is not None}


def apply(model, op):
    kind, key, value = op
    if kind == "set":
        model[key] = value
    else:
        model.pop(key, None)


def main():
    parser = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--bin", default=os.path.join(here, "..", ".build", "release"))
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--keyspace", type=int, default=500)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    binary = os.path.join(args.bin, "walrusd")
    work = tempfile.mkdtemp(prefix="walrus-crash-")
    primary = Node(binary, os.path.join(work, "primary"), free_port(), free_port())
    follower = Node(binary, os.path.join(work, "follower"), free_port(), free_port(),
                    ["--follow", f"127.0.0.1:{primary.repl_port}"])
    model, acked, lost, phantoms, in_flight_applied, digest_mismatch = {}, 0, 0, 0, 0, 0
    sequence = 0
    try:
        primary.start()
        follower.start()
        for iteration in range(args.iterations):
            client = primary.client()
            in_flight = None
            killer_at = time.time() + rng.uniform(0.1, 0.6)
            while True:
                key = f"k{rng.randrange(args.keyspace)}"
                sequence += 1
                op = ("set", key, f"v{sequence}") if rng.random() < 0.8 else ("del", key, None)
                if time.time() >= killer_at:
                    # Send the next operation and kill the daemon while it may be in flight.
                    in_flight = op
                    words = ["SET", key, op[2]] if op[0] == "set" else ["DEL", key]
                    payload = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)
                    with socket.create_connection(("127.0.0.1", primary.port)) as raw:
                        raw.sendall(payload.encode())
                        time.sleep(rng.uniform(0, 0.0005))
                        primary.kill()
                    break
                try:
                    if op[0] == "set":
                        ok = client.set(key, op[2])
                    else:
                        client.delete(key)
                        ok = True
                except Exception as error:
                    raise SystemExit(f"crash-loop: the primary failed an operation before the kill: {error}")
                if ok:
                    apply(model, op)
                    acked += 1
            primary.start()
            actual = state(primary, args.keyspace)
            with_in_flight = dict(model)
            apply(with_in_flight, in_flight)
            if actual == model:
                pass
            elif actual == with_in_flight:
                model = with_in_flight
                in_flight_applied += 1
            else:
                missing = [k for k in model if actual.get(k) != model[k] and with_in_flight.get(k) != actual.get(k)]
                extra = [k for k in actual if k not in model and k not in with_in_flight]
                lost += len(missing)
                phantoms += len(extra)
                print(f"iteration {iteration}: state differs: {len(missing)} acknowledged values wrong or missing, "
                      f"{len(extra)} keys never written (seed {args.seed})", file=sys.stderr)
                model = actual
            # The follower reconnects and must reach the same digest.
            want = primary.client().execute_command("DIGEST")
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    if follower.client().execute_command("DIGEST") == want:
                        break
                except Exception:
                    pass
                time.sleep(0.05)
            else:
                digest_mismatch += 1
                print(f"iteration {iteration}: the follower's digest differs from the primary's", file=sys.stderr)
    finally:
        follower.stop()
        primary.stop()
        if os.environ.get("WALRUS_CRASH_KEEP") is None:
            shutil.rmtree(work, ignore_errors=True)
    verdict = "ok" if lost == 0 and phantoms == 0 and digest_mismatch == 0 else "FAIL"
    print("| iterations | operations acknowledged | acknowledged lost | phantom keys | in-flight op found applied | follower digest mismatches | verdict |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.iterations} | {acked} | {lost} | {phantoms} | {in_flight_applied} | {digest_mismatch} | {verdict} |")
    print(f"(seed {args.seed})")
    sys.exit(0 if verdict == "ok" else 1)


if __name__ == "__main__":
    main()
