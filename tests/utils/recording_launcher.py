"""A Ray side for API processes started as subprocesses: it records each submission in a shared file.

`python -m uvicorn --factory tests.utils.recording_launcher:create_app` is the real API (service.main) with this
launcher instead of Ray; every process pointed at the same TRAINYARD_TEST_SUBMISSIONS file sees the others'
submissions, as API processes sharing one Ray cluster would. Used only by tests.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from fastapi import FastAPI

from service.launcher import RayJobState
from service.main import create_app as create_real_app

# Ray's Jobs API answers a submission in tens of milliseconds: the window in which two processes can race.
SUBMIT_LATENCY_S = 0.05


class RecordingLauncher:
    def __init__(self, path: Path) -> None:
        self.path = path

    def submitted(self) -> list[str]:
        if not self.path.exists():
            return []
        return [line.split()[0] for line in self.path.read_text().splitlines() if line]

    def submit(self, job_id: str) -> None:
        time.sleep(SUBMIT_LATENCY_S)
        # One short O_APPEND write per submission: lines from several processes never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{job_id} {os.getpid()}\n".encode())
        finally:
            os.close(fd)

    def stop(self, job_id: str) -> None:
        pass

    def state(self, job_id: str) -> RayJobState:
        return RayJobState.pending if job_id in self.submitted() else RayJobState.missing

    def ping(self) -> bool:
        return True


def create_app() -> FastAPI:
    return create_real_app(launcher=RecordingLauncher(Path(os.environ["TRAINYARD_TEST_SUBMISSIONS"])))
