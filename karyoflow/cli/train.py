"""`karyo train`: train ChrNet4 on ICIs or ChrRender on MCIs.

karyo train classify  --data DIR --out PATH [--split FILE] [--resume]
karyo train segment   --data DIR --out PATH [--engine torchvision|detectron2] [--split FILE] [--steps N] [--resume]
karyo train pairsplit --data DIR [DIR...] --split FILE [FILE...] --out PATH [--steps N] [--resume]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from karyoflow.cli.common import DEFAULT_SPLIT, UsageError, add_data_arg, add_engine_arg
from karyoflow.segment.engines import NATIVE_SIZE


def cmd_train_classify(args: argparse.Namespace) -> int:
    from karyoflow.classify.train import TrainConfig, train_classifier
    from karyoflow.data.bioimlab import resolve_data_dir
    from karyoflow.data.split import make_split_for, read_split, write_split
    from karyoflow.device import pick_device

    data_dir = resolve_data_dir(args.data)
    split_path: Path = args.split
    if not split_path.is_file():
        write_split(make_split_for(data_dir), split_path)
        print(f"wrote a new split to {split_path}")
    split = read_split(split_path)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        center_weight=args.center_weight,
        method=args.method,
        canvas_height=args.canvas[0],
        canvas_width=args.canvas[1],
        reference_size=args.reference_size,
        seed=args.seed,
        eval_every=args.eval_every,
        max_steps=args.max_steps,
        init_weights=str(args.init) if args.init else None,
        train_cases=[str(c) for c in split["train"]][: args.limit_cells],
        val_cases=[str(c) for c in split["val"]] if not args.no_val else [],
    )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    train_classifier(data_dir, config, args.out, pick_device(args.device), resume=args.resume)
    return 0


def cmd_train_segment(args: argparse.Namespace) -> int:
    from karyoflow.data.bioimlab import DataError, resolve_data_dir
    from karyoflow.data.split import read_split, validation_cells_among
    from karyoflow.device import pick_device
    from karyoflow.segment.engines import train_segmenter
    from karyoflow.segment.train import SegmentTrainConfig

    _check_engine_options(args)
    data_dir = resolve_data_dir(args.data)
    train_cases = [str(c) for c in read_split(args.split, "train")]
    if args.limit_cells:
        train_cases = train_cases[: args.limit_cells]
    extra_data = [resolve_data_dir(folder) for folder in args.extra_data]
    val_cases = set(read_split(args.split, "val"))
    for folder in extra_data:
        try:
            leaked = validation_cells_among(folder, val_cases)
        except DataError as error:
            raise UsageError(f"--extra-data {folder}: {error}") from error
        if leaked:
            raise UsageError(
                f"--extra-data {folder} holds MCIs of validation cells {', '.join(leaked)}: "
                "training on them would leak into validation (synthesize from --subset train)"
            )
    config = SegmentTrainConfig(
        backbone=args.backbone or DEFAULT_BACKBONE[args.engine],
        pointrend=not args.plain_mask_rcnn,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr if args.lr is not None else default_lr(args.engine, args.batch_size),
        warmup=min(args.warmup, max(args.steps // 5, 1)),
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        augment=args.augment,
        max_minutes=args.max_minutes,
        init_weights=str(args.init) if args.init else None,
        train_cases=train_cases,
        extra_data=[str(folder) for folder in extra_data],
        image_size=tuple(args.image_size),
        workers=args.workers,
    )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    train_segmenter(args.engine, data_dir, config, args.out, pick_device(args.device), resume=args.resume)
    return 0


def _harvested(paths: list[Path], option: str):
    """The examples of these `karyo data pairsplit` files as one batch, or None for none."""
    if not paths:
        return None
    import numpy as np

    from karyoflow.pairsplit.examples import ExampleBatch
    from karyoflow.pairsplit.harvest import load_examples

    try:
        loaded = [load_examples(path) for path in paths]
    except (OSError, ValueError, KeyError) as error:
        raise UsageError(f"{option}: {error}") from error
    return ExampleBatch(
        np.concatenate([b.inputs for b in loaded]),
        np.concatenate([b.targets for b in loaded]),
        [kind for b in loaded for kind in b.kinds],
    )


def cmd_train_pairsplit(args: argparse.Namespace) -> int:
    from karyoflow.data.bioimlab import DataError, resolve_data_dir
    from karyoflow.data.split import read_split
    from karyoflow.device import pick_device
    from karyoflow.pairsplit.train import PairSplitTrainConfig, load_icis, train_pair_splitter

    if len(args.split) != len(args.data):
        raise UsageError("give one --split per --data folder, in the same order")
    if args.steps < 1 or args.batch_size < 2:
        raise UsageError("--steps must be at least 1 and --batch-size at least 2")
    train_icis, val_icis, sources = [], [], []
    for folder, split_path in zip(args.data, args.split, strict=True):
        try:
            data_dir = resolve_data_dir(folder)
            train_cells = [str(c) for c in read_split(split_path, "train")][: args.limit_cells]
            val_cells = [str(c) for c in read_split(split_path, "val")][: args.limit_cells]
            train_icis += load_icis(data_dir, train_cells)
            val_icis += load_icis(data_dir, val_cells)
        except (DataError, OSError, KeyError) as error:
            raise UsageError(f"--data {folder} --split {split_path}: {error}") from error
        sources.append({"data": str(folder), "split": str(split_path), "train_cells": len(train_cells),
                        "val_cells": len(val_cells)})  # fmt: skip
    if len(train_icis) < 2 or not val_icis:
        raise UsageError("no ICIs found in the training or validation cells of --data")
    config = PairSplitTrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        width=args.width,
        crop_size=args.crop_size,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every,
        max_minutes=args.max_minutes,
        examples_share=args.examples_share,
        init_weights=str(args.init) if args.init else None,
    )
    examples = _harvested(args.examples, "--examples")
    val_harvested = _harvested(args.val_examples, "--val-examples")
    if not 0 <= args.examples_share <= 1:
        raise UsageError("--examples-share is a share in [0, 1]")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    meta = {
        "sources": sources,
        "train_icis": len(train_icis),
        "val_icis": len(val_icis),
        "examples": [str(path) for path in args.examples],
        "harvested": len(examples.kinds) if examples else 0,
    }
    try:
        train_pair_splitter(train_icis, val_icis, config, args.out, pick_device(args.device), args.resume, meta,
                            examples=examples, val_harvested=val_harvested)  # fmt: skip
    except ValueError as error:  # --init or --examples of another crop size or width
        raise UsageError(str(error)) from error
    return 0


# per engine: the default backbone (the default engine's ResNet-18 fits a CPU; detectron2's is the
# paper's R-50)
DEFAULT_BACKBONE = {"torchvision": "resnet18", "detectron2": "resnet50"}


def default_lr(engine: str, batch_size: int) -> float:
    """AdamW at 3e-4 for the default engine; SGD for detectron2 at its recipes' 0.02 for 16
    images, scaled linearly to the batch."""
    return 0.02 * batch_size / 16 if engine == "detectron2" else 3e-4


# what only the default engine's trainer does; detectron2's runs --steps iterations and resumes
# from its last checkpoint
TORCHVISION_ONLY = {
    "--plain-mask-rcnn": lambda args: args.plain_mask_rcnn,
    "--augment dihedral": lambda args: args.augment != "flips",
    "--max-minutes": lambda args: args.max_minutes is not None,
    "--backbone mobilenet_v3": lambda args: args.backbone == "mobilenet_v3",
}


def _check_engine_options(args: argparse.Namespace) -> None:
    if args.engine == "detectron2":
        unsupported = [option for option, given in TORCHVISION_ONLY.items() if given(args)]
        if unsupported:
            raise UsageError(f"{', '.join(unsupported)}: not available with --engine detectron2")
    elif args.workers:
        raise UsageError("--workers: only the detectron2 engine has a data-loader (torchvision prepares in process)")
    if min(args.image_size) < 32 or args.image_size[0] > args.image_size[1]:
        raise UsageError("--image-size SHORT LONG: both at least 32 and SHORT <= LONG")
    if args.batch_size < 1 or args.steps < 1:
        raise UsageError("--batch-size and --steps must be at least 1")


def add_commands(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train a model").add_subparsers(dest="what", required=True)
    tc = train.add_parser("classify", help="train ChrNet4 on ICIs")
    add_data_arg(tc)
    tc.add_argument("--out", type=Path, required=True, help="weights file to write (e.g. models/chrnet4.pt)")
    tc.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    tc.add_argument("--epochs", type=int, default=60)
    tc.add_argument("--batch-size", type=int, default=64)
    tc.add_argument("--lr", type=float, default=2e-3)
    tc.add_argument("--center-weight", type=float, default=0.5, help="alpha of center loss; 0 = off")
    tc.add_argument("--method", choices=["mask", "hough", "none"], default="mask", help="straightening")
    tc.add_argument("--canvas", type=int, nargs=2, default=[112, 56], metavar=("H", "W"), help="input size")
    tc.add_argument(
        "--reference-size", type=float, default=23.3, help="canvas px of sqrt(area) of the cell's median chromosome"
    )
    tc.add_argument("--seed", type=int, default=0)
    tc.add_argument("--eval-every", type=int, default=10)
    tc.add_argument("--max-steps", type=int, default=None)
    tc.add_argument(
        "--init", type=Path, default=None, help="fine-tune from these weights (e.g. models/chrnet4-gband.pt)"
    )
    tc.add_argument("--limit-cells", type=int, default=None, help="train on the first N train cells")
    tc.add_argument("--no-val", action="store_true", help="skip validation during training")
    tc.add_argument("--threads", type=int, default=None)
    tc.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    tc.add_argument("--resume", action="store_true", help="continue from OUT's .ckpt")
    tc.set_defaults(func=cmd_train_classify)

    ts = train.add_parser("segment", help="train ChrRender (Mask R-CNN + PointRend) on MCIs")
    add_data_arg(ts)
    ts.add_argument("--out", type=Path, required=True, help="weights file to write (e.g. models/chrrender.pt)")
    ts.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    add_engine_arg(ts)
    ts.add_argument(
        "--backbone",
        choices=["resnet18", "resnet50", "mobilenet_v3"],
        default=None,
        help="default: resnet18 (torchvision), resnet50 (detectron2)",
    )
    ts.add_argument("--plain-mask-rcnn", action="store_true", help="Mask R-CNN mask head (ablation baseline)")
    ts.add_argument("--steps", type=int, default=3000)
    ts.add_argument("--batch-size", type=int, default=2)
    ts.add_argument(
        "--lr",
        type=float,
        default=None,
        help="default: 3e-4 (torchvision, AdamW), 0.00125 per image of a batch (detectron2, SGD)",
    )
    ts.add_argument("--warmup", type=int, default=200)
    ts.add_argument("--seed", type=int, default=0)
    ts.add_argument("--checkpoint-every", type=int, default=50)
    ts.add_argument(
        "--augment",
        choices=["flips", "dihedral"],
        default="flips",
        help="flips: horizontal and vertical (default, the committed model's); dihedral: also transposition and gamma",
    )
    ts.add_argument("--max-minutes", type=float, default=None, help="stop and save after this wall time")
    ts.add_argument("--init", type=Path, default=None, help="start from these weights (e.g. models/chrrender.pt)")
    ts.add_argument(
        "--extra-data",
        type=Path,
        nargs="+",
        default=[],
        metavar="DIR",
        help="more labelled training MCIs, every one in these folders (BioImLab layout, e.g. a lab's own)",
    )
    ts.add_argument("--limit-cells", type=int, default=None)
    ts.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=list(NATIVE_SIZE),
        metavar=("SHORT", "LONG"),
        help="short side and longest long side the network sees (default: 576 768, BioImLab's native size)",
    )
    ts.add_argument("--workers", type=int, default=0, help="data-loader processes (detectron2 engine)")
    ts.add_argument("--threads", type=int, default=None)
    ts.add_argument("--device", default=None)
    ts.add_argument("--resume", action="store_true")
    ts.set_defaults(func=cmd_train_segment)

    tp = train.add_parser("pairsplit", help="train PairSplit (two merged chromosomes -> two masks) on composed pairs")
    tp.add_argument("--data", nargs="+", required=True, help="ICI folders (BioImLab or G-band layout)")
    tp.add_argument("--split", type=Path, nargs="+", required=True, help="one split per --data folder")
    tp.add_argument("--out", type=Path, required=True, help="weights file to write (e.g. models/pairsplit.pt)")
    tp.add_argument("--steps", type=int, default=3000)
    tp.add_argument("--batch-size", type=int, default=24)
    tp.add_argument("--lr", type=float, default=2e-3)
    tp.add_argument("--width", type=int, default=16, help="channels of the first layer")
    tp.add_argument("--crop-size", type=int, default=64, choices=[48, 64, 96, 128], help="input side in pixels")
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument("--checkpoint-every", type=int, default=100)
    tp.add_argument("--eval-every", type=int, default=500)
    tp.add_argument("--limit-cells", type=int, default=None, help="the first N train and val cells of each split")
    tp.add_argument("--max-minutes", type=float, default=None, help="stop and save after this wall time")
    tp.add_argument("--threads", type=int, default=None)
    tp.add_argument("--device", default=None)
    tp.add_argument("--resume", action="store_true")
    tp.add_argument(
        "--examples", type=Path, nargs="+", default=[], help="harvested examples (karyo data pairsplit), .npz"
    )
    tp.add_argument("--examples-share", type=float, default=0.5, help="share of each batch drawn from --examples")
    tp.add_argument(
        "--val-examples",
        type=Path,
        nargs="+",
        default=[],
        help="harvested examples of validation cells (karyo data pairsplit --validation), scored, never trained on",
    )
    tp.add_argument("--init", type=Path, default=None, help="start from these PairSplit weights")
    tp.set_defaults(func=cmd_train_pairsplit)
