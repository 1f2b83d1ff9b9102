"""`karyo run` karyotypes MCIs; `karyo classify` prints ChrNet4's calls for some cells' ICIs.

karyo run       IMAGE_OR_DIR... --out DIR [--stain q|g|auto]
karyo run       --icis CELL_DIR... --out DIR   (cells given as their cut-out chromosomes)
karyo classify  --data DIR [--cases C ...] [--weights W]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from karyoflow.cli.common import UsageError, add_data_arg, add_pipeline_args, make_karyotyper, split_cases
from karyoflow.inputs import IMAGE_SUFFIXES, load_image


def _ici_cells(paths: list[Path]) -> list[tuple[Path, list[Path]]]:
    """Cells given as folders of their chromosome images (one image per chromosome)."""
    cells = []
    for path in paths:
        if not path.is_dir():
            raise UsageError(f"{path}: with --icis, give folders, each holding one cell's chromosome images")
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES - {".json"})
        if not files:
            raise UsageError(f"{path}: no chromosome images (PNG, JPEG, TIFF, BMP) in it")
        cells.append((path, files))
    return cells


def _run_icis(args: argparse.Namespace) -> list:
    """`karyo run --icis`: each folder is one cell given as its cut-out chromosomes."""
    from karyoflow.classify.predictor import ChromosomeClassifier
    from karyoflow.classify.weights import default_weights, weights_stain
    from karyoflow.ici_cell import karyotype_icis
    from karyoflow.pipeline import model_info
    from karyoflow.stain import resolve_stain

    cells = [(folder, files, [load_image(f) for f in files]) for folder, files in _ici_cells(args.inputs)]
    classifiers: dict[str, tuple[ChromosomeClassifier, dict]] = {}
    results = []
    for folder, files, images in cells:
        stain = resolve_stain(args.stain, images)
        if stain not in classifiers:
            weights = args.classify_weights or default_weights(stain)
            if not Path(weights).is_file():
                raise UsageError(f"no {stain.upper()}-band classifier at {weights}")
            classifier = ChromosomeClassifier(weights, args.device)
            info = model_info(Path(weights), classifier.meta, weights_stain(classifier.meta))
            classifiers[stain] = (classifier, info)
        classifier, info = classifiers[stain]
        try:
            result = karyotype_icis(
                classifier,
                images,
                [f.name for f in files],
                stain,
                cell_name=folder.name,
                assignment=not args.argmax,
                classifier_info=info,
            )
        except ValueError as error:
            raise UsageError(f"{folder}: {error}") from error
        results.append((folder, result))
    return results


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from karyoflow.inputs import find_images
    from karyoflow.report import render_outputs, validate_report, write_atomically

    if args.icis:
        analysed = _run_icis(args)
    else:
        inputs = find_images(args.inputs)
        images = [(path, load_image(path)) for path in inputs]  # every input readable before any work
        karyotyper = make_karyotyper(args)
        analysed = (
            (path, karyotyper.analyse(image, path.name))
            for path, image in tqdm(images, desc="karyotyping", disable=len(images) < 2 or args.quiet)
        )
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path, result in analysed:
        report, png = render_outputs(result)
        validate_report(report)
        name = path.name if path.is_dir() else path.stem  # a cell folder's name may hold dots
        write_atomically(args.out / f"{name}.png", png)
        write_atomically(args.out / f"{name}.json", (json.dumps(report, indent=1) + "\n").encode())
        rows.append((path.name, report["karyotype"], report["chromosome_count"], sum(report["timings_ms"].values())))
    width = max(len(name) for name, *_ in rows)
    for name, karyotype, count, total_ms in rows:
        print(f"{name:<{width}}  {karyotype:<24} {count:>3} chromosomes  {total_ms / 1000:.2f} s")
    print(f"karyograms and reports in {args.out}/ (<name>.png, <name>.json)")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from karyoflow.classify.predictor import ChromosomeClassifier
    from karyoflow.cli.common import check_weights_stain, classifier_weights_for
    from karyoflow.data.bioimlab import resolve_data_dir
    from karyoflow.data.icis import list_ici_cells, read_ici_cell
    from karyoflow.labels import LABELS

    data_dir = resolve_data_dir(args.data)
    cases = split_cases(args, data_dir, None) or list_ici_cells(data_dir)[:3]
    weights, stain = classifier_weights_for(data_dir, args.weights)
    classifier = ChromosomeClassifier(weights, args.device)
    check_weights_stain(classifier.meta, stain, weights, data_dir)
    total = correct = 0
    print(f"{'cell':>5}  {'file':<14} {'true':>4} {'pred':>4} {'p':>5}  top-3")
    for case in cases:
        records = read_ici_cell(data_dir, case)
        predictions = classifier.classify_cell([r.load() for r in records])
        for record, prediction in zip(records, predictions, strict=True):
            right = prediction.class_index - 1 == record.class_index
            total += 1
            correct += right
            top3 = " ".join(f"{label}:{p:.2f}" for label, p in prediction.top3)
            print(
                f"{case:>5}  {record.path.name:<14} {LABELS[record.class_index]:>4} "
                f"{prediction.label:>4} {prediction.score:5.2f}  {top3}{'' if right else '  <- wrong'}"
            )
    print(f"{correct}/{total} correct ({correct / max(total, 1):.1%}) on cells {', '.join(cases)}")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="karyotype MCIs: a karyogram PNG and a JSON report per image")
    run.add_argument("inputs", nargs="+", type=Path, help="images (PNG/JPEG/TIFF/BMP, labelme JSON) or folders")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument(
        "--icis", action="store_true", help="each input is a folder holding one cell's cut-out chromosome images"
    )
    add_pipeline_args(run)
    run.set_defaults(func=cmd_run)

    classify = commands.add_parser("classify", help="classify the ICIs of some cells and print a table")
    add_data_arg(classify)
    classify.add_argument("--cases", nargs="+", help="cells (default: the first three)")
    classify.add_argument("--split", type=Path, default=None)
    classify.add_argument("--weights", type=Path, default=None)
    classify.add_argument("--device", default=None)
    classify.set_defaults(func=cmd_classify)
