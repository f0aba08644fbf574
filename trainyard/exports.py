"""`Client.export`: a model's exported file and its preprocessing JSON, downloaded whole or not at all."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from trainyard.errors import Unavailable, from_response, unreachable
from trainyard.models import ExportedModel, ExportFormat

# How often `export` asks again while a model's exports are being built.
POLL_S = 2.0


def export_model(
    http: httpx.Client, model: str, path: str | Path | None, export_format: ExportFormat, wait_s: float
) -> ExportedModel:
    """`Client.export`: download a model as a file that runs without Trainyard, and the preprocessing JSON beside it.

    `model`: an id, `name`, `name@alias` or `name@version`. `export_format`: ``onnx`` (onnxruntime), ``torchscript``
    (``torch.jit.load``) or ``state_dict`` (the weights alone). `path` defaults to the name the server suggests
    (``pets-v3.onnx``) in the current folder; the JSON goes beside it (``pets-v3.json``). The files are built in the
    seconds after a job succeeds: until then this waits, up to `wait_s`. `http`: the client's connection.
    """
    deadline = time.monotonic() + wait_s
    route = f"/v1/models/{model}/export"
    try:
        while True:
            try:
                target = download(http, route, {"format": export_format}, path, f"model.{export_format}")
                break
            except Unavailable as e:
                if e.code != "export_building" or time.monotonic() > deadline:
                    raise
                time.sleep(POLL_S)
        answer = http.get(f"{route}/preprocessing")
    except httpx.TransportError as e:
        raise unreachable(str(http.base_url), e) from None
    if answer.is_error:
        raise from_response(answer)
    preprocessing = answer.json()
    sidecar = target.with_suffix(".json")
    sidecar.write_text(json.dumps(preprocessing, indent=2) + "\n", encoding="utf-8")
    return ExportedModel(path=target, preprocessing_path=sidecar, preprocessing=preprocessing)


def download(http: httpx.Client, route: str, params: dict[str, Any], path: str | Path | None, default: str) -> Path:
    """Stream `route` to `path` (default: the name the server suggests, else `default`) through a `.part` file, so
    an interrupted download never leaves a truncated file under the final name. Raises the API's error as
    `trainyard.errors` does, and httpx's transport errors as they are."""
    with http.stream("GET", route, params=params) as response:
        if response.is_error:
            response.read()
            raise from_response(response)
        target = Path(path) if path is not None else Path(suggested_name(response) or default)
        partial = target.with_name(target.name + ".part")
        with partial.open("wb") as out:
            for chunk in response.iter_bytes():
                out.write(chunk)
        partial.replace(target)
        return target


def suggested_name(response: httpx.Response) -> str | None:
    """The file name in Content-Disposition (`attachment; filename="pets-v3.onnx"`), without any folder part."""
    _, _, name = response.headers.get("content-disposition", "").partition("filename=")
    return Path(name.strip().strip('"')).name or None
