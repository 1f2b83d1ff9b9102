"""Training ChrNet4: cross-entropy + alpha x center loss, AdamW with a one-cycle schedule.

A checkpoint is written after every epoch (model, centres, optimiser, schedule, RNG state), so
an interrupted run resumes where it stopped with `--resume`. The final weights are fp16.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from karyoflow.classify.dataset import IciTensors, augment, load_ici_tensors
from karyoflow.classify.evaluate import classification_report, predict_probabilities
from karyoflow.classify.losses import CenterLoss
from karyoflow.classify.model import BLOCKS_PER_STAGE, ChrNet4
from karyoflow.classify.preprocess import CANVAS_HEIGHT, CANVAS_WIDTH, REFERENCE_SIZE, Preprocessing
from karyoflow.classify.weights import WeightsError, load_weights, save_weights
from karyoflow.data.icis import layout_stain
from karyoflow.labels import NUM_CLASSES


@dataclass
class TrainConfig:
    epochs: int = 60
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    center_weight: float = 0.5  # alpha of the paper's equation (3); 0 turns center loss off
    label_smoothing: float = 0.05
    method: str = "mask"
    canvas_height: int = CANVAS_HEIGHT
    canvas_width: int = CANVAS_WIDTH
    reference_size: float = REFERENCE_SIZE
    seed: int = 0
    eval_every: int = 5
    max_steps: int | None = None  # stop early (tests, smoke runs)
    init_weights: str | None = None  # fine-tune from these ChrNet4 weights instead of from scratch
    train_cases: list[str] = field(default_factory=list)
    val_cases: list[str] = field(default_factory=list)


def train_classifier(
    data_dir: Path,
    config: TrainConfig,
    out: Path,
    device: torch.device,
    resume: bool = False,
    log=print,
) -> dict:
    torch.manual_seed(config.seed)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # denormals made CPU training several times slower
    started = time.time()
    preprocessing = Preprocessing(config.method, config.canvas_height, config.canvas_width, config.reference_size)
    train_set = load_ici_tensors(data_dir, config.train_cases, preprocessing)
    val_set = load_ici_tensors(data_dir, config.val_cases, preprocessing) if config.val_cases else None
    log(
        f"train ICIs: {len(train_set)} from {len(config.train_cases)} cells; "
        f"val ICIs: {len(val_set) if val_set else 0} ({time.time() - started:.1f} s to prepare)"
    )

    model = ChrNet4().to(device)
    center_loss = CenterLoss(NUM_CLASSES, model.feature_dim).to(device)
    decay, no_decay = [], []
    for _name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 else decay).append(param)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay + list(center_loss.parameters()), "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    steps_per_epoch = max(len(train_set) // config.batch_size, 1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.15
    )
    if config.init_weights and not resume:
        start_from_weights(model, center_loss, Path(config.init_weights), preprocessing, train_set, device)
        log(f"fine-tuning from {config.init_weights}")
    generator = torch.Generator().manual_seed(config.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out.with_suffix(".ckpt")
    history: list[dict] = []
    start_epoch = 0
    elapsed_before = 0.0
    if resume and checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        center_loss.load_state_dict(state["center_loss"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        history = state["history"]
        start_epoch = state["epoch"] + 1
        elapsed_before = state.get("elapsed_s", 0.0)
        log(f"resumed from {checkpoint_path} after epoch {start_epoch}")

    step = start_epoch * steps_per_epoch
    epoch_started = time.time()
    for epoch in range(start_epoch, config.epochs):
        model.train()
        order = torch.randperm(len(train_set), generator=generator)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False)
        totals = {"ce": 0.0, "center": 0.0, "correct": 0, "seen": 0}
        for i in bar:
            index = order[i * config.batch_size : (i + 1) * config.batch_size]
            images = augment(train_set.images[index], generator).to(device)
            targets = train_set.targets[index].to(device)
            features = model.forward_features(images)
            logits = model.fc(features)
            ce = F.cross_entropy(logits, targets, label_smoothing=config.label_smoothing)
            loss = ce
            center = torch.zeros((), device=device)
            if config.center_weight > 0:
                center = center_loss(features, targets)
                loss = ce + config.center_weight * center
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            totals["ce"] += float(ce.detach()) * len(index)
            totals["center"] += float(center.detach()) * len(index)
            totals["correct"] += int((logits.argmax(1) == targets).sum())
            totals["seen"] += len(index)
            bar.set_postfix(ce=f"{float(ce.detach()):.3f}", center=f"{float(center.detach()):.4f}")
            if config.max_steps is not None and step >= config.max_steps:
                break
        record = {
            "epoch": epoch + 1,
            "train_ce": totals["ce"] / max(totals["seen"], 1),
            "train_center": totals["center"] / max(totals["seen"], 1),
            "train_accuracy": totals["correct"] / max(totals["seen"], 1),
        }
        last = epoch + 1 == config.epochs or (config.max_steps is not None and step >= config.max_steps)
        if val_set is not None and ((epoch + 1) % config.eval_every == 0 or last):
            record["val_accuracy"] = evaluate_tensors(model, val_set, device)["accuracy"]
        elapsed = elapsed_before + time.time() - epoch_started
        record["elapsed_s"] = round(elapsed, 1)
        history.append(record)
        log(json.dumps(record))
        tmp = checkpoint_path.with_suffix(".ckpt.tmp")
        torch.save(
            {
                "model": model.state_dict(),
                "center_loss": center_loss.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "history": history,
                "epoch": epoch,
                "elapsed_s": elapsed,
                "config": asdict(config),
            },
            tmp,
        )
        tmp.replace(checkpoint_path)  # atomic: a run killed while saving keeps its last checkpoint
        if last:
            break

    meta = {
        "architecture": "ChrNet4",
        "blocks_per_stage": list(BLOCKS_PER_STAGE),
        "stain": layout_stain(data_dir),  # what the ICIs it was trained on were stained with
        "straighten": config.method,
        "canvas": [config.canvas_height, config.canvas_width],
        "reference_size": config.reference_size,
        "train_config": asdict(config),
        "history": history,
        "train_wall_s": round(elapsed_before + time.time() - epoch_started, 1),
        "device": str(device),
    }
    sha = save_weights(model, out, meta)
    (out.with_suffix(".history.json")).write_text(json.dumps(meta, indent=1) + "\n")
    log(f"wrote {out} (sha256 {sha})")
    return meta


def start_from_weights(
    model: ChrNet4,
    center_loss: CenterLoss,
    path: Path,
    preprocessing: Preprocessing,
    train_set: IciTensors,
    device: torch.device,
) -> None:
    """Load trained weights into `model` and put each class centre at its features' mean.

    The saved weights carry no centres; centres left at zero would make the center loss pull
    every trained feature towards the origin in the first steps and undo what the weights know.
    """
    trained, meta = load_weights(path, device)
    if Preprocessing.from_meta(meta) != preprocessing:
        raise WeightsError(f"{path} expects ICIs prepared as {Preprocessing.from_meta(meta)}, not {preprocessing}")
    model.load_state_dict(trained.float().state_dict())
    model.eval()
    sums = torch.zeros_like(center_loss.centers)
    counts = torch.zeros(len(sums), device=sums.device)
    with torch.no_grad():
        for start in range(0, len(train_set), 256):
            features = model.forward_features(train_set.images[start : start + 256].to(device))
            targets = train_set.targets[start : start + 256].to(device)
            sums.index_add_(0, targets, features)
            counts.index_add_(0, targets, torch.ones_like(targets, dtype=counts.dtype))
        center_loss.centers.copy_(sums / counts.clamp(min=1).unsqueeze(1))


def evaluate_tensors(model: ChrNet4, tensors: IciTensors, device: torch.device, tta: bool = False) -> dict:
    probs = predict_probabilities(model, tensors.images, tta=tta, device=device)
    return classification_report(tensors.targets.numpy(), probs.argmax(1).numpy())
