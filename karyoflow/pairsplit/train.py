"""`karyo train pairsplit`: PairSplit on pairs composed from training cells' ICIs
(karyoflow.pairsplit.examples), validated on pairs of validation cells' ICIs, never trained on.

Examples are made afresh for every batch (no example is seen twice). With `examples` (the
segmenter's own merged pairs and single chromosomes, karyoflow.pairsplit.harvest), a share
`examples_share` of every batch is drawn from them, each turned by a random symmetry of the
square. `init_weights` starts from an earlier PairSplit's weights. A checkpoint every
`checkpoint_every` steps holds the model, the optimiser and both random generators, so
`--resume` continues the same run."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from karyoflow.data.icis import read_ici_cell
from karyoflow.files import write_atomically
from karyoflow.pairsplit.examples import ExampleBatch, make_batch
from karyoflow.pairsplit.harvest import augmented
from karyoflow.pairsplit.model import PairSplitNet
from karyoflow.pairsplit.predictor import WEIGHTS_FORMAT, mask_iou, save_pair_splitter, two_chromosomes
from karyoflow.weights_io import load_checked


@dataclass
class PairSplitTrainConfig:
    steps: int = 3000
    batch_size: int = 24
    lr: float = 2e-3
    warmup: int = 100
    width: int = 16
    crop_size: int = 64
    seed: int = 0
    checkpoint_every: int = 100
    eval_every: int = 500
    val_examples: int = 600
    max_minutes: float | None = None
    examples_share: float = 0.5
    init_weights: str | None = None


def load_icis(data_dir: Path, cells: list[str]) -> list[np.ndarray]:
    """Every ICI of these cells, in the working representation."""
    return [record.load() for cell in cells for record in read_ici_cell(data_dir, cell)]


def pair_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the better of the two orders of (BCE + soft Dice) summed over the
    two outputs: which output holds which chromosome does not matter."""

    def per_order(t: torch.Tensor) -> torch.Tensor:
        bce = nn.functional.binary_cross_entropy_with_logits(logits, t, reduction="none").mean(dim=(2, 3))
        p = logits.sigmoid()
        dice = 1 - (2 * (p * t).sum(dim=(2, 3)) + 1) / (p.sum(dim=(2, 3)) + t.sum(dim=(2, 3)) + 1)
        return (bce + dice).sum(dim=1)

    return torch.minimum(per_order(targets), per_order(targets.flip(1))).mean()


@torch.no_grad()
def evaluate_pair_splitter(model: PairSplitNet, batch: ExampleBatch, device: torch.device | str) -> dict:
    """On fixed examples (composed, or harvested: a "merged" one is a pair): pairs_split (share
    of pairs split in two), pair_iou (mean IoU of the
    two pieces with the two chromosomes in the better order, 0 for a pair left whole) and
    singles_whole (share of single chromosomes left whole), by the predictor's rule
    (`two_chromosomes`)."""
    model.eval()
    chunks = [torch.from_numpy(batch.inputs[s : s + 64]).to(device) for s in range(0, len(batch.inputs), 64)]
    probabilities = torch.cat([model(chunk).sigmoid().cpu() for chunk in chunks]).numpy()
    pair_ious, split_pairs, whole_singles, singles = [], 0, 0, 0
    for p, target, crop, kind in zip(probabilities, batch.targets, batch.inputs, batch.kinds, strict=True):
        inside = crop[1] > 0
        a, b = (p[0] > 0.5) & inside, (p[1] > 0.5) & inside
        split = two_chromosomes(a, b, int(inside.sum()))
        if kind == "single":
            singles += 1
            whole_singles += not split
            continue
        split_pairs += split
        orders = [
            (mask_iou(a, target[0]) + mask_iou(b, target[1])) / 2,
            (mask_iou(a, target[1]) + mask_iou(b, target[0])) / 2,
        ]
        pair_ious.append(max(orders) if split else 0.0)
    pairs = len(pair_ious)
    model.train()
    return {
        "pairs": pairs,
        "pairs_split": round(split_pairs / pairs, 4) if pairs else None,
        "pair_iou": round(float(np.mean(pair_ious)), 4) if pairs else None,
        "singles": singles,
        "singles_whole": round(whole_singles / singles, 4) if singles else None,
    }


def train_pair_splitter(
    train_icis: list[np.ndarray],
    val_icis: list[np.ndarray],
    config: PairSplitTrainConfig,
    out: Path,
    device: torch.device | str = "cpu",
    resume: bool = False,
    meta: dict | None = None,
    log: Callable[[str], None] = print,
    examples: ExampleBatch | None = None,
    val_harvested: ExampleBatch | None = None,
) -> dict:
    """Train, write `out` (fp16 weights + metadata) and return the final validation figures."""
    if len(train_icis) < 2:
        raise ValueError("PairSplit needs at least two training ICIs")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = PairSplitNet(config.width)
    if config.init_weights:
        state, init_meta = load_checked(Path(config.init_weights), WEIGHTS_FORMAT, "karyo train pairsplit")
        if (init_meta["width"], init_meta["crop_size"]) != (config.width, config.crop_size):
            raise ValueError(
                f"{config.init_weights} has width {init_meta['width']} and crop size {init_meta['crop_size']}; "
                "train with the same --width and --crop-size"
            )
        model.load_state_dict(state)
    if examples is not None and examples.inputs.shape[-1] != config.crop_size:
        raise ValueError(f"the examples are {examples.inputs.shape[-1]} px crops; --crop-size is {config.crop_size}")
    model = model.to(device)
    from_examples = round(config.batch_size * config.examples_share) if examples is not None else 0
    # half of the harvested part merged pairs, half single chromosomes: a metaphase holds a few
    # merged pairs among forty-odd singles
    by_kind = [np.nonzero(np.array(examples.kinds) == kind)[0] for kind in ("merged", "single")] if examples else []
    by_kind = [indices for indices in by_kind if len(indices)]
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return config.lr * (step + 1) / config.warmup
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    checkpoint = out.with_suffix(out.suffix + ".ckpt")
    step, elapsed = 0, 0.0
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        step, elapsed = state["step"], state["elapsed_s"]
        log(f"resumed at step {step}")
    val_batch = make_batch(val_icis, config.val_examples, np.random.default_rng(config.seed + 1), config.crop_size)
    started = time.monotonic() - elapsed
    model.train()
    figures: dict = {}
    while step < config.steps:
        batch = make_batch(train_icis, config.batch_size - from_examples, rng, config.crop_size)
        if from_examples:
            pools = rng.integers(len(by_kind), size=from_examples)
            index = np.array([by_kind[pool][rng.integers(len(by_kind[pool]))] for pool in pools])
            drawn = augmented(examples, index, rng)
            batch = ExampleBatch(np.concatenate([batch.inputs, drawn.inputs]),
                                 np.concatenate([batch.targets, drawn.targets]), batch.kinds + drawn.kinds)  # fmt: skip
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step)
        logits = model(torch.from_numpy(batch.inputs).to(device))
        loss = pair_loss(logits, torch.from_numpy(batch.targets).float().to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        step += 1
        if step % 25 == 0:
            seconds = time.monotonic() - started
            log(f"step {step}/{config.steps} loss {loss.item():.4f} lr {lr_at(step):.2e} {seconds:.0f} s")
        if step % config.eval_every == 0 or step == config.steps:
            figures = evaluate_pair_splitter(model, val_batch, device)
            if val_harvested is not None:
                figures["harvested"] = evaluate_pair_splitter(model, val_harvested, device)
            log(f"step {step} validation {figures}")
        out_of_time = config.max_minutes is not None and time.monotonic() - started > 60 * config.max_minutes
        if step % config.checkpoint_every == 0 or step == config.steps or out_of_time:
            state = {
                "model": model.state_dict(),
                "optimiser": optimiser.state_dict(),
                "rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "step": step,
                "elapsed_s": time.monotonic() - started,
            }
            buffer = io.BytesIO()
            torch.save(state, buffer)
            write_atomically(checkpoint, buffer.getvalue())
        if out_of_time:
            log(f"stopped after {config.max_minutes} min at step {step}; continue with --resume")
            break
    if not figures:
        figures = evaluate_pair_splitter(model, val_batch, device)
        if val_harvested is not None:
            figures["harvested"] = evaluate_pair_splitter(model, val_harvested, device)
    wall_min = round((time.monotonic() - started) / 60, 1)
    sha = save_pair_splitter(
        model.eval(), out,
        {**(meta or {}), "width": config.width, "crop_size": config.crop_size, "config": asdict(config),
         "steps_done": step, "validation": figures, "wall_min": wall_min, "device": str(device)},
    )  # fmt: skip
    log(f"wrote {out} (sha256 {sha}) after {step} steps, {wall_min} min; validation {figures}")
    return figures
