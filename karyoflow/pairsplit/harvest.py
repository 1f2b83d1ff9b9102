"""PairSplit examples from the segmenter's own detections on labelled MCIs.

Pairs composed from ICIs (examples) teach the network what two chromosomes look like; the
detections in which the segmenter itself merged two chromosomes are the ones it has to split
in use, with the segmenter's own outline (a little short of one partner, or with a bit of a
neighbour). On labelled MCIs (semi-synthetic training MCIs of real crowding, or a lab's own)
every detection that holds two true chromosomes (each at least `min_cover` inside it) becomes a
pair example, targets the two chromosomes within the detection; every detection that is one
chromosome (mask IoU >= 0.5) a single example. Stored as one .npz file for `karyo train
pairsplit --examples`."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from karyoflow.files import write_atomically
from karyoflow.pairsplit.crops import CROP_SIZE, crop_input, crop_target, frame_of
from karyoflow.pairsplit.examples import ExampleBatch

MIN_COVER = 0.6  # share of a true chromosome inside a detection that counts it as held there


def examples_of_mci(image: np.ndarray, truth: np.ndarray, detections: np.ndarray, size: int = CROP_SIZE):
    """Examples of one MCI: `image` in the working representation, `truth` T x H x W and
    `detections` D x H x W bool masks. Returns (inputs, targets, kinds) lists."""
    inputs, targets, kinds = [], [], []
    if not len(detections) or not len(truth):
        return inputs, targets, kinds
    areas = truth.reshape(len(truth), -1).sum(axis=1)
    for detection in detections:
        if not detection.any():
            continue
        shared = (truth & detection).reshape(len(truth), -1).sum(axis=1)
        held = np.nonzero(shared >= MIN_COVER * np.maximum(areas, 1))[0]
        union = (truth | detection).reshape(len(truth), -1).sum(axis=1)
        iou = shared / np.maximum(union, 1)
        if len(held) == 2:
            first, second, kind = truth[held[0]] & detection, truth[held[1]] & detection, "merged"
        elif len(held) <= 1 and iou.max() >= 0.5:
            first, second, kind = truth[int(np.argmax(iou))] & detection, np.zeros_like(detection), "single"
        else:
            continue  # three or more chromosomes, or a fragment: not a question PairSplit answers
        frame = frame_of(detection, size)
        inputs.append(crop_input(image, detection, frame))
        targets.append(np.stack([crop_target(first, frame), crop_target(second, frame)]))
        kinds.append(kind)
    return inputs, targets, kinds


def harvest(samples: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], size: int = CROP_SIZE) -> ExampleBatch:
    """Examples of every (image, truth masks, detection masks) sample."""
    inputs, targets, kinds = [], [], []
    for image, truth, detections in samples:
        more = examples_of_mci(image, truth.astype(bool), detections.astype(bool), size)
        inputs += more[0]
        targets += more[1]
        kinds += more[2]
    if not inputs:
        raise ValueError("no detection of these MCIs holds one or two whole chromosomes")
    return ExampleBatch(np.stack(inputs).astype(np.float32), np.stack(targets), kinds)


def save_examples(batch: ExampleBatch, path: Path) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, inputs=batch.inputs.astype(np.float16), targets=batch.targets, kinds=np.array(batch.kinds)
    )
    write_atomically(path, buffer.getvalue())


def load_examples(path: Path) -> ExampleBatch:
    with np.load(path) as data:
        return ExampleBatch(
            data["inputs"].astype(np.float32), data["targets"].astype(bool), [str(k) for k in data["kinds"]]
        )


def augmented(batch: ExampleBatch, index: np.ndarray, rng: np.random.Generator) -> ExampleBatch:
    """The examples at `index`, each turned by a random one of the square's 8 symmetries (the
    same for its input and targets)."""
    inputs, targets = batch.inputs[index].copy(), batch.targets[index].copy()
    for k in range(len(index)):
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        inputs[k] = np.rot90(inputs[k], turns, axes=(1, 2))
        targets[k] = np.rot90(targets[k], turns, axes=(1, 2))
        if flip:
            inputs[k], targets[k] = inputs[k][:, :, ::-1], targets[k][:, :, ::-1]
    return ExampleBatch(inputs, targets, [batch.kinds[i] for i in index])
