"""`karyo throughput`: MCIs per hour and latency of a running deployment (the development stack
or docker compose). A real measurement, not a test: it submits `--cases` one-image cases back to
back as the key's clinic (reference `throughput-<n>`), waits for all, and reports; `--delete`
erases the cases afterwards. `--compare` first runs the same MCIs through the in-process
pipeline (`karyo run`'s, in this process, with the machine's cores) and prints both and their
ratio: what the service's stages, queues and storage cost.

    karyo throughput FILE|DIR... [--cases N] [--json OUT] [--delete] [--compare]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from datetime import datetime
from pathlib import Path

from karyoflow.cli.common import UsageError
from karyoflow.files import write_atomically
from karyoflow.inputs import find_images, load_image
from service.client.commands import add_client_args, client_of
from service.client.http import Case, CaseTimeout, KaryoflowClient

STAGES = ("segment", "straighten", "classify", "assemble")


def upload_of(path: Path) -> tuple[str, bytes]:
    """An upload: image files as they are, a labelme JSON's embedded MCI as PNG."""
    if path.suffix.lower() != ".json":
        return path.name, path.read_bytes()
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(load_image(path)).save(buffer, format="PNG")
    return path.stem + ".png", buffer.getvalue()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)  # nearest rank: a latency that really occurred
    return round(ordered[min(int(round(q / 100 * (len(ordered) - 1))), len(ordered) - 1)], 2)


def throughput_summary(cases: list[Case], reports: list[dict], wall_s: float, submit_s: float) -> dict:
    """Figures of one throughput run: `cases` as GET /v1/cases/{id} returns them when finished,
    `reports` the JSON reports of their images. Latency is the server's (created -> finished);
    the stage times are the workers' own compute per image (classify: summed over its ICI
    tasks), so `latency - compute` is what queues and hand-offs cost."""
    done = [c for c in cases if c["status"] == "done"]
    latencies = [
        (datetime.fromisoformat(c["finished_at"]) - datetime.fromisoformat(c["created_at"])).total_seconds()
        for c in done
    ]
    stages = {
        stage: round(sum(r["timings_ms"].get(stage, 0.0) for r in reports) / len(reports), 1) if reports else None
        for stage in STAGES
    }
    images = sum(len(c.get("images", [])) for c in done)
    compute_s = sum(v for v in stages.values() if v is not None) / 1000 if reports else None
    return {
        "cases": len(cases),
        "done": len(done),
        "failed": sum(c["status"] == "failed" for c in cases),
        "images": images,
        "wall_s": round(wall_s, 2),
        "submit_s": round(submit_s, 2),
        "images_per_hour": round(images / wall_s * 3600, 1) if wall_s > 0 else None,
        "latency_s": {
            "p50": _percentile(latencies, 50),
            "p95": _percentile(latencies, 95),
            "max": round(max(latencies), 2) if latencies else None,
        },
        "compute_ms_per_image": stages,
        "compute_s_per_image": round(compute_s, 3) if compute_s is not None else None,
    }


def in_process_summary(uploads: list[tuple[str, bytes]], cases: int) -> dict:
    """The same MCIs as `measure_throughput` submits, one after the other through the in-process
    pipeline (Karyotyper.analyse, karyogram and report rendered, as `karyo bench karyotype`),
    after one warm-up: MCIs per hour and compute per MCI by stage, in the service's terms."""
    import torch

    from karyoflow.pipeline import Karyotyper, grey_from_bytes
    from karyoflow.report import render_outputs

    karyotyper = Karyotyper()
    images = [(name, grey_from_bytes(data)) for name, data in uploads]
    render_outputs(karyotyper.analyse(images[0][1], images[0][0]))  # warm-up: lazy loads, allocator
    timings = []
    started = time.monotonic()
    for n in range(cases):
        name, image = images[n % len(images)]
        result = karyotyper.analyse(image, name)
        render_outputs(result)
        timings.append(result.timings_ms)
    wall_s = time.monotonic() - started
    stages = {stage: round(sum(t.get(stage, 0.0) for t in timings) / cases, 1) for stage in STAGES}
    return {
        "images": cases,
        "threads": torch.get_num_threads(),
        "wall_s": round(wall_s, 2),
        "images_per_hour": round(cases / wall_s * 3600, 1),
        "compute_ms_per_image": stages,
        "compute_s_per_image": round(sum(stages.values()) / 1000, 3),
    }


def comparison(in_process: dict, service: dict) -> dict:
    """The service's figures over the in-process pipeline's."""
    compute = service["compute_s_per_image"]
    return {
        "images_per_hour": round(service["images_per_hour"] / in_process["images_per_hour"], 3),
        "compute_per_image": round(compute / in_process["compute_s_per_image"], 3) if compute else None,
    }


def measure_throughput(
    client: KaryoflowClient,
    uploads: list[tuple[str, bytes]],
    cases: int,
    reference: str,
    timeout: float,
    delete: bool = False,
) -> dict:
    """Submit `cases` one-image cases (the uploads in turn), wait for all, summarise; with
    `delete`, erase them afterwards. `CaseTimeout` when they do not finish within `timeout`."""
    started = time.monotonic()
    case_ids = [client.submit_case([uploads[n % len(uploads)]], f"{reference}-{n + 1}")["id"] for n in range(cases)]
    submit_s = time.monotonic() - started
    finished = client.wait_finished(case_ids, timeout - submit_s, poll_s=0.5)
    wall_s = time.monotonic() - started  # polled every 0.5 s: up to that much late
    reports = [
        report for case_id, case in finished.items() if case["status"] == "done" for report in client.reports(case_id)
    ]
    if delete:  # the measurement's cases leave the clinic's history again
        for case_id in case_ids:
            client.delete_case(case_id)
    return throughput_summary([finished[c] for c in case_ids], reports, wall_s, submit_s)


def cmd_throughput(args: argparse.Namespace) -> int:
    if args.cases < 1:
        raise UsageError("--cases must be at least 1")
    uploads = [upload_of(path) for path in find_images(args.files)]
    local = in_process_summary(uploads, args.cases) if args.compare else None
    if local is not None:
        print(
            f"in process: {local['images']} MCIs in {local['wall_s']} s ({local['threads']} threads): "
            f"{local['images_per_hour']} MCIs/hour; compute {local['compute_s_per_image']} s per MCI "
            + json.dumps(local["compute_ms_per_image"])
        )
    with client_of(args) as client:
        try:
            summary = measure_throughput(client, uploads, args.cases, args.reference, args.timeout, args.delete)
        except CaseTimeout as error:
            print(f"karyo: {len(error.unfinished)} cases not finished after {args.timeout} s", file=sys.stderr)
            return 1
    if local is not None:
        summary = {**summary, "in_process": local, "ratio": comparison(local, summary)}
    if args.json:
        write_atomically(args.json, (json.dumps(summary, indent=1) + "\n").encode())
    print(
        f"{summary['done']}/{summary['cases']} cases done ({summary['failed']} failed), {summary['images']} MCIs in "
        f"{summary['wall_s']} s: {summary['images_per_hour']} MCIs/hour; latency p50 {summary['latency_s']['p50']} s, "
        f"p95 {summary['latency_s']['p95']} s; worker compute {summary['compute_s_per_image']} s per MCI "
        + json.dumps(summary["compute_ms_per_image"])
    )
    if local is not None:
        ratio = summary["ratio"]
        print(
            f"service / in process: {ratio['images_per_hour']} x the MCIs per hour, "
            f"{ratio['compute_per_image']} x the compute per MCI"
        )
    return 0 if summary["failed"] == 0 else 1


def add_commands(commands: argparse._SubParsersAction) -> None:
    throughput = commands.add_parser("throughput", help="MCIs per hour and latency of a running deployment")
    throughput.add_argument("files", nargs="+", type=Path, help="MCIs (images, labelme JSON) or folders of them")
    throughput.add_argument("--cases", type=int, default=8, help="one-image cases, submitted back to back (default 8)")
    throughput.add_argument("--reference", default="throughput", help="reference prefix of the cases")
    throughput.add_argument("--timeout", type=float, default=1800)
    throughput.add_argument("--json", type=Path, default=None, help="write the figures here")
    throughput.add_argument("--delete", action="store_true", help="erase the measurement's cases afterwards")
    throughput.add_argument(
        "--compare", action="store_true", help="run the same MCIs in process first; print both and their ratio"
    )
    add_client_args(throughput)
    throughput.set_defaults(func=cmd_throughput)
