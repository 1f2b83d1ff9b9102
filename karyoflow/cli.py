"""`karyo`: the command line of Karyoflow.

    karyo data split      --data DIR [--out FILE]
    karyo train classify  --data DIR --out PATH [--split FILE] [--resume]
    karyo eval classify   --data DIR [--split FILE --subset val] [--weights W] --json OUT
    karyo bench classify  [--weights W] [--batch 46]
    karyo classify        --data DIR [--cases C ...] [--weights W]
    karyo data coco       --data DIR --out FILE [--split FILE --subset val]
    karyo train segment   --data DIR --out PATH [--split FILE] [--steps N] [--resume]
    karyo eval segment    --data DIR [--split FILE --subset val] [--weights W] --json OUT
    karyo bench segment   [--weights W]
    karyo data synth      --data DIR [--cases C ...|--split FILE --subset val] --out DIR
    karyo run             IMAGE_OR_DIR... --out DIR
    karyo eval karyotype  --data DIR [--split FILE --subset val] --json OUT
    karyo bench karyotype --data DIR

Errors in the input (missing folders, bad files, unknown cells) end with a one-line message
and exit code 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPLIT = REPO_ROOT / "splits" / "bioimlab.json"


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


def _write_json(path: Path, document: dict) -> None:
    """Atomically: a reader never sees half a report."""
    from karyoflow.files import write_atomically

    write_atomically(path, (json.dumps(document, indent=1) + "\n").encode())


def _split_cases(args: argparse.Namespace, data_dir: Path, subset: str | None) -> list[str] | None:
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


def cmd_data_split(args: argparse.Namespace) -> int:
    from karyoflow.data.bioimlab import resolve_data_dir
    from karyoflow.data.split import make_split_for, write_split

    data_dir = resolve_data_dir(args.data)
    split = make_split_for(data_dir, val_cells=args.val_cells, val_fraction=args.val_fraction, seed=args.seed)
    write_split(split, args.out)
    print(f"{len(split['train'])} train cells, {len(split['val'])} val cells ({split['unit']} split) -> {args.out}")
    return 0


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
        train_cases=[str(c) for c in split["train"]][: args.limit_cells],
        val_cases=[str(c) for c in split["val"]] if not args.no_val else [],
    )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    train_classifier(data_dir, config, args.out, pick_device(args.device), resume=args.resume)
    return 0


def cmd_eval_classify(args: argparse.Namespace) -> int:
    import numpy as np

    from karyoflow.classify.dataset import load_ici_tensors
    from karyoflow.classify.evaluate import (
        classification_report,
        predict_probabilities,
        save_confusion_png,
    )
    from karyoflow.classify.preprocess import Preprocessing
    from karyoflow.classify.weights import load_weights
    from karyoflow.data.bioimlab import case_sort_key, resolve_data_dir
    from karyoflow.device import pick_device

    data_dir = resolve_data_dir(args.data)
    cases = _split_cases(args, data_dir, args.subset)
    device = pick_device(args.device)
    model, meta = load_weights(args.weights, device)
    preprocessing = Preprocessing.from_meta(meta)
    if args.method:
        preprocessing = dataclasses.replace(preprocessing, method=args.method)
    method = preprocessing.method
    started = time.time()
    tensors = load_ici_tensors(data_dir, cases, preprocessing)
    probs = predict_probabilities(model, tensors.images, tta=args.tta, device=device)
    predicted = probs.argmax(1).numpy()
    argmax_accuracy = None
    if args.assign:  # the karyotype-level assignment, cell by cell (each BioImLab cell holds its 46 ICIs)
        from karyoflow.karyotype import assign_classes

        argmax_accuracy = float((predicted == tensors.targets.numpy()).mean())
        cell_of = np.array(tensors.cases)
        for case in sorted(set(tensors.cases)):
            rows = np.nonzero(cell_of == case)[0]
            predicted[rows] = assign_classes(probs[rows].numpy())[0]
    report = classification_report(tensors.targets.numpy(), predicted)
    report.update(
        {
            "assignment": "capacity" if args.assign else "argmax",
            "argmax_accuracy": argmax_accuracy,
            "cells": sorted(set(tensors.cases), key=case_sort_key),
            "n_cells": len(set(tensors.cases)),
            "straighten": method,
            "tta": args.tta,
            "weights": str(args.weights or "models/chrnet4.pt"),
            "seconds": round(time.time() - started, 2),
        }
    )
    _write_json(args.json, report)
    png = args.png or args.json.with_suffix(".confusion.png")
    save_confusion_png(
        np.array(report["confusion"]),
        png,
        f"ChrNet4 on {report['n_cells']} cells, {report['n']} ICIs: accuracy {report['accuracy']:.2%}",
    )
    if argmax_accuracy is not None:
        print(f"plain argmax accuracy {argmax_accuracy:.2%}; with the karyotype assignment:")
    print(
        f"{report['n']} ICIs from {report['n_cells']} cells  accuracy {report['accuracy']:.2%}  "
        f"macro recall {report['macro_recall']:.2%}  macro precision {report['macro_precision']:.2%}"
    )
    worst = sorted(report["per_class"].items(), key=lambda kv: kv[1]["recall"])[:5]
    print("lowest recall: " + ", ".join(f"{k} {v['recall']:.0%}" for k, v in worst))
    print(f"wrote {args.json} and {png}")
    return 0


def cmd_bench_classify(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from karyoflow.classify.evaluate import predict_probabilities
    from karyoflow.classify.preprocess import Preprocessing
    from karyoflow.classify.weights import load_weights
    from karyoflow.data.bioimlab import list_ici_cases, read_ici_case, resolve_data_dir
    from karyoflow.device import pick_device

    torch.set_flush_denormal(True)
    data_dir = resolve_data_dir(args.data)
    device = pick_device(args.device)
    model, meta = load_weights(args.weights, device)
    case = list_ici_cases(data_dir)[0]
    raw = [r.load() for r in read_ici_case(data_dir, case)][: args.batch]
    preprocessing = Preprocessing.from_meta(meta)
    warm = torch.from_numpy(preprocessing.prepare(raw).canvases)[:, None]
    predict_probabilities(model, warm, tta=args.tta, device=device)  # warm-up
    prep_times, net_times = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        images = torch.from_numpy(preprocessing.prepare(raw).canvases)[:, None]
        prep_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        predict_probabilities(model, images, batch_size=args.batch, tta=args.tta, device=device)
        net_times.append(time.perf_counter() - started)
    prep, net = float(np.median(prep_times)), float(np.median(net_times))
    result = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch": len(raw),
        "tta": args.tta,
        "prepare_s": round(prep, 4),
        "network_s": round(net, 4),
        "icis_per_s": round(len(raw) / (prep + net), 1),
        "network_icis_per_s": round(len(raw) / net, 1),
    }
    print(json.dumps(result))
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from karyoflow.classify.predictor import ChromosomeClassifier
    from karyoflow.data.bioimlab import list_ici_cases, read_ici_case, resolve_data_dir
    from karyoflow.labels import LABELS

    data_dir = resolve_data_dir(args.data)
    cases = _split_cases(args, data_dir, None) or list_ici_cases(data_dir)[:3]
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


def _mci_cases(args: argparse.Namespace) -> list[str] | None:
    """The cells of `--split`'s `--subset`, or None (every MCI) without a split file."""
    from karyoflow.data.split import read_split

    if args.split is None:
        return None
    return read_split(args.split, args.subset)


def cmd_data_coco(args: argparse.Namespace) -> int:
    from karyoflow.data.bioimlab import resolve_data_dir
    from karyoflow.segment.dataset import load_samples, to_coco

    data_dir = resolve_data_dir(args.data)
    samples = load_samples(data_dir, _mci_cases(args))
    if not samples:
        raise UsageError(f"no MCIs found in {data_dir / 'mci'} for the chosen cells")
    coco = to_coco(samples)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(coco))
    tmp.replace(args.out)
    print(f"{len(coco['images'])} images, {len(coco['annotations'])} instances -> {args.out}")
    return 0


def _refuse_validation_cells(folders: list[Path], val_cases: set[str]) -> None:
    """Extra training MCIs must not come from validation cells: a semi-synthetic MCI (`karyo data
    synth`) of a validation cell shows its chromosomes to the model."""
    from karyoflow.data.bioimlab import MCI_NAME, list_mcis

    for folder in folders:
        paths = list_mcis(folder)
        if not paths:
            raise UsageError(f"--extra-data {folder}: no MCIs in {folder / 'mci'}")
        cases = {MCI_NAME.match(path.name)["case"] for path in paths}  # list_mcis keeps only matches
        if leaked := sorted(cases & val_cases, key=int):
            raise UsageError(
                f"--extra-data {folder} holds MCIs of validation cells {', '.join(leaked)}: "
                "training on them would leak into validation (synthesize from --subset train)"
            )


def cmd_train_segment(args: argparse.Namespace) -> int:
    from karyoflow.data.bioimlab import resolve_data_dir
    from karyoflow.data.split import read_split
    from karyoflow.device import pick_device
    from karyoflow.segment.train import SegmentTrainConfig, train_segmenter

    data_dir = resolve_data_dir(args.data)
    train_cases = [str(c) for c in read_split(args.split, "train")]
    if args.limit_cells:
        train_cases = train_cases[: args.limit_cells]
    extra_data = [resolve_data_dir(folder) for folder in args.extra_data]
    _refuse_validation_cells(extra_data, set(read_split(args.split, "val")))
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


def _segment_eval_report(
    model, samples, device, refine_boxes: bool = True, bootstrap: int = 0, tta: bool = False
) -> dict:
    from karyoflow.segment.evaluate import bootstrap_ap, coco_ap_of, coco_images, whole_correct_and_counts
    from karyoflow.segment.postprocess import DEFAULT_MAX_CONTAINMENT, DEFAULT_SCORE_THRESHOLD, select_chromosomes
    from karyoflow.segment.predictor import segment_images

    started = time.time()
    predictions = segment_images(model, [s.image for s in samples], device, refine_boxes=refine_boxes, flip_tta=tta)
    seconds = time.time() - started
    images = coco_images(samples, predictions)
    report = coco_ap_of(images)
    single_pass = None
    if tta:
        # the same weights without the mirrored pass, on the same images: what TTA adds
        single_pass = coco_images(
            samples, segment_images(model, [s.image for s in samples], device, refine_boxes=refine_boxes)
        )
        report["single_pass"] = coco_ap_of(single_pass)
    if bootstrap:
        report["bootstrap_95"] = {"rounds": bootstrap, **bootstrap_ap(images, bootstrap)}
        if single_pass is not None:
            report["bootstrap_95"]["tta_gain"] = bootstrap_ap(images, bootstrap, baseline=single_pass)
    # WCR and count error of the chromosomes the pipeline keeps (score cut + containment
    # suppression); AP is computed on the raw detections, as COCO expects.
    chosen = [select_chromosomes(p) for p in predictions]
    report.update(whole_correct_and_counts(samples, chosen, score_threshold=0.0))
    report["postprocess"] = {"score_threshold": DEFAULT_SCORE_THRESHOLD, "max_containment": DEFAULT_MAX_CONTAINMENT}
    report["box_source"] = "mean of regressed and mask box" if refine_boxes else "regressed"
    report["test_time_augmentation"] = "left-right flip, fused" if tta else None
    report["n_images"] = len(samples)
    report["seconds_per_image"] = round(seconds / max(len(samples), 1), 3)
    return report


def cmd_eval_segment(args: argparse.Namespace) -> int:
    from karyoflow.data.bioimlab import resolve_data_dir
    from karyoflow.device import pick_device
    from karyoflow.segment.dataset import load_samples
    from karyoflow.segment.predictor import load_segmenter

    data_dir = resolve_data_dir(args.data)
    samples = load_samples(data_dir, _mci_cases(args))
    if not samples:
        raise UsageError(f"no MCIs found in {data_dir / 'mci'} for the chosen cells")
    device = pick_device(args.device)
    model, meta = load_segmenter(args.weights, device)
    report = _segment_eval_report(
        model, samples, device, refine_boxes=not args.regressed_boxes, bootstrap=args.bootstrap, tta=args.tta
    )
    report["images"] = [s.name for s in samples]
    report["model"] = {
        "architecture": meta["architecture"],
        "backbone": meta["backbone"],
        "weights": str(args.weights or "models/chrrender.pt"),
    }
    _write_json(args.json, report)
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


def cmd_bench_segment(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from karyoflow.data.bioimlab import list_mcis, read_mci, resolve_data_dir
    from karyoflow.device import pick_device
    from karyoflow.segment.predictor import load_segmenter, segment_images

    torch.set_flush_denormal(True)
    data_dir = resolve_data_dir(args.data)
    device = pick_device(args.device)
    model, meta = load_segmenter(args.weights, device)
    image = read_mci(list_mcis(data_dir)[0]).image
    segment_images(model, [image], device, flip_tta=args.tta)  # warm-up
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        segment_images(model, [image], device, flip_tta=args.tta)
        times.append(time.perf_counter() - started)
    print(
        json.dumps(
            {
                "device": str(device),
                "threads": torch.get_num_threads(),
                "backbone": meta["backbone"],
                "image": f"{image.shape[1]}x{image.shape[0]}",
                "seconds_per_mci": round(float(np.median(times)), 3),
                "flip_tta": args.tta,
            }
        )
    )
    return 0


def _karyotyper(args: argparse.Namespace):
    from karyoflow.pipeline import Karyotyper

    kwargs = {}
    if getattr(args, "score_threshold", None) is not None:
        kwargs["score_threshold"] = args.score_threshold
    if args.classify_weights is not None:  # used for the stain it was trained on
        from karyoflow.classify.weights import load_weights, weights_stain

        kwargs["classifier_weights_by_stain"] = {
            weights_stain(load_weights(args.classify_weights)[1]): args.classify_weights
        }
    return Karyotyper(
        segmenter_weights=args.segment_weights,
        device=args.device,
        assignment=not getattr(args, "argmax", False),
        segment_tta=getattr(args, "segment_tta", False),
        stain=getattr(args, "stain", "auto"),
        **kwargs,
    )


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".json"}


def _run_inputs(paths: list[Path]) -> list[Path]:
    """Image files (or labelme JSON with an embedded image) named directly or found in folders."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inner = path / "mci" if (path / "mci").is_dir() else path
            found += sorted(p for p in inner.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise UsageError(f"{path}: not an image (want PNG, JPEG, TIFF, BMP or labelme JSON)")
            found.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    if not found:
        raise UsageError("no images found in " + ", ".join(str(p) for p in paths))
    return found


def _load_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    from karyoflow.data.bioimlab import read_mci
    from karyoflow.pipeline import to_grey

    if path.suffix.lower() == ".json":
        return read_mci(path).image
    try:
        with Image.open(path) as image:
            return to_grey(image)
    except (UnidentifiedImageError, OSError) as error:
        raise UsageError(f"{path}: cannot read the image ({error})") from error


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
    from karyoflow.classify.weights import default_weights
    from karyoflow.ici_cell import karyotype_icis
    from karyoflow.stain import resolve_stain

    cells = [(folder, files, [_load_image(f) for f in files]) for folder, files in _ici_cells(args.inputs)]
    classifiers: dict[str, tuple[ChromosomeClassifier, Path]] = {}
    results = []
    for folder, files, images in cells:
        stain = resolve_stain(args.stain, images)
        if stain not in classifiers:
            weights = args.classify_weights or default_weights(stain)
            if not Path(weights).is_file():
                raise UsageError(f"no {stain.upper()}-band classifier at {weights}")
            classifiers[stain] = (ChromosomeClassifier(weights, args.device), Path(weights))
        classifier, weights = classifiers[stain]
        try:
            result = karyotype_icis(
                classifier,
                images,
                [f.name for f in files],
                stain,
                cell_name=folder.name,
                assignment=not args.argmax,
                weights_path=weights,
            )
        except ValueError as error:
            raise UsageError(f"{folder}: {error}") from error
        results.append((folder, result))
    return results


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from karyoflow.report import render_outputs, validate_report, write_atomically

    if args.icis:
        analysed = _run_icis(args)
    else:
        inputs = _run_inputs(args.inputs)
        images = [(path, _load_image(path)) for path in inputs]  # every input readable before any work
        karyotyper = _karyotyper(args)
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


def cmd_eval_karyotype_icis(args: argparse.Namespace) -> int:
    """Cells given as their ICIs: classify, assign, compare the ISCN with the labels'."""
    import torch
    from tqdm import tqdm

    from karyoflow.cell_eval import evaluate_cells
    from karyoflow.classify.evaluate import predict_probabilities
    from karyoflow.classify.preprocess import Preprocessing
    from karyoflow.classify.weights import default_weights, load_weights, weights_stain
    from karyoflow.data.bioimlab import resolve_data_dir
    from karyoflow.data.icis import case_of_cell, ici_layout, layout_stain, read_ici_cells
    from karyoflow.device import pick_device

    data_dir = resolve_data_dir(args.data)
    cells = _split_cases(args, data_dir, args.subset)
    layout, stain = ici_layout(data_dir), layout_stain(data_dir)
    weights = args.classify_weights or default_weights(stain)
    device = pick_device(args.device)
    model, meta = load_weights(weights, device)
    if weights_stain(meta) != stain:
        raise UsageError(f"{weights} was trained on {weights_stain(meta)}-band ICIs; {data_dir} is {stain}-band")
    preprocessing = Preprocessing.from_meta(meta)
    if device.type == "cpu":
        torch.set_flush_denormal(True)

    def classify_cell(images: list) -> object:
        canvases = torch.from_numpy(preprocessing.prepare(images).canvases)[:, None]
        return predict_probabilities(model, canvases, tta=args.tta, device=device).numpy()

    started = time.time()
    report = evaluate_cells(
        read_ici_cells(data_dir, cells),
        lambda cell: case_of_cell(cell, layout),
        classify_cell,
        progress=lambda items: tqdm(items, desc="calling cells"),
    )
    report.update(
        {
            "data": str(data_dir),
            "stain": stain,
            "weights": str(weights),
            "tta": args.tta,
            "seconds": round(time.time() - started, 1),
        }
    )
    _write_json(args.json, report)

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


def cmd_eval_karyotype(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.icis:
        return cmd_eval_karyotype_icis(args)

    from karyoflow.data.bioimlab import list_mcis, read_mci, resolve_data_dir
    from karyoflow.joint_eval import evaluate_joint

    data_dir = resolve_data_dir(args.data)
    cases = _mci_cases(args)
    paths = [p for p in list_mcis(data_dir) if cases is None or read_mci_case(p) in cases]
    if not paths:
        raise UsageError(f"no MCIs found in {data_dir / 'mci'} for the chosen cells")
    karyotyper = _karyotyper(args)
    report = evaluate_joint(
        lambda mci: karyotyper.analyse(mci.image, mci.path.name),
        (read_mci(p) for p in paths),
        data_dir,
        progress=lambda items: tqdm(items, desc="karyotyping"),
    )
    report["data"] = str(data_dir)
    report["models"] = karyotyper.models
    _write_json(args.json, report)
    a = report["argmax"]
    print(
        f"{report['n_images']} MCIs  FKA {report['fka']}%  precision {report['precision']}%  "
        f"recall {report['recall']}%  OCA {report['oca']}%  table3 {report['table3']}  "
        f"karyotype accuracy {report['karyotype_accuracy']}%  false abnormal {report['false_abnormal_rate']}%"
    )
    print(
        f"plain argmax: FKA {a['fka']}%  precision {a['precision']}%  OCA {a['oca']}%  "
        f"karyotype accuracy {a['karyotype_accuracy']}%  false abnormal {a['false_abnormal_rate']}%"
    )
    print(f"wrote {args.json}")
    return 0


def read_mci_case(path: Path) -> str:
    from karyoflow.data.bioimlab import MCI_NAME

    match = MCI_NAME.match(path.name)
    return match["case"] if match else ""


def cmd_bench_karyotype(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from karyoflow.data.bioimlab import list_mcis, read_mci, resolve_data_dir
    from karyoflow.report import render_outputs

    data_dir = resolve_data_dir(args.data)
    karyotyper = _karyotyper(args)
    mci = read_mci(list_mcis(data_dir)[0])
    render_outputs(karyotyper.analyse(mci.image, mci.path.name))  # warm-up
    runs = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        result = karyotyper.analyse(mci.image, mci.path.name)
        render_outputs(result)
        runs.append({**result.timings_ms, "total": (time.perf_counter() - started) * 1000})
    median = {key: round(float(np.median([r[key] for r in runs])), 1) for key in runs[0]}
    print(
        json.dumps(
            {
                "device": str(karyotyper.device),
                "threads": torch.get_num_threads(),
                "image": f"{mci.path.name} {mci.image.shape[1]}x{mci.image.shape[0]}",
                "chromosomes": len(result.chromosomes),
                "median_ms": median,
                "seconds_per_mci": round(median["total"] / 1000, 3),
            }
        )
    )
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from karyoflow.data.bioimlab import list_ici_cases, load_grey, read_ici_case, resolve_data_dir
    from karyoflow.data.synth import synthesize_mci, write_labelme
    from karyoflow.labels import LABELS

    data_dir = resolve_data_dir(args.data)
    cases = _split_cases(args, data_dir, args.subset) or list_ici_cases(data_dir)
    if not 1 <= args.per_cell <= 26:
        raise UsageError("--per-cell must be 1..26 (one letter per picture)")
    if not (0 <= args.touching <= 1 and 0 <= args.overlapping <= 1 and args.touching + args.overlapping <= 1):
        raise UsageError("--touching and --overlapping are shares in [0, 1] that add up to at most 1")
    rng = np.random.default_rng(args.seed)
    written = 0
    for case in tqdm(cases, desc="synthesizing"):
        icis = [(LABELS[r.class_index], load_grey(r.path)) for r in read_ici_case(data_dir, case)]
        for picture in range(args.per_cell):
            mci = synthesize_mci(icis, rng, touching=args.touching, overlapping=args.overlapping)
            write_labelme(mci, args.out / "mci" / f"original_{case}{chr(ord('a') + picture)}.json")
            written += 1
    (args.out / "README.md").write_text(
        "# Semi-synthetic metaphases\n\n"
        f"Made by `karyo data synth` from the ICIs of {len(cases)} cells of {data_dir} "
        f"(seed {args.seed}, touching {args.touching}, overlapping {args.overlapping}). "
        "Each `mci/original_<case><picture>.json` is labelme JSON with the image embedded and one "
        "polygon per chromosome labelled with its class.\n"
    )
    print(f"wrote {written} MCIs to {args.out / 'mci'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="karyo", description="Karyoflow: automatic karyotyping")
    commands = parser.add_subparsers(dest="command", required=True)

    def data_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", help="BioImLab-layout folder (default: $KARYO_DATA)")

    def pipeline_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--segment-weights", type=Path, default=None, help="default: models/chrrender.pt")
        p.add_argument(
            "--classify-weights",
            type=Path,
            default=None,
            help="ChrNet4 weights, used for the stain they were trained on (default: models/chrnet4.pt for Q-band, "
            "models/chrnet4-gband.pt for G-band)",
        )
        p.add_argument("--score-threshold", type=float, default=None, help="detection score cut")
        p.add_argument("--argmax", action="store_true", help="plain argmax instead of the karyotype assignment")
        p.add_argument(
            "--segment-tta", action="store_true", help="segment the mirrored MCI too and fuse (2x segmentation time)"
        )
        p.add_argument("--device", default=None)
        p.add_argument(
            "--stain",
            choices=["q", "g", "auto"],
            default="auto",
            help="Q-band fluorescence, G-band brightfield, or auto (a bright background means G)",
        )

    data = commands.add_parser("data", help="data preparation").add_subparsers(dest="what", required=True)
    split = data.add_parser("split", help="write a seeded train/val split by cell")
    data_arg(split)
    split.add_argument("--out", type=Path, default=DEFAULT_SPLIT)
    split.add_argument("--val-cells", type=int, default=16, help="BioImLab layout: validation cells")
    split.add_argument(
        "--val-fraction", type=float, default=0.2, help="G-band layout: share of cases in validation, by stratum"
    )
    split.add_argument("--seed", type=int, default=2026)
    split.set_defaults(func=cmd_data_split)
    coco = data.add_parser("coco", help="export MCIs' polygons as COCO instances JSON")
    data_arg(coco)
    coco.add_argument("--out", type=Path, required=True)
    coco.add_argument("--split", type=Path, default=None, help="split file (default: every MCI)")
    coco.add_argument("--subset", default="val")
    coco.set_defaults(func=cmd_data_coco)

    sy = data.add_parser("synth", help="semi-synthetic labelled MCIs from cells' ICIs")
    data_arg(sy)
    sy.add_argument("--out", type=Path, required=True, help="folder to write (BioImLab layout: mci/)")
    sy.add_argument("--cases", nargs="+", help="cells (default: --split's subset, else every cell)")
    sy.add_argument("--split", type=Path, default=None)
    sy.add_argument("--subset", default="val")
    sy.add_argument("--per-cell", type=int, default=1, help="pictures per cell")
    sy.add_argument("--touching", type=float, default=0.15, help="share of chromosomes touching another")
    sy.add_argument("--overlapping", type=float, default=0.05, help="share overlapping another")
    sy.add_argument("--seed", type=int, default=0)
    sy.set_defaults(func=cmd_data_synth)

    train = commands.add_parser("train", help="train a model").add_subparsers(dest="what", required=True)
    tc = train.add_parser("classify", help="train ChrNet4 on ICIs")
    data_arg(tc)
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
    tc.add_argument("--limit-cells", type=int, default=None, help="train on the first N train cells")
    tc.add_argument("--no-val", action="store_true", help="skip validation during training")
    tc.add_argument("--threads", type=int, default=None)
    tc.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    tc.add_argument("--resume", action="store_true", help="continue from OUT's .ckpt")
    tc.set_defaults(func=cmd_train_classify)

    ts = train.add_parser("segment", help="train ChrRender (Mask R-CNN + PointRend) on MCIs")
    data_arg(ts)
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

    evaluate = commands.add_parser("eval", help="evaluate a model").add_subparsers(dest="what", required=True)
    ec = evaluate.add_parser("classify", help="evaluate ChrNet4 on ICIs")
    data_arg(ec)
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
    data_arg(es)
    es.add_argument("--split", type=Path, default=None, help="split file (default: every MCI in DIR)")
    es.add_argument("--subset", default="val")
    es.add_argument("--weights", type=Path, default=None)
    es.add_argument("--json", type=Path, required=True)
    es.add_argument("--regressed-boxes", action="store_true", help="score the box head's boxes alone")
    es.add_argument("--tta", action="store_true", help="also segment the mirrored image and fuse (2x the time)")
    es.add_argument(
        "--bootstrap", type=int, default=0, metavar="N", help="also 95%% intervals of AP from N image resamples"
    )
    es.add_argument("--device", default=None)
    es.set_defaults(func=cmd_eval_segment)

    ek = evaluate.add_parser("karyotype", help="full karyotyping (FKA, precision, OCA, ...) on labelled MCIs")
    data_arg(ek)
    ek.add_argument("--split", type=Path, default=None, help="split file (default: every MCI in DIR)")
    ek.add_argument("--subset", default="val")
    ek.add_argument("--json", type=Path, required=True)
    ek.add_argument(
        "--icis", action="store_true", help="cells given as their ICIs (DIR/ici/...): classify, assign, compare ISCN"
    )
    ek.add_argument("--tta", action="store_true", help="with --icis: average over the four flips")
    pipeline_arg(ek)
    ek.set_defaults(func=cmd_eval_karyotype)

    bench = commands.add_parser("bench", help="speed benchmarks").add_subparsers(dest="what", required=True)
    bc = bench.add_parser("classify", help="ICIs/s for one cell's batch")
    data_arg(bc)
    bc.add_argument("--weights", type=Path, default=None)
    bc.add_argument("--batch", type=int, default=46)
    bc.add_argument("--repeats", type=int, default=10)
    bc.add_argument("--tta", action="store_true")
    bc.add_argument("--device", default=None)
    bc.set_defaults(func=cmd_bench_classify)

    bs = bench.add_parser("segment", help="seconds per 768x576 MCI")
    data_arg(bs)
    bs.add_argument("--weights", type=Path, default=None)
    bs.add_argument("--repeats", type=int, default=5)
    bs.add_argument("--tta", action="store_true", help="with the left-right flip pass (2x the time)")
    bs.add_argument("--device", default=None)
    bs.set_defaults(func=cmd_bench_segment)

    bk = bench.add_parser("karyotype", help="seconds per MCI for the whole pipeline, by stage")
    data_arg(bk)
    bk.add_argument("--repeats", type=int, default=5)
    pipeline_arg(bk)
    bk.set_defaults(func=cmd_bench_karyotype)

    run = commands.add_parser("run", help="karyotype MCIs: a karyogram PNG and a JSON report per image")
    run.add_argument("inputs", nargs="+", type=Path, help="images (PNG/JPEG/TIFF/BMP, labelme JSON) or folders")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument(
        "--icis", action="store_true", help="each input is a folder holding one cell's cut-out chromosome images"
    )
    pipeline_arg(run)
    run.set_defaults(func=cmd_run)

    cl = commands.add_parser("classify", help="classify the ICIs of some cells and print a table")
    data_arg(cl)
    cl.add_argument("--cases", nargs="+", help="cells (default: the first three)")
    cl.add_argument("--split", type=Path, default=None)
    cl.add_argument("--weights", type=Path, default=None)
    cl.add_argument("--device", default=None)
    cl.set_defaults(func=cmd_classify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from karyoflow.data.bioimlab import DataError
    from karyoflow.weights_io import WeightsError

    try:
        return args.func(args)
    except (UsageError, DataError, WeightsError) as error:
        print(f"karyo: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
