"""An open-loop HTTP load generator: N clients, each sending at random (Poisson) times.

Each client keeps one keep-alive connection and sends at exponentially spaced
times whose mean gives `rate / clients` requests per second. A request that
cannot be sent on time (the previous answer has not arrived) goes as soon as it
can, and its latency still counts from the time it was due, so a slow server is
not hidden by the client waiting for it (no coordinated omission). Unlike
`hey -q`, whose clients tick together and send their requests in bursts, the
arrivals are spread as independent clients' would be.

    python bench/open_loop.py URL --header 'Authorization: Bearer KEY' --body '{...}'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from urllib.parse import urlsplit


async def _client(
    seed: int,
    host: str,
    port: int,
    request: bytes,
    rate: float,
    start: float,
    end: float,
    latencies: list[float],
    statuses: dict[int, int],
) -> None:
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection(host, port)
    loop = asyncio.get_running_loop()
    due = start + rng.expovariate(rate)
    try:
        while due < end:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(request)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(loop.time() - due)
            statuses[status] = statuses.get(status, 0) + 1
            due += rng.expovariate(rate)
    finally:
        writer.close()


async def _run(
    url: str, headers: dict[str, str], body: bytes, clients: int, rate: float, duration: float
) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {host}:{port}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head += [f"Content-Length: {len(body)}", "", ""]
    request = "\r\n".join(head).encode() + body
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2  # every client connected before the first request is due
    wall = time.perf_counter()
    await asyncio.gather(
        *(
            _client(
                i, host, port, request, rate / clients, start, start + duration, latencies, statuses
            )
            for i in range(clients)
        )
    )
    elapsed = time.perf_counter() - wall - 0.2
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000, 1)

    return {
        "clients": clients,
        "offered_req_per_s": rate,
        "duration_s": duration,
        "requests": len(latencies),
        "achieved_req_per_s": round(len(latencies) / elapsed, 1),
        "statuses": statuses,
        "latency_ms": {
            "p50": pct(50),
            "p90": pct(90),
            "p99": pct(99),
            "max": round(latencies[-1] * 1000, 1),
            "mean": round(statistics.fmean(latencies) * 1000, 1),
        },
    }


def run(
    url: str, headers: dict[str, str], body: bytes, clients: int, rate: float, duration: float
) -> dict[str, object]:
    return asyncio.run(_run(url, headers, body, clients, rate, duration))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--body", default="{}")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--duration", type=float, default=10)
    args = ap.parse_args()
    headers = {"Content-Type": "application/json"}
    headers.update(h.split(": ", 1) for h in args.header)  # type: ignore[misc]
    print(
        json.dumps(
            run(args.url, headers, args.body.encode(), args.clients, args.rate, args.duration),
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
