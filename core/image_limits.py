"""The decoding limit every reader of user images shares; kept free of torch so that validation imports fast."""

from __future__ import annotations

from PIL import Image

# Refuse decompression bombs outright rather than warn (PIL's default only warns up to 2x this).
MAX_IMAGE_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
