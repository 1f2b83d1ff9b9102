"""`karyo run` karyotypes MCIs; `karyo classify` prints ChrNet4's calls for some cells' ICIs.

    karyo run       IMAGE_OR_DIR... --out DIR
    karyo classify  --data DIR [--cases C ...] [--weights W]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from karyoflow.cli.common import add_data_arg, add_pipeline_args, make_karyotyper, split_cases


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from karyoflow.inputs import find_images, load_image
    from karyoflow.report import render_outputs, validate_report, write_atomically

    inputs = find_images(args.inputs)
    images = [(path, load_image(path)) for path in inputs]  # every input readable before any work
    karyotyper = make_karyotyper(args)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path, image in tqdm(images, desc="karyotyping", disable=len(images) < 2 or args.quiet):
        result = karyotyper.analyse(image, path.name)
        report, png = render_outputs(result)
        validate_report(report)
        write_atomically(args.out / f"{path.stem}.png", png)
        write_atomically(args.out / f"{path.stem}.json", (json.dumps(report, indent=1) + "\n").encode())
        rows.append((path.name, report["karyotype"], report["chromosome_count"], sum(report["timings_ms"].values())))
    width = max(len(name) for name, *_ in rows)
    for name, karyotype, count, total_ms in rows:
        print(f"{name:<{width}}  {karyotype:<24} {count:>3} chromosomes  {total_ms / 1000:.2f} s")
    print(f"karyograms and reports in {args.out}/ (<name>.png, <name>.json)")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from karyoflow.classify.predictor import ChromosomeClassifier
    from karyoflow.data.bioimlab import list_ici_cases, read_ici_case, resolve_data_dir
    from karyoflow.labels import LABELS

    data_dir = resolve_data_dir(args.data)
    cases = split_cases(args, data_dir, None) or list_ici_cases(data_dir)[:3]
    classifier = ChromosomeClassifier(args.weights, args.device)
    total = correct = 0
    print(f"{'cell':>5}  {'file':<14} {'true':>4} {'pred':>4} {'p':>5}  top-3")
    for case in cases:
        records = read_ici_case(data_dir, case)
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
    add_pipeline_args(run)
    run.set_defaults(func=cmd_run)

    classify = commands.add_parser("classify", help="classify the ICIs of some cells and print a table")
    add_data_arg(classify)
    classify.add_argument("--cases", nargs="+", help="cells (default: the first three)")
    classify.add_argument("--split", type=Path, default=None)
    classify.add_argument("--weights", type=Path, default=None)
    classify.add_argument("--device", default=None)
    classify.set_defaults(func=cmd_classify)
