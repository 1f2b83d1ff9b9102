"""Why true chromosomes are missed: by the post-processing, or by the segmenter itself?

    python scripts/diagnose_missed_chromosomes.py --data out/synth-val ../shared/data/bioimlab-labelled

For every labelled polygon of every MCI in the folders: found among the pipeline's candidates
(score >= 0.3 and the containment suppression, as `Karyotyper.detect`; mask IoU >= 0.5, one to
one), else whether any raw ChrRender detection (score >= 0.05) overlaps it at IoU >= 0.5 and,
if so, whether the score cut or the containment suppression removed it. Misses with no raw
detection at all can only be fixed by the segmenter (touching chromosomes found as one), not by
post-processing or the karyotype assignment choosing among detections.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from karyoflow.pipeline import DEFAULT_CANDIDATE_THRESHOLD
from karyoflow.segment.dataset import load_samples
from karyoflow.segment.engines import load_segmenter
from karyoflow.segment.evaluate import mask_iou_matrix, match_instances
from karyoflow.segment.postprocess import DEFAULT_MAX_CONTAINMENT, select_chromosomes
from karyoflow.segment.predictor import segment_images

RAW_SCORE = 0.05  # torchvision's box score threshold: everything the model returns


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="BioImLab-layout folders (mci/)")
    parser.add_argument("--weights", type=Path, default=None)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    model, _ = load_segmenter(args.weights)
    for folder in args.data:
        tally = dict.fromkeys(("true", "found", "missed", "raw_removed_by_score", "raw_removed_by_containment"), 0)
        samples = load_samples(folder, None)
        for sample in samples:
            raw = segment_images(model, [sample.image])[0]
            kept = select_chromosomes(raw, DEFAULT_CANDIDATE_THRESHOLD, DEFAULT_MAX_CONTAINMENT)
            weak_kept = select_chromosomes(raw, RAW_SCORE, DEFAULT_MAX_CONTAINMENT)
            truth = sample.masks  # drawn from the polygons on every access: once per MCI
            found = {t for _, t in match_instances(mask_iou_matrix(kept.masks, truth))}
            raw_iou = mask_iou_matrix(raw.masks, truth)
            weak_iou = mask_iou_matrix(weak_kept.masks, truth)
            for t in range(len(truth)):
                tally["true"] += 1
                if t in found:
                    tally["found"] += 1
                elif not (raw_iou[:, t] >= 0.5).any():
                    tally["missed"] += 1
                elif (weak_iou[:, t] >= 0.5).any():
                    tally["raw_removed_by_score"] += 1
                else:
                    tally["raw_removed_by_containment"] += 1
        print(json.dumps({"data": str(folder), "mcis": len(samples), **tally}))


if __name__ == "__main__":
    main()
