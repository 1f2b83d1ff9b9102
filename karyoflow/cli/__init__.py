"""`karyo`: the command line of Karyoflow, one module per command group.

    karyo data split      --data DIR [--out FILE]                                  (data)
    karyo data coco       --data DIR --out FILE [--images DIR] [--split FILE --subset val]
    karyo data synth      --data DIR [--cases C ...|--split FILE --subset val] --out DIR
    karyo train classify  --data DIR --out PATH [--split FILE] [--resume]          (train)
    karyo train segment   --data DIR --out PATH [--engine E] [--split FILE] [--steps N] [--resume]
    karyo eval classify   --data DIR [--split FILE --subset val] [--weights W] --json OUT   (eval)
    karyo eval segment    --data DIR [--split FILE --subset val] [--engine E] [--weights W] --json OUT
    karyo eval karyotype  --data DIR [--split FILE --subset val] --json OUT
    karyo bench classify  [--weights W] [--batch 46]                               (bench)
    karyo bench segment   [--engine E] [--weights W]
    karyo bench karyotype --data DIR
    karyo run             IMAGE_OR_DIR... --out DIR                                (run)
    karyo classify        --data DIR [--cases C ...] [--weights W]

The modules parse arguments and print; the work is done by the library (karyoflow.data,
.classify, .segment, .pipeline, .benchmark, .inputs). Errors in the input (missing folders, bad
files, unknown cells) end with a one-line message and exit code 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import sys

from karyoflow.cli import bench, data, run, train
from karyoflow.cli import eval as evaluate
from karyoflow.cli.common import UsageError

__all__ = ["UsageError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="karyo", description="Karyoflow: automatic karyotyping")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (data, train, evaluate, bench, run):
        group.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from karyoflow.data.bioimlab import DataError
    from karyoflow.inputs import InputError
    from karyoflow.segment.detectron2_backend import BackendUnavailable
    from karyoflow.weights_io import WeightsError

    try:
        return args.func(args)
    except (UsageError, InputError, DataError, WeightsError, BackendUnavailable) as error:
        print(f"karyo: error: {error}", file=sys.stderr)
        return 2
