"""The default backbone as built: the padding folded into its convolutions changes no number."""

from __future__ import annotations

import copy

import pytest
import torch
from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding
from torch import nn

from core.backbones import build_classifier, fold_symmetric_padding, local_pretrained_weights


def _unfold(model: nn.Module) -> int:
    """Put back the package's separate padding layers: the model as efficientnet_lite_pytorch builds it."""
    restored = 0
    for layer in model.modules():
        if isinstance(layer, Conv2dStaticSamePadding) and layer.padding != (0, 0):
            top, left = layer.padding
            layer.static_padding = nn.ZeroPad2d((left, left, top, top))
            layer.padding = (0, 0)
            restored += 1
    return restored


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return build_classifier("efficientnet_lite0", 3, local_pretrained_weights("efficientnet_lite0")).eval()


def test_the_symmetric_pads_are_inside_the_convolutions_and_only_the_uneven_ones_stay(model: nn.Module) -> None:
    pads = [m.static_padding for m in model.modules() if isinstance(m, Conv2dStaticSamePadding)]
    kept = [p.padding for p in pads if isinstance(p, nn.ZeroPad2d)]
    assert kept, "the stride-2 layers pad unevenly and must keep their own padding"
    assert all(left != right or top != bottom for left, right, top, bottom in kept), kept
    assert sum(1 for m in model.modules() if isinstance(m, Conv2dStaticSamePadding) and m.padding != (0, 0)) >= 10
    assert fold_symmetric_padding(model) == 0  # folding twice changes nothing


@pytest.mark.parametrize("size", [224, 160, 97])
def test_folded_and_separate_padding_give_the_same_numbers(model: nn.Module, size: int) -> None:
    separate = copy.deepcopy(model)
    assert _unfold(separate) >= 10
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        assert torch.equal(model(x), separate(x))
