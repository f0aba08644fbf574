"""Every job's events in one place: what a dashboard of many jobs follows instead of polling each."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from service.auth import PrincipalDep
from service.deps import StoreDep
from service.errors import error_responses
from service.schemas import FeedEvent, FeedEventList
from service.sse import tenant_event_stream

router = APIRouter(prefix="/v1/events", tags=["jobs"])

MAX_EVENT_ID = 2**63 - 1
PAGE = 500


@router.get(
    "",
    summary="Events of all the caller's jobs; with ?stream=true a Server-Sent-Events stream that stays open",
    response_model=FeedEventList,
    responses={200: {"content": {"text/event-stream": {}}}, **error_responses()},
)
def all_events(
    request: Request,
    store: StoreDep,
    principal: PrincipalDep,
    after: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_EVENT_ID,
            description="only events with a larger id; omitted: from now on (stream), from the start (list)",
        ),
    ] = None,
    stream: Annotated[bool, Query(description="keep the connection open and push events as they happen")] = False,
    last_event_id: Annotated[
        int | None, Header(alias="Last-Event-ID", ge=0, le=MAX_EVENT_ID, include_in_schema=False)
    ] = None,
) -> FeedEventList | StreamingResponse:
    if stream:
        # An EventSource that reconnects says where it stopped; a new follower starts at the newest event.
        start = last_event_id if last_event_id is not None else after
        if start is None:
            start = store.last_event_id()
        return StreamingResponse(
            tenant_event_stream(store, principal.scope, start, request.is_disconnected),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    events = store.events_of_tenant(after or 0, principal.scope, limit=PAGE)
    return FeedEventList(
        events=[FeedEvent.build(e) for e in events], last_event_id=events[-1].id if events else (after or 0)
    )
