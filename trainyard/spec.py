"""The job parameters as the SDK and CLI send them: every field of the API's `POST /v1/jobs` body but the dataset.

The SDK does not import the server's code, so the names and types are written out here;
`tests/trainyard/test_spec_coverage.py` walks the server's `JobParams` and fails when a field is neither here
nor in `NOT_EXPOSED` (with its reason), when `trainyard submit` has no option for it, or when a choice (a new
`arch`) is missing from either.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict, get_args

Arch = Literal[
    "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet18", "resnet34", "resnet50", "auto"
]
ARCHS: tuple[str, ...] = get_args(Arch)


class JobOptions(TypedDict, total=False):
    """`Client.submit`'s keyword arguments: a key left out takes the API's default, None sends null.

    Meanings and bounds as docs/api.md gives them; the API answers a value out of bounds with a 422 naming it.
    """

    name: str | None
    arch: Arch
    weights_uri: str | None  # s3:// URI of a torchvision backbone's state dict
    epochs: int
    max_epochs: int | None  # None: exactly `epochs` on CPU, up to 3 on GPU while the validation loss falls
    freeze_epochs: int
    lr: float | None  # None: picked by `lr_sweep`
    lr_sweep: dict[str, Any]  # {"method": "range_test", "suggestion": "valley"} or {"method": "trials", …}
    tta: bool
    batch_size: int
    image_size: int | None  # None: the backbone's native resolution
    progressive_resizing: float | None  # None (or 1.0): every unfrozen epoch at image_size
    num_workers: int
    patience: int | None  # None: no early stopping, every epoch runs
    use_gpu: bool
    deploy: bool
    seed: int
    valid_pct: float
    notify_url: str | None  # an http(s) URL POSTed a signed JSON body when the job succeeds, fails or is cancelled
    max_cost_usd: float | None  # USD: training stops before the job's estimated cost would pass it; None: no cap


# JobParams fields set another way than by a keyword of the same name: what `submit` takes instead.
SUBMIT_ARGUMENT = {"dataset_uri": "dataset (an s3:// URI, or a local folder the client uploads first)"}
# JobParams fields the SDK and CLI deliberately do not offer, each with its reason.
NOT_EXPOSED: dict[str, str] = {}
