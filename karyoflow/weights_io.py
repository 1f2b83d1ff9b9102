"""Weights files of the project: an fp16 state dict, a format tag and the metadata (training
configuration, preprocessing) the loader needs, written atomically."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch


class WeightsError(ValueError):
    """A weights file is missing or not weights of the expected kind."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_fp16(model: torch.nn.Module, path: Path, weights_format: str, meta: dict) -> str:
    """Write the model's weights in fp16 with `meta`; return the file's sha256."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": weights_format, "meta": meta, "state_dict": state}, tmp)
    tmp.replace(path)
    return sha256_of(path)


def _load_blob(path: Path, weights_format: str, train_hint: str, mmap: bool = False) -> dict:
    if not path.is_file():
        raise WeightsError(f"no weights at {path}; train with '{train_hint}' or pass --weights")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # torch raises several types for a foreign file
        raise WeightsError(f"{path} is not a weights file: {error}") from error
    if not isinstance(blob, dict) or blob.get("format") != weights_format:
        raise WeightsError(f"{path} is not {weights_format} weights")
    return blob


def load_checked(path: Path, weights_format: str, train_hint: str) -> tuple[dict[str, torch.Tensor], dict]:
    """fp32 state dict and metadata of a weights file of `weights_format`, or a WeightsError."""
    blob = _load_blob(path, weights_format, train_hint)
    state = {k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
    return state, blob["meta"]


def read_meta(path: Path, weights_format: str, train_hint: str) -> dict:
    """The metadata of a weights file of `weights_format` (or a WeightsError), its tensors mapped
    from the file, not read: what a caller needs to choose a model (its stain) before loading it."""
    return _load_blob(path, weights_format, train_hint, mmap=True)["meta"]
