"""The outermost layer of every request: a request id, request metrics, and a JSON 500 for the unexpected.

A pure ASGI middleware rather than `@app.middleware("http")`: it does not buffer streaming responses (the
event stream) and it sees the status of every response, including the 500s it writes itself.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response
from service.metrics import Metrics

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's request id is echoed only if it is short and plain, so it cannot forge log lines.
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _request_id(scope: Scope) -> str:
    given = Headers(scope=scope).get(REQUEST_ID_HEADER)
    return given if given and _SAFE_REQUEST_ID.match(given) else uuid.uuid4().hex


def _route_template(scope: Scope) -> str:
    # The template, not the path: one time series per route, however many job ids there are.
    route = scope.get("route")
    if route is None:
        # FastAPI records only its own API routes in the scope, and only once routed: /docs and /openapi.json are
        # plain routes, and a request answered before routing (a 429) has none yet.
        route = _matching(getattr(scope.get("app"), "routes", ()), scope)
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class _UnroutedTemplates:
    """Route templates of requests answered before routing (429s), by method and path.

    Matching a path against every route costs more than the rest of a refusal together, and a key over its limit
    sends the same few paths again and again; bounded, so paths made up to miss cost what they cost before.
    """

    LIMIT = 4096

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], str] = {}

    def __call__(self, scope: Scope) -> str:
        if scope.get("route") is not None:
            return _route_template(scope)
        at = (scope["method"], scope["path"])
        template = self._known.get(at)
        if template is None:
            if len(self._known) >= self.LIMIT:
                self._known.clear()
            template = self._known[at] = _route_template(scope)
        return template


def _matching(routes: Iterable[Any], scope: Scope) -> Any:
    for route in routes:
        nested = getattr(route, "original_router", None)  # FastAPI includes routers lazily
        found = _matching(nested.routes, scope) if nested is not None else None
        if found is not None or (nested is None and route.matches(scope)[0] is Match.FULL):
            return found or route
    return None


class RequestMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._template = _UnroutedTemplates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        began = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Method and route template only: query strings and bodies may carry things that must not be logged.
            logger.exception(
                "unhandled error in %s %s (request id %s)", scope["method"], _route_template(scope), request_id
            )
            if not started:
                response = error_response(
                    500, "internal", f"internal error; see the server log (request id {request_id})"
                )
                await response(scope, receive, send_with_id)
            status = 500
        finally:
            self.metrics.observe_request(scope["method"], self._template(scope), status, time.perf_counter() - began)
