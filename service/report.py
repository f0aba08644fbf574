"""The job report: one self-contained HTML page with what the fastai lesson shows after training.

Everything is inlined (plots and thumbnails as `data:` URIs, CSS in the page, no scripts), so the page
works offline, saved to disk or mailed. It renders whatever the job has so far: a running or failed job
shows the parts that exist and, when it failed, the error with its phase.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel

from core.spec import S3Location
from core.store import JobRecord
from service.schemas import predict_url

logger = logging.getLogger(__name__)

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
PLOTS = {"lr_sweep.png": "lr_sweep", "training_curves.png": "training_curves"}


class ImageCard(BaseModel):
    """One thumbnail in a grid: the image and what the model made of it."""

    path: str
    actual: str
    predicted: str
    probability: float
    src: str | None  # data: URI, None when the thumbnail could not be read


class ModelLines(BaseModel):
    id: str
    predict_url: str
    curl: str
    cli: str


def _data_uri(s3: Any, uri: str, content_type: str) -> str | None:
    """The object as a data: URI; None (and a log line) when storage does not give it, so the page still renders."""
    try:
        location = S3Location.parse(uri)
        body = s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
    except (ClientError, BotoCoreError, ValueError):
        logger.warning("report: could not read %s", uri, exc_info=True)
        return None
    return f"data:{content_type};base64,{base64.b64encode(body).decode()}"


def _cards(s3: Any, entries: list[dict[str, Any]]) -> list[ImageCard]:
    return [
        ImageCard(
            path=e["path"],
            actual=e["actual"],
            predicted=e["predicted"],
            probability=e["probability"],
            src=_data_uri(s3, e["thumbnail_uri"], "image/jpeg") if e.get("thumbnail_uri") else None,
        )
        for e in entries
    ]


def _confusion_shades(matrix: list[list[int]]) -> list[list[float]]:
    """Each cell's share of its row (0–1): the table's background intensity, as in fastai's plot."""
    return [[value / max(sum(row), 1) for value in row] for row in matrix]


def render_report(job: JobRecord, epochs: list[dict[str, Any]], public_url: str, s3: Any) -> str:
    artifacts = job.artifacts or {}
    plots = {key: _data_uri(s3, artifacts[name], "image/png") for name, key in PLOTS.items() if name in artifacts}
    evaluation = job.evaluation or {}
    model = None
    if job.model_id:
        url = predict_url(public_url, job.model_id)
        model = ModelLines(
            id=job.model_id,
            predict_url=url,
            curl=f'curl -s -H "Authorization: Bearer $TRAINYARD_API_KEY" "{url}?top_k=3" --data-binary @image.jpg',
            cli=f"trainyard predict {job.model_id} image.jpg",
        )
    return _templates.get_template("report.html").render(
        job=job,
        params=job.params.model_dump(),
        dataset=job.dataset,
        sweep=job.lr_sweep,
        epochs=epochs,
        best=job.best,
        evaluation=evaluation or None,
        shades=_confusion_shades(evaluation["confusion_matrix"]) if evaluation else None,
        most_wrong=_cards(s3, evaluation.get("most_wrong", [])),
        least_certain=_cards(s3, evaluation.get("least_certain", [])),
        plots=plots,
        model=model,
    )
