from __future__ import annotations

import pytest
import torch

from karyoflow.classify.losses import CenterLoss
from karyoflow.classify.model import ChrBlock, ChrNet4, count_parameters

pytestmark = pytest.mark.unit


def test_chrnet4_output_shape_and_size() -> None:
    model = ChrNet4().eval()
    with torch.no_grad():
        logits = model(torch.rand(3, 1, 96, 48))
        features = model.forward_features(torch.rand(2, 1, 224, 224))
    assert logits.shape == (3, 24)
    assert features.shape == (2, 2048)
    # The paper reports 62.39 MB of fp32 parameters (15.6 M); our (2, 1, 3, 2) reading: 15.7 M.
    assert 15.5e6 < count_parameters(model) < 15.9e6
    assert [len(stage) for stage in model.stages] == [2, 1, 3, 2]


def test_chrblock_is_resnext_with_attention() -> None:
    block = ChrBlock(256, 128, stride=2)
    grouped = block.body[3]
    assert grouped.groups == 32 and grouped.out_channels == 256  # C = 128 * 4 / 64 * 32
    assert block(torch.rand(1, 256, 16, 8)).shape == (1, 512, 8, 4)
    attention = block.attention.fc
    assert isinstance(attention[1], torch.nn.LeakyReLU) and isinstance(attention[3], torch.nn.Sigmoid)


def test_center_loss_pulls_features_to_their_centres() -> None:
    torch.manual_seed(0)
    loss_fn = CenterLoss(num_classes=3, feature_dim=8)
    with torch.no_grad():
        loss_fn.centers.copy_(torch.eye(3, 8) * 5)
    features = torch.randn(30, 8, requires_grad=True)
    targets = torch.arange(30) % 3
    # the loss is a mean over batch and dimensions: per-element gradients are small
    optimizer = torch.optim.SGD([features], lr=50.0)
    before = loss_fn(features, targets).item()
    for _ in range(50):
        optimizer.zero_grad()
        loss_fn(features, targets).backward()
        optimizer.step()
    after = loss_fn(features, targets).item()
    assert after < 0.1 * before
    # each feature ends nearest to its own class centre
    distances = torch.cdist(features.detach(), loss_fn.centers.detach())
    assert torch.equal(distances.argmin(1), targets)


def test_center_loss_is_zero_at_the_centres() -> None:
    loss_fn = CenterLoss(num_classes=4, feature_dim=5)
    with torch.no_grad():
        loss_fn.centers.normal_()
    targets = torch.tensor([0, 3, 3, 1])
    assert loss_fn(loss_fn.centers[targets].detach(), targets).item() == 0.0
