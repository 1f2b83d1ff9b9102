#!/usr/bin/env python3
"""Write a model card (models/<name>.md) from a weights file's training metadata and the JSON
written by `karyo eval ...`, so every figure in the card comes from a command's output.

    python scripts/model_card.py --weights models/chrnet4.pt --eval out/eval-classify.json \
        [--eval-extra NAME=out/other.json ...] --command "karyo train classify ..." --out models/chrnet4.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch


def data_section(meta: dict, config: dict, report: dict) -> list[str]:
    """Where the training data came from and how it was split, by the stain it was trained on."""
    trained = len(config.get("train_cases", []))
    if meta.get("stain") == "g" and meta.get("architecture") != "ChrNet4":
        return [
            "Semi-synthetic brightfield G-band metaphases composed from the real G-band ICIs of the training",
            f"cases of `splits/gband.json` ({trained} cells; `karyo data synth --subset train`, docs/gband.md),",
            "worked on",
            "inverted (bright on dark, as every Karyoflow stage). Validated on semi-synthetic metaphases of the",
            f"{report.get('n_images')} validation cells (`--subset val`), whose cases it never saw.",
        ]
    if meta.get("stain") == "g":
        split = json.loads(Path("splits/gband.json").read_text())
        return [
            "Real G-band ICIs, dark bands on white (`../shared/data/gband`, read via `--data`), worked on inverted",
            "(bright on dark, as every Karyoflow stage).",
            f"Split `splits/gband.json` (by case, seed {split['seed']}, stratified by constitutional change; "
            f"cells of one case never on both sides): trained on {trained} cells; validated on "
            f"{report.get('n_cells')} cells of {len(split['val_cases'])} cases never trained on, with at least one "
            "case of each constitutional change in the data (+21, +18, 47,XXY, 47,XXX, 45,X).",
        ]
    return [
        "BioImLab Q-band ICIs/MCIs (`../shared/data/bioimlab`, read via `--data`/`KARYO_DATA`).",
        f"Split `splits/bioimlab.json` (by cell, seed 2026): trained on {trained} cells; "
        f"validated on {report.get('n_cells', report.get('n_images'))} "
        f"{'cells' if 'n_cells' in report else 'images'} never trained on, including the 8 "
        "cells of the class-labelled MCIs (1, 2, 3, 4, 7, 8, 106, 107).",
    ]


def cell_calls_section(path: Path, command: str) -> list[str]:
    """Karyotype calls of whole cells from their ICIs (`karyo eval karyotype --icis`)."""
    r = json.loads(path.read_text())

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2%}"

    lines = [
        "## Cell karyotypes from ICIs",
        "",
        "```sh",
        command,
        "```",
        "",
        "| cells | ICI accuracy (argmax) | ICI accuracy (assigned) | karyotype exact | false abnormal | sensitivity |",
        "|---|---|---|---|---|---|",
        f"| {r['n']} | {pct(r['ici_accuracy_argmax'])} | {pct(r['ici_accuracy_assigned'])} | "
        f"{pct(r['karyotype_accuracy'])} | {pct(r['false_abnormal_rate'])} | {pct(r['sensitivity'])} |",
        "",
        "Constitutional changes in validation: "
        + (", ".join(f"{c['cell']} {c['truth']} called {c['called']}" for c in r["constitutional"]) or "none"),
        "",
        "Per change (n, exact): " + ", ".join(f"{k} {v['n']}/{v['exact']}" for k, v in r["per_change"].items()),
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--eval", type=Path, required=True, help="main validation eval JSON")
    parser.add_argument("--eval-extra", action="append", default=[], help="NAME=JSON, more eval results")
    parser.add_argument("--command", required=True, help="the training command that made the weights")
    parser.add_argument("--eval-command", required=True)
    parser.add_argument("--notes", default="")
    parser.add_argument("--cell-eval", type=Path, default=None, help="JSON of karyo eval karyotype --icis")
    parser.add_argument("--cell-eval-command", default="")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    blob = torch.load(args.weights, map_location="cpu", weights_only=True)
    meta = blob["meta"]
    sha = hashlib.sha256(args.weights.read_bytes()).hexdigest()
    size_mb = args.weights.stat().st_size / 1e6
    params = sum(v.numel() for v in blob["state_dict"].values() if v.is_floating_point())
    config = meta["train_config"]
    report = json.loads(args.eval.read_text())
    lines = [
        f"# Model card: {args.weights.name}",
        "",
        f"- **Architecture**: {meta['architecture']} ({params / 1e6:.2f} M parameters), stored fp16, {size_mb:.1f} MB",
        f"- **sha256**: `{sha}`",
        f"- **Format**: `{blob['format']}` (weights + the preprocessing they expect, read by the loader)",
        f"- **Trained on**: {meta['device']}, wall time {meta['train_wall_s'] / 60:.1f} min",
        "",
        "## Data and split",
        "",
        *data_section(meta, config, report),
        "",
        "## Training command",
        "",
        "```sh",
        args.command,
        "```",
        "",
        "Configuration: " + ", ".join(f"{k}={v}" for k, v in config.items() if not k.endswith("_cases")),
        "",
        "## Validation",
        "",
        "```sh",
        args.eval_command,
        "```",
        "",
    ]
    if "accuracy" in report:
        lines += [
            "| subset | ICIs | cells | accuracy | macro recall | macro precision | flip TTA |",
            "|---|---|---|---|---|---|---|",
        ]
        rows = [("validation", report)] + [
            (name, json.loads(Path(path).read_text()))
            for name, path in (item.split("=", 1) for item in args.eval_extra)
        ]
        for name, r in rows:
            lines.append(
                f"| {name} | {r['n']} | {r['n_cells']} | {r['accuracy']:.2%} | {r['macro_recall']:.2%} "
                f"| {r['macro_precision']:.2%} | {'yes' if r.get('tta') else 'no'} |"
            )
        lines += [
            "",
            "Per-class recall (validation): "
            + ", ".join(f"{k} {v['recall']:.0%}" for k, v in report["per_class"].items()),
        ]
    else:
        lines += [
            "| model / boxes | metric | AP | AP50 | AP75 | APs | APm | APl |",
            "|---|---|---|---|---|---|---|---|",
        ]
        rows = [("this model", report)] + [
            (name, json.loads(Path(path).read_text()))
            for name, path in (item.split("=", 1) for item in args.eval_extra)
        ]
        for name, r in rows:
            for kind in ("bbox", "segm"):
                figures = r[kind]
                cells = [
                    "n/a" if figures[k] is None else f"{figures[k]:.2f}"
                    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")
                ]
                lines.append(f"| {name} | {kind} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"Boxes: {report.get('box_source', 'regressed')}. WCR {report['wcr']:.2%}, mean absolute count error "
            f"{report['mean_abs_count_error']:.2f} after the pipeline's post-processing "
            f"({report.get('postprocess', {})}), {report['n_images']} validation MCIs.",
        ]
        if meta.get("init_sha256"):
            lines += ["", f"Initialised from weights with sha256 `{meta['init_sha256']}` (`--init`)."]
    if args.cell_eval:
        lines += ["", *cell_calls_section(args.cell_eval, args.cell_eval_command)]
    history = meta.get("history", [])
    if history:
        lines += ["", "## Training history (last records)", "", "```"]
        lines += [json.dumps(h) for h in history[-5:]]
        lines += ["```"]
    if args.notes:
        lines += ["", "## Notes", "", args.notes]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
