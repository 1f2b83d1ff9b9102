"""`karyo data`: split the cells, export COCO instances, synthesize labelled MCIs.

karyo data split  --data DIR [--out FILE]
karyo data coco   --data DIR --out FILE [--images DIR] [--split FILE --subset val]
karyo data synth  --data DIR [--cases C ...|--split FILE --subset val] [--abnormal] --out DIR
karyo data pairsplit --data DIR --split FILE --out FILE.npz [--segment-weights W]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from karyoflow.cli.common import DEFAULT_SPLIT, UsageError, add_data_arg, mci_cases, split_cases


def cmd_data_split(args: argparse.Namespace) -> int:
    from karyoflow.data.bioimlab import resolve_data_dir
    from karyoflow.data.split import make_split_for, write_split

    data_dir = resolve_data_dir(args.data)
    split = make_split_for(data_dir, val_cells=args.val_cells, val_fraction=args.val_fraction, seed=args.seed)
    write_split(split, args.out)
    print(f"{len(split['train'])} train cells, {len(split['val'])} val cells ({split['unit']} split) -> {args.out}")
    return 0


def cmd_data_coco(args: argparse.Namespace) -> int:
    from karyoflow.data.bioimlab import resolve_data_dir
    from karyoflow.files import write_atomically
    from karyoflow.segment.dataset import load_samples, to_coco, write_coco_images

    data_dir = resolve_data_dir(args.data)
    samples = load_samples(data_dir, mci_cases(args))
    if not samples:
        raise UsageError(f"no MCIs found in {data_dir / 'mci'} for the chosen cells")
    coco = to_coco(samples)
    if args.images is not None:
        write_coco_images(samples, coco, args.images)
        print(f"{len(coco['images'])} PNG images -> {args.images}")
    write_atomically(args.out, json.dumps(coco).encode())
    print(f"{len(coco['images'])} images, {len(coco['annotations'])} instances -> {args.out}")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from karyoflow.data.bioimlab import list_ici_cases, resolve_data_dir
    from karyoflow.data.synth import DEFAULT_OVERLAPPING, DEFAULT_TOUCHING, synthesize_folder

    data_dir = resolve_data_dir(args.data)
    cases = split_cases(args, data_dir, args.subset) or list_ici_cases(data_dir)
    if not 1 <= args.per_cell <= 26:
        raise UsageError("--per-cell must be 1..26 (one letter per picture)")
    # defaults near real preparations (karyoflow.data.synth)
    args.touching = DEFAULT_TOUCHING if args.touching is None else args.touching
    args.overlapping = DEFAULT_OVERLAPPING if args.overlapping is None else args.overlapping
    if not (0 <= args.touching <= 1 and 0 <= args.overlapping <= 1 and args.touching + args.overlapping <= 1):
        raise UsageError("--touching and --overlapping are shares in [0, 1] that add up to at most 1")
    if args.abnormal and len(cases) < 2:
        raise UsageError("--abnormal needs at least two cells (a gained copy comes from another cell)")
    try:
        written = synthesize_folder(
            data_dir,
            cases,
            args.out,
            per_cell=args.per_cell,
            touching=args.touching,
            overlapping=args.overlapping,
            seed=args.seed,
            abnormal=args.abnormal,
            progress=lambda items: tqdm(items, desc="synthesizing"),
        )
    except ValueError as error:  # e.g. a +Y change among cells with no Y to take it from
        raise UsageError(str(error)) from error
    changes = f" ({', '.join(sorted({iscn for _, iscn in written}))})" if args.abnormal else ""
    print(f"wrote {len(written)} MCIs to {args.out / 'mci'}{changes}")
    return 0


def cmd_data_pairsplit(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from karyoflow.data.bioimlab import DataError, list_mcis, read_mci, resolve_data_dir
    from karyoflow.data.split import read_split, validation_cells_among
    from karyoflow.pairsplit.harvest import harvest, save_examples
    from karyoflow.pipeline import Karyotyper
    from karyoflow.segment.dataset import sample_from_mci

    data_dir = resolve_data_dir(args.data)
    # training examples of validation cells would leak into validation, and the reverse
    subset, other = ("val", "train") if args.validation else ("train", "val")
    try:
        leaked = validation_cells_among(data_dir, {str(c) for c in read_split(args.split, other)})
    except DataError as error:
        raise UsageError(str(error)) from error
    if leaked:
        raise UsageError(
            f"{data_dir} holds MCIs of {other} cells {', '.join(leaked)}; examples for {subset} must come from "
            f"{subset} cells only (synthesize with --subset {subset})"
        )
    karyotyper = Karyotyper(segmenter_weights=args.segment_weights, device=args.device)

    def samples():
        for path in tqdm(list_mcis(data_dir), desc="segmenting"):
            sample = sample_from_mci(read_mci(path))  # in the working representation, with its stain
            yield sample.image, sample.masks.astype(bool), karyotyper.detect(sample.image, sample.stain).masks

    try:
        batch = harvest(samples())
    except ValueError as error:
        raise UsageError(str(error)) from error
    save_examples(batch, args.out)
    merged = batch.kinds.count("merged")
    print(f"{merged} merged pairs and {len(batch.kinds) - merged} single chromosomes -> {args.out}")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="data preparation").add_subparsers(dest="what", required=True)
    split = data.add_parser("split", help="write a seeded train/val split by cell")
    add_data_arg(split)
    split.add_argument("--out", type=Path, default=DEFAULT_SPLIT)
    split.add_argument("--val-cells", type=int, default=16, help="BioImLab layout: validation cells")
    split.add_argument(
        "--val-fraction", type=float, default=0.2, help="G-band layout: share of cases in validation, by stratum"
    )
    split.add_argument("--seed", type=int, default=2026)
    split.set_defaults(func=cmd_data_split)

    coco = data.add_parser("coco", help="export MCIs' polygons as COCO instances JSON")
    add_data_arg(coco)
    coco.add_argument("--out", type=Path, required=True)
    coco.add_argument(
        "--images", type=Path, default=None, metavar="DIR", help="also write the images, as PNGs under the JSON's names"
    )
    coco.add_argument("--split", type=Path, default=None, help="split file (default: every MCI)")
    coco.add_argument("--subset", default="val")
    coco.set_defaults(func=cmd_data_coco)

    synth = data.add_parser("synth", help="semi-synthetic labelled MCIs from cells' ICIs")
    add_data_arg(synth)
    synth.add_argument("--out", type=Path, required=True, help="folder to write (BioImLab layout: mci/)")
    synth.add_argument("--cases", nargs="+", help="cells (default: --split's subset, else every cell)")
    synth.add_argument("--split", type=Path, default=None)
    synth.add_argument("--subset", default="val")
    synth.add_argument("--per-cell", type=int, default=1, help="pictures per cell")
    synth.add_argument("--touching", type=float, default=None, help="share of chromosomes touching another (0.15)")
    synth.add_argument("--overlapping", type=float, default=None, help="share overlapping another (0.12)")
    synth.add_argument(
        "--abnormal",
        action="store_true",
        help="one numerical change per MCI (+21, +18, +13, +X, +Y, 45,X, +8, -7, +12, +22, -21 in turn; "
        "the true ISCN in flags.karyotype)",
    )
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=cmd_data_synth)

    pairs = data.add_parser(
        "pairsplit", help="PairSplit training examples: the segmenter's merged pairs and single chromosomes"
    )
    add_data_arg(pairs)
    pairs.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="the cells DIR's MCIs may come from")
    pairs.add_argument("--out", type=Path, required=True, help=".npz file to write")
    pairs.add_argument("--segment-weights", type=Path, default=None, help="default: the shipped Q-band segmenter")
    pairs.add_argument("--device", default=None)
    pairs.add_argument(
        "--validation", action="store_true", help="examples to validate on: DIR must hold validation cells only"
    )
    pairs.set_defaults(func=cmd_data_pairsplit)
