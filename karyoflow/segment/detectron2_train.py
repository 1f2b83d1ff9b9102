"""Training the detectron2 engine (PointRend, `detectron2_backend`) on BioImLab MCIs.

The labelled MCIs are labelme JSON files with the image inside, while detectron2 reads images
from files: the training MCIs are written as a COCO folder (`dataset.write_coco_images`:
lossless PNGs of the working representation, and instances.json) in the run folder beside the
weights. The records are handed to detectron2's data loader directly, never registered in its
global catalog, so any number of runs in one process cannot collide. Each image goes through
the default engine's normalisation (`dataset.image_tensor`) after detectron2's geometric
augmentation (resize to the configured size, horizontal and vertical flips, as the default
engine's "flips").

detectron2's DefaultTrainer runs the loop: SGD with momentum, linear warm-up, the LR divided by
10 at 75% and 90% of the iterations (milestones that coincide in a very short run are kept
once), a checkpoint every `checkpoint_every` iterations (only the latest kept; `resume`
continues from it). The weights file is the project's: fp16, with the metadata that rebuilds the model.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from karyoflow.data.bioimlab import DataError
from karyoflow.files import write_atomically
from karyoflow.segment.dataset import image_tensor, load_samples, to_coco, write_coco_images
from karyoflow.segment.detectron2_backend import (
    ARCHITECTURE,
    WEIGHTS_FORMAT,
    pointrend_config,
    require_detectron2,
    save_detector,
)
from karyoflow.weights_io import WeightsError, load_checked, sha256_of

# the schedule of detectron2's Mask R-CNN recipes: LR / 10 at these fractions of the run
LR_DROPS = (0.75, 0.9)


def lr_milestones(iterations: int) -> tuple[int, ...]:
    """Iterations at which the LR drops: each of LR_DROPS once, strictly inside the run and
    increasing (a run of a few iterations would otherwise give the same milestone twice, which
    detectron2's scheduler refuses)."""
    return tuple(sorted({step for step in (int(iterations * f) for f in LR_DROPS) if 0 < step < iterations}))


def run_dir_of(out: Path) -> Path:
    """The folder of a run's checkpoints, metrics and training images: beside the weights."""
    return out.with_name(out.name + ".detectron2")


class GreyMapper:
    """A detectron2 dataset record -> the model's input: the PNG read as grey, resized and
    flipped with its masks, then scaled as the default engine scales its images."""

    def __init__(self, image_size: tuple[int, int], flips: bool = True) -> None:
        from detectron2.data import transforms

        augmentations = [transforms.ResizeShortestEdge(image_size[0], image_size[1], "choice")]
        if flips:
            augmentations += [
                transforms.RandomFlip(horizontal=True, vertical=False),
                transforms.RandomFlip(horizontal=False, vertical=True),
            ]
        self.augmentations = transforms.AugmentationList(augmentations)

    def __call__(self, record: dict) -> dict:
        import cv2
        from detectron2.data import detection_utils, transforms

        image = cv2.imread(record["file_name"], cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise DataError(f"cannot read the training image {record['file_name']}")
        augmented = transforms.AugInput(image)
        applied = self.augmentations(augmented)
        image = augmented.image
        annotations = [
            detection_utils.transform_instance_annotations(annotation, applied, image.shape[:2])
            for annotation in record["annotations"]
        ]
        instances = detection_utils.annotations_to_instances(annotations, image.shape[:2], mask_format="bitmask")
        return {
            "file_name": record["file_name"],
            "height": record["height"],
            "width": record["width"],
            "image": image_tensor(np.ascontiguousarray(image)),
            "instances": detection_utils.filter_empty_instances(instances),
        }


def solver_settings(cfg, config, workers: int) -> None:
    """The run's schedule and loader on a detectron2 config (in place)."""
    cfg.SOLVER.IMS_PER_BATCH = config.batch_size
    cfg.SOLVER.BASE_LR = config.lr
    cfg.SOLVER.MOMENTUM = 0.9
    cfg.SOLVER.WEIGHT_DECAY = config.weight_decay
    cfg.SOLVER.MAX_ITER = config.steps
    cfg.SOLVER.STEPS = lr_milestones(config.steps)
    cfg.SOLVER.WARMUP_ITERS = min(config.warmup, config.steps)
    cfg.SOLVER.CHECKPOINT_PERIOD = config.checkpoint_every
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.DATASETS.TRAIN = ()  # records are handed to the loader, not registered (see the module)
    cfg.DATASETS.TEST = ()
    cfg.TEST.EVAL_PERIOD = 0
    cfg.SEED = config.seed


def _trainer_class(records: list[dict], mapper: GreyMapper):
    """DefaultTrainer reading `records` through `mapper`, keeping only its latest checkpoint."""
    from detectron2.data import build_detection_train_loader
    from detectron2.engine import DefaultTrainer, hooks

    class Trainer(DefaultTrainer):
        @classmethod
        def build_train_loader(cls, cfg):
            return build_detection_train_loader(
                records,
                mapper=mapper,
                total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
                num_workers=cfg.DATALOADER.NUM_WORKERS,
            )

        def build_hooks(self):
            built = super().build_hooks()
            for hook in built:
                if isinstance(hook, hooks.PeriodicCheckpointer):
                    hook.max_to_keep = 1  # R-50 checkpoints with momentum are ~350 MB each
            return built

    return Trainer


def _keep_latest_checkpoint(run_dir: Path) -> None:
    """Remove every checkpoint but the one `--resume` reads (detectron2 keeps the periodic ones of
    earlier runs in the folder)."""
    latest = (run_dir / "last_checkpoint").read_text().strip()
    for checkpoint in run_dir.glob("model_*.pth"):
        if checkpoint.name != latest:
            checkpoint.unlink()


def _metrics(run_dir: Path) -> list[dict]:
    """detectron2's metrics.json (one JSON record per line) as the run's loss history."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return []
    keep = ("iteration", "total_loss", "loss_cls", "loss_box_reg", "loss_mask", "loss_mask_point", "lr", "time")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: record[k] for k in keep if k in record} for record in records]


def train_detectron2(data_dir: Path, config, out: Path, device: torch.device, resume: bool = False, log=print) -> dict:
    """Train detectron2's PointRend on the MCIs of `config.train_cases` (and `extra_data`) and
    write its weights to `out`. `config` is a `SegmentTrainConfig`; `image_size` and `workers`
    are its detectron2 settings."""
    require_detectron2()
    from detectron2.data.datasets import load_coco_json
    from detectron2.utils.env import seed_all_rng

    samples = load_samples(data_dir, config.train_cases or None)
    if not samples:
        raise DataError("no training MCIs for the given cells")
    extra = [sample for folder in config.extra_data for sample in load_samples(Path(folder))]
    samples += extra
    log(f"training on {len(samples)} MCIs from {len({s.case for s in samples})} cells")
    run_dir = run_dir_of(out)
    coco_json, image_dir = run_dir / "train" / "instances.json", run_dir / "train" / "images"
    coco = to_coco(samples)
    write_coco_images(samples, coco, image_dir)
    write_atomically(coco_json, json.dumps(coco).encode())
    records = load_coco_json(str(coco_json), str(image_dir))  # no dataset name: nothing registered
    for record in records:
        for annotation in record["annotations"]:
            # detectron2's classes count from 0 (a catalog would map COCO's id 1 to it); the
            # class numbered NUM_CLASSES is its background
            annotation["category_id"] = 0
    del samples, extra  # the loader reads the PNGs; the decoded MCIs are not needed any more

    image_size = tuple(config.image_size)
    cfg = pointrend_config(str(device), config.backbone, image_size, output_dir=run_dir)
    solver_settings(cfg, config, config.workers)
    cfg.freeze()
    seed_all_rng(config.seed)
    trainer = _trainer_class(records, GreyMapper(image_size))(cfg)
    resuming = resume and (run_dir / "last_checkpoint").is_file()
    trainer.resume_or_load(resume=resuming)
    init_sha = None
    if config.init_weights and not resuming:
        state, init_meta = load_checked(Path(config.init_weights), WEIGHTS_FORMAT, "karyo train segment")
        if (init_meta.get("backbone"), tuple(init_meta.get("image_size", ()))) != (config.backbone, image_size):
            raise WeightsError(
                f"--init {config.init_weights} is {init_meta.get('backbone')} at {init_meta.get('image_size')}, "
                f"not {config.backbone} at {list(image_size)}"
            )
        trainer.model.load_state_dict(state)
        init_sha = sha256_of(Path(config.init_weights))
        log(f"initialised from {config.init_weights} (sha256 {init_sha[:12]})")
    if resuming:
        log(f"resumed from {run_dir} at iteration {trainer.start_iter}")
    started = time.time()
    trainer.train()
    _keep_latest_checkpoint(run_dir)
    model = trainer.model.cpu()
    meta = {
        "engine": "detectron2",
        "architecture": ARCHITECTURE,
        "backbone": config.backbone,
        "pointrend": True,
        "image_size": list(image_size),
        "train_config": asdict(config),
        "steps_done": trainer.iter,  # max_iter once the loop has run to its end
        "lr_milestones": list(cfg.SOLVER.STEPS),
        "init_sha256": init_sha,
        "history": _metrics(run_dir),
        "train_wall_s": round(time.time() - started, 1),
        "device": str(device),
        "detectron2_config": cfg.dump(),
    }
    sha = save_detector(model, out, meta)
    out.with_suffix(".history.json").write_text(json.dumps(meta, indent=1) + "\n")
    log(f"wrote {out} (sha256 {sha})")
    return meta
