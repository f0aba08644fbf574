"""Live event streams as Server-Sent Events: one job's or batch run's, and every job of a tenant's (the console's
job list).

Each store event is one SSE message (`id:` is the event id, so a reconnecting EventSource resumes with
`Last-Event-ID`); a job's or run's stream ends with an `event: end` message carrying its terminal status, a
tenant's stream runs until the client leaves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Annotated

from fastapi import Header, Query, Request
from fastapi.responses import StreamingResponse

from core.spec import JobStatus
from core.store import EventRecord, JobStore
from service.schemas import EventList, EventPublic, FeedEvent

POLL_INTERVAL_S = 0.5
# Proxies and load balancers drop connections that stay silent for a minute or so.
KEEPALIVE_S = 15.0
# Event ids are the store's 64-bit integer keys; a larger `after` is a 422, not a database overflow (500).
MAX_EVENT_ID = 2**63 - 1

# The parameters of the events route of one job or batch run.
After = Annotated[int, Query(ge=0, le=MAX_EVENT_ID, description="only events with a larger id")]
Stream = Annotated[bool, Query(description="keep the connection open and push events as they happen")]
LastEventId = Annotated[int | None, Header(alias="Last-Event-ID", ge=0, le=MAX_EVENT_ID, include_in_schema=False)]
EVENTS_RESPONSES: dict[int | str, dict[str, object]] = {200: {"content": {"text/event-stream": {}}}}


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


def record_event_stream(
    read_status: Callable[[], JobStatus | None],
    read_events: Callable[[int], Sequence[EventRecord]],
    after: int,
    is_disconnected: Callable[[], Awaitable[bool]],
    poll_interval_s: float = POLL_INTERVAL_S,
) -> AsyncIterator[str]:
    """The events of one job or batch run after `after`, until it ends (`read_status` None: it is gone)."""

    def ending() -> str | None:
        # Status before events: a terminal transition writes its event in the same transaction, so once
        # the status reads terminal the events read next include everything the record will ever log.
        status = read_status()
        if status is not None and not status.terminal:
            return None
        return f"event: end\ndata: {json.dumps({'status': status.value if status else 'deleted'})}\n\n"

    return _stream(
        read_events,
        lambda event: EventPublic.build(event).model_dump_json(),
        after,
        is_disconnected,
        poll_interval_s,
        ending,
    )


def events_answer(
    read_status: Callable[[], JobStatus | None],
    read_events: Callable[[int], Sequence[EventRecord]],
    request: Request,
    after: int,
    stream: bool,
    last_event_id: int | None,
) -> EventList | StreamingResponse:
    """The event log after `after`, or with `stream` the live stream (resuming where Last-Event-ID says)."""
    if not stream:
        return EventList(events=[EventPublic.build(e) for e in read_events(after)])
    start = max(after, last_event_id or 0)
    return StreamingResponse(
        record_event_stream(read_status, read_events, start, request.is_disconnected),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
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
