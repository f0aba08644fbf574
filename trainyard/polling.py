"""Following a job or a batch run until it ends, through restarts of the API."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from trainyard.errors import Unavailable

# How long a wait keeps polling through API outages (a restart, a rolling deploy) before giving up.
OUTAGE_TOLERANCE_S = 30.0


class _Ends(Protocol):
    @property
    def status(self) -> str: ...

    @property
    def terminal(self) -> bool: ...


T = TypeVar("T", bound=_Ends)


def poll_until_ended(
    fetch: Callable[[], T],
    what: str,
    *,
    poll_interval: float,
    timeout: float | None,
    on_update: Callable[[T], None] | None = None,
) -> T:
    """Call `fetch` every `poll_interval` until what it returns is terminal; `on_update` sees every answer.

    The work runs on Ray whatever the API does, so an API that does not answer is waited out for
    `OUTAGE_TOLERANCE_S`; `timeout` (None: none) bounds the whole wait.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    outage_since: float | None = None
    while True:
        try:
            current = fetch()
            outage_since = None
        except Unavailable:
            outage_since = outage_since or time.monotonic()
            if time.monotonic() - outage_since > OUTAGE_TOLERANCE_S:
                raise
            time.sleep(poll_interval)
            continue
        if on_update is not None:
            on_update(current)
        if current.terminal:
            return current
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{what} still {current.status} after {timeout:.0f}s")
        time.sleep(poll_interval)
