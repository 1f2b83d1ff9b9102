"""Where models run: CUDA when present, else the CPU, unless told otherwise."""

from __future__ import annotations

import torch


def pick_device(name: str | None = None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
