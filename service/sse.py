"""Live event streams as Server-Sent Events: one job's, and every job of a tenant's (the console's job list).

Each store event is one SSE message (`id:` is the event id, so a reconnecting EventSource resumes with
`Last-Event-ID`); a job's stream ends with an `event: end` message carrying the job's terminal status, a
tenant's stream runs until the client leaves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from core.store import EventRecord, JobStore
from service.schemas import EventPublic, FeedEvent

POLL_INTERVAL_S = 0.5
# Proxies and load balancers drop connections that stay silent for a minute or so.
KEEPALIVE_S = 15.0


async def _stream(
    read: Callable[[int], Sequence[EventRecord]],
    render: Callable[[EventRecord], str],
    after: int,
    is_disconnected: Callable[[], Awaitable[bool]],
    poll_interval_s: float,
    ending: Callable[[], str | None] | None = None,
) -> AsyncIterator[str]:
    """Poll `read(last id)` and send what it finds; `ending()` (read first) gives the last message, if it is time."""
    last = after
    silent_for = 0.0
    while not await is_disconnected():
        final = await asyncio.to_thread(ending) if ending else None
        events = await asyncio.to_thread(read, last)
        for event in events:
            last = event.id
            yield f"id: {event.id}\ndata: {render(event)}\n\n"
        if final is not None:
            yield final
            return
        silent_for = 0.0 if events else silent_for + poll_interval_s
        if silent_for >= KEEPALIVE_S:
            silent_for = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(poll_interval_s)


def job_event_stream(
    store: JobStore,
    job_id: str,
    after: int,
    is_disconnected: Callable[[], Awaitable[bool]],
    *,
    poll_interval_s: float = POLL_INTERVAL_S,
) -> AsyncIterator[str]:
    def ending() -> str | None:
        # Status before events: a terminal transition writes its event in the same transaction, so once
        # the status reads terminal the events read next include everything the job will ever log.
        job = store.get_job(job_id)
        if job is not None and not job.status.terminal:
            return None
        status = job.status.value if job else "deleted"
        return f"event: end\ndata: {json.dumps({'status': status})}\n\n"

    return _stream(
        lambda last: store.events(job_id, last),
        lambda event: EventPublic.build(event).model_dump_json(),
        after,
        is_disconnected,
        poll_interval_s,
        ending,
    )


def tenant_event_stream(
    store: JobStore,
    tenant: str | None,
    after: int,
    is_disconnected: Callable[[], Awaitable[bool]],
    *,
    poll_interval_s: float = POLL_INTERVAL_S,
) -> AsyncIterator[str]:
    """Every event of `tenant`'s jobs (None: every tenant's) after `after`, as they are logged."""
    return _stream(
        lambda last: store.events_of_tenant(last, tenant),
        lambda event: FeedEvent.build(event).model_dump_json(),
        after,
        is_disconnected,
        poll_interval_s,
    )
