"""A replica's preprocessing (decode, resize, normalize) of photos of several sizes: JPEG decoded whole vs drafted.

    .venv/bin/python -m benchmarks.preprocess
    .venv/bin/python -m benchmarks.preprocess --image photo.jpg --image other.jpg

Drafted is what serving and training both do (`core.images.draft_for`): the JPEG decoder scales by 1/2, 1/4 or 1/8
while decoding, as far as the target size allows. Whole is decoding at full size first, what serving did before.
Both run `serving.inference.preprocess`'s steps on one torch thread (a replica's decoding thread here), in turn
on the same bytes, medians over `--rounds`. Generated photos are a smooth scene with sensor-like noise, so their
JPEGs are about as large as a camera's. Prints a table and writes benchmarks/results/preprocess-<time>.json.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.backbones import TF_SCALING
from core.images import decode_image, eval_tensor, normalize

RESULTS = Path(__file__).parent / "results"
SIZES = [(640, 480), (1600, 1200), (4032, 3024)]  # a web image, a downscaled upload, a 12 MP phone photo


def generated_photo(width: int, height: int) -> bytes:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    scene = np.stack([128 + 100 * np.sin(x / width * 6 + c) * np.cos(y / height * 4 - c) for c in (0, 1, 2)], -1)
    pixels = np.clip(scene + rng.normal(0, 6, scene.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def median_ms(step: Callable[[], object], rounds: int) -> float:
    step()
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return round(statistics.median(times) * 1000, 1)


def measure(name: str, data: bytes, image_size: int, rounds: int) -> dict[str, object]:
    def whole() -> torch.Tensor:
        return normalize(eval_tensor(decode_image(data), image_size), TF_SCALING)

    def drafted() -> torch.Tensor:
        return normalize(eval_tensor(decode_image(data, image_size), image_size), TF_SCALING)

    width, height = Image.open(io.BytesIO(data)).size
    whole_ms, drafted_ms = median_ms(whole, rounds), median_ms(drafted, rounds)
    return {
        "image": name,
        "pixels": f"{width}x{height}",
        "kilobytes": len(data) // 1024,
        "whole_ms": whole_ms,
        "drafted_ms": drafted_ms,
        "speedup": round(whole_ms / drafted_ms, 1),
        "max_abs_difference": round(float((whole() - drafted()).abs().max()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, action="append", help="a photo to measure (default: generated ones)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    photos = {str(p): p.read_bytes() for p in args.image} if args.image else {}
    photos = photos or {f"generated {w}x{h}": generated_photo(w, h) for w, h in SIZES}
    rows = [measure(name, data, args.image_size, args.rounds) for name, data in photos.items()]
    print(f"{'image':<32}{'pixels':>11}{'KB':>7}{'whole ms':>10}{'drafted ms':>12}{'speed-up':>10}")
    for r in rows:
        print(
            f"{r['image']:<32}{r['pixels']:>11}{r['kilobytes']:>7}{r['whole_ms']:>10}{r['drafted_ms']:>12}"
            f"{r['speedup']:>9}x"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"preprocess-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({"image_size": args.image_size, "rounds": args.rounds, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
