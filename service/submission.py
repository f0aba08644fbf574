"""Submitting a queued job (or batch run) to Ray exactly once, however many API processes and reconcilers race."""

from __future__ import annotations

import os
import socket
from typing import Protocol

from service.launcher import Launcher, ray_submission_id

# How long a claim stays with an API process that died between claiming and submitting. Longer than one
# submission takes (the launcher's request timeout is 10 s); after it, another process resubmits the job.
CLAIM_LEASE_S = 60.0
# Names the claiming process in the job row, for whoever debugs a stuck job.
OWNER = f"{socket.gethostname()}:{os.getpid()}"


class Claims(Protocol):
    """A store whose queued records are claimed before submission: `JobStore` and `BatchStore`."""

    def claim_submission(self, record_id: str, owner: str, lease_s: float, /) -> bool: ...

    def release_claim(self, record_id: str, owner: str, /) -> None: ...


def submit_if_claimed(store: Claims, launcher: Launcher, job_id: str, attempt: int = 1) -> bool:
    """Claim the queued job in the store, and only if this process won the claim, submit it.

    Returns whether this call submitted. A submission that raises (Ray down) gives the claim back first, so
    the next reconcile pass, in this process or another, tries again at once.
    """
    if not store.claim_submission(job_id, OWNER, CLAIM_LEASE_S):
        return False
    try:
        launcher.submit(ray_submission_id(job_id, attempt))
    except BaseException:
        store.release_claim(job_id, OWNER)
        raise
    return True
