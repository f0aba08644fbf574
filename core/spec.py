"""The job contract shared by the API (validation), the store (persistence) and the pipeline (execution)."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from core.outbound import check_url

# Bucket names as S3 allows them (3–63 chars, lowercase letters, digits, dots, hyphens).
_S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?$")

Arch = Literal["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet18", "resnet34", "resnet50"]
# One Literal rather than `Arch | Literal["auto"]`: a union's errors name each member ("arch.literal[...]") and
# its schema is an anyOf, where a client wants one field with one list of choices.
ArchChoice = Literal[
    "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet18", "resnet34", "resnet50", "auto"
]
# The resolution each backbone's ImageNet weights were trained at, a job's image_size unless it names one:
# EfficientNet-Lite's from `efficientnet_lite_pytorch.utils.efficientnet_params` (224, 240, 260 px).
NATIVE_SIZES: dict[str, int] = {
    "efficientnet_lite0": 224,
    "efficientnet_lite1": 240,
    "efficientnet_lite2": 260,
    "resnet18": 224,
    "resnet34": 224,
    "resnet50": 224,
}


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class Phase(StrEnum):
    """The pipeline's stages, in order; `progress` runs through them by these weights."""

    fetching = "fetching"
    validating = "validating"
    lr_sweep = "lr_sweep"
    training = "training"
    evaluating = "evaluating"
    publishing = "publishing"
    deploying = "deploying"


# Share of overall progress each phase accounts for (training dominates the wall time).
PHASE_WEIGHTS: dict[Phase, float] = {
    Phase.fetching: 0.05,
    Phase.validating: 0.05,
    Phase.lr_sweep: 0.15,
    Phase.training: 0.60,
    Phase.evaluating: 0.05,
    Phase.publishing: 0.05,
    Phase.deploying: 0.05,
}


def phase_progress(phase: Phase, fraction: float = 0.0) -> float:
    """Overall progress (0–1) when `phase` is `fraction` done."""
    done = 0.0
    for p, weight in PHASE_WEIGHTS.items():
        if p == phase:
            return round(min(1.0, done + weight * max(0.0, min(1.0, fraction))), 4)
        done += weight
    return 1.0


class S3Location(BaseModel):
    bucket: str
    prefix: str  # '' or ends with '/'

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        match = _S3_URI.match(uri)
        if not match:
            raise ValueError(
                f"must look like s3://bucket/prefix (a lowercase bucket name of 3-63 characters), got {uri!r}"
            )
        prefix = (match.group("prefix") or "").strip("/")
        if ".." in prefix.split("/"):
            raise ValueError("must not contain '..' path segments")
        return cls(bucket=match.group("bucket"), prefix=f"{prefix}/" if prefix else "")

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def child(self, *parts: str) -> S3Location:
        return S3Location(bucket=self.bucket, prefix=self.prefix + "".join(f"{p.strip('/')}/" for p in parts))

    @property
    def key(self) -> str:
        """The prefix read as a single object key (no trailing slash)."""
        return self.prefix.rstrip("/")


def _check_s3_uri(value: str) -> str:
    S3Location.parse(value)
    return value


S3Uri = Annotated[str, AfterValidator(_check_s3_uri)]


LrSuggestion = Literal["valley", "steep", "minimum", "slide"]
# Unfrozen epochs a GPU job may run while each lowers the validation loss (max_epochs' default there). On CPU each
# epoch of a few hundred images costs about a minute: on flowers-5 a second one lifted EfficientNet-Lite2 from
# 172 to 179 of 200 but would take a job past a third of fastai's time, so CPU jobs run exactly `epochs` unless
# they ask (benchmarks/README.md).
GPU_MAX_EPOCHS = 3


class RangeTestSweep(BaseModel):
    """Leslie Smith's LR range test on the cached features (fastai's `lr_find`): well under a second."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["range_test"] = "range_test"
    suggestion: LrSuggestion = Field(
        default="valley", description="which of fastai's four rules picks the LR from the loss curve"
    )


class TrialsSweep(BaseModel):
    """Short real trials at log-spaced LRs, run in parallel by Ray Tune and early-stopped by ASHA; the best wins.

    Each trial trains the head from the cached features for up to `epochs` one-cycle epochs; ASHA stops the
    trials whose validation loss lags after `grace_epochs`.
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["trials"]
    trials: int = Field(default=8, ge=2, le=64, description="how many learning rates to try")
    min_lr: float = Field(default=1e-5, gt=0, le=10, description="the lowest LR tried")
    max_lr: float = Field(default=1e-1, gt=0, le=10, description="the highest LR tried")
    epochs: int = Field(default=4, ge=1, le=50, description="epochs per trial, at most")
    grace_epochs: int = Field(default=1, ge=1, le=50, description="epochs every trial runs before ASHA may stop it")

    # Field validators (not a model validator) so the error names the field to fix.
    @field_validator("max_lr")
    @classmethod
    def _above_min_lr(cls, value: float, info: ValidationInfo) -> float:
        min_lr = info.data.get("min_lr")
        if min_lr is not None and value <= min_lr:
            raise ValueError(f"must be above min_lr ({min_lr:g}), got {value:g}; e.g. min_lr 1e-5, max_lr 1e-1")
        return value

    @field_validator("grace_epochs")
    @classmethod
    def _within_epochs(cls, value: int, info: ValidationInfo) -> int:
        epochs = info.data.get("epochs")
        if epochs is not None and value > epochs:
            raise ValueError(f"must be at most epochs ({epochs}), got {value}")
        return value


LrSweep = Annotated[RangeTestSweep | TrialsSweep, Field(discriminator="method")]


class JobParams(BaseModel):
    """What a user may ask of a training job. Every number is bounded so a typo fails fast with a 422."""

    model_config = ConfigDict(extra="forbid")

    dataset_uri: S3Uri = Field(
        description="s3://bucket/prefix holding train/<class>/* (with valid/, val/ or validation/ and an optional "
        "test/), just <class>/* folders, or a labels.csv with path,label[,split] columns",
        examples=["s3://my-bucket/pets"],
    )
    name: str | None = Field(default=None, min_length=1, max_length=128)
    arch: ArchChoice = Field(
        default="efficientnet_lite0",
        description="ImageNet-pretrained backbone; auto: the largest EfficientNet-Lite whose training fits the "
        "time budget for this dataset's size, chosen after validation (event `backbone_chosen` says why)",
    )
    weights_uri: S3Uri | None = Field(
        default=None, description="s3:// URI of the backbone's state dict (torchvision archs offline)"
    )
    # 1, as fastbook's first lesson (`fine_tune(1)`): on dogs-vs-cats one unfrozen epoch at 224 px reaches
    # validation loss 0.044 and 198/200, against 0.047 and 199/200 for two (160 then 224 px) in 60% of the unfrozen
    # time, and fastai's fine_tune(3) 190-195/200 (benchmarks/README.md, "Recipe"). Ask for more on harder data.
    epochs: int = Field(default=1, ge=1, le=100, description="epochs with the whole network unfrozen")
    max_epochs: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="unfrozen training goes on past `epochs`, one epoch (its own one-cycle at half the previous "
        "peak LR) at a time, while each lowers the validation loss by more than 0.01, up to this many unfrozen "
        f"epochs in all (event `unfrozen_extended`); null: {GPU_MAX_EPOCHS} with use_gpu, where an epoch of a "
        "small set takes seconds, else exactly `epochs`. Needs `patience`",
    )
    freeze_epochs: int = Field(default=1, ge=0, le=100, description="head-only epochs on cached features")
    lr: float | None = Field(default=None, gt=0, le=10, description="null: pick it by an LR range test")
    lr_sweep: LrSweep = Field(
        default_factory=RangeTestSweep,
        description='how `lr: null` is picked: {"method": "range_test"} (default) or {"method": "trials", ...}',
        examples=[{"method": "range_test", "suggestion": "valley"}, {"method": "trials", "trials": 8}],
    )
    tta: bool = Field(
        default=False,
        description="test-time augmentation at evaluation: average predictions over flips and crops "
        "(reported as tta_accuracy beside the plain accuracy)",
    )
    batch_size: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="global batch size: the head-only epochs and the LR sweep use it whole; unfrozen training "
        "splits it evenly across the num_workers workers (batch_size // num_workers each), so the number of steps "
        "and the schedule do not depend on the number of workers",
    )
    image_size: int | None = Field(
        default=None,
        ge=32,
        le=1024,
        description="training and serving resolution (px); null: the backbone's native size (224 for "
        "efficientnet_lite0 and the ResNets, 240 for efficientnet_lite1, 260 for efficientnet_lite2)",
    )
    progressive_resizing: float | None = Field(
        default=0.75,
        gt=0,
        le=1,
        description="the first unfrozen epoch trains on images this fraction of image_size, growing evenly to "
        "image_size by the last epoch (sizes rounded to 16 px); validation always uses image_size. "
        "null or 1: every epoch at image_size",
    )
    num_workers: int = Field(default=2, ge=1, le=256, description="Ray Train workers (one per GPU)")
    patience: int | None = Field(
        default=1,
        ge=1,
        le=100,
        description="early stopping: unfrozen training stops after this many epochs without a lower validation "
        "loss, and first has to beat the head-only model on a short trial or the job keeps the head-only model; "
        "null: run every epoch",
    )
    use_gpu: bool = False
    deploy: bool = Field(default=True, description="deploy the best model behind Ray Serve")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    # 0.2 is fastai's and AutoTrain's default; the bounds keep both sides of a small class non-empty and useful.
    valid_pct: float = Field(
        default=0.2,
        ge=0.05,
        le=0.5,
        description="share of each class carved (seeded by `seed`) from the training images into a validation "
        "split when the dataset has none",
    )

    notify_url: str | None = Field(
        default=None,
        max_length=2048,
        description="http(s) URL the service POSTs a signed JSON body to when the job succeeds, fails or is "
        "cancelled (docs/api.md, Webhooks); loopback, link-local and private addresses are refused",
        examples=["https://hooks.example.com/trainyard"],
    )

    @field_validator("notify_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_url(value)  # its ValueError names the problem; which addresses it may reach is the API's check
        return value

    max_cost_usd: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        description="stop training before an epoch that would take the job's estimated cost past this (USD, at the "
        "cluster's node rates); the best checkpoint so far is published and deployed, and the job fails with "
        "cost_cap_reached naming the figures. null: no cap",
    )

    @field_validator("max_epochs")
    @classmethod
    def _at_least_epochs(cls, value: int | None, info: ValidationInfo) -> int | None:
        epochs = info.data.get("epochs")
        if value is not None and epochs is not None and value < epochs:
            raise ValueError(f"must be at least epochs ({epochs}), got {value}; or null to run exactly epochs")
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> JobParams:
        """A concrete backbone without an image_size gets its native one; `auto` gets it once the backbone is
        chosen (jobs/backbone_choice.py). A GPU job goes on while unfrozen epochs pay (max_epochs)."""
        if self.image_size is None and self.arch != "auto":
            self.image_size = NATIVE_SIZES[self.arch]
        if self.max_epochs is None and self.use_gpu:
            self.max_epochs = max(self.epochs, GPU_MAX_EPOCHS)
        return self

    @property
    def size(self) -> int:
        """The image size to train and serve at: resolved by now for any backbone but `auto`, which the driver
        replaces with a concrete one before training."""
        return self.image_size or NATIVE_SIZES.get(self.arch, NATIVE_SIZES["efficientnet_lite0"])

    # A field validator (not a model validator) so the error names the field to fix.
    @field_validator("num_workers")
    @classmethod
    def _at_most_batch_size(cls, value: int, info: ValidationInfo) -> int:
        batch_size = info.data.get("batch_size")
        if batch_size is not None and value > batch_size:
            raise ValueError(
                f"must be at most batch_size ({batch_size}), got {value}: batch_size is the global batch, split "
                "across the workers; raise batch_size or lower num_workers"
            )
        return value


class JobWaiting(BaseModel):
    """What a running job's Ray work waits for (nodes an autoscaling cluster is starting), while it waits."""

    message: str = Field(examples=["waiting for 2 GPU worker(s); the cluster is scaling up (waited 12 s)"])
    since: datetime
    waited_s: float
    resources: dict[str, float] = Field(description="the resources not yet placed, e.g. {'CPU': 2, 'GPU': 2}")
    workers: int = Field(description="how many workers (placement group bundles) wait")
    reason: Literal["resources", "quota"] = Field(
        default="resources", description="resources: nodes the cluster is starting; quota: the tenant's limits"
    )
