"""Segmentation metrics: COCO AP with pycocotools' COCOeval, the paper's whole-correct ratio
(WCR) and the count error."""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from karyoflow.segment.dataset import COCO_CATEGORIES, SegmentationSample, encode_rle, to_coco

AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@dataclass
class Detections:
    """One image's predictions in original-image pixels."""

    boxes: np.ndarray  # N x 4, x0 y0 x1 y1
    scores: np.ndarray  # N
    masks: np.ndarray  # N x H x W bool


@dataclass
class CocoImage:
    """One image's ground truth and detections as COCO records (RLEs encoded once)."""

    info: dict
    truth: list[dict]
    detected: list[dict]


def coco_images(samples: list[SegmentationSample], predictions: list[Detections]) -> list[CocoImage]:
    coco = to_coco(samples)
    images = [CocoImage(info, [], []) for info in coco["images"]]
    for annotation in coco["annotations"]:
        images[annotation["image_id"] - 1].truth.append(annotation)
    for image, detections in zip(images, predictions, strict=True):
        for box, score, mask in zip(detections.boxes, detections.scores, detections.masks, strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            image.detected.append(
                {
                    "category_id": 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(score),
                    "segmentation": encode_rle(mask),
                }
            )
    return images


def coco_ap_of(images: list[CocoImage]) -> dict[str, dict[str, float | None]]:
    """COCOeval over these images; the same image may appear twice (bootstrap), so ids are
    given here by position."""
    dataset = {
        "images": [{**image.info, "id": i} for i, image in enumerate(images, start=1)],
        "annotations": [
            {**annotation, "image_id": i} for i, image in enumerate(images, start=1) for annotation in image.truth
        ],
        "categories": COCO_CATEGORIES,
    }
    for number, annotation in enumerate(dataset["annotations"], start=1):
        annotation["id"] = number
    ground_truth = COCO()
    ground_truth.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth.createIndex()
    results = [{**result, "image_id": i} for i, image in enumerate(images, start=1) for result in image.detected]
    out: dict[str, dict[str, float | None]] = {}
    for kind in ("bbox", "segm"):
        if not results:
            out[kind] = dict.fromkeys(AP_KEYS, 0.0)
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            detected = ground_truth.loadRes(results)
            evaluator = COCOeval(ground_truth, detected, kind)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        # COCOeval marks "no objects of this size" with -1 (e.g. no large chromosomes): null
        out[kind] = {
            key: (round(float(v) * 100.0, 3) if v >= 0 else None)
            for key, v in zip(AP_KEYS, evaluator.stats[:6], strict=True)
        }
    return out


def coco_ap(samples: list[SegmentationSample], predictions: list[Detections]) -> dict[str, dict[str, float | None]]:
    """bbox and segm AP figures on a 0-100 scale, from COCOeval."""
    return coco_ap_of(coco_images(samples, predictions))


def bootstrap_ap(
    images: list[CocoImage],
    rounds: int,
    seed: int = 0,
    keys: tuple[str, ...] = ("AP", "AP50"),
    baseline: list[CocoImage] | None = None,
) -> dict[str, dict[str, list[float]]]:
    """95% percentile intervals of AP over image sets drawn with replacement: how much the
    figure would move with other validation images of the same kind (a few dozen MCIs make
    differences of a few tenths of a point noise). With `baseline` (other predictions for the
    same images, in the same order) the intervals are of the paired difference images - baseline,
    both scored on each drawn set: far narrower than comparing two separate intervals."""
    if baseline is not None and len(baseline) != len(images):
        raise ValueError("baseline must hold predictions for the same images")
    rng = np.random.default_rng(seed)
    draws: dict[str, dict[str, list[float]]] = {kind: {key: [] for key in keys} for kind in ("bbox", "segm")}
    for _ in range(rounds):
        chosen = rng.integers(0, len(images), len(images))
        figures = coco_ap_of([images[i] for i in chosen])
        reference = coco_ap_of([baseline[i] for i in chosen]) if baseline is not None else None
        for kind, by_key in draws.items():
            for key, values in by_key.items():
                offset = (reference[kind][key] or 0.0) if reference is not None else 0.0
                values.append((figures[kind][key] or 0.0) - offset)
    return {
        kind: {key: [round(float(np.percentile(v, 2.5)), 2), round(float(np.percentile(v, 97.5)), 2)]
               for key, v in by_key.items()}
        for kind, by_key in draws.items()
    }  # fmt: skip


def mask_iou_matrix(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    if len(predicted) == 0 or len(truth) == 0:
        return np.zeros((len(predicted), len(truth)))
    encoded_p = [encode_rle(m) for m in predicted]
    encoded_t = [encode_rle(m) for m in truth]
    return np.asarray(mask_utils.iou(encoded_p, encoded_t, [0] * len(truth)))


def match_instances(ious: np.ndarray, threshold: float = 0.5) -> list[tuple[int, int]]:
    """Greedy one-to-one matching in the given prediction order (sorted by score)."""
    pairs, taken = [], set()
    for p in range(ious.shape[0]):
        candidates = [(ious[p, t], t) for t in range(ious.shape[1]) if t not in taken and ious[p, t] >= threshold]
        if candidates:
            _, best = max(candidates)
            taken.add(best)
            pairs.append((p, best))
    return pairs


def whole_correct_and_counts(
    samples: list[SegmentationSample], predictions: list[Detections], score_threshold: float = 0.5
) -> dict[str, float]:
    """WCR: share of images where every true chromosome is found at mask IoU >= 0.5 and no
    other prediction (score >= threshold) is made; and the mean absolute count error."""
    whole_correct, count_errors = 0, []
    for sample, detections in zip(samples, predictions, strict=True):
        keep = np.argsort(-detections.scores)
        keep = keep[detections.scores[keep] >= score_threshold]
        masks = detections.masks[keep]
        pairs = match_instances(mask_iou_matrix(masks, sample.masks))
        if len(pairs) == len(sample.masks) == len(masks):
            whole_correct += 1
        count_errors.append(abs(len(masks) - len(sample.masks)))
    n = max(len(samples), 1)
    return {"wcr": whole_correct / n, "mean_abs_count_error": float(np.mean(count_errors)) if count_errors else 0.0}


def evaluate_segmenter(
    model, samples: list[SegmentationSample], device, refine_boxes: bool = True, bootstrap: int = 0, tta: bool = False
) -> dict:
    """Segment `samples` with `model` and score it: COCO AP of the raw detections (with `tta`,
    also the single pass; with `bootstrap` rounds, 95% intervals and, with `tta`, of the paired
    TTA gain), then WCR and count error of the chromosomes the pipeline keeps."""
    # the predictor and the post-processing import this module's Detections
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
