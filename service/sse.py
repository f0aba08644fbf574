"""The live event stream of one job or batch run, as Server-Sent Events.

Each store event is one SSE message (`id:` is the event id, so a reconnecting EventSource resumes with
`Last-Event-ID`); a final `event: end` message carries the record's terminal status.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Header, Query, Request
from fastapi.responses import StreamingResponse

from core.spec import JobStatus
from core.store import EventRecord
from service.schemas import EventList, EventPublic

POLL_INTERVAL_S = 0.5
# Proxies and load balancers drop connections that stay silent for a minute or so.
KEEPALIVE_S = 15.0
# Event ids are the store's 64-bit integer keys; a larger `after` is a 422, not a database overflow (500).
MAX_EVENT_ID = 2**63 - 1

# The parameters of every events route (a job's, a batch run's).
After = Annotated[int, Query(ge=0, le=MAX_EVENT_ID, description="only events with a larger id")]
Stream = Annotated[bool, Query(description="keep the connection open and push events as they happen")]
LastEventId = Annotated[int | None, Header(alias="Last-Event-ID", ge=0, le=MAX_EVENT_ID, include_in_schema=False)]
EVENTS_RESPONSES: dict[int | str, dict[str, object]] = {200: {"content": {"text/event-stream": {}}}}


def events_answer(
    read_status: Callable[[], JobStatus | None],
    read_events: Callable[[int], list[EventRecord]],
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
        event_stream(read_status, read_events, start, request.is_disconnected),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def event_stream(
    read_status: Callable[[], JobStatus | None],
    read_events: Callable[[int], list[EventRecord]],
    after: int,
    is_disconnected: Callable[[], Awaitable[bool]],
    poll_interval_s: float = POLL_INTERVAL_S,
) -> AsyncIterator[str]:
    """Events with an id above `after` as they are stored, until the record ends (None: it is gone)."""
    last = after
    silent_for = 0.0
    while not await is_disconnected():
        # Status before events: a terminal transition writes its event in the same transaction, so once
        # the status reads terminal the events read next include everything the record will ever log.
        status = await asyncio.to_thread(read_status)
        events = await asyncio.to_thread(read_events, last)
        for event in events:
            last = event.id
            yield f"id: {event.id}\ndata: {EventPublic.build(event).model_dump_json()}\n\n"
        if status is None or status.terminal:
            yield f"event: end\ndata: {json.dumps({'status': status.value if status else 'deleted'})}\n\n"
            return
        silent_for = 0.0 if events else silent_for + poll_interval_s
        if silent_for >= KEEPALIVE_S:
            silent_for = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(poll_interval_s)
