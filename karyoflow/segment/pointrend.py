"""PointRend mask head (Kirillov et al., "PointRend: Image Segmentation as Rendering", 2020),
as ChrRender uses it in place of Mask R-CNN's mask head.

- A coarse mask head predicts a low-resolution (28x28) mask per region.
- Point features are the coarse prediction at a point concatenated with fine-grained features
  bilinearly sampled at that point from the finest FPN level (stride 4), the paper's
  equations (1) and (2): f(x_i) = sum_j w_ij F(p_j), the bilinear interpolation of the four
  neighbouring feature cells p_j of the real-valued point x_i, and [f_fine(x_i), f_coarse(x_i)].
- A shared MLP point head (three layers of 256, the coarse prediction re-concatenated to the
  input of each layer) re-classifies each point.
- Training picks points by uncertainty: k*N random points (oversampling k = 3), the beta*N
  (beta = 0.75, importance ratio) most uncertain of them by the coarse prediction, plus
  (1 - beta)*N uniform random points; the point loss is binary cross-entropy at those points.
- Inference renders by adaptive subdivision: the coarse mask is upsampled 2x bilinearly, the N
  most uncertain points of the upsampled mask are re-classified by the point head, and this is
  repeated until the requested resolution.

Point coordinates are (x, y) in [0, 1] relative to a box, or to an image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def point_sample(inputs: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of `inputs` (N, C, H, W) at `coords` (N, P, 2) in [0, 1] -> (N, C, P)."""
    grid = 2.0 * coords[:, :, None, :] - 1.0
    return F.grid_sample(inputs, grid, mode="bilinear", align_corners=False).squeeze(3)


def calculate_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Points whose logit is near 0 (probability near 0.5) are the most uncertain."""
    return -logits.abs()


def uncertain_points_with_randomness(
    coarse_logits: torch.Tensor,
    num_points: int,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Training-time point selection on (R, 1, H, W) coarse logits -> (R, num_points, 2)."""
    regions = coarse_logits.shape[0]
    sampled = int(num_points * oversample_ratio)
    candidates = torch.rand(regions, sampled, 2, device=coarse_logits.device, generator=generator)
    uncertainty = calculate_uncertainty(point_sample(coarse_logits, candidates))[:, 0]
    important = int(importance_sample_ratio * num_points)
    top = torch.topk(uncertainty, important, dim=1).indices
    chosen = torch.gather(candidates, 1, top[:, :, None].expand(-1, -1, 2))
    random = num_points - important
    if random > 0:
        extra = torch.rand(regions, random, 2, device=coarse_logits.device, generator=generator)
        chosen = torch.cat([chosen, extra], dim=1)
    return chosen


def most_uncertain_grid_points(logits: torch.Tensor, num_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference-time selection on (R, 1, H, W) logits: flat indices and [0, 1] coordinates
    (cell centres) of the `num_points` most uncertain grid cells of each region."""
    regions, _, height, width = logits.shape
    num_points = min(num_points, height * width)
    uncertainty = calculate_uncertainty(logits).view(regions, height * width)
    indices = torch.topk(uncertainty, num_points, dim=1).indices
    xs = (indices % width).to(logits.dtype) + 0.5
    ys = torch.div(indices, width, rounding_mode="floor").to(logits.dtype) + 0.5
    coords = torch.stack([xs / width, ys / height], dim=2)
    return indices, coords


class PointHead(nn.Module):
    """Shared MLP over points: 3 x (1x1 conv of 256 + ReLU), coarse logit re-concatenated to
    every layer's input (as PointRend's StandardPointHead)."""

    def __init__(self, fine_channels: int, coarse_channels: int = 1, hidden: int = 256, layers: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        channels = fine_channels + coarse_channels
        for _ in range(layers):
            self.layers.append(nn.Conv1d(channels, hidden, 1))
            channels = hidden + coarse_channels
        self.predictor = nn.Conv1d(channels, 1, 1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """fine (R, C, P), coarse (R, 1, P) -> point logits (R, 1, P)."""
        x = torch.cat([fine, coarse], dim=1)
        for layer in self.layers:
            x = torch.cat([F.relu(layer(x)), coarse], dim=1)
        return self.predictor(x)


def roi_points_to_image(boxes: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Box-relative [0, 1] coordinates (R, P, 2) -> image pixel coordinates (R, P, 2)."""
    x0, y0, x1, y1 = boxes[:, None, 0], boxes[:, None, 1], boxes[:, None, 2], boxes[:, None, 3]
    xs = x0 + coords[:, :, 0] * (x1 - x0)
    ys = y0 + coords[:, :, 1] * (y1 - y0)
    return torch.stack([xs, ys], dim=2)


def fine_grained_features(
    feature_map: torch.Tensor,
    boxes: list[torch.Tensor],
    coords: torch.Tensor,
    stride: int = 4,
) -> torch.Tensor:
    """Sample the finest FPN map (B, C, Hf, Wf) at box-relative points -> (R, C, P).

    `boxes` holds one tensor of boxes per image, in the (transformed) image's pixels;
    `coords` is (R, P, 2) for all boxes in that order. The batch is padded to a multiple of 32,
    so the map covers exactly (Hf * stride, Wf * stride) pixels: pixel / that is the [0, 1]
    coordinate.
    """
    height, width = feature_map.shape[-2] * stride, feature_map.shape[-1] * stride
    out = []
    start = 0
    for image_index, image_boxes in enumerate(boxes):
        count = len(image_boxes)
        if count == 0:
            continue
        points = roi_points_to_image(image_boxes, coords[start : start + count])
        scale = points.new_tensor([width, height])
        flat = (points / scale).reshape(1, -1, 2)
        sampled = point_sample(feature_map[image_index : image_index + 1], flat)  # 1, C, count*P
        out.append(sampled.view(feature_map.shape[1], count, -1).transpose(0, 1))
        start += count
    if not out:
        return feature_map.new_zeros(0, feature_map.shape[1], coords.shape[1])
    return torch.cat(out)


class PointRendMaskHead(nn.Module):
    """Coarse mask head + point head, with the training loss and subdivision inference."""

    def __init__(
        self,
        coarse_head: nn.Module,
        coarse_predictor: nn.Module,
        fine_channels: int,
        train_points: int = 14 * 14,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        subdivision_steps: int = 2,
        subdivision_points: int = 28 * 28,
    ) -> None:
        super().__init__()
        self.coarse_head = coarse_head
        self.coarse_predictor = coarse_predictor
        self.point_head = PointHead(fine_channels)
        self.train_points = train_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.subdivision_steps = subdivision_steps
        self.subdivision_points = subdivision_points

    def coarse_logits(self, pooled: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(R, 1, 28, 28) coarse logits of each region's class."""
        logits = self.coarse_predictor(self.coarse_head(pooled))
        index = torch.arange(len(labels), device=logits.device)
        return logits[index, labels][:, None]

    def point_loss(
        self,
        coarse: torch.Tensor,
        fine_map: torch.Tensor,
        boxes: list[torch.Tensor],
        gt_masks: list[torch.Tensor],
        matched: list[torch.Tensor],
    ) -> torch.Tensor:
        if coarse.shape[0] == 0:
            return coarse.sum() * 0
        with torch.no_grad():
            coords = uncertain_points_with_randomness(
                coarse.detach(), self.train_points, self.oversample_ratio, self.importance_sample_ratio
            )
        fine = fine_grained_features(fine_map, boxes, coords)
        point_logits = self.point_head(fine, point_sample(coarse, coords))[:, 0]
        targets = []
        start = 0
        for image_boxes, masks, index in zip(boxes, gt_masks, matched, strict=True):
            count = len(image_boxes)
            if count == 0:
                continue
            points = roi_points_to_image(image_boxes, coords[start : start + count])
            height, width = masks.shape[-2:]
            normalised = points / points.new_tensor([width, height])
            instance_masks = masks[index][:, None].to(coarse.dtype)
            targets.append(point_sample(instance_masks, normalised)[:, 0])
            start += count
        return F.binary_cross_entropy_with_logits(point_logits, torch.cat(targets).clamp(0, 1))

    @torch.no_grad()
    def subdivide(
        self,
        coarse: torch.Tensor,
        fine_map: torch.Tensor,
        boxes: list[torch.Tensor],
        steps: int | None = None,
    ) -> torch.Tensor:
        """Adaptive subdivision: (R, 1, h, w) -> (R, 1, h * 2^steps, w * 2^steps) logits."""
        logits = coarse
        for _ in range(self.subdivision_steps if steps is None else steps):
            logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
            if logits.shape[0] == 0:
                continue
            regions, channels, height, width = logits.shape
            indices, coords = most_uncertain_grid_points(logits, self.subdivision_points)
            fine = fine_grained_features(fine_map, boxes, coords)
            refined = self.point_head(fine, point_sample(coarse, coords))
            flat = logits.view(regions, channels, height * width)
            flat = flat.scatter(2, indices[:, None, :], refined)
            logits = flat.view(regions, channels, height, width)
        return logits
