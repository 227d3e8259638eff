"""Wake-ups over PostgreSQL: what a burst of `Notifier.notify` calls costs the caller, how
many `NOTIFY`s it becomes, and when the other side has them all; beside a notifier with no
bridge, and one `NOTIFY` per call sent from the caller's thread (what coalescing replaces).

    python bench/notify_pg.py [--calls 10000] [--url postgresql://postgres@127.0.0.1:5432/test]

Two notifiers with a `PgWakeBridge` each, in this process, on one channel of its own.
"""

from __future__ import annotations

import argparse
import time
import uuid

import psycopg

from headwater.store.notify import RUNS, TOPICS, Notifier, PgWakeBridge


def coalesced(url: str, channel: str, calls: int) -> dict[str, float]:
    sender, receiver = Notifier(), Notifier()
    a = PgWakeBridge(sender, url, channel)
    b = PgWakeBridge(receiver, url, channel)
    try:
        # the last call notifies a topic of its own: when it arrives, every burst has
        last = "keys"
        seen = receiver.version(last)
        start = time.perf_counter()
        for i in range(calls - 1):
            sender.notify(TOPICS[i % 3])
        sender.notify(last)
        called = time.perf_counter() - start
        receiver.wait(last, seen, 30.0)
        arrived = time.perf_counter() - start
        return {"calls_s": called, "arrived_s": arrived, "notifies": a.sent}
    finally:
        a.close()
        b.close()


def no_bridge(_url: str, _channel: str, calls: int) -> dict[str, float]:
    notifier = Notifier()
    start = time.perf_counter()
    for i in range(calls):
        notifier.notify(TOPICS[i % 3])
    called = time.perf_counter() - start
    return {"calls_s": called, "arrived_s": called, "notifies": 0}


def one_per_call(url: str, channel: str, calls: int) -> dict[str, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        start = time.perf_counter()
        for _ in range(calls):
            conn.execute("SELECT pg_notify(%s, %s)", (channel, f'["{RUNS}"]'))
        called = time.perf_counter() - start
    return {"calls_s": called, "arrived_s": called, "notifies": calls}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    channel = f"hw_bench_{uuid.uuid4().hex[:12]}"
    for name, fn in (
        ("no bridge (this process)", no_bridge),
        ("coalesced (PgWakeBridge)", coalesced),
        ("one NOTIFY per call", one_per_call),
    ):
        r = fn(args.url, channel, args.calls)
        print(
            f"{name:26} {args.calls} calls in {r['calls_s'] * 1e3:8.1f} ms"
            f" ({args.calls / r['calls_s']:,.0f}/s), {int(r['notifies'])} NOTIFYs,"
            f" all arrived after {r['arrived_s'] * 1e3:.1f} ms"
        )


if __name__ == "__main__":
    main()
