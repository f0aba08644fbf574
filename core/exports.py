"""A model as it leaves Trainyard: portable files beside its artifact, and the JSON that says what they expect.

    s3://…/jobs/<job id>/model.pt                       Trainyard's own artifact (needs Trainyard to load)
    s3://…/jobs/<job id>/export/model.torchscript.pt    torch.jit.load(...): runs with plain PyTorch
    s3://…/jobs/<job id>/export/model.onnx              onnxruntime.InferenceSession(...): no PyTorch at all
    s3://…/jobs/<job id>/export/model.state_dict.pt     the weights alone (the architecture's code loads them)
    s3://…/jobs/<job id>/export/preprocessing.json      an `ExportManifest`: input, preprocessing, classes

The driver writes them once per job, where the trained model is already in memory (`jobs.export`): it announces
them at publish (the manifest, without files, `building_since` set) and builds them once the job has succeeded,
so they cost the job's time to a deployed model nothing. The API only streams the files, so it never imports
torch. This module is what both sides share: the names, the layout and the manifest's schema, without torch.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from core.spec import S3Location

EXPORT_FOLDER = "export"
MANIFEST_FILE = "preprocessing.json"
# Where the manifest also travels inside the files: TorchScript's `_extra_files` entry and ONNX's metadata_props key.
TORCHSCRIPT_EXTRA_FILE = "trainyard.json"
ONNX_METADATA_KEY = "trainyard"
# The exports take seconds once a job has succeeded (benchmarks/export.py: ~3-4 s for EfficientNet-Lite0 at 224 px);
# a driver that has not finished them in this long has stopped.
BUILD_GRACE = timedelta(minutes=10)
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"


class ExportFormat(StrEnum):
    torchscript = "torchscript"
    onnx = "onnx"
    state_dict = "state_dict"


FILE_NAMES: dict[ExportFormat, str] = {
    ExportFormat.torchscript: "model.torchscript.pt",
    ExportFormat.onnx: "model.onnx",
    ExportFormat.state_dict: "model.state_dict.pt",
}


class Preprocessing(BaseModel):
    """What Trainyard does to an image before its model sees it, in the order it does it (`core.images`)."""

    color: Literal["RGB"] = "RGB"
    exif_transpose: bool = Field(default=True, description="turn the image upright by its EXIF orientation first")
    alpha_background: tuple[int, int, int] = Field(description="transparent pixels are composited onto this colour")
    jpeg_draft_min_size: int = Field(
        description="JPEGs may decode at 1/2, 1/4 or 1/8 scale (PIL's Image.draft('RGB', (n, n))) while both "
        "sides stay at least this many pixels: what Trainyard does, and what a bit-identical input needs"
    )
    resize_short_side: int = Field(description="resize so the short side has this many pixels")
    long_side: Literal["truncate"] = Field(
        default="truncate", description="the long side becomes int(resize_short_side * long / short)"
    )
    interpolation: Literal["bilinear"] = "bilinear"
    antialias: bool = True
    resize_dtype: Literal["uint8"] = Field(
        default="uint8",
        description="the resize runs on 8-bit pixels (torch.nn.functional.interpolate on a uint8 tensor gives "
        "Trainyard's values exactly; PIL's Image.resize differs by at most one level in a few pixels)",
    )
    center_crop: int = Field(description="then crop this square from the centre (offsets rounded with round())")
    mean: tuple[float, float, float] = Field(description="per channel, on pixels scaled to 0-1")
    std: tuple[float, float, float] = Field(description="per channel, on pixels scaled to 0-1")
    formula: str = "input = (pixel / 255 - mean) / std, as float32, channels first (NCHW)"


class TensorSpec(BaseModel):
    name: str
    shape: list[str | int]
    dtype: Literal["float32"] = "float32"
    meaning: str


class ExportManifest(BaseModel):
    """The sidecar JSON, and the metadata inside the exported files."""

    format_version: int = 1
    job_id: str
    arch: str
    classes: list[str] = Field(description="class names, in the order of the output's columns")
    image_size: int
    input: TensorSpec
    output: TensorSpec
    preprocessing: Preprocessing
    files: dict[ExportFormat, str] = Field(default_factory=dict, description="the formats built, by file name")
    errors: dict[ExportFormat, str] = Field(default_factory=dict, description="formats that could not be built")
    torch_version: str
    building_since: datetime | None = Field(
        default=None, description="set while the files are being built: the job has succeeded moments ago"
    )
    onnx_opset: int | None = None
    onnx_version: str | None = None
    # Known to the API, not to the driver that writes the file: the API fills them in when it serves the JSON.
    model_id: str | None = None
    name: str | None = None
    version: int | None = None


def building(since: datetime | str | None) -> bool:
    """Whether exports announced at `since` (a manifest's `building_since`) are still to come, not given up on."""
    if isinstance(since, str):
        since = datetime.fromisoformat(since)
    return since is not None and datetime.now(UTC) - since < BUILD_GRACE


def export_folder(artifact_uri: str) -> S3Location:
    """The export folder beside a published artifact (s3://…/jobs/<id>/model.pt -> s3://…/jobs/<id>/export/)."""
    location = S3Location.parse(artifact_uri)
    parent = location.key.rsplit("/", 1)[0] if "/" in location.key else ""
    return S3Location.parse(f"s3://{location.bucket}/{parent}").child(EXPORT_FOLDER)


def download_name(model_id: str, name: str | None, version: int | None, export_format: ExportFormat) -> str:
    """The file name a download suggests: `pets-v3.onnx`, or the model id for an unnamed model."""
    stem = f"{name}-v{version}" if name and version is not None else model_id
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    return safe + FILE_NAMES[export_format].removeprefix("model")
