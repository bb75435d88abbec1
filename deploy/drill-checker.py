#!/usr/bin/env python3
"""The failover drill's client: a write load that records every acknowledged write, and the
check afterwards.

  drill-checker.py load   --nodes H:P,H:P,... --prefix P --stop FILE --out FILE
      SETs P:0, P:1, ... against whichever node is the primary (ROLE master), each key tried once;
      on READONLY / TRYAGAIN / NOREPLICAS / a dead connection it moves on to the next key and looks
      for the primary again. Writes {"acked": [...], "attempted": n, "gap_ms": longest time
      without an acknowledged write} to --out when FILE --stop appears.
  drill-checker.py verify --node H:P --acked FILE [--diverged F ...]
      Prints "lost=N moved=M": acknowledged keys missing on the node, and how many of those are
      in the diverged files (walrusctl wal dump --file --json output, one path each).
"""
import argparse, json, os, subprocess, sys, time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

# One try per call: redis-py would otherwise retry a dead node with backoff for seconds, which
# would be measured as unavailability of the cluster.
NO_RETRY = Retry(NoBackoff(), 0)


def find_primary(nodes):
    for node in nodes:
        host, port = node.rsplit(":", 1)
        try:
            client = redis.Redis(
                host=host, port=int(port), socket_timeout=1.5, socket_connect_timeout=0.3, protocol=2, retry=NO_RETRY)
            role = client.execute_command("ROLE")
            if role and role[0] in (b"master", "master"):
                info = client.info("replication")
                if "walrus_fenced" not in info:
                    return client
        except Exception:
            pass
    return None


def load(args):
    nodes = args.nodes.split(",")
    acked, attempted = [], 0
    client, last_ack, gap = None, None, 0.0
    while not os.path.exists(args.stop):
        if client is None:
            client = find_primary(nodes)
            if client is None:
                time.sleep(0.005)
                continue
        key = f"{args.prefix}:{attempted}"
        attempted += 1
        try:
            client.set(key, "x" * 32)
        except redis.ResponseError:
            client = None  # READONLY, TRYAGAIN, NOREPLICAS: not acknowledged
            continue
        except Exception:
            client = None  # connection refused, reset, timed out: not acknowledged
            continue
        now = time.monotonic()
        if last_ack is not None:
            gap = max(gap, now - last_ack)
        last_ack = now
        acked.append(key)
    with open(args.out, "w") as out:
        json.dump({"acked": acked, "attempted": attempted, "gap_ms": round(gap * 1000, 1)}, out)


def verify(args):
    host, port = args.node.rsplit(":", 1)
    client = redis.Redis(host=host, port=int(port), socket_timeout=5, protocol=2)
    acked = json.load(open(args.acked))["acked"]
    pipe = client.pipeline(transaction=False)
    for key in acked:
        pipe.exists(key)
    missing = {key for key, present in zip(acked, pipe.execute()) if not present}
    moved = set()
    for path in args.diverged or []:
        for line in open(path):
            line = line.strip()
            if line:
                record = json.loads(line)
                if "key" in record:
                    moved.add(record["key"])
    print(f"lost={len(missing)} moved={len(missing & moved)} acked={len(acked)} moved_total={len(moved)}")


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    l = sub.add_parser("load")
    l.add_argument("--nodes", required=True)
    l.add_argument("--prefix", required=True)
    l.add_argument("--stop", required=True)
    l.add_argument("--out", required=True)
    v = sub.add_parser("verify")
    v.add_argument("--node", required=True)
    v.add_argument("--acked", required=True)
    v.add_argument("--diverged", action="append")
    args = parser.parse_args()
    load(args) if args.mode == "load" else verify(args)


if __name__ == "__main__":
    main()
