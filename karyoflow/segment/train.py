"""Training ChrRender (or plain Mask R-CNN) on BioImLab MCIs.

AdamW, linear warm-up then cosine decay over `steps` iterations of `batch_size` images with
random flips (`augment="dihedral"` adds transpositions and gamma: see `dataset.training_pair`);
a checkpoint every `checkpoint_every` steps and at the end, so `--resume` continues an interrupted
run. The final weights are fp16.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from karyoflow.data.bioimlab import DataError
from karyoflow.segment.dataset import load_samples, majority_stain, training_pair
from karyoflow.segment.engines import NATIVE_SIZE
from karyoflow.segment.model import build_model
from karyoflow.segment.predictor import WEIGHTS_FORMAT, save_segmenter
from karyoflow.weights_io import WeightsError, load_checked, sha256_of


@dataclass
class SegmentTrainConfig:
    backbone: str = "resnet18"
    pointrend: bool = True
    steps: int = 3000
    batch_size: int = 2
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup: int = 200
    seed: int = 0
    checkpoint_every: int = 50
    augment: str = "flips"  # or "dihedral" (see dataset.training_pair; measured in docs/segmentation.md)
    max_minutes: float | None = None  # stop (and save) after this wall time
    # Start from these weights instead of from scratch (fine-tuning our model on a lab's own data,
    # or continuing a run with a fresh schedule). Must match backbone and head type.
    init_weights: str | None = None
    train_cases: list[str] = field(default_factory=list)
    # folders (BioImLab layout) whose every MCI is trained on too, e.g. a lab's own labelled MCIs;
    # semi-synthetic ones of the training cells were tried and hurt real MCIs (docs/segmentation.md)
    extra_data: list[str] = field(default_factory=list)
    # (short side, longest long side) the network sees; the native 768x576 by default (no resize)
    image_size: tuple[int, int] = NATIVE_SIZE
    workers: int = 0  # data-loader processes (the detectron2 engine; this trainer prepares in process)


def train_segmenter(
    data_dir: Path, config: SegmentTrainConfig, out: Path, device: torch.device, resume: bool = False, log=print
) -> dict:
    torch.manual_seed(config.seed)
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    samples = load_samples(data_dir, config.train_cases or None)
    if not samples:
        raise DataError("no training MCIs for the given cells")
    extra = [sample for folder in config.extra_data for sample in load_samples(Path(folder))]
    log(
        f"training on {len(samples) + len(extra)} MCIs from {len({s.case for s in samples + extra})} cells"
        + (f" ({len(extra)} from --extra-data)" if config.extra_data else "")
    )
    samples += extra
    short, longest = config.image_size
    model = build_model(config.backbone, pointrend=config.pointrend, min_size=short, max_size=longest)
    init_sha = None
    if config.init_weights and not (resume and out.with_suffix(".ckpt").is_file()):
        state, init_meta = load_checked(Path(config.init_weights), WEIGHTS_FORMAT, "karyo train segment")
        if (init_meta.get("backbone"), init_meta.get("pointrend")) != (config.backbone, config.pointrend):
            raise WeightsError(
                f"--init {config.init_weights} is {init_meta.get('backbone')}/pointrend={init_meta.get('pointrend')}, "
                f"not {config.backbone}/pointrend={config.pointrend}"
            )
        model.load_state_dict({k: v.float() for k, v in state.items()})
        init_sha = sha256_of(Path(config.init_weights))
        log(f"initialised from {config.init_weights} (sha256 {init_sha[:12]})")
    model = model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    def schedule(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        progress = (step - config.warmup) / max(config.steps - config.warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    rng = np.random.default_rng(config.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out.with_suffix(".ckpt")
    step, history, elapsed_before = 0, [], 0.0
    if resume and checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["rng"]
        step, history, elapsed_before = state["step"], state["history"], state["elapsed_s"]
        log(f"resumed from {checkpoint_path} at step {step}")

    def save_checkpoint() -> None:
        tmp = checkpoint_path.with_suffix(".ckpt.tmp")
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng.bit_generator.state,
                "step": step,
                "history": history,
                "elapsed_s": elapsed_before + time.time() - started,
                "config": asdict(config),
            },
            tmp,
        )
        tmp.replace(checkpoint_path)

    started = time.time()
    model.train()
    running: dict[str, float] = {}
    bar = tqdm(total=config.steps, initial=step, desc="train segment")
    while step < config.steps:
        picks = rng.choice(len(samples), size=config.batch_size, replace=False)
        transpose = config.augment == "dihedral" and bool(rng.random() < 0.5)  # one orientation a batch
        pairs = [training_pair(samples[i], rng, config.augment, transpose) for i in picks]
        images = [image.to(device) for image, _ in pairs]
        targets = [{k: v.to(device) for k, v in target.items()} for _, target in pairs]
        losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        scheduler.step()
        step += 1
        for key, value in losses.items():
            running[key] = running.get(key, 0.0) + float(value.detach())
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        out_of_time = config.max_minutes is not None and (time.time() - started) / 60 >= config.max_minutes
        if step % config.checkpoint_every == 0 or step == config.steps or out_of_time:
            count = step - (history[-1]["step"] if history else 0)
            record = {
                "step": step,
                **{k: round(v / max(count, 1), 4) for k, v in running.items()},
                "lr": scheduler.get_last_lr()[0],
                "elapsed_s": round(elapsed_before + time.time() - started, 1),
            }
            history.append(record)
            running = {}
            log(json.dumps(record))
            save_checkpoint()
        if out_of_time:
            log(f"stopping at step {step}: --max-minutes {config.max_minutes} reached (resume to continue)")
            break
    bar.close()
    meta = {
        "architecture": "ChrRender" if config.pointrend else "Mask R-CNN",
        "backbone": config.backbone,
        "pointrend": config.pointrend,
        "stain": majority_stain(samples),  # what the segmenter is meant for
        "image_size": list(config.image_size),
        "train_config": asdict(config),
        "steps_done": step,
        "init_sha256": init_sha,
        "history": history,
        "train_wall_s": round(elapsed_before + time.time() - started, 1),
        "device": str(device),
    }
    sha = save_segmenter(model, out, meta)
    out.with_suffix(".history.json").write_text(json.dumps(meta, indent=1) + "\n")
    log(f"wrote {out} (sha256 {sha})")
    return meta
