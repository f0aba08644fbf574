"""Requests per second per API key, with a burst: over the limit a request answers 429 with `Retry-After`.

Each key has a token bucket (kept as GCRA's one "theoretical arrival time", so a bucket is one float and a
check is a subtraction): it holds `burst` requests, refilled at `per_second`. The limits are the tenant's own
(`python -m service.admin tenants set T --rate-limit R --burst B`) or the settings' defaults; 0 is unlimited,
and admin keys are never limited.

The check runs in an ASGI middleware before routing, authentication and the thread pool, and a refusal's
answer is rendered once, so a refused request costs a hash, a dictionary lookup and two writes: a key that
floods the API is answered at once, and the requests of other keys do not queue behind its refusals. What the
bucket admits is worked on at most `TRAINYARD_RATE_LIMIT_IN_FLIGHT` requests of one key at a time (the rest of
its burst waits its turn as a coroutine), and a request that had to wait for its turn also lets the other keys'
requests in progress finish before it starts (half a second at most), so another key's request meets at most
the end of one of the burst's (benchmarks/rate_limit.py). A prediction's turn ends when it is sent to the
model server: a key's concurrent predictions all reach Serve, which batches them.

A bucket exists only for a key that authenticated: the first request of a key is metered after
authentication (`RateLimiter.admit`), which also refreshes the key's limits from its tenant on every request
that gets through, so a change by an admin takes effect at the next one. Unknown keys never get a bucket, so
random keys cannot fill memory.

The buckets live in this process: with several API replicas behind a load balancer each applies the limit on
its own, so a key may send up to replicas x per_second in all. A shared limiter would need a write to the
store (the only state replicas share) on every request, more than most requests cost, and a burst would then
load the database that every other tenant's requests wait on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import threading
import time

from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.settings import Settings
from core.tenancy import Tenant, hash_key
from service.errors import ApiError, error_response

# Set on a request's scope state when the middleware has charged its key already.
_METERED = "rate_limit_metered"
# On a request's scope state: ends its turn (`end_turn`).
_END_TURN = "rate_limit_end_turn"
# The longest a queued request of a bursting key waits for other keys' requests to finish: one key's burst
# yields to the others' work, but is never starved by it.
DEFER_MAX_S = 0.5


class RateLimit(BaseModel):
    per_second: float = Field(gt=0, description="requests per second each key may send, on average")
    burst: int = Field(ge=1, description="requests a key may send at once before the rate applies")


def limit_for(settings: Settings, tenant: Tenant | None) -> RateLimit | None:
    """The limit of `tenant`'s keys (its own values, else the settings'); None when unlimited."""
    own = tenant.rate_limit_per_s if tenant is not None else None
    per_second = settings.rate_limit_per_s if own is None else own
    burst = (tenant.rate_limit_burst if tenant is not None else None) or settings.rate_limit_burst
    return RateLimit(per_second=per_second, burst=burst) if per_second > 0 else None


class _Bucket:
    __slots__ = ("limit", "ready_at")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.ready_at = now  # GCRA's theoretical arrival time: when the bucket is full again

    def take(self, now: float) -> float:
        """Charge one request; returns 0 if allowed, else the seconds until one would be."""
        interval = 1.0 / self.limit.per_second
        after = max(self.ready_at, now) + interval
        excess = after - now - self.limit.burst * interval
        if excess > 0:
            return excess
        self.ready_at = after
        return 0.0


class RateLimiter:
    """The token buckets of the keys seen by this process, keyed by the key's SHA-256 (never the key)."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        # The middleware runs on the event loop, `admit` in the thread pool (with authentication).
        self._lock = threading.Lock()

    def take(self, digest: str) -> tuple[float, RateLimit] | None:
        """Charge a request of the key with this digest: None when it has no bucket yet (authentication decides),
        else the seconds it must wait (0: it may go on) and its limit."""
        with self._lock:
            bucket = self._buckets.get(digest)
            if bucket is None:
                return None
            return bucket.take(time.monotonic()), bucket.limit

    def admit(self, digest: str, limit: RateLimit | None, metered: bool) -> None:
        """After authentication: bring the key's bucket to its tenant's current `limit` (None: unlimited), and
        charge this request unless the middleware did; raises the 429 when it is over."""
        with self._lock:
            if limit is None:
                self._buckets.pop(digest, None)
                return
            now = time.monotonic()
            bucket = self._buckets.setdefault(digest, _Bucket(limit, now))
            bucket.limit = limit
            wait = 0.0 if metered else bucket.take(now)
        if wait > 0:
            raise too_many_requests(wait, limit)


def _retry_after(wait: float) -> int:
    return max(1, math.ceil(wait))


def _message(wait: float, limit: RateLimit) -> str:
    return (
        f"this API key sent more than its limit of {limit.per_second:g} requests/s (burst {limit.burst}) to this "
        f"API process; retry after {_retry_after(wait)} s (the Retry-After header), or ask an admin to raise the "
        "tenant's limit (`python -m service.admin tenants set TENANT --rate-limit R --burst B`)"
    )


def _limit_body(limit: RateLimit) -> dict[str, object]:
    return {**limit.model_dump(), "scope": "per API key, per API process"}


def too_many_requests(wait: float, limit: RateLimit) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        _message(wait, limit),
        "Authorization",
        headers={"Retry-After": str(_retry_after(wait))},
        extra={"limit": _limit_body(limit)},
    )


@functools.lru_cache(maxsize=256)
def _refusal(retry_after: int, per_second: float, burst: int) -> tuple[tuple[tuple[bytes, bytes], ...], bytes]:
    """The 429's headers and body, rendered once per Retry-After and limit: a flood's refusals differ in nothing
    else, and rendering them (JSON, headers) cost more than the rest of a refusal."""
    error = too_many_requests(retry_after, RateLimit(per_second=per_second, burst=burst))
    response = error_response(
        error.status_code, error.code, error.message, error.field, headers=error.headers, **error.extra
    )
    return tuple(response.raw_headers), bytes(response.body)


def request_digest(scope: Scope) -> str | None:
    """The SHA-256 of the request's bearer key, or None without one."""
    scheme, _, key = Headers(scope=scope).get("authorization", "").partition(" ")
    key = key.strip()
    return hash_key(key) if scheme.lower() == "bearer" and key else None


def was_metered(scope: Scope) -> bool:
    return bool(scope.get("state", {}).get(_METERED))


def end_turn(scope: Scope) -> None:
    """The request's own work in this process is done though its answer has not started (a prediction about to
    wait on the model server): its key's next request may go on, and other keys' requests stop counting it."""
    end = scope.get("state", {}).get(_END_TURN)
    if end is not None:
        end()


class RateLimitMiddleware:
    """Answers 429 for a key over its limit before anything else runs; see the module's docstring."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter, in_flight: int) -> None:
        self.app = app
        self.limiter = limiter
        self.in_flight = in_flight
        self._turns: dict[str, asyncio.Semaphore] = {}  # per key digest, made with its first metered request
        # Requests being worked on that did not queue for their key's turn (every other key's, in effect), and
        # an event set whenever there are none: what a queued request waits on before it goes on.
        self._working = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        digest = request_digest(scope)
        charged = self.limiter.take(digest) if digest is not None else None
        if charged is not None and charged[0] > 0:
            wait, limit = charged
            headers, body = _refusal(_retry_after(wait), limit.per_second, limit.burst)
            # A fresh header list: the layers outside add to it (the request id).
            await send({"type": "http.response.start", "status": 429, "headers": list(headers)})
            await send({"type": "http.response.body", "body": body})
            return
        scope.setdefault("state", {})[_METERED] = charged is not None
        turns = None
        if charged is not None and digest is not None:
            turns = self._turns.get(digest)
            if turns is None:
                turns = self._turns[digest] = asyncio.Semaphore(self.in_flight)
        await self._in_turn(turns, scope, receive, send)

    async def _in_turn(self, turns: asyncio.Semaphore | None, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request once fewer than `in_flight` of its key's requests are being worked on; a request that
        had to queue for that also lets other keys' requests in progress finish first (for `DEFER_MAX_S` at most).

        A burst the bucket admits (up to `burst` requests at once) would otherwise fill the thread pool, and every
        other key's request would queue behind all of it; waiting here costs nothing but a coroutine. On two
        cores even one of the burst's requests at a time, started beside another key's, doubles that one's
        latency: so the queued rest of a burst starts only when no other key's request is being worked on, and
        a key that sends one request at a time never queues. A turn ends when the answer starts (a long event
        stream holds none) or at `end_turn` (a prediction waiting on the model server holds none).
        """
        queued = turns is not None and turns.locked()
        if turns is not None:
            await turns.acquire()
        if queued:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), DEFER_MAX_S)
        else:
            self._working += 1
            self._idle.clear()
        ended = False

        def end() -> None:
            nonlocal ended
            if ended:
                return
            ended = True
            if turns is not None:
                turns.release()
            if not queued:
                self._working -= 1
                if self._working == 0:
                    self._idle.set()

        async def send_then_end(message: Message) -> None:
            if message["type"] == "http.response.start":
                end()
            await send(message)

        scope.setdefault("state", {})[_END_TURN] = end
        try:
            await self.app(scope, receive, send_then_end)
        finally:
            end()
