"""Image decoding and the evaluation transform, shared by training (validation set) and serving."""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.v2 import functional as F

import core.limits  # noqa: F401  (sets PIL's decoding limit for every image read here)
from core.backbones import Normalization

# Transparent pixels become this colour: a photo's usual backdrop, and what a browser shows them on.
ALPHA_BACKGROUND = (255, 255, 255)
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


# A JPEG decodes at the smallest scale (1/2, 1/4 or 1/8, in the DCT itself) that leaves both sides at least
# this many times the target size: a 12 MP phone photo in a third of the time (benchmarks/preprocess.py), and
# the resize that follows still has room to antialias. Training, validation and serving all open images this
# way (`draft_for`), so a replica sees the pixels its model was validated on.
DRAFT_MARGIN = 2


class InvalidImage(ValueError):
    """The bytes are not an image PIL can decode."""


def draft_for(image: Image.Image, image_size: int) -> Image.Image:
    """Ask `image`'s decoder (before it loads) for the smallest size that still serves `image_size`."""
    image.draft("RGB", (image_size * DRAFT_MARGIN, image_size * DRAFT_MARGIN))
    return image


def decode_image(data: bytes, image_size: int | None = None) -> Image.Image:
    """Image bytes as 8-bit RGB; with `image_size`, JPEGs decode only as large as that size needs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image_size is not None:
                draft_for(image, image_size)
            image.load()
            return to_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(f"not a decodable image ({type(exc).__name__})") from exc
    except Image.DecompressionBombError as exc:
        raise InvalidImage("image is too large to decode") from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """Any decodable image as 8-bit RGB, the same way in training and serving.

    PIL's plain `convert("RGB")` gets three kinds of files wrong: 16-bit greyscale PNGs clip to white
    (it truncates instead of scaling), transparent pixels turn black (their hidden colour), and phone
    photos lie on their side (EXIF orientation). Palette, CMYK and greyscale images convert as is.
    Animated GIFs and WebPs give their first frame (PIL opens files on frame 0).
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in _HIGH_DEPTH_MODES:
        pixels = np.asarray(image, dtype=np.uint32)
        # 16-bit PNGs open as I;16 or I (32-bit); both hold 0-65535.
        image = Image.fromarray((np.clip(pixels, 0, 65535) >> 8).astype(np.uint8))
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        backdrop = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(backdrop, rgba).convert("RGB")
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
