"""`karyo train`: train ChrNet4 on ICIs or ChrRender on MCIs.

karyo train classify  --data DIR --out PATH [--split FILE] [--resume]
karyo train segment   --data DIR --out PATH [--split FILE] [--steps N] [--resume]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from karyoflow.cli.common import DEFAULT_SPLIT, UsageError, add_data_arg


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
    from karyoflow.segment.train import SegmentTrainConfig, train_segmenter

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
        backbone=args.backbone,
        pointrend=not args.plain_mask_rcnn,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=min(args.warmup, max(args.steps // 5, 1)),
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        augment=args.augment,
        max_minutes=args.max_minutes,
        init_weights=str(args.init) if args.init else None,
        train_cases=train_cases,
        extra_data=[str(folder) for folder in extra_data],
    )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    train_segmenter(data_dir, config, args.out, pick_device(args.device), resume=args.resume)
    return 0


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
    ts.add_argument("--backbone", choices=["resnet18", "resnet50", "mobilenet_v3"], default="resnet18")
    ts.add_argument("--plain-mask-rcnn", action="store_true", help="Mask R-CNN mask head (ablation baseline)")
    ts.add_argument("--steps", type=int, default=3000)
    ts.add_argument("--batch-size", type=int, default=2)
    ts.add_argument("--lr", type=float, default=3e-4)
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
    ts.add_argument("--threads", type=int, default=None)
    ts.add_argument("--device", default=None)
    ts.add_argument("--resume", action="store_true")
    ts.set_defaults(func=cmd_train_segment)
