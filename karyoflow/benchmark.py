"""Speed benchmarks: the classifier on one cell's ICIs, the segmenter and the whole pipeline on
one MCI. Each warms up once, then reports medians over `repeats` runs as a JSON-ready dict."""

from __future__ import annotations

import time

import numpy as np
import torch

from karyoflow.data.bioimlab import McImage


def bench_classifier(
    model, meta: dict, raw_icis: list[np.ndarray], batch: int, repeats: int, tta: bool, device
) -> dict:
    """ICIs per second for one batch of raw ICIs: preparation (straightening, canvases) and the
    network timed apart."""
    from karyoflow.classify.evaluate import predict_probabilities
    from karyoflow.classify.preprocess import Preprocessing

    torch.set_flush_denormal(True)
    preprocessing = Preprocessing.from_meta(meta)
    warm = torch.from_numpy(preprocessing.prepare(raw_icis).canvases)[:, None]
    predict_probabilities(model, warm, tta=tta, device=device)  # warm-up
    prep_times, net_times = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        images = torch.from_numpy(preprocessing.prepare(raw_icis).canvases)[:, None]
        prep_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        predict_probabilities(model, images, batch_size=batch, tta=tta, device=device)
        net_times.append(time.perf_counter() - started)
    prep, net = float(np.median(prep_times)), float(np.median(net_times))
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch": len(raw_icis),
        "tta": tta,
        "prepare_s": round(prep, 4),
        "network_s": round(net, 4),
        "icis_per_s": round(len(raw_icis) / (prep + net), 1),
        "network_icis_per_s": round(len(raw_icis) / net, 1),
    }


def bench_segmenter(model, meta: dict, image: np.ndarray, repeats: int, tta: bool, device) -> dict:
    """Seconds per MCI of the segmenter alone."""
    from karyoflow.segment.predictor import segment_images

    torch.set_flush_denormal(True)
    segment_images(model, [image], device, flip_tta=tta)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        segment_images(model, [image], device, flip_tta=tta)
        times.append(time.perf_counter() - started)
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "engine": meta.get("engine", "torchvision"),
        "backbone": meta["backbone"],
        "image": f"{image.shape[1]}x{image.shape[0]}",
        "seconds_per_mci": round(float(np.median(times)), 3),
        "flip_tta": tta,
    }


def bench_pipeline(karyotyper, mci: McImage, repeats: int) -> dict:
    """Seconds per MCI of the whole pipeline, karyogram and report included, by stage."""
    from karyoflow.report import render_outputs

    render_outputs(karyotyper.analyse(mci.image, mci.path.name))  # warm-up
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = karyotyper.analyse(mci.image, mci.path.name)
        render_outputs(result)
        runs.append({**result.timings_ms, "total": (time.perf_counter() - started) * 1000})
    median = {key: round(float(np.median([r[key] for r in runs])), 1) for key in runs[0]}
    return {
        "device": str(karyotyper.device),
        "threads": torch.get_num_threads(),
        "image": f"{mci.path.name} {mci.image.shape[1]}x{mci.image.shape[0]}",
        "chromosomes": len(result.chromosomes),
        "median_ms": median,
        "seconds_per_mci": round(median["total"] / 1000, 3),
    }
