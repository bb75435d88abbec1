#!/usr/bin/env python3
"""The Sentinel failover drill, walrusd and redis-server side by side (run by deploy/sentinel-drill.sh).

Three nodes and three Sentinels (quorum 2), each Sentinel beside its node, in network namespaces
on one bridge (10.77.0.0/24; the client in a namespace of its own). A redis-py client writes
through `Sentinel.master_for` — one key per attempt, every acknowledgement recorded — and another
reads through `slave_for`. Scenarios:

  planned    SENTINEL FAILOVER under load
  kill       kill -9 of the primary under load; restarted once writes resume elsewhere
  partition  the primary cut off (nftables, in its namespace) from both followers and from their
             two Sentinels while the client still reaches it, then healed

each with walrusd (sync-replicas 1 and 0) and redis-server 7.0 (min-replicas-to-write 1 and 0)
under the same Sentinels. Per run: writes acknowledged, acknowledged writes lost (not on the final
primary), how many of those sit in a walrusd diverged file, records moved aside in all, ms from the
event to the first acknowledged write that survived, s until the old primary follows again, and
whether the three nodes end with equal states. With --tls every link speaks TLS with client
certificates from a private CA made by openssl: the clients to the nodes' tls-port, replication
(tls-replication yes), Sentinel to the nodes and to the other Sentinels (their tls-port); the
Sentinels' plaintext port stays for the client's discovery. Without network namespaces (not root, no `ip netns`)
everything runs on 127.0.0.1 and the partition is skipped.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import redis
import redis.sentinel

NET = "10.77.0"
NAMESPACES = ["wd-n1", "wd-n2", "wd-n3"]
CLIENT_NS = "wd-c"
HUB_NS = "wd-hub"
SENTINEL_PORT = 26379
CONNECTION_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ResponseError,
    redis.sentinel.MasterNotFoundError,
    redis.sentinel.SlaveNotFoundError,
    OSError,
)


def run(*args, check=True, quiet=True):
    return subprocess.run(list(args), check=check, capture_output=quiet, text=True)


# ---------------------------------------------------------------- the network


class Network:
    """Namespaces on a bridge, or 127.0.0.1 when they cannot be made."""

    def __init__(self, use_netns):
        self.netns = use_netns
        if use_netns:
            self.hosts = [f"{NET}.{11 + i}" for i in range(3)]
        else:
            self.hosts = ["127.0.0.1"] * 3

    @staticmethod
    def available():
        if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nft") is None:
            return False
        probe = "wd-probe"
        try:
            run("ip", "netns", "add", probe)
            run("ip", "netns", "exec", probe, "nft", "list", "ruleset")
            return True
        except (subprocess.CalledProcessError, OSError):
            return False
        finally:
            run("ip", "netns", "del", probe, check=False)

    def up(self):
        if not self.netns:
            return
        self.down()
        run("ip", "netns", "add", HUB_NS)
        run("ip", "-n", HUB_NS, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", HUB_NS, "link", "set", "br0", "up")
        for index, ns in enumerate(NAMESPACES + [CLIENT_NS]):
            address = f"{NET}.{11 + index}" if ns != CLIENT_NS else f"{NET}.100"
            run("ip", "netns", "add", ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "link", "add", f"v{ns}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            run("ip", "link", "set", f"v{ns}", "netns", HUB_NS)
            run("ip", "-n", HUB_NS, "link", "set", f"v{ns}", "master", "br0", "up")
            run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")

    def down(self):
        if not self.netns:
            return
        for ns in NAMESPACES + [CLIENT_NS, HUB_NS]:
            run("ip", "netns", "del", ns, check=False)

    def prefix(self, node):
        return ["ip", "netns", "exec", NAMESPACES[node]] if self.netns else []

    def cut(self, node):
        """Drop everything between `node` and the other two nodes (their Sentinels too)."""
        others = ", ".join(h for i, h in enumerate(self.hosts) if i != node)
        rules = (
            "table inet drill {\n"
            f"  chain input {{ type filter hook input priority 0; ip saddr {{ {others} }} drop; }}\n"
            f"  chain output {{ type filter hook output priority 0; ip daddr {{ {others} }} drop; }}\n"
            "}\n"
        )
        subprocess.run(self.prefix(node) + ["nft", "-f", "-"], input=rules, text=True, check=True, capture_output=True)

    def heal(self, node):
        run(*(self.prefix(node) + ["nft", "delete", "table", "inet", "drill"]), check=False)


# ---------------------------------------------------------------- the nodes


class Node:
    def __init__(self, drill, index, kind, sync):
        self.drill = drill
        self.index = index
        self.kind = kind
        self.sync = sync
        self.host = drill.net.hosts[index]
        self.port = 7001 + 10 * index
        self.repl_port = self.port + 1
        # With TLS, Sentinel and the clients use the TLS port; checks use the plaintext one.
        self.tls_port = self.port + 2
        self.public_port = self.tls_port if drill.tls else self.port
        self.dir = os.path.join(drill.work, f"node{index + 1}")
        os.makedirs(self.dir, exist_ok=True)
        self.config = os.path.join(self.dir, "node.conf")
        self.log = open(os.path.join(self.dir, "node.log"), "ab")
        self.process = None

    def write_config(self, primary):
        if self.kind == "walrusd":
            lines = [
                f'data = "{self.dir}"',
                f'bind = "{self.host}"',
                f"port = {self.port}",
                f'repl-bind = "{self.host}"',
                f"repl-port = {self.repl_port}",
                f"sync-replicas = {self.sync}",
                "sync-replicas-timeout = 5000",
                f'control-socket = "{self.dir}/control.sock"',
            ]
            if self.drill.tls:
                lines += [f"tls-port = {self.tls_port}", 'tls-replication = "yes"'] + [
                    f'{key} = "{value}"' for key, value in self.drill.tls_files()
                ]
            if primary is not None:
                lines.append(f'follow = "{primary.host}:{primary.repl_port}"')
        else:
            lines = [
                f"bind {self.host}",
                f"port {self.port}",
                f"dir {self.dir}",
                "protected-mode no",
                "appendonly yes",
                "appendfsync always",
                'save ""',
                f"min-replicas-to-write {self.sync}",
                "min-replicas-max-lag 10",
            ]
            if self.drill.tls:
                lines += [f"tls-port {self.tls_port}", "tls-replication yes"] + [f"{k} {v}" for k, v in self.drill.tls_files()]
            if primary is not None:
                lines.append(f"replicaof {primary.host} {primary.public_port}")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self):
        if self.kind == "walrusd":
            command = [self.drill.walrusd, "--config", self.config]
        else:
            command = [self.drill.redis_server, self.config]
        self.process = subprocess.Popen(self.drill.net.prefix(self.index) + command, stdout=self.log, stderr=self.log)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if self.client().ping():
                    return
            except CONNECTION_ERRORS:
                time.sleep(0.05)
        raise RuntimeError(f"node {self.index + 1} ({self.kind}) did not start; see {self.dir}/node.log")

    def kill(self):
        if self.process and self.process.poll() is None:
            # `ip netns exec` execs the server: the pid is the server's.
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def client(self, timeout=1.0):
        return redis.Redis(host=self.host, port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout)

    def role(self):
        """('master'|'slave', master port or None, link up)"""
        try:
            info = self.client().info("replication")
        except CONNECTION_ERRORS:
            return None
        if info.get("role") == "master":
            return ("master", None, True)
        return ("slave", info.get("master_port"), info.get("master_link_status") == "up")

    def state(self):
        """Every drill key and its value."""
        c = self.client(timeout=5)
        keys = sorted(k for k in c.scan_iter(match="w:*", count=1000))
        values = {}
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            values.update(zip(chunk, c.mget(chunk)))
        return values

    def diverged(self):
        """Keys in this walrusd's diverged files, and how many records they hold."""
        keys, records = set(), 0
        if self.kind != "walrusd":
            return keys, records
        for name in sorted(os.listdir(self.dir)):
            if not name.startswith("diverged-"):
                continue
            dump = run(self.drill.walrusctl, "wal", "dump", "--file", os.path.join(self.dir, name), check=False).stdout
            for line in dump.splitlines():
                words = line.split()
                if len(words) >= 3 and words[0].isdigit():
                    records += 1
                    keys.add(words[2])
        return keys, records


class Sentinel:
    def __init__(self, drill, index, primary):
        self.drill = drill
        self.index = index
        self.host = drill.net.hosts[index]
        self.port = SENTINEL_PORT + index
        self.dir = os.path.join(drill.work, f"sentinel{index + 1}")
        os.makedirs(self.dir, exist_ok=True)
        self.config = os.path.join(self.dir, "sentinel.conf")
        tls = ""
        if drill.tls:
            tls = f"tls-port {self.port + 100}\ntls-replication yes\n" + "".join(f"{k} {v}\n" for k, v in drill.tls_files())
        with open(self.config, "w") as f:
            f.write(
                f"bind {self.host}\nport {self.port}\ndir {self.dir}\nprotected-mode no\n" + tls +
                f"sentinel monitor mymaster {primary.host} {primary.public_port} 2\n"
                "sentinel down-after-milliseconds mymaster 1000\n"
                "sentinel failover-timeout mymaster 10000\n"
                "sentinel parallel-syncs mymaster 2\n"
            )
        log = open(os.path.join(self.dir, "sentinel.log"), "ab")
        self.process = subprocess.Popen(
            drill.net.prefix(index) + [drill.redis_server, self.config, "--sentinel"], stdout=log, stderr=log
        )

    def kill(self):
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()


# ---------------------------------------------------------------- the clients


class Writer(threading.Thread):
    """One key per attempt through master_for; records each acknowledgement and when."""

    def __init__(self, sentinel):
        super().__init__(daemon=True)
        self.master = sentinel.master_for("mymaster", socket_timeout=1.0, socket_connect_timeout=0.5)
        self.acked = []  # (i, monotonic time)
        self.failures = 0
        self.stop = threading.Event()

    def run(self):
        i = 0
        while not self.stop.is_set():
            try:
                self.master.set(f"w:{i}", str(i))
                self.acked.append((i, time.monotonic()))
            except CONNECTION_ERRORS:
                self.failures += 1
                time.sleep(0.02)
            i += 1


class Reader(threading.Thread):
    def __init__(self, sentinel):
        super().__init__(daemon=True)
        self.replica = sentinel.slave_for("mymaster", socket_timeout=1.0, socket_connect_timeout=0.5)
        self.reads = 0
        self.failures = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.replica.get("w:1")
                self.reads += 1
            except CONNECTION_ERRORS:
                self.failures += 1
                time.sleep(0.02)


# ---------------------------------------------------------------- one run


def eventually(seconds, condition, step=0.1):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if condition():
                return True
        except CONNECTION_ERRORS:
            pass
        time.sleep(step)
    return False


class Drill:
    def __init__(self, args, net):
        self.net = net
        self.walrusd = args.walrusd
        self.walrusctl = args.walrusctl
        self.redis_server = args.redis_server
        self.quick = args.quick
        self.tls = args.tls
        self.work = None

    def make_certificates(self):
        """A CA, and one certificate (for every node's address) that every server and client uses."""
        self.certificates = os.path.join(self.root, "tls")
        os.makedirs(self.certificates)
        names = ",".join(f"IP:{h}" for h in sorted(set(self.net.hosts + ["127.0.0.1"])))
        script = f"""set -e
            cd '{self.certificates}'
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=drill CA"
            printf "subjectAltName={names}\\n" > node.ext
            openssl req -newkey rsa:2048 -nodes -keyout node.key -out node.csr -subj "/CN=drill node"
            openssl x509 -req -in node.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out node.crt -days 2 -extfile node.ext
            """
        run("sh", "-c", script)

    def tls_files(self):
        c = self.certificates
        return [("tls-cert-file", f"{c}/node.crt"), ("tls-key-file", f"{c}/node.key"), ("tls-ca-cert-file", f"{c}/ca.crt")]

    def client_tls(self):
        """redis-py's arguments for a TLS connection with the client certificate (none without --tls)."""
        if not self.tls:
            return {}
        c = self.certificates
        return {"ssl": True, "ssl_ca_certs": f"{c}/ca.crt", "ssl_certfile": f"{c}/node.crt", "ssl_keyfile": f"{c}/node.key"}

    def sentinel_load(self, node, seconds):
        """What three Sentinels cost an idle primary: their commands per second and its CPU."""
        calls, cpu, started = commands(node), cpu_seconds(node.process.pid), time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        # (commandstats counts the INFO that reads it: one per sample.)
        rate = (commands(node) - calls - 1) / elapsed
        return {"commands_per_s": round(rate, 1), "cpu_percent": round(100 * (cpu_seconds(node.process.pid) - cpu) / elapsed, 3)}

    def one(self, scenario, kind, sync):
        self.work = tempfile.mkdtemp(prefix=f"drill-{scenario}-{kind}{sync}-", dir=self.root)
        nodes = [Node(self, i, kind, sync) for i in range(3)]
        sentinels = []
        writer = reader = None
        result = {"scenario": scenario, "server": kind, "setting": sync}
        try:
            nodes[0].write_config(None)
            nodes[0].start()
            for node in nodes[1:]:
                node.write_config(nodes[0])
                node.start()
            if not eventually(30, lambda: all((n.role() or ("", 0, False))[2] for n in nodes[1:])):
                raise RuntimeError("the followers did not connect")
            sentinels = [Sentinel(self, i, nodes[0]) for i in range(3)]
            addresses = [(s.host, s.port) for s in sentinels]
            # The masters and replicas it hands out are reached over TLS with --tls; the Sentinels in clear.
            watcher = redis.sentinel.Sentinel(addresses, socket_timeout=0.5, **self.client_tls())

            def ready():
                for s in sentinels:
                    c = redis.Redis(host=s.host, port=s.port, socket_timeout=0.5)
                    master = c.sentinel_master("mymaster")
                    if master.get("num-slaves") != 2 or master.get("num-other-sentinels") != 2:
                        return False
                return True

            if not eventually(40, ready, step=0.5):
                raise RuntimeError("the Sentinels did not find both replicas and each other")
            result["sentinel_load"] = self.sentinel_load(nodes[0], 3 if self.quick else 10)
            writer, reader = Writer(watcher), Reader(watcher)
            writer.start()
            reader.start()
            time.sleep(2 if self.quick else 4)
            old = nodes[0]
            event = time.monotonic()
            rejoin_from = event
            if scenario == "planned":
                redis.Redis(host=sentinels[1].host, port=sentinels[1].port, socket_timeout=5).execute_command(
                    "SENTINEL", "FAILOVER", "mymaster"
                )
            elif scenario == "kill":
                old.kill()
            elif scenario == "partition":
                self.net.cut(0)
            # Writes resume somewhere other than the old primary (Sentinel's majority names it).
            def new_primary():
                host, port = watcher.discover_master("mymaster")
                return port != old.public_port

            def majority_names_new():
                named = []
                for s in sentinels[1:]:
                    c = redis.Redis(host=s.host, port=s.port, socket_timeout=0.5)
                    named.append(c.sentinel_get_master_addr_by_name("mymaster")[1])
                return all(int(p) != old.public_port for p in named)

            failed_over = eventually(40, majority_names_new if scenario == "partition" else new_primary, step=0.1)
            result["failed_over"] = failed_over
            if scenario == "partition":
                time.sleep(max(0.0, (8 if self.quick else 15) - (time.monotonic() - event)))
                self.net.heal(0)
                rejoin_from = time.monotonic()
            else:
                time.sleep(2)
            if scenario == "kill":
                old.start()
                rejoin_from = time.monotonic()

            def old_follows():
                role = old.role()
                if role is None or role[0] != "slave" or not role[2]:
                    return False
                host, port = watcher.discover_master("mymaster")
                return role[1] == port

            rejoined = eventually(60, old_follows, step=0.1)
            result["rejoin_s"] = round(time.monotonic() - rejoin_from, 1) if rejoined else None
            time.sleep(1)
            writer.stop.set()
            reader.stop.set()
            writer.join(5)
            reader.join(5)
            # The final primary, and every node's state once replication settles.
            host, port = watcher.discover_master("mymaster")
            primary = next(n for n in nodes if n.public_port == port)
            final = primary.state()
            equal = eventually(30, lambda: all(n.state() == final for n in nodes if n is not primary), step=0.5)
            acked = writer.acked
            lost = [i for i, _ in acked if final.get(f"w:{i}".encode()) != str(i).encode()]
            diverged_keys, diverged_records = set(), 0
            for n in nodes:
                keys, records = n.diverged()
                diverged_keys |= keys
                diverged_records += records
            # Unavailability: the longest stretch after the event without a write that survived.
            kept = sorted(t for i, t in acked if final.get(f"w:{i}".encode()) == str(i).encode())
            before = [t for t in kept if t <= event]
            after = [t for t in kept if t > event]
            gaps = [b - a for a, b in zip([before[-1] if before else event] + after, after)]
            result.update(
                acked=len(acked),
                lost=len(lost),
                lost_in_diverged=sum(1 for i in lost if f"w:{i}" in diverged_keys),
                diverged_records=diverged_records,
                resume_ms=int(max(gaps) * 1000) if gaps else None,
                equal=equal,
                write_failures=writer.failures,
                reads=reader.reads,
                new_primary=primary.index + 1,
            )
        except Exception as error:  # a run that could not finish says why, and the drill goes on
            result["error"] = f"{type(error).__name__}: {error}"
        finally:
            if writer:
                writer.stop.set()
            if reader:
                reader.stop.set()
            self.net.heal(0)
            for s in sentinels:
                s.kill()
            for n in nodes:
                n.kill()
        return result


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def commands(node):
    stats = node.client().info("commandstats")
    return sum(v["calls"] for v in stats.values())


def load_line(results):
    parts = []
    for kind in ("walrusd", "redis-server"):
        mine = [r["sentinel_load"] for r in results if r["server"] == kind and "sentinel_load" in r]
        if mine:
            rate = sum(m["commands_per_s"] for m in mine) / len(mine)
            cpu = sum(m["cpu_percent"] for m in mine) / len(mine)
            parts.append(f"{kind} {rate:.1f} commands/s, {cpu:.2f} % of a core")
    if not parts:
        return ""
    return "Three Sentinels' load on an idle primary (PING, INFO, PUBLISH hello, before the client starts): " + "; ".join(parts)


def table(results):
    lines = [
        "| scenario | server | setting | acknowledged | lost | lost, in a diverged file | records moved aside | "
        "ms until writes resume | s until the old primary follows | states equal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        setting = ("sync-replicas " if r["server"] == "walrusd" else "min-replicas-to-write ") + str(r["setting"])
        if "error" in r:
            lines.append(f"| {r['scenario']} | {r['server']} | {setting} | error: {r['error']} | | | | | | |")
            continue
        walrus = r["server"] == "walrusd"

        def show(value):
            return "—" if value is None else str(value)

        lines.append(
            f"| {r['scenario']} | {r['server']} | {setting} | {r['acked']} | {r['lost']} | "
            f"{r['lost_in_diverged'] if walrus else 'n/a'} | {r['diverged_records'] if walrus else 'n/a'} | "
            f"{show(r['resume_ms'])} | {show(r['rejoin_s'])} | {'yes' if r['equal'] else 'NO'} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--walrusd", required=True)
    parser.add_argument("--walrusctl", required=True)
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "/usr/bin/redis-server")
    parser.add_argument("--scenarios", default="planned,kill,partition")
    parser.add_argument("--servers", default="walrusd:1,walrusd:0,redis:1,redis:0")
    parser.add_argument("--quick", action="store_true", help="shorter load and partition (CI)")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--check", action="store_true", help="exit 1 unless walrusd meets the goal")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-netns", action="store_true", help="run on 127.0.0.1 (no partition)")
    parser.add_argument("--tls", action="store_true", help="every link over TLS with client certificates")
    args = parser.parse_args()

    use_netns = not args.no_netns and (args.inside or Network.available())
    net = Network(use_netns)
    if use_netns and not args.inside:
        # The orchestrator runs in the client's namespace, where it reaches every node.
        net.up()
        try:
            code = subprocess.call(["ip", "netns", "exec", CLIENT_NS, sys.executable, os.path.abspath(__file__), "--inside"] + sys.argv[1:])
        finally:
            net.down()
        sys.exit(code)

    scenarios = [s for s in args.scenarios.split(",") if s]
    if not use_netns and "partition" in scenarios:
        print("No network namespaces here (needs root, ip and nft): the partition scenario is skipped.")
        scenarios.remove("partition")
    servers = [(s.split(":")[0], int(s.split(":")[1])) for s in args.servers.split(",") if s]
    drill = Drill(args, net)
    drill.root = tempfile.mkdtemp(prefix="walrus-sentinel-drill-")
    if args.tls:
        drill.make_certificates()
    results = []
    started = time.time()
    for scenario in scenarios:
        for kind, sync in servers:
            kind = "walrusd" if kind == "walrusd" else "redis-server"
            r = drill.one(scenario, kind, sync)
            results.append(r)
            print(f"  {scenario:9} {kind:12} {sync}: " + json.dumps({k: v for k, v in r.items() if k not in ("scenario", "server", "setting")}), flush=True)
    print()
    print(f"### Sentinel drill ({'network namespaces' if use_netns else '127.0.0.1'}{'; TLS on every link' if args.tls else ''}; three nodes, three Sentinels, quorum 2, "
          f"down-after-milliseconds 1000; {int(time.time() - started)} s)")
    print()
    print(table(results))
    print()
    print(load_line(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    shutil.rmtree(drill.root, ignore_errors=True)
    if args.check:
        bad = []
        for r in results:
            if r["server"] != "walrusd":
                continue
            goal = r["setting"] >= 1 or r["scenario"] == "planned"
            if "error" in r:
                bad.append(f"{r['scenario']} sync-replicas {r['setting']}: {r['error']}")
            elif goal and r["lost"]:
                bad.append(f"{r['scenario']} sync-replicas {r['setting']}: {r['lost']} acknowledged writes lost")
            elif not r["equal"]:
                bad.append(f"{r['scenario']} sync-replicas {r['setting']}: the nodes' states differ")
        if bad:
            print("\nwalrusd missed the drill's goal:\n  " + "\n  ".join(bad))
            sys.exit(1)


if __name__ == "__main__":
    main()
