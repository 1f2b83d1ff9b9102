"""Turn a training checkpoint (`<out>.ckpt`) into a weights file, to evaluate a run midway.

python scripts/checkpoint_to_weights.py runs/segment/long.ckpt /tmp/long-midway.pt
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from karyoflow.segment.model import build_model
from karyoflow.segment.predictor import save_segmenter


def main(checkpoint: Path, out: Path) -> None:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    config = state["config"]
    model = build_model(config["backbone"], pointrend=config["pointrend"])
    model.load_state_dict(state["model"])
    meta = {
        "architecture": "ChrRender" if config["pointrend"] else "Mask R-CNN",
        "backbone": config["backbone"],
        "pointrend": config["pointrend"],
        "train_config": config,
        "steps_done": state["step"],
        "history": state["history"],
        "train_wall_s": state["elapsed_s"],
        "midway_checkpoint": True,
    }
    print(save_segmenter(model, out, meta))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
