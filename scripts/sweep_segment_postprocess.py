"""Sweep the detection score threshold and the containment suppression on validation MCIs.

    python scripts/sweep_segment_postprocess.py --weights models/chrrender.pt \
        --data ../shared/data/bioimlab --extra out/synth-val

Prints, per setting, the mean absolute count error, chromosomes found at mask IoU >= 0.5, false
detections and WCR over the validation split's real MCIs plus every MCI of --extra folders.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from karyoflow.data.bioimlab import list_mcis, mci_case, read_mci
from karyoflow.data.split import read_split
from karyoflow.segment.dataset import sample_from_mci
from karyoflow.segment.engines import load_segmenter
from karyoflow.segment.evaluate import mask_iou_matrix, match_instances
from karyoflow.segment.postprocess import select_chromosomes
from karyoflow.segment.predictor import segment_images


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/bioimlab"))
    parser.add_argument("--split", type=Path, default=Path("splits/bioimlab.json"))
    parser.add_argument("--extra", type=Path, nargs="*", default=[])
    parser.add_argument("--scores", type=float, nargs="+", default=[0.3, 0.5, 0.6, 0.7, 0.8])
    parser.add_argument("--containments", type=float, nargs="+", default=[1.01, 0.8, 0.6, 0.5, 0.4])
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    model, _ = load_segmenter(args.weights)
    val = set(read_split(args.split, "val"))
    paths = [p for p in list_mcis(args.data) if mci_case(p) in val]
    for folder in args.extra:
        paths += list_mcis(folder)
    cached = []
    for path in paths:
        mci = read_mci(path)
        cached.append((sample_from_mci(mci).masks, segment_images(model, [mci.image])[0]))
    print(f"{len(cached)} MCIs, {sum(len(t) for t, _ in cached)} true chromosomes")
    for score in args.scores:
        for containment in args.containments:
            errors, found, false, whole = [], 0, 0, 0
            for truth, detections in cached:
                chosen = select_chromosomes(detections, score, containment)
                pairs = match_instances(mask_iou_matrix(chosen.masks, truth))
                errors.append(abs(len(chosen.masks) - len(truth)))
                found += len(pairs)
                false += len(chosen.masks) - len(pairs)
                whole += len(pairs) == len(truth) == len(chosen.masks)
            print(
                f"score >= {score:.2f}  containment <= {containment:.2f}:  count error {np.mean(errors):.2f}  "
                f"found {found}  false {false}  WCR {whole}/{len(cached)}"
            )


if __name__ == "__main__":
    main()
