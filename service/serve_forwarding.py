"""Forwarding a prediction to the Ray Serve application, and what the API answers when the model server fails.

Serve routes each request to a replica holding the model (its multiplexing header); the API adds its own timing
and metrics, relays the classifier's own 4xx, and translates the model server's failures into 503/502 answers a
client can act on, after one retry for a replica that died mid-request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from botocore.exceptions import BotoCoreError, ClientError
from fastapi import Response

from core.settings import Settings
from core.store import ModelRecord
from service.errors import error_response
from service.metrics import Metrics
from serving.registry import unavailable_reason

logger = logging.getLogger(__name__)

PREDICT_TIMEOUT_S = 30.0


async def _gone(model: ModelRecord, s3: Any, settings: Settings) -> Response | None:
    """A 410 naming the missing object when the model's objects are gone, else None.

    Checked only when the model server could not answer, so the hot path pays nothing for it.
    """
    try:
        why = await asyncio.to_thread(unavailable_reason, s3, settings, model.id, model.artifact_uri)
    except (ClientError, BotoCoreError):
        return None
    if why is None:
        return None
    return error_response(410, why.code, f"model {model.id!r} is listed but cannot answer: {why.message}", "model_id")


@dataclass
class ServeCall:
    """One prediction request forwarded to Serve's route over the app's persistent connection pool."""

    model: ModelRecord
    route: str
    path: str
    params: dict[str, Any]
    content: bytes
    content_type: str

    async def send(self, settings: Settings, http: httpx.AsyncClient, metrics: Metrics, s3: Any) -> Response:
        began = time.perf_counter()
        model_id = self.model.id
        try:
            answer = await _retry_once_if_serve_failed(
                lambda: http.post(
                    f"{settings.serve_url.rstrip('/')}{self.path}",
                    params=self.params,
                    content=self.content,
                    # Ray Serve routes the request to a replica that has this model loaded (model multiplexing).
                    headers={"serve_multiplexed_model_id": model_id, "content-type": self.content_type},
                    timeout=PREDICT_TIMEOUT_S,
                )
            )
        except httpx.TransportError as e:
            logger.warning("predict %s: the model server is not reachable (%s)", model_id, type(e).__name__)
            response = await _gone(self.model, s3, settings) or _unavailable(
                "the model server is not reachable; retry shortly"
            )
            self._count(metrics, "unavailable", response, began)
            return response
        if answer.status_code == 200:
            response = _with_total(answer.content, began, metrics, model_id)
            self._count(metrics, "ok", response, began)
            return response
        outcome, response = _relay(model_id, answer)
        if answer.status_code == 404 or (answer.status_code == 503 and outcome == "unavailable"):
            # Serve knows no such model, or has no route: first rule out that the model's objects are gone.
            gone = await _gone(self.model, s3, settings)
            if gone is not None:
                outcome, response = "client_error", gone
        self._count(metrics, outcome, response, began)
        return response

    def _count(self, metrics: Metrics, outcome: str, response: Response, began: float) -> None:
        metrics.predict_seconds.labels(outcome).observe(time.perf_counter() - began)
        metrics.predict_requests.labels(self.model.id, self.route, str(response.status_code)).inc()
        metrics.count_prediction(self.model.id, outcome)
        # Which version answered: a request by alias or name learns what it resolved to.
        response.headers["Trainyard-Model-Id"] = self.model.id
        if self.model.version is not None:
            response.headers["Trainyard-Model-Version"] = str(self.model.version)


def _with_total(content: bytes, began: float, metrics: Metrics, model_id: str) -> Response:
    """The replica's answer with the API's own total added to its timing split, recorded in the metrics."""
    body = json.loads(content)
    timing = body.setdefault("timing_ms", {})
    timing["total"] = round((time.perf_counter() - began) * 1000, 2)
    metrics.observe_prediction(model_id, timing, body.get("batch_size"))
    return Response(json.dumps(body), status_code=200, media_type="application/json")


# --- when the model server itself fails -----------------------------------------------------------------------
# A replica that dies (killed, out of memory) fails the requests it held with Serve's own 500 (plain text, not
# the classifier's JSON error) or a dropped connection, and Serve starts a replacement. A prediction changes
# nothing, so it is safe to send again: the API retries once after a short pause (Serve holds the retry until a
# live replica takes it). What still fails is relayed as before (`_relay`): 503 with Retry-After when Serve is
# unreachable or not ready, 502 when it keeps failing (a bug, not a restart).
SERVE_RETRY_DELAY_S = 0.5


def _serve_failed(answer: httpx.Response) -> bool:
    return answer.status_code >= 500 and not _has_error_shape(answer.content)


async def _retry_once_if_serve_failed(classify: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    try:
        answer = await classify()
    except httpx.TransportError as e:
        logger.warning("predict: the model server dropped the request (%s); retrying once", type(e).__name__)
    else:
        if not _serve_failed(answer):
            return answer
        logger.warning("predict: the model server failed (%s); retrying once", answer.status_code)
    await asyncio.sleep(SERVE_RETRY_DELAY_S)
    return await classify()


def _unavailable(message: str) -> Response:
    return error_response(503, "serving_unavailable", message, headers={"Retry-After": "1"})


def _has_error_shape(content: bytes) -> bool:
    try:
        body = json.loads(content)
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), dict) and "code" in body["error"]


def _relay(model_id: str, answer: httpx.Response) -> tuple[str, Response]:
    """Pass on the classifier's own 4xx (such as `invalid_image`) and Serve's overload; translate the rest."""
    status = answer.status_code
    if status == 503 and "retry-after" in answer.headers:
        # Serve's queue for the replicas is full (max_queued_requests): the client should back off and retry.
        return "overloaded", error_response(
            503,
            "overloaded",
            "the model server's queue is full; retry after the number of seconds in Retry-After",
            headers={"Retry-After": answer.headers["retry-after"]},
        )
    if 400 <= status < 500 and _has_error_shape(answer.content):
        return "client_error", Response(answer.content, status_code=status, media_type="application/json")
    # Anything else is the server's problem, not the client's: log it, and answer without its details.
    logger.warning("predict %s: the model server answered %s: %.300r", model_id, status, answer.content)
    if status in (404, 503):
        # 404: Serve's proxy has no route yet (application still deploying); 503: its queues are full.
        return "unavailable", _unavailable("the model server is not ready to serve this model; retry shortly")
    return "server_error", error_response(
        502, "serving_error", "the model server failed to classify the image; retry, or contact the operator"
    )
