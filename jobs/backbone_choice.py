"""`arch: auto`: the largest EfficientNet-Lite whose unfrozen training fits a time budget on this job's workers.

Bigger backbones classify better from the same images (benchmarks/README.md: Lite2 against Lite0 on the shared
sets) and cost more per image, so the choice is the dataset's size times the cost per image against a budget:
`train images x unfrozen epochs / (images per second per worker x workers)`, with the rates of each backbone at
its native size (one thread per CPU worker; a GPU worker is taken as at least `GPU_SPEEDUP` times one). The first
backbone, largest first, whose estimate fits `BUDGET_S` is chosen; the smallest when none does. The event
`backbone_chosen` gives every estimate. Light on purpose: the driver imports it before torch.
"""

from __future__ import annotations

from typing import Any

from core.spec import NATIVE_SIZES, JobParams

# Unfrozen training images per second of one CPU worker (one thread) at the backbone's native size, channels-last,
# frozen batch-norm statistics. Lite0: Ray Train's 2 workers at 12.1 img/s on dogs-vs-cats, halved
# (benchmarks/README.md); Lite1 and Lite2: that rate over their multiply-adds at 240 and 260 px (about 1.5x and
# 2.25x Lite0's at 224). One process training Lite2 at 260 px with 2 threads measured 6.7 img/s (recipe.py).
CPU_RATES = {"efficientnet_lite2": 2.7, "efficientnet_lite1": 4.0, "efficientnet_lite0": 6.0}
# A GPU worker against one CPU thread: a conservative floor (an H100 trains Lite0 at hundreds of images a second;
# benchmarks/gpu_check.py measures it).
GPU_SPEEDUP = 50.0
# Seconds of unfrozen training `auto` may plan for: about what fastai's lesson spends on a few hundred images.
BUDGET_S = 300.0


def estimates(params: JobParams, train_images: int) -> dict[str, float]:
    """Estimated unfrozen training seconds per candidate backbone, largest first."""
    epochs = max(params.epochs, params.max_epochs or 0)
    speed = params.num_workers * (GPU_SPEEDUP if params.use_gpu else 1.0)
    return {arch: round(train_images * epochs / (rate * speed), 1) for arch, rate in CPU_RATES.items()}


def choose_backbone(params: JobParams, train_images: int) -> tuple[JobParams, dict[str, Any]]:
    """`params` with `arch: auto` replaced by the chosen backbone (and its native size unless one was asked for),
    and the facts of the choice for the job's event log."""
    costs = estimates(params, train_images)
    fitting = [arch for arch, seconds in costs.items() if seconds <= BUDGET_S]
    arch = fitting[0] if fitting else next(reversed(costs))
    size = params.image_size or NATIVE_SIZES[arch]
    facts = {
        "arch": arch,
        "image_size": size,
        "train_images": train_images,
        "budget_s": BUDGET_S,
        "estimated_train_s": costs,
        "workers": params.num_workers,
        "use_gpu": params.use_gpu,
    }
    return params.model_copy(update={"arch": arch, "image_size": size}), facts


def describe(facts: dict[str, Any]) -> str:
    estimated = ", ".join(f"{arch} ~{seconds:g} s" for arch, seconds in facts["estimated_train_s"].items())
    where = f"{facts['workers']} {'GPU' if facts['use_gpu'] else 'CPU'} worker(s)"
    verdict = (
        "the largest that fits"
        if facts["estimated_train_s"][facts["arch"]] <= facts["budget_s"]
        else "none fits, so the fastest"
    )
    return (
        f"arch auto: {facts['arch']} at {facts['image_size']} px, {verdict} the {facts['budget_s']:g} s budget of "
        f"unfrozen training for {facts['train_images']} training images on {where} (estimated: {estimated})"
    )
