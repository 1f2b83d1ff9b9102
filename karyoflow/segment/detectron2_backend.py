"""The detectron2 engine: detectron2's PointRend (the paper's ChrRender) behind the segmenter
interface of `karyoflow.segment.engines`.

detectron2 has no wheels on the package registries; `make detectron2` (part of `make test`)
builds it into the venv from the vendored source. This module imports detectron2 only when it
is called, so the rest of the package works without it.

The configuration mirrors detectron2's `projects/PointRend` instance-segmentation config
(PointRend mask head on p2, coarse 7x7 head of two FCs of 1024, point head of three FCs of 256,
five subdivision steps) with GroupNorm for training from scratch, one class, and the input of the
default engine: the same per-image intensity scaling (`dataset.image_tensor`) and, by default,
BioImLab's native 768x576 (short side 576, long side at most 768). It is built in code, so no
YAML files of the detectron2 source tree are needed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from karyoflow.segment.engines import NATIVE_SIZE
from karyoflow.weights_io import load_checked, save_fp16

WEIGHTS_FORMAT = "karyoflow-detectron2-pointrend/1"
ARCHITECTURE = "PointRend (detectron2)"
BACKBONE_DEPTHS = {"resnet18": 18, "resnet50": 50}
DEFAULT_BACKBONE = "resnet50"  # R-50-FPN, as the paper's ChrRender
INSTALL_HINT = "run `make detectron2` (builds it from ../shared/vendor into .venv; see docs/segmentation.md)"


class BackendUnavailable(RuntimeError):
    """detectron2 (with its PointRend project) is not installed."""


def require_detectron2():
    """detectron2's `get_cfg` and the PointRend project, or BackendUnavailable saying how to
    install them."""
    try:
        from detectron2.config import get_cfg
        from detectron2.projects import point_rend
    except ImportError as error:
        raise BackendUnavailable(
            f"the detectron2 engine needs detectron2 with its PointRend project: {INSTALL_HINT}"
        ) from error
    return get_cfg, point_rend


def pointrend_config(
    device: str = "cpu",
    backbone: str = DEFAULT_BACKBONE,
    image_size: tuple[int, int] = NATIVE_SIZE,
    output_dir: Path | None = None,
):
    """A detectron2 CfgNode for PointRend Mask R-CNN, ResNet-FPN with GroupNorm, one class,
    trained from scratch; `image_size` is (short side, longest long side) for training and
    inference."""
    if backbone not in BACKBONE_DEPTHS:
        raise ValueError(
            f"the detectron2 engine has no backbone {backbone!r}; choose from {', '.join(BACKBONE_DEPTHS)}"
        )
    get_cfg, point_rend = require_detectron2()
    short, longest = image_size
    cfg = get_cfg()
    point_rend.add_pointrend_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = str(device)
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0  # from scratch: train every stage
    cfg.MODEL.RESNETS.DEPTH = BACKBONE_DEPTHS[backbone]
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if BACKBONE_DEPTHS[backbone] < 50 else 256
    cfg.MODEL.RESNETS.NORM = "GN"
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.NORM = "GN"
    # chromosomes are 15-150 px long: anchors from 16 px on the stride-4 level
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16], [32], [64], [128], [256]]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 2000
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 1000
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 1000
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 1000
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 1
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05  # as torchvision's box_score_thresh
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    cfg.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES = True
    cfg.MODEL.ROI_MASK_HEAD.NAME = "PointRendMaskHead"
    cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE = ""  # the coarse head samples p2 itself
    cfg.MODEL.ROI_MASK_HEAD.FC_DIM = 1024
    cfg.MODEL.ROI_MASK_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION = 7
    cfg.MODEL.ROI_MASK_HEAD.IN_FEATURES = ["p2"]
    cfg.MODEL.ROI_MASK_HEAD.POINT_HEAD_ON = True
    cfg.MODEL.POINT_HEAD.FC_DIM = 256
    cfg.MODEL.POINT_HEAD.NUM_FC = 3
    cfg.MODEL.POINT_HEAD.IN_FEATURES = ["p2"]
    cfg.MODEL.POINT_HEAD.NUM_CLASSES = 1
    cfg.MODEL.POINT_HEAD.TRAIN_NUM_POINTS = 14 * 14
    cfg.MODEL.POINT_HEAD.OVERSAMPLE_RATIO = 3
    cfg.MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO = 0.75
    cfg.MODEL.POINT_HEAD.SUBDIVISION_STEPS = 5
    cfg.MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS = 28 * 28
    # images arrive scaled by dataset.image_tensor, as the default engine's: no further shift
    cfg.MODEL.PIXEL_MEAN = [0.0, 0.0, 0.0]
    cfg.MODEL.PIXEL_STD = [1.0, 1.0, 1.0]
    cfg.INPUT.MASK_FORMAT = "bitmask"  # PointRend instance segmentation needs bitmasks
    cfg.INPUT.MIN_SIZE_TRAIN = (short,)
    cfg.INPUT.MAX_SIZE_TRAIN = longest
    cfg.INPUT.MIN_SIZE_TEST = short
    cfg.INPUT.MAX_SIZE_TEST = longest
    cfg.TEST.DETECTIONS_PER_IMAGE = 100
    if output_dir is not None:
        cfg.OUTPUT_DIR = str(output_dir)
    return cfg


def resized_shape(height: int, width: int, image_size: tuple[int, int]) -> tuple[int, int]:
    """(height, width) an image is resized to for the network: short side `image_size[0]`, long
    side at most `image_size[1]` (detectron2's ResizeShortestEdge, as in training)."""
    from detectron2.data.transforms import ResizeShortestEdge

    return ResizeShortestEdge.get_output_shape(height, width, image_size[0], image_size[1])


class Detectron2Segmenter(nn.Module):
    """detectron2's GeneralizedRCNN called as a torchvision detection model (engines.py): image
    tensors in, per image boxes, labels, scores and N x 1 x H x W mask probabilities in the
    input's pixels out. Inference only; training goes through detectron2's own trainer."""

    def __init__(self, model: nn.Module, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.image_size = (int(image_size[0]), int(image_size[1]))

    @torch.no_grad()
    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        if self.training:
            raise RuntimeError("Detectron2Segmenter predicts only; train with karyo train segment --engine detectron2")
        device = next(self.model.parameters()).device
        inputs, shapes = [], []
        for image in images:
            height, width = image.shape[-2:]
            new_height, new_width = resized_shape(height, width, self.image_size)
            tensor = image.to(device)
            if (new_height, new_width) != (height, width):
                tensor = nn.functional.interpolate(
                    tensor[None], size=(new_height, new_width), mode="bilinear", align_corners=False, antialias=True
                )[0]
            inputs.append({"image": tensor, "height": height, "width": width})
            shapes.append((height, width, new_height, new_width))
        return [
            torchvision_detections(instances, (height, width), (new_height, new_width))
            for instances, (height, width, new_height, new_width) in zip(
                self.model.inference(inputs, do_postprocess=False), shapes, strict=True
            )
        ]


def torchvision_detections(instances, image_shape: tuple[int, int], network_shape: tuple[int, int]) -> dict:
    """detectron2's Instances of one image, predicted at `network_shape` (height, width), as
    torchvision's detection dict in the pixels of the image (`image_shape`): boxes scaled back
    and clipped, labels from 1 (0 is torchvision's background), each mask's probabilities
    (PointRend's square grid over its box) pasted into an image-sized N x 1 x H x W map."""
    from detectron2.layers.mask_ops import paste_masks_in_image

    height, width = image_shape
    boxes = instances.pred_boxes.tensor.clone()
    boxes[:, 0::2] = (boxes[:, 0::2] * (width / network_shape[1])).clamp(0, width)
    boxes[:, 1::2] = (boxes[:, 1::2] * (height / network_shape[0])).clamp(0, height)
    # threshold < 0: the probabilities (as uint8 0-255) rather than a binary mask, so that the
    # test-time flip averages them as it does the default engine's
    pasted = paste_masks_in_image(instances.pred_masks[:, 0], boxes, (height, width), threshold=-1)
    return {
        "boxes": boxes,
        "labels": instances.pred_classes + 1,
        "scores": instances.scores,
        "masks": (pasted.float() / 255.0)[:, None],
    }


def build_detectron2_model(cfg) -> nn.Module:
    require_detectron2()
    from detectron2.modeling import build_model

    return build_model(cfg)


def save_detector(model: nn.Module, path: Path, meta: dict) -> str:
    """fp16 weights of detectron2's GeneralizedRCNN with the metadata that rebuilds it."""
    return save_fp16(model, path, WEIGHTS_FORMAT, {"architecture": ARCHITECTURE, **meta})


def load_detector(path: Path, device: torch.device | str = "cpu") -> tuple[Detectron2Segmenter, dict]:
    """The segmenter of a weights file written by `save_detector` and its metadata."""
    state, meta = load_checked(Path(path), WEIGHTS_FORMAT, "karyo train segment --engine detectron2")
    image_size = tuple(meta["image_size"])
    cfg = pointrend_config(str(torch.device(device)), meta["backbone"], image_size)
    model = build_detectron2_model(cfg)
    model.load_state_dict(state)
    return Detectron2Segmenter(model, image_size).to(device).eval(), meta
