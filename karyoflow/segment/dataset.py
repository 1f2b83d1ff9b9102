"""BioImLab MCIs as instance-segmentation samples, and their COCO export.

Each labelme polygon becomes its own full instance mask (cv2.fillPoly), so overlapping
chromosomes each keep their whole mask. Images are grey; the network takes three identical
channels, scaled per image (99.5th percentile -> 1) because Q-band brightness varies by cell.
"""

from __future__ import annotations

import datetime
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils

from karyoflow.data.bioimlab import McImage, list_mcis, read_mci
from karyoflow.stain import detect_stain, to_bright_on_dark


@dataclass
class SegmentationSample:
    """One MCI. Masks are drawn from the polygons when asked for (46 full-size masks per image
    would hold ~20 MB each in memory)."""

    name: str
    case: str
    image: np.ndarray  # H x W uint8
    polygons: list[np.ndarray]
    labels: list[str]
    stain: str = "q"  # of the picture it came from; `image` is always bright on dark

    @property
    def masks(self) -> np.ndarray:
        height, width = self.image.shape
        if not self.polygons:
            return np.zeros((0, height, width), np.uint8)
        return np.stack([polygon_mask(p, height, width) for p in self.polygons])


def polygon_mask(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    return mask


def sample_from_mci(mci: McImage) -> SegmentationSample:
    """The MCI in the working representation (a G-band picture, recognised by its bright
    background, is inverted as the pipeline does); polygons that cover no pixel (degenerate
    annotations) are dropped."""
    height, width = mci.image.shape
    keep = [i for i, p in enumerate(mci.polygons) if polygon_mask(p, height, width).any()]
    stain = detect_stain(mci.image)
    image = to_bright_on_dark(mci.image, stain)
    return SegmentationSample(
        mci.path.stem, mci.case, image, [mci.polygons[i] for i in keep], [mci.labels[i] for i in keep], stain
    )


def load_samples(data_dir: Path, cases: list[str] | None = None) -> list[SegmentationSample]:
    """Every MCI of the given cells (all when None), in file order."""
    wanted = None if cases is None else set(cases)
    samples = []
    for path in list_mcis(data_dir):
        mci = read_mci(path)
        if wanted is None or mci.case in wanted:
            samples.append(sample_from_mci(mci))
    return samples


def majority_stain(samples: list[SegmentationSample]) -> str:
    """The stain most of the MCIs were photographed in (Q-band for none)."""
    stains = Counter(sample.stain for sample in samples)
    return stains.most_common(1)[0][0] if stains else "q"


def image_tensor(image: np.ndarray) -> torch.Tensor:
    grey = image.astype(np.float32)
    level = max(float(np.percentile(grey, 99.5)), 1.0)
    return torch.from_numpy(np.clip(grey / level, 0.0, 1.5))[None].expand(3, -1, -1).contiguous()


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return boxes


AUGMENTATIONS = ("flips", "dihedral")
COCO_CATEGORIES = [{"id": 1, "name": "chromosome", "supercategory": "chromosome"}]


def training_pair(
    sample: SegmentationSample,
    rng: np.random.Generator | None = None,
    augment: str = "flips",
    transpose: bool | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Image tensor and torchvision target; with `rng`, random augmentation.

    "flips": horizontal and vertical flips. "dihedral": flips plus a transposition (so all eight
    right-angle orientations, a metaphase has no preferred one; a transposed 768x576 MCI is
    576x768 and still needs no resize) and a random gamma in [0.7, 1.4] (Q-band contrast varies
    from cell to cell more than the per-image brightness scaling removes). `transpose` fixes the
    transposition instead of drawing it: the trainer draws one per batch, because a batch of a
    768x576 and a 576x768 image is padded to 768x768 (a third more pixels to compute).
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; choose from {AUGMENTATIONS}")
    image, masks = sample.image, sample.masks
    if rng is not None:
        if rng.random() < 0.5:
            image, masks = image[:, ::-1], masks[:, :, ::-1]
        if rng.random() < 0.5:
            image, masks = image[::-1], masks[:, ::-1]
        if augment == "dihedral":
            if (rng.random() < 0.5) if transpose is None else transpose:
                image, masks = image.T, masks.transpose(0, 2, 1)
            gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
            table = np.round(255.0 * (np.arange(256) / 255.0) ** gamma).astype(np.uint8)
            image = table[image]
        image, masks = np.ascontiguousarray(image), np.ascontiguousarray(masks)
    target = {
        "boxes": torch.from_numpy(boxes_from_masks(masks)),
        "labels": torch.ones(len(masks), dtype=torch.int64),
        "masks": torch.from_numpy(masks),
    }
    return image_tensor(image), target


def encode_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def image_file_name(sample: SegmentationSample, image_id: int, names: list[str]) -> str:
    """The PNG an export writes a sample's image to: its name, with the image id where two
    samples (of different folders) share a name."""
    return f"{sample.name}.png" if names.count(sample.name) == 1 else f"{sample.name}-{image_id}.png"


def write_coco_images(samples: list[SegmentationSample], coco: dict, image_dir: Path) -> None:
    """The samples' images (the working representation, lossless PNG) in `image_dir` under the
    file names of their COCO export `coco` (`to_coco(samples)`), for tools that read images from
    files (detectron2); each written atomically."""
    from karyoflow.files import write_atomically

    for sample, info in zip(samples, coco["images"], strict=True):
        ok, png = cv2.imencode(".png", sample.image)
        if not ok:
            raise ValueError(f"cannot encode the image of {sample.name} as PNG")
        write_atomically(image_dir / info["file_name"], png.tobytes())


def to_coco(samples: list[SegmentationSample]) -> dict:
    """COCO instances JSON: one category "chromosome", RLE segmentations, boxes as xywh."""
    images, annotations = [], []
    names = [sample.name for sample in samples]
    for image_id, sample in enumerate(samples, start=1):
        height, width = sample.image.shape
        file_name = image_file_name(sample, image_id, names)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for mask, label in zip(sample.masks, sample.labels, strict=True):
            rle = encode_rle(mask)
            x, y, w, h = mask_utils.toBbox(rle).tolist()
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": [x, y, w, h],
                    "iscrowd": 0,
                    "attributes": {"label": label},
                }
            )
    return {
        "info": {
            "description": "BioImLab MCIs, instance masks from labelme polygons (Karyoflow)",
            "date_created": datetime.date.today().isoformat(),
        },
        "images": images,
        "annotations": annotations,
        "categories": COCO_CATEGORIES,
    }
