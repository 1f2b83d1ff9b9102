"""What the command groups share: the usage error, arguments that recur, cell selection and the
pipeline built from the pipeline arguments."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from karyoflow.resources import default_split

DEFAULT_SPLIT = default_split()


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


def write_json(path: Path, document: dict) -> None:
    """Atomically: a reader never sees half a report."""
    from karyoflow.files import write_atomically

    write_atomically(path, (json.dumps(document, indent=1) + "\n").encode())


def add_data_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="BioImLab-layout folder (default: $KARYO_DATA)")


def add_engine_arg(parser: argparse.ArgumentParser) -> None:
    from karyoflow.segment.engines import DEFAULT_ENGINE, ENGINES

    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=DEFAULT_ENGINE,
        help="segmentation engine: torchvision (this project's ChrRender, default) or detectron2 (its PointRend; "
        "needs `make detectron2`); weights must be the engine's",
    )


def add_pipeline_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--segment-weights",
        type=Path,
        default=None,
        help="weights for the stain they were trained on (default: the engine's, models/chrrender.pt for Q-band "
        "and models/chrrender-gband.pt for G-band where shipped, else the Q-band one on the inverted image; "
        "models/chrrender-detectron2.pt with --engine detectron2)",
    )
    add_engine_arg(parser)
    parser.add_argument(
        "--classify-weights",
        type=Path,
        default=None,
        help="ChrNet4 weights, used for the stain they were trained on (default: models/chrnet4.pt for Q-band, "
        "models/chrnet4-gband.pt for G-band)",
    )
    parser.add_argument("--score-threshold", type=float, default=None, help="detection score cut")
    parser.add_argument("--argmax", action="store_true", help="plain argmax instead of the karyotype assignment")
    parser.add_argument(
        "--segment-tta", action="store_true", help="segment the mirrored MCI too and fuse (2x segmentation time)"
    )
    parser.add_argument(
        "--resolve-clusters",
        action="store_true",
        help="split detections that hold two touching or crossing chromosomes where the karyotype assignment improves",
    )
    parser.add_argument(
        "--pair-split-weights",
        type=Path,
        default=None,
        help="PairSplit weights for --resolve-clusters (default: models/pairsplit.pt where installed)",
    )
    parser.add_argument("--no-pair-split", action="store_true", help="--resolve-clusters with the concavity cuts only")
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--stain",
        choices=["q", "g", "auto"],
        default="auto",
        help="Q-band fluorescence, G-band brightfield, or auto (a bright background means G)",
    )


def split_cases(args: argparse.Namespace, data_dir: Path, subset: str | None) -> list[str] | None:
    """The cells of `--cases`, else of `--split`'s subset (checked to exist in DIR/ici), else None."""
    from karyoflow.data.bioimlab import list_ici_cases
    from karyoflow.data.split import read_split

    if getattr(args, "cases", None):
        cases = [str(c) for c in args.cases]
    elif args.split is not None:
        cases = read_split(args.split, subset or "val")
    else:
        return None
    known = set(list_ici_cases(data_dir))
    missing = [c for c in cases if c not in known]
    if missing:
        raise UsageError(f"cells not in {data_dir / 'ici'}: {', '.join(missing)}")
    return cases


def mci_cases(args: argparse.Namespace) -> list[str] | None:
    """The cells of `--split`'s `--subset`, or None (every MCI) without a split file."""
    from karyoflow.data.split import read_split

    if args.split is None:
        return None
    return read_split(args.split, args.subset)


def make_karyotyper(args: argparse.Namespace):
    """The pipeline as the pipeline arguments (`add_pipeline_args`) ask for it."""
    from karyoflow.pipeline import Karyotyper

    kwargs = {}
    if getattr(args, "score_threshold", None) is not None:
        kwargs["score_threshold"] = args.score_threshold
    if getattr(args, "pair_split_margin", None) is not None:
        kwargs["pair_split_margin"] = args.pair_split_margin
    if args.classify_weights is not None:  # used for the stain it was trained on
        from karyoflow.classify.weights import read_classifier_meta, weights_stain

        stain = weights_stain(read_classifier_meta(args.classify_weights))
        kwargs["classifier_weights_by_stain"] = {stain: args.classify_weights}
    if args.segment_weights is not None:  # likewise
        from karyoflow.segment.engines import segmenter_stain

        stain = segmenter_stain(args.segment_weights, args.engine)
        if stain == "q":
            kwargs["segmenter_weights"] = args.segment_weights
        else:
            kwargs["segmenter_weights_by_stain"] = {stain: args.segment_weights}
    return Karyotyper(
        device=args.device,
        assignment=not getattr(args, "argmax", False),
        segment_tta=getattr(args, "segment_tta", False),
        resolve_clusters=getattr(args, "resolve_clusters", False),
        pair_split_weights=getattr(args, "pair_split_weights", None),
        pair_split=not getattr(args, "no_pair_split", False),
        stain=getattr(args, "stain", "auto"),
        segment_engine=args.engine,
        **kwargs,
    )


def classifier_weights_for(data_dir: Path, weights: Path | None) -> tuple[Path, str]:
    """The ChrNet4 weights for the stain of DIR's ICIs (`weights` when given, else the shipped
    model of that stain) and that stain."""
    from karyoflow.classify.weights import default_weights
    from karyoflow.data.icis import layout_stain

    stain = layout_stain(data_dir)
    return (Path(weights) if weights is not None else default_weights(stain)), stain


def check_weights_stain(meta: dict, stain: str, path: Path, data_dir: Path) -> None:
    """Weights trained on another stain than DIR's ICIs are a usage error."""
    from karyoflow.classify.weights import weights_stain

    if weights_stain(meta) != stain:
        raise UsageError(f"{path} was trained on {weights_stain(meta)}-band ICIs; {data_dir} is {stain}-band")


def load_classifier_for(data_dir: Path, weights: Path | None, device):
    """(model, meta, path) of the ChrNet4 for the stain of DIR's ICIs, checked to match it."""
    from karyoflow.classify.weights import load_weights

    path, stain = classifier_weights_for(data_dir, weights)
    model, meta = load_weights(path, device)
    check_weights_stain(meta, stain, path, data_dir)
    return model, meta, path
