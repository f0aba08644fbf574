"""The backbones as built: the padding folded into the convolutions changes no number; Lite1 and Lite2 load offline."""

from __future__ import annotations

import copy

import pytest
import torch
from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding
from pydantic import ValidationError
from torch import nn

from core.backbones import build_classifier, fold_symmetric_padding, local_pretrained_weights
from core.spec import GPU_MAX_EPOCHS, NATIVE_SIZES, JobParams


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


@pytest.mark.parametrize(("arch", "native"), [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_the_bigger_efficientnet_lites_load_their_packaged_weights_at_their_native_size(arch: str, native: int) -> None:
    weights = local_pretrained_weights(arch)
    assert weights.is_file() and f"efficientnet-lite{arch[-1]}" in weights.name
    model = build_classifier(arch, 2, weights).eval()
    with torch.no_grad():
        features = model.body(torch.zeros(1, 3, native, native))
    assert features.shape == (1, 1280)
    # Pretrained, not random: the first convolution is the package's.
    state = torch.load(weights, map_location="cpu", weights_only=True)
    assert torch.equal(model.body.net._conv_stem.weight, state["_conv_stem.weight"])
    params = JobParams(dataset_uri="s3://bucket/data", arch=arch)
    assert params.image_size == native == NATIVE_SIZES[arch]
    assert JobParams(dataset_uri="s3://bucket/data", arch=arch, image_size=96).image_size == 96


def test_auto_waits_for_the_dataset_to_pick_its_size_and_max_epochs_cannot_undercut_epochs() -> None:
    assert JobParams(dataset_uri="s3://bucket/data", arch="auto").image_size is None
    assert JobParams(dataset_uri="s3://bucket/data").image_size == 224
    # Epochs that pay are cheap on a GPU: there training goes on while they do; on CPU only when asked.
    assert JobParams(dataset_uri="s3://bucket/data").max_epochs is None
    assert JobParams(dataset_uri="s3://bucket/data", use_gpu=True).max_epochs == GPU_MAX_EPOCHS
    assert JobParams(dataset_uri="s3://bucket/data", use_gpu=True, epochs=5).max_epochs == 5
    with pytest.raises(ValidationError) as raised:
        JobParams(dataset_uri="s3://bucket/data", epochs=3, max_epochs=2)
    assert raised.value.errors()[0]["loc"] == ("max_epochs",)
