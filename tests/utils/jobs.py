"""Helpers for end-to-end tests that drive real jobs: submit, wait for a phase or an event, poll anything.

They read the job two ways: through the API (what a client sees) and straight from the stack's store
(`store_of`), which keeps answering while a test has killed the API on purpose.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from core.store import EventRecord, JobStore

T = TypeVar("T")

TERMINAL = ("succeeded", "failed", "cancelled")


def poll(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Call `check` until it returns something other than None (or False); fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)


def submit(api: httpx.Client, dataset_uri: str, **params: Any) -> str:
    """POST a job; returns its id."""
    response = api.post("/v1/jobs", json={"dataset_uri": dataset_uri, **params})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def get_job(api: httpx.Client, job_id: str) -> dict[str, Any] | None:
    """The job as the API shows it, or None while the API is not answering (being restarted)."""
    try:
        response = api.get(f"/v1/jobs/{job_id}")
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]


def wait_job(api: httpx.Client, job_id: str, until: tuple[str, ...] = TERMINAL, timeout: float = 900) -> dict[str, Any]:
    """Poll the API until the job's status or phase is one of `until`; rides out API restarts."""

    def reached() -> dict[str, Any] | None:
        job = get_job(api, job_id)
        return job if job and (job["status"] in until or job.get("phase") in until) else None

    return poll(reached, timeout, f"job {job_id} reaching {until}", interval=0.5)


def events_of(api: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """The job's event log as the API shows it."""
    response = api.get(f"/v1/jobs/{job_id}/events")
    assert response.status_code == 200, response.text
    return list(response.json()["events"])


def finish(api: httpx.Client, job_id: str, timeout: float = 900) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Wait for the job to end; returns it and its event log."""
    return wait_job(api, job_id, timeout=timeout), events_of(api, job_id)


def kinds(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The events of one kind, in order."""
    return [e for e in events if e["kind"] == kind]


@dataclass
class FinishedJob:
    """A job that has ended, as the API shows it (`job`, its `events`), and what the code that ran it printed."""

    job: dict[str, Any]
    events: list[dict[str, Any]]
    printed: str = ""
    # When the fixture restarted the API while the job ran: the phase it was in, and the job right after.
    api_restarted: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return str(self.job["id"])

    @property
    def model_id(self) -> str:
        assert self.job.get("model"), f"job {self.id} deployed no model"
        return str(self.job["model"]["id"])


def store_of(database_url: str) -> JobStore:
    return JobStore.from_url(database_url)


def wait_phase(store: JobStore, job_id: str, phases: tuple[str, ...], timeout: float = 600) -> str:
    """Wait (on the store) until the job is in one of `phases` or has ended; returns the phase or end status."""

    def reached() -> str | None:
        job = store.get_job(job_id)
        assert job is not None, job_id
        if job.status.terminal:
            return job.status.value
        return job.phase.value if job.phase and job.phase.value in phases else None

    return poll(reached, timeout, f"job {job_id} entering {phases}", interval=0.1)


def wait_event(
    store: JobStore, job_id: str, match: Callable[[EventRecord], bool], timeout: float = 600, what: str = "event"
) -> EventRecord:
    """Wait until the job's event log holds an event that `match`es; fails early if the job ends first."""

    def found() -> EventRecord | None:
        hit = next((e for e in store.events(job_id) if match(e)), None)
        if hit is None:
            job = store.get_job(job_id)
            assert job is not None and not job.status.terminal, f"job ended before {what}: {job}"
        return hit

    return poll(found, timeout, f"job {job_id}: {what}", interval=0.1)
