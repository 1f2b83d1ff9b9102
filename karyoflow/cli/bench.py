"""`karyo bench`: speed of ChrNet4, of ChrRender and of the whole pipeline, printed as JSON.

karyo bench classify  [--weights W] [--batch 46]
karyo bench segment   [--engine E] [--weights W]
karyo bench karyotype --data DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from karyoflow.cli.common import add_data_arg, add_engine_arg, add_pipeline_args, make_karyotyper


def cmd_bench_classify(args: argparse.Namespace) -> int:
    from karyoflow.benchmark import bench_classifier
    from karyoflow.cli.common import load_classifier_for
    from karyoflow.data.bioimlab import resolve_data_dir
    from karyoflow.data.icis import list_ici_cells, read_ici_cell
    from karyoflow.device import pick_device

    data_dir = resolve_data_dir(args.data)
    device = pick_device(args.device)
    model, meta, _ = load_classifier_for(data_dir, args.weights, device)
    cell = list_ici_cells(data_dir)[0]
    raw = [r.load() for r in read_ici_cell(data_dir, cell)][: args.batch]
    print(json.dumps(bench_classifier(model, meta, raw, args.batch, args.repeats, args.tta, device)))
    return 0


def cmd_bench_segment(args: argparse.Namespace) -> int:
    from karyoflow.benchmark import bench_segmenter
    from karyoflow.data.bioimlab import list_mcis, read_mci, resolve_data_dir
    from karyoflow.device import pick_device
    from karyoflow.segment.engines import load_segmenter

    data_dir = resolve_data_dir(args.data)
    device = pick_device(args.device)
    model, meta = load_segmenter(args.weights, device, args.engine)
    image = read_mci(list_mcis(data_dir)[0]).image
    print(json.dumps(bench_segmenter(model, meta, image, args.repeats, args.tta, device)))
    return 0


def cmd_bench_karyotype(args: argparse.Namespace) -> int:
    from karyoflow.benchmark import bench_pipeline
    from karyoflow.data.bioimlab import list_mcis, read_mci, resolve_data_dir

    data_dir = resolve_data_dir(args.data)
    karyotyper = make_karyotyper(args)
    mci = read_mci(list_mcis(data_dir)[0])
    print(json.dumps(bench_pipeline(karyotyper, mci, args.repeats)))
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="speed benchmarks").add_subparsers(dest="what", required=True)
    bc = bench.add_parser("classify", help="ICIs/s for one cell's batch")
    add_data_arg(bc)
    bc.add_argument("--weights", type=Path, default=None)
    bc.add_argument("--batch", type=int, default=46)
    bc.add_argument("--repeats", type=int, default=10)
    bc.add_argument("--tta", action="store_true")
    bc.add_argument("--device", default=None)
    bc.set_defaults(func=cmd_bench_classify)

    bs = bench.add_parser("segment", help="seconds per 768x576 MCI")
    add_data_arg(bs)
    add_engine_arg(bs)
    bs.add_argument("--weights", type=Path, default=None, help="default: the engine's weights in models/")
    bs.add_argument("--repeats", type=int, default=5)
    bs.add_argument("--tta", action="store_true", help="with the left-right flip pass (2x the time)")
    bs.add_argument("--device", default=None)
    bs.set_defaults(func=cmd_bench_segment)

    bk = bench.add_parser("karyotype", help="seconds per MCI for the whole pipeline, by stage")
    add_data_arg(bk)
    bk.add_argument("--repeats", type=int, default=5)
    add_pipeline_args(bk)
    bk.set_defaults(func=cmd_bench_karyotype)
