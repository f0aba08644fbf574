"""Submitting a queued job to Ray exactly once, however many API processes (and reconcilers) race for it."""

from __future__ import annotations

import os
import socket

from core.store import JobStore
from service.launcher import Launcher, ray_submission_id

# How long a claim stays with an API process that died between claiming and submitting. Longer than one
# submission takes (the launcher's request timeout is 10 s); after it, another process resubmits the job.
CLAIM_LEASE_S = 60.0
# Names the claiming process in the job row, for whoever debugs a stuck job.
OWNER = f"{socket.gethostname()}:{os.getpid()}"


def submit_if_claimed(store: JobStore, launcher: Launcher, job_id: str, attempt: int = 1) -> bool:
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
