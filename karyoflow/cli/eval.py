"""`karyo eval`: accuracy of ChrNet4 on ICIs, of ChrRender on MCIs, of the whole pipeline.

karyo eval classify   --data DIR [--split FILE --subset val] [--weights W] --json OUT
karyo eval segment    --data DIR [--split FILE --subset val] [--engine E] [--weights W] --json OUT
karyo eval karyotype  --data DIR [--split FILE --subset val] --json OUT
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from karyoflow.cli.common import (
    UsageError,
    add_data_arg,
    add_engine_arg,
    add_pipeline_args,
    load_classifier_for,
    make_karyotyper,
    mci_cases,
    split_cases,
    write_json,
)


def cmd_eval_classify(args: argparse.Namespace) -> int:
    import numpy as np

    from karyoflow.classify.dataset import load_ici_tensors
    from karyoflow.classify.evaluate import evaluate_classifier, save_confusion_png
    from karyoflow.classify.preprocess import Preprocessing
    from karyoflow.data.bioimlab import case_sort_key, resolve_data_dir
    from karyoflow.device import pick_device

    data_dir = resolve_data_dir(args.data)
    cases = split_cases(args, data_dir, args.subset)
    device = pick_device(args.device)
    model, meta, weights = load_classifier_for(data_dir, args.weights, device)
    preprocessing = Preprocessing.from_meta(meta)
    if args.method:
        preprocessing = dataclasses.replace(preprocessing, method=args.method)
    started = time.time()
    tensors = load_ici_tensors(data_dir, cases, preprocessing)
    report = evaluate_classifier(
        model, tensors.images, tensors.targets.numpy(), tensors.cases, tta=args.tta, assign=args.assign, device=device
    )
    report.update(
        {
            "cells": sorted(set(tensors.cases), key=case_sort_key),
            "n_cells": len(set(tensors.cases)),
            "straighten": preprocessing.method,
            "tta": args.tta,
            "weights": str(weights),
            "seconds": round(time.time() - started, 2),
        }
    )
    write_json(args.json, report)
    png = args.png or args.json.with_suffix(".confusion.png")
    save_confusion_png(
        np.array(report["confusion"]),
        png,
        f"ChrNet4 on {report['n_cells']} cells, {report['n']} ICIs: accuracy {report['accuracy']:.2%}",
    )
    if report["argmax_accuracy"] is not None:
        print(f"plain argmax accuracy {report['argmax_accuracy']:.2%}; with the karyotype assignment:")
    print(
        f"{report['n']} ICIs from {report['n_cells']} cells  accuracy {report['accuracy']:.2%}  "
        f"macro recall {report['macro_recall']:.2%}  macro precision {report['macro_precision']:.2%}"
    )
    worst = sorted(report["per_class"].items(), key=lambda kv: kv[1]["recall"])[:5]
    print("lowest recall: " + ", ".join(f"{k} {v['recall']:.0%}" for k, v in worst))
    print(f"wrote {args.json} and {png}")
    return 0


def default_segmenter_for(samples: list, engine: str) -> Path:
    """The engine's shipped segmenter for the stain most of the MCIs are in (the Q-band one
    where no segmenter of that stain is shipped)."""
    from karyoflow.resources import shipped_segmenter_weights
    from karyoflow.segment.dataset import majority_stain

    return shipped_segmenter_weights(engine, majority_stain(samples))


def cmd_eval_segment(args: argparse.Namespace) -> int:
    from karyoflow.data.bioimlab import resolve_data_dir
    from karyoflow.device import pick_device
    from karyoflow.segment.dataset import load_samples
    from karyoflow.segment.engines import load_segmenter
    from karyoflow.segment.evaluate import evaluate_segmenter

    data_dir = resolve_data_dir(args.data)
    samples = load_samples(data_dir, mci_cases(args))
    if not samples:
        raise UsageError(f"no MCIs found in {data_dir / 'mci'} for the chosen cells")
    device = pick_device(args.device)
    weights = args.weights or default_segmenter_for(samples, args.engine)
    model, meta = load_segmenter(weights, device, args.engine)
    report = evaluate_segmenter(
        model, samples, device, refine_boxes=not args.regressed_boxes, bootstrap=args.bootstrap, tta=args.tta
    )
    report["images"] = [s.name for s in samples]
    report["model"] = {
        "architecture": meta["architecture"],
        "backbone": meta["backbone"],
        "weights": str(weights),
    }
    write_json(args.json, report)
    box, segm = report["bbox"], report["segm"]
    print(
        f"{report['n_images']} MCIs  bbox AP {box['AP']} AP50 {box['AP50']} AP75 {box['AP75']}  "
        f"segm AP {segm['AP']} AP50 {segm['AP50']}  WCR {report['wcr']:.2%}  "
        f"count error {report['mean_abs_count_error']:.2f}"
    )
    if "single_pass" in report:
        plain = report["single_pass"]
        print(
            f"  without the mirrored pass: bbox AP {plain['bbox']['AP']} AP50 {plain['bbox']['AP50']}  "
            f"segm AP {plain['segm']['AP']} AP50 {plain['segm']['AP50']}"
        )
    if args.bootstrap:
        interval = report["bootstrap_95"]
        for title, figures in (("", interval), (" of the TTA gain (paired)", interval.get("tta_gain"))):
            if figures:
                print(
                    f"95% bootstrap intervals{title} over the images ({args.bootstrap} rounds): "
                    + "  ".join(
                        f"{kind} {key} {lo}-{hi}"
                        for kind in ("bbox", "segm")
                        for key, (lo, hi) in figures[kind].items()
                    )
                )
    print(f"wrote {args.json}")
    return 0


def _call_cells_from_icis(args: argparse.Namespace) -> tuple[list, dict]:
    """Every chosen cell of DIR called from its ICIs (classified together, then the karyotype
    assignment), and where the calls came from (data, stain, weights, tta, seconds)."""
    import torch
    from tqdm import tqdm

    from karyoflow.cell_eval import call_cells
    from karyoflow.classify.evaluate import predict_probabilities
    from karyoflow.classify.preprocess import Preprocessing
    from karyoflow.data.bioimlab import resolve_data_dir
    from karyoflow.data.icis import case_of_cell, ici_layout, layout_stain, read_ici_cells
    from karyoflow.device import pick_device

    data_dir = resolve_data_dir(args.data)
    cells = split_cases(args, data_dir, args.subset)
    layout = ici_layout(data_dir)
    device = pick_device(args.device)
    model, meta, weights = load_classifier_for(data_dir, args.classify_weights, device)
    preprocessing = Preprocessing.from_meta(meta)
    if device.type == "cpu":
        torch.set_flush_denormal(True)

    def classify_cell(images: list) -> object:
        canvases = torch.from_numpy(preprocessing.prepare(images).canvases)[:, None]
        return predict_probabilities(model, canvases, tta=args.tta, device=device).numpy()

    started = time.time()
    calls = call_cells(
        read_ici_cells(data_dir, cells),
        lambda cell: case_of_cell(cell, layout),
        classify_cell,
        progress=lambda items: tqdm(items, desc="calling cells"),
    )
    provenance = {
        "data": str(data_dir),
        "stain": layout_stain(data_dir),
        "weights": str(weights),
        "tta": args.tta,
        "seconds": round(time.time() - started, 1),
    }
    return calls, provenance


def cmd_eval_karyotype_icis(args: argparse.Namespace) -> int:
    """Cells given as their ICIs: classify, assign, compare the ISCN with the labels'."""
    from karyoflow.cell_eval import score_cell_calls

    calls, provenance = _call_cells_from_icis(args)
    report = {**score_cell_calls(calls), **provenance}
    write_json(args.json, report)

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.2%}"

    print(
        f"{report['n']} cells, {report['n_icis']} ICIs  ICI accuracy {pct(report['ici_accuracy_argmax'])} argmax, "
        f"{pct(report['ici_accuracy_assigned'])} assigned  karyotype exact {pct(report['karyotype_accuracy'])}  "
        f"false abnormal {pct(report['false_abnormal_rate'])}  sensitivity {pct(report['sensitivity'])}"
    )
    for row in report["constitutional"]:
        print(f"  {row['cell']}: true {row['truth']}, called {row['called']}{'' if row['exact'] else '  <- wrong'}")
    print(f"wrote {args.json}")
    return 0


def cmd_eval_consensus(args: argparse.Namespace) -> int:
    """Cases from their cells' ICIs: each cell called, the cells' consensus against the truth's."""
    from karyoflow.cell_eval import score_case_consensus

    calls, provenance = _call_cells_from_icis(args)
    report = {**score_case_consensus(calls), **provenance}
    write_json(args.json, report)
    cells = report["cell_scores"]
    print(
        f"{report['n_cases']} cases ({report['multi_cell_cases']} with several cells), {cells['n']} cells  "
        f"case accuracy {report['case_accuracy']:.2%}  needs review {report['needs_review_rate']:.0%}  "
        f"cell karyotypes exact {cells['karyotype_accuracy']:.2%}"
    )
    for case in report["cases"]:
        if case["abnormal_truth"] or not case["exact"]:
            print(f"  {case['case']} ({case['cells']} cells): true {case['truth']}, called {case['called']}")
    print(f"wrote {args.json}")
    return 0


CALL_RATES = ("karyotype_accuracy", "false_abnormal_rate", "sensitivity", "abnormal_called_rate")


def _percent(value: float | None) -> str:
    """A rate for the summary line; n/a where the set has no cell to rate (e.g. no normal truth)."""
    return "n/a" if value is None else f"{value}%"


def cmd_eval_karyotype(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.icis:
        return cmd_eval_karyotype_icis(args)

    from karyoflow.data.bioimlab import list_mcis, mci_case, read_mci, resolve_data_dir
    from karyoflow.joint_eval import evaluate_joint

    data_dir = resolve_data_dir(args.data)
    cases = mci_cases(args)
    paths = [p for p in list_mcis(data_dir) if cases is None or mci_case(p) in cases]
    if not paths:
        raise UsageError(f"no labelme MCIs found in {data_dir} or {data_dir / 'mci'} for the chosen cells")
    karyotyper = make_karyotyper(args)
    report = evaluate_joint(
        lambda mci: karyotyper.analyse(mci.image, mci.path.name),
        (read_mci(p) for p in paths),
        data_dir,
        progress=lambda items: tqdm(items, desc="karyotyping"),
    )
    report["data"] = str(data_dir)
    report["models"] = karyotyper.models
    write_json(args.json, report)
    shown = {k: _percent(v) if k in CALL_RATES else v for k, v in report.items()}
    a = {k: _percent(v) if k in CALL_RATES else v for k, v in report["argmax"].items()}
    print(
        f"{shown['n_images']} MCIs  FKA {shown['fka']}%  precision {shown['precision']}%  "
        f"recall {shown['recall']}%  OCA {shown['oca']}%  table3 {shown['table3']}  "
        f"karyotype accuracy {shown['karyotype_accuracy']}  false abnormal {shown['false_abnormal_rate']}"
    )
    print(
        f"calls: sensitivity {shown['sensitivity']}  abnormal called {shown['abnormal_called_rate']}  "
        f"count error {shown['count_error']}"
    )
    print(
        f"plain argmax: FKA {a['fka']}%  precision {a['precision']}%  OCA {a['oca']}%  "
        f"karyotype accuracy {a['karyotype_accuracy']}  false abnormal {a['false_abnormal_rate']}"
    )
    print(f"wrote {args.json}")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser("eval", help="evaluate a model").add_subparsers(dest="what", required=True)
    ec = evaluate.add_parser("classify", help="evaluate ChrNet4 on ICIs")
    add_data_arg(ec)
    ec.add_argument("--split", type=Path, default=None, help="split file (default: every cell in DIR)")
    ec.add_argument("--cases", nargs="+", help="only these cells")
    ec.add_argument("--subset", default="val")
    ec.add_argument("--weights", type=Path, default=None)
    ec.add_argument("--method", choices=["mask", "hough", "none"], default=None)
    ec.add_argument("--json", type=Path, required=True)
    ec.add_argument("--png", type=Path, default=None, help="confusion matrix (default: next to JSON)")
    ec.add_argument("--tta", action="store_true", help="average over the four flips (4x the time)")
    ec.add_argument("--assign", action="store_true", help="apply the karyotype-level assignment per cell")
    ec.add_argument("--device", default=None)
    ec.set_defaults(func=cmd_eval_classify)

    es = evaluate.add_parser("segment", help="COCO AP, WCR and count error of ChrRender on MCIs")
    add_data_arg(es)
    es.add_argument("--split", type=Path, default=None, help="split file (default: every MCI in DIR)")
    es.add_argument("--subset", default="val")
    add_engine_arg(es)
    es.add_argument("--weights", type=Path, default=None, help="default: the engine's weights in models/")
    es.add_argument("--json", type=Path, required=True)
    es.add_argument("--regressed-boxes", action="store_true", help="score the box head's boxes alone")
    es.add_argument("--tta", action="store_true", help="also segment the mirrored image and fuse (2x the time)")
    es.add_argument(
        "--bootstrap", type=int, default=0, metavar="N", help="also 95%% intervals of AP from N image resamples"
    )
    es.add_argument("--device", default=None)
    es.set_defaults(func=cmd_eval_segment)

    ek = evaluate.add_parser("karyotype", help="full karyotyping (FKA, precision, OCA, ...) on labelled MCIs")
    add_data_arg(ek)
    ek.add_argument("--split", type=Path, default=None, help="split file (default: every MCI in DIR)")
    ek.add_argument("--subset", default="val")
    ek.add_argument("--json", type=Path, required=True)
    ek.add_argument(
        "--icis", action="store_true", help="cells given as their ICIs (DIR/ici/...): classify, assign, compare ISCN"
    )
    ek.add_argument("--tta", action="store_true", help="with --icis: average over the four flips")

    consensus = evaluate.add_parser(
        "consensus", help="case karyotypes (consensus of each case's cells) from ICIs, against the labels'"
    )
    add_data_arg(consensus)
    consensus.add_argument("--icis", action="store_true", required=True, help="cells given as their ICIs (DIR/ici/...)")
    consensus.add_argument("--split", type=Path, default=None, help="split file (default: every cell in DIR)")
    consensus.add_argument("--subset", default="val")
    consensus.add_argument("--json", type=Path, required=True)
    consensus.add_argument("--tta", action="store_true", help="average over the four flips")
    add_pipeline_args(consensus)
    consensus.set_defaults(func=cmd_eval_consensus)
    add_pipeline_args(ek)
    ek.set_defaults(func=cmd_eval_karyotype)
