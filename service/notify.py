"""The API's webhook sender: owes a webhook for every job that ended with a `notify_url`, and sends what is due.

Who sends: the API, not the job's driver. The API sees every way a job ends (the driver's own outcome, the
reconciler failing a lost driver, a cancel), and it outlives them all: a delivery is a row in the outbox
(`core.webhooks.Outbox`), so one that is not yet acknowledged is sent by whichever API process runs next, even
after a restart. Each pass:

1. owes one webhook per terminal state of each job with a `notify_url` (read from the store);
2. claims the deliveries that are due (a lease: one process sends each) and POSTs them, signed, to a checked
   address (`core.outbound`: never the service's own networks, unless an operator allowed them);
3. records each try as the resource's event (`webhook`, `webhook_retry`, `webhook_failed`) and schedules the
   next one with exponential backoff, up to `webhook_max_tries`. A 2xx is delivered; anything else, a refused
   connection or a timeout is retried; an address that is not allowed is not.

Batch prediction runs offer `notify_url` too, and are owed, sent and recorded the same way (`batch.succeeded`
…, their tries as the run's events). Another resource that offers it needs: `admit_notify_url` in its POST
route, its table in `core.webhooks.NOTIFYING`, what its body says (`DATA`) and where its events go
(`event_writers`).

The body is `{"id", "type": "<kind>.<status>", "created_at", "data"}`, signed and sent the same for every kind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from core.outbound import OutboundRefused, parse_networks, resolve
from core.settings import Settings
from core.store import JobStore
from core.store.batch import BatchStore
from core.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    NOTIFYING,
    SIGNATURE_HEADER,
    Delivery,
    DeliveryState,
    Outbox,
    ResourceKind,
    WebhookSecrets,
    sign,
)
from service.schemas import predict_url

logger = logging.getLogger(__name__)

# (resource id, event kind, message, data): writes one event of a resource, whatever its status.
EventWriter = Callable[[str, str, str, dict[str, Any] | None], None]
# A job that ended longer ago than this when the notifier first looks (an API down for a day) is not notified.
LOOKBACK = timedelta(days=1)
# Jobs are read again from a little before the last pass: clocks of API processes and drivers differ slightly.
CLOCK_MARGIN = timedelta(seconds=30)
USER_AGENT = "Trainyard-Webhooks/1"


def retry_delay(tries: int, base_s: float, max_s: float) -> float:
    """Seconds before try `tries + 1`: base, 2x base, 4x base … capped at `max_s`."""
    return float(min(max_s, base_s * 2 ** max(0, tries - 1)))


def job_data(job: dict[str, Any], public_url: str) -> dict[str, Any]:
    """What a job's webhook says: enough to act on, with the URL to read the rest."""
    model_id = job.get("model_id")
    finished = job.get("finished_at")
    return {
        "kind": "job",
        "id": job["id"],
        "tenant": job.get("tenant"),
        "name": job.get("name"),
        "status": job["status"],
        "attempt": job["attempt"],
        "url": f"{public_url.rstrip('/')}/v1/jobs/{job['id']}",
        "finished_at": finished.isoformat() if isinstance(finished, datetime) else finished,
        "model": {"id": model_id, "predict_url": predict_url(public_url, model_id)} if model_id else None,
        "error": job.get("error"),
    }


def batch_data(run: dict[str, Any], public_url: str) -> dict[str, Any]:
    """What a batch run's webhook says: where its results are, how many, and the URL to read the rest."""
    finished = run.get("finished_at")
    result = run.get("result") or {}
    return {
        "kind": "batch",
        "id": run["id"],
        "tenant": run.get("tenant"),
        "model_id": run.get("model_id"),
        "status": run["status"],
        "attempt": run["attempt"],
        "url": f"{public_url.rstrip('/')}/v1/batch-predictions/{run['id']}",
        "finished_at": finished.isoformat() if isinstance(finished, datetime) else finished,
        "output_uri": (run.get("params") or {}).get("output_uri"),
        "rows": result.get("rows"),
        "errors": result.get("errors"),
        "accuracy": (run.get("scores") or {}).get("accuracy"),
        "error": run.get("error"),
    }


DATA: dict[ResourceKind, Callable[[dict[str, Any], str], dict[str, Any]]] = {"job": job_data, "batch": batch_data}


class Notifier:
    def __init__(self, store: JobStore, settings: Settings, event_writers: dict[str, EventWriter] | None = None):
        self.outbox = Outbox(store.engine)
        self.secrets = WebhookSecrets(store.engine)
        self.settings = settings
        self.allowed = parse_networks(settings.webhook_allowed_networks)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.event_writers: dict[str, EventWriter] = {
            "job": store.record_event,
            "batch": BatchStore(store).record_event,
            **(event_writers or {}),
        }
        self.passes = 0  # finished passes: tests wait on it instead of sleeping
        self._since = datetime.now(UTC) - LOOKBACK
        timeout = httpx.Timeout(settings.webhook_timeout_s, connect=min(5.0, settings.webhook_timeout_s))
        # No proxies from the environment (a proxy would make the connection, past the address check), and no
        # redirects (a 3xx pointing at 127.0.0.1 would be a way around it).
        self._http = httpx.AsyncClient(timeout=timeout, trust_env=False, follow_redirects=False)

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # a pass logs its own failures; this keeps the loop alive through the unexpected
                logger.exception("webhook pass failed")
            await asyncio.sleep(self.settings.webhook_poll_interval_s)

    async def run_once(self) -> int:
        """One pass: owe what ended, send what is due. Returns how many tries were made."""
        await asyncio.to_thread(self._owe_finished)
        due = await asyncio.to_thread(self.outbox.claim_due, self.owner, self.settings.webhook_lease_s)
        await asyncio.gather(*(self._send(d) for d in due))
        self.passes += 1
        return len(due)

    async def close(self) -> None:
        await self._http.aclose()

    def _owe_finished(self) -> None:
        started = datetime.now(UTC)
        for kind in NOTIFYING:
            for ended in self.outbox.ended_to_notify(kind, self._since):
                self.outbox.enqueue(
                    kind=kind,
                    resource_id=ended["id"],
                    attempt=ended["attempt"],
                    tenant=ended["tenant"],
                    url=ended["params"]["notify_url"],
                    status=ended["status"],
                    data=DATA[kind](ended, self.settings.public_url),
                )
        self._since = started - CLOCK_MARGIN

    async def _send(self, delivery: Delivery) -> None:
        began = time.monotonic()
        try:
            target = await asyncio.to_thread(resolve, delivery.url, self.allowed)
        except OutboundRefused as refused:
            await self._record(delivery, None, f"refused: {refused}", final=True, seconds=0.0)
            return
        secret = await asyncio.to_thread(self.secrets.ensure, delivery.tenant or "")
        body = delivery.body.encode()
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(secret, body, int(time.time())),
            DELIVERY_HEADER: delivery.id,
            EVENT_HEADER: delivery.event,
        }
        # Connect to the address just checked, never to the name (which could resolve elsewhere by now); over
        # https the certificate is still checked against the name (SNI).
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        status: int | None = None
        error: str | None = None
        try:
            request = self._http.build_request(
                "POST", target.url_at(target.addresses[0]), content=body, headers=headers, extensions=extensions
            )
            response = await self._http.send(request, stream=True)  # the receiver's body is never read
            await response.aclose()
            status = response.status_code
            if not 200 <= status < 300:
                error = f"answered HTTP {status}"
        except httpx.HTTPError as e:
            error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        await self._record(delivery, status, error, final=False, seconds=time.monotonic() - began)

    async def _record(self, d: Delivery, status: int | None, error: str | None, final: bool, seconds: float) -> None:
        s = self.settings
        where = _origin(d.url)
        tries = d.tries + 1
        state: DeliveryState
        if error is None:
            state, next_try, kind = "delivered", None, "webhook"
            message = f"webhook {d.event} delivered to {where} (HTTP {status}, try {tries})"
        elif final or tries >= s.webhook_max_tries:
            state, next_try, kind = "failed", None, "webhook_failed"
            message = f"webhook {d.event} to {where} not delivered after {tries} tries: {error}"
        else:
            delay = retry_delay(tries, s.webhook_retry_base_s, s.webhook_retry_max_s)
            state, next_try, kind = "pending", datetime.now(UTC) + timedelta(seconds=delay), "webhook_retry"
            message = f"webhook {d.event} to {where} failed (try {tries}: {error}); retrying in {delay:g} s"
        await asyncio.to_thread(self.outbox.record_try, d.id, self.owner, state, error, next_try)
        data = {"delivery_id": d.id, "event": d.event, "try": tries, "status": status, "seconds": round(seconds, 3)}
        writer = self.event_writers.get(d.resource_kind)
        if writer is None:
            logger.warning("no event writer for %s deliveries: %s", d.resource_kind, message)
            return
        try:
            await asyncio.to_thread(writer, d.resource_id, kind, message, data)
        except Exception:
            logger.exception("recording webhook event of %s %s failed", d.resource_kind, d.resource_id)


def _origin(url: str) -> str:
    """scheme://host[:port] of a URL: its path and query may hold a token, which events must not show."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


def admit_notify_url(url: str | None, tenant: str, settings: Settings, store: JobStore) -> None:
    """At submit (a job, a batch run): refuse a `notify_url` the notifier would refuse to call (422 naming the
    field), and make sure the tenant has a signing secret an admin can hand out before the first delivery."""
    from service.errors import ApiError

    if url is None:
        return
    try:
        resolve(url, parse_networks(settings.webhook_allowed_networks))
    except OutboundRefused as refused:
        raise ApiError(422, "notify_url_not_allowed", f"notify_url: {refused}", "notify_url") from None
    WebhookSecrets(store.engine).ensure(tenant)
