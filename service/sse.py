"""The live event stream of one job, as Server-Sent Events.

Each store event is one SSE message (`id:` is the event id, so a reconnecting EventSource resumes with
`Last-Event-ID`); a final `event: end` message carries the job's terminal status.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

from core.store import JobStore
from service.schemas import EventPublic

POLL_INTERVAL_S = 0.5
# Proxies and load balancers drop connections that stay silent for a minute or so.
KEEPALIVE_S = 15.0


async def job_event_stream(
    store: JobStore,
    job_id: str,
    after: int,
    is_disconnected: Callable[[], Awaitable[bool]],
    *,
    poll_interval_s: float = POLL_INTERVAL_S,
) -> AsyncIterator[str]:
    last = after
    silent_for = 0.0
    while not await is_disconnected():
        # Status before events: a terminal transition writes its event in the same transaction, so once
        # the status reads terminal the events read next include everything the job will ever log.
        job = await asyncio.to_thread(store.get_job, job_id)
        events = await asyncio.to_thread(store.events, job_id, last)
        for event in events:
            last = event.id
            yield f"id: {event.id}\ndata: {EventPublic.build(event).model_dump_json()}\n\n"
        if job is None or job.status.terminal:
            status = job.status.value if job else "deleted"
            yield f"event: end\ndata: {json.dumps({'status': status})}\n\n"
            return
        silent_for = 0.0 if events else silent_for + poll_interval_s
        if silent_for >= KEEPALIVE_S:
            silent_for = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(poll_interval_s)
