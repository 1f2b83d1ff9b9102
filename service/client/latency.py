"""`karyo latency`: how long `GET /v1/cases` takes while cases upload, against its idle time. An
API that ran blocking work (decoding, storage, the database) on its event loop would hold every
other request for the length of each upload; this measures that it does not.

    karyo latency FILE|DIR... [--uploads 5] [--rounds 4] [--idle 60] [--json OUT]

Idle: `--idle` listings one after another. Loaded: `--rounds` times, `--uploads` one-image cases
uploaded at once (a thread each) while one thread lists the cases back to back; only the
listings that started while an upload was in flight count. The uploads' own times
(`uploads_ms`, their wait for a turn included) are reported too: what the listings gain, an
upload may pay. The uploaded cases are real (the key's clinic, references
`latency-<round>-<n>`): the workers analyse them afterwards.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from karyoflow.cli.common import UsageError
from karyoflow.files import write_atomically
from karyoflow.inputs import find_images
from service.client.commands import add_client_args, client_of
from service.client.http import KaryoflowClient
from service.client.throughput import upload_of

LISTING = {"limit": 50}


def _percentiles(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": None, "p95": None, "max": None, "count": 0}

    def rank(q: float) -> float:  # nearest rank: a latency that really occurred
        return round(ordered[min(int(round(q / 100 * (len(ordered) - 1))), len(ordered) - 1)] * 1000, 1)

    return {"p50": rank(50), "p95": rank(95), "max": round(ordered[-1] * 1000, 1), "count": len(ordered)}


def _timed_listing(client: KaryoflowClient) -> tuple[float, float]:
    started = time.monotonic()
    client.list_cases(**LISTING)
    return started, time.monotonic() - started


def measure_listing_latency(
    url: str, key: str, uploads: list[tuple[str, bytes]], concurrent: int, rounds: int, idle: int
) -> dict:
    """Milliseconds of `GET /v1/cases`: idle, and while `concurrent` uploads run (each a client
    of its own, as separate labs would be)."""
    with KaryoflowClient(url, key) as client:
        _timed_listing(client)  # a warm connection, as in the loaded phase
        idle_s = [_timed_listing(client)[1] for _ in range(idle)]
    loaded_s: list[float] = []
    upload_s: list[float] = []  # each upload's own time, its wait for a turn included
    for round_number in range(1, rounds + 1):
        windows: list[tuple[float, float]] = []
        lock = threading.Lock()
        # Each uploader is connected before the burst, as a lab's client already is: building an
        # HTTP client costs ~25 ms of CPU (its TLS context), which on a small machine would be the
        # load generator competing with the API it measures.
        uploaders = [KaryoflowClient(url, key) for _ in range(concurrent)]
        start = threading.Barrier(concurrent + 1, timeout=60)

        def upload(n: int, round_number: int = round_number, windows: list = windows, lock=lock, start=start,
                   uploaders: list[KaryoflowClient] = uploaders) -> None:  # fmt: skip
            start.wait()
            started = time.monotonic()
            uploaders[n].submit_case([uploads[n % len(uploads)]], f"latency-{round_number}-{n + 1}")
            with lock:
                windows.append((started, time.monotonic()))

        threads = [threading.Thread(target=upload, args=(n,)) for n in range(concurrent)]
        listings: list[tuple[float, float]] = []
        try:
            with KaryoflowClient(url, key) as lister:
                _timed_listing(lister)
                for thread in threads:
                    thread.start()
                start.wait()
                while any(thread.is_alive() for thread in threads):
                    listings.append(_timed_listing(lister))
            for thread in threads:
                thread.join()
        finally:
            for uploader in uploaders:
                uploader.close()
        if len(windows) != concurrent:
            raise RuntimeError(f"{concurrent - len(windows)} uploads of round {round_number} failed")
        loaded_s += [d for s, d in listings if any(a <= s <= b for a, b in windows)]
        upload_s += [b - a for a, b in windows]
    idle_ms, loaded_ms = _percentiles(idle_s), _percentiles(loaded_s)
    ratio = round(loaded_ms["p95"] / idle_ms["p95"], 2) if loaded_ms["p95"] and idle_ms["p95"] else None
    return {"idle_ms": idle_ms, "during_uploads_ms": loaded_ms, "p95_ratio": ratio, "concurrent_uploads": concurrent,
            "uploads_ms": _percentiles(upload_s)}  # fmt: skip


def cmd_latency(args: argparse.Namespace) -> int:
    if args.uploads < 1 or args.rounds < 1 or args.idle < 1:
        raise UsageError("--uploads, --rounds and --idle must be at least 1")
    uploads = [upload_of(path) for path in find_images(args.files)]
    with client_of(args) as client:
        url, key = client.url, client.key
    figures = measure_listing_latency(url, key, uploads, args.uploads, args.rounds, args.idle)
    if args.json:
        write_atomically(args.json, (json.dumps(figures, indent=1) + "\n").encode())
    idle, loaded = figures["idle_ms"], figures["during_uploads_ms"]
    print(
        f"GET /v1/cases idle: p50 {idle['p50']} ms, p95 {idle['p95']} ms ({idle['count']} requests); "
        f"during {args.uploads} concurrent uploads: p50 {loaded['p50']} ms, p95 {loaded['p95']} ms, "
        f"max {loaded['max']} ms ({loaded['count']} requests); p95 ratio {figures['p95_ratio']}; "
        f"the uploads took p50 {figures['uploads_ms']['p50']} ms, max {figures['uploads_ms']['max']} ms"
    )
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    latency = commands.add_parser("latency", help="GET /v1/cases latency while cases upload, against idle")
    latency.add_argument("files", nargs="+", type=Path, help="MCIs (images, labelme JSON) or folders of them")
    latency.add_argument("--uploads", type=int, default=5, help="cases uploaded at once (default 5)")
    latency.add_argument("--rounds", type=int, default=4, help="bursts of uploads (default 4)")
    latency.add_argument("--idle", type=int, default=60, help="listings timed while idle (default 60)")
    latency.add_argument("--json", type=Path, default=None, help="write the figures here")
    add_client_args(latency)
    latency.set_defaults(func=cmd_latency)
