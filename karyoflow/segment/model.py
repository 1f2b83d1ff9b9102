"""ChrRender: torchvision's Mask R-CNN with the PointRend mask head of this project.

One job per piece, as torchvision.models.detection: `build_backbone` (ResNet-18/50 FPN or
MobileNetV3-FPN, trained from scratch with GroupNorm), torchvision's RPN and box head, and
`ChrRenderRoIHeads`, whose mask branch is `PointRendMaskHead` (ChrRender = torchvision's
MaskRCNN with these RoI heads). `build_model(pointrend=False)`
gives plain Mask R-CNN (the ablation baseline) with the same backbone and box branch.

Resize policy: none. BioImLab MCIs are 768x576 and the smallest chromosomes only ~15 px long;
downscaling loses them, upscaling costs CPU time for nothing, so `min_size`/`max_size` keep the
native size (other sizes are scaled so the short side is 576).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenet_v3_large, resnet18, resnet50
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import (
    RoIHeads,
    fastrcnn_loss,
    maskrcnn_loss,
)
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from karyoflow.segment.pointrend import PointRendMaskHead

BACKBONES = ("resnet18", "resnet50", "mobilenet_v3")
FPN_CHANNELS = 128  # half torchvision's 256: the weight budget, and CPU time
BOX_HEAD_SIZE = 512
NUM_CLASSES = 2  # background, chromosome


def _group_norm(channels: int) -> nn.GroupNorm:
    # From-scratch training with 1-2 images a batch: BatchNorm statistics are useless and
    # torchvision's FrozenBatchNorm assumes pretrained statistics; GroupNorm needs neither.
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def build_backbone(name: str) -> BackboneWithFPN:
    if name in ("resnet18", "resnet50"):
        net = (resnet18 if name == "resnet18" else resnet50)(weights=None, norm_layer=_group_norm)
        widths = [64, 128, 256, 512] if name == "resnet18" else [256, 512, 1024, 2048]
        return_layers = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
        return BackboneWithFPN(net, return_layers, widths, FPN_CHANNELS, extra_blocks=LastLevelMaxPool())
    if name == "mobilenet_v3":
        features = mobilenet_v3_large(weights=None, norm_layer=_group_norm).features
        # stride-4 (index 3), stride-8 (6), stride-16 (12) and stride-32 (16) outputs: unlike
        # torchvision's mobilenet FPN we keep a stride-4 level, needed by small chromosomes
        # and by PointRend's fine features.
        stages = {"3": "0", "6": "1", "12": "2", "16": "3"}
        widths = [24, 40, 112, 960]
        return BackboneWithFPN(features, stages, widths, FPN_CHANNELS, extra_blocks=LastLevelMaxPool())
    raise ValueError(f"unknown backbone {name!r}; choose from {BACKBONES}")


class ChrRenderRoIHeads(RoIHeads):
    """RoIHeads whose mask branch is PointRend; the box branch is torchvision's."""

    def __init__(self, *args, point_head: PointRendMaskHead, fine_level: str = "0", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.point_rend = point_head
        self.fine_level = fine_level  # the stride-4 FPN level

    def forward(self, features, proposals, image_shapes, targets=None):  # noqa: D401 - torchvision API
        fine_map = features[self.fine_level]
        if self.training:
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)

        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
            mask_boxes, mask_labels, mask_matched = [], [], []
            for image_proposals, image_labels, image_matched in zip(proposals, labels, matched_idxs, strict=True):
                positive = torch.where(image_labels > 0)[0]
                mask_boxes.append(image_proposals[positive])
                mask_labels.append(image_labels[positive])
                mask_matched.append(image_matched[positive])
            pooled = self.mask_roi_pool(features, mask_boxes, image_shapes)
            logits = self.point_rend.coarse_predictor(self.point_rend.coarse_head(pooled))
            gt_masks = [t["masks"] for t in targets]
            gt_labels = [t["labels"] for t in targets]
            loss_mask = maskrcnn_loss(logits, mask_boxes, gt_masks, gt_labels, mask_matched)
            index = torch.arange(len(logits), device=logits.device)
            coarse = logits[index, torch.cat(mask_labels)][:, None]
            loss_point = self.point_rend.point_loss(coarse, fine_map, mask_boxes, gt_masks, mask_matched)
            losses = {
                "loss_classifier": loss_classifier,
                "loss_box_reg": loss_box_reg,
                "loss_mask": loss_mask,
                "loss_mask_point": loss_point,
            }
            return [], losses

        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        pooled = self.mask_roi_pool(features, boxes, image_shapes)
        all_labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
        coarse = self.point_rend.coarse_logits(pooled, all_labels)
        fine = self.point_rend.subdivide(coarse, fine_map, boxes)
        probabilities = fine.sigmoid().split([len(b) for b in boxes])
        result = [
            {"boxes": b, "labels": lab, "scores": s, "masks": m}
            for b, lab, s, m in zip(boxes, labels, scores, probabilities, strict=True)
        ]
        return result, {}


def build_model(
    backbone: str = "resnet18",
    pointrend: bool = True,
    detections_per_img: int = 100,
    min_size: int = 576,
    max_size: int = 768,
) -> MaskRCNN:
    body = build_backbone(backbone)
    box_head = TwoMLPHead(FPN_CHANNELS * 7 * 7, BOX_HEAD_SIZE)
    common = dict(
        num_classes=None,
        min_size=min_size,
        max_size=max_size,
        image_mean=[0.0, 0.0, 0.0],  # images are normalised per image in the dataset
        image_std=[1.0, 1.0, 1.0],
        box_head=box_head,
        box_predictor=_box_predictor(),
        box_detections_per_img=detections_per_img,
        rpn_pre_nms_top_n_test=1000,
        rpn_post_nms_top_n_test=500,
        box_batch_size_per_image=256,
        mask_head=MaskRCNNHeads(FPN_CHANNELS, [FPN_CHANNELS] * 4, 1),
        mask_predictor=MaskRCNNPredictor(FPN_CHANNELS, FPN_CHANNELS, NUM_CLASSES),
    )
    model = MaskRCNN(body, **common)
    if pointrend:
        heads = model.roi_heads
        point_head = PointRendMaskHead(heads.mask_head, heads.mask_predictor, fine_channels=FPN_CHANNELS)
        model.roi_heads = ChrRenderRoIHeads(
            heads.box_roi_pool,
            heads.box_head,
            heads.box_predictor,
            0.5,
            0.5,
            256,
            0.25,
            None,
            heads.score_thresh,
            heads.nms_thresh,
            heads.detections_per_img,
            mask_roi_pool=heads.mask_roi_pool,
            point_head=point_head,
        )
    return model


def _box_predictor() -> nn.Module:
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    return FastRCNNPredictor(BOX_HEAD_SIZE, NUM_CLASSES)
