"""Image decoding and the evaluation transform, shared by training (validation set) and serving."""

from __future__ import annotations

import io
import warnings

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import functional as F

from core.backbones import Normalization

# Refuse decompression bombs outright rather than warn (PIL's default only warns up to 2x this).
Image.MAX_IMAGE_PIXELS = 64_000_000


class InvalidImage(ValueError):
    """The bytes are not an image PIL can decode."""


def decode_image(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(f"not a decodable image ({type(exc).__name__})") from exc
    except Image.DecompressionBombError as exc:
        raise InvalidImage("image is too large to decode") from exc
    return image.convert("RGB")


def normalize(batch_uint8: torch.Tensor, norm: Normalization) -> torch.Tensor:
    """uint8 NCHW (or CHW) 0-255 -> float normalized as the backbone's weights expect."""
    mean = torch.tensor(norm.mean, dtype=torch.float32).view(-1, 1, 1) * 255
    std = torch.tensor(norm.std, dtype=torch.float32).view(-1, 1, 1) * 255
    return (batch_uint8.float() - mean) / std


def eval_tensor(image: Image.Image, image_size: int) -> torch.Tensor:
    """Resize the short side to `image_size` and centre-crop a square: uint8 CHW."""
    tensor = F.pil_to_tensor(image)
    tensor = F.resize(tensor, [image_size], antialias=True)
    return F.center_crop(tensor, [image_size, image_size])
