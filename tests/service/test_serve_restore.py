"""Serve comes back by itself: the reconciler's Serve pass against a real store, the Ray side a FakeCluster."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from core.store import JobStore
from service.launcher import RayJobState
from service.ray_cluster import SERVE_RESTORE_ENTRYPOINT, ServeState
from service.reconciler import Reconciler
from service.serve_restore import ServeHealth, ServeRestorer
from tests.utils.api_server import FakeCluster, add_model
from tests.utils.schema import migrated


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    migrated(url)
    return JobStore.from_url(url)


def test_nothing_is_restored_while_no_model_is_listed(store: JobStore) -> None:
    cluster = FakeCluster()
    restorer = ServeRestorer(store, cluster, cluster.launcher)
    restorer.run_once()
    assert cluster.jobs == [] and restorer.health() is ServeHealth.idle


def test_listed_models_without_serve_start_one_restore_until_it_ends(
    store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    add_model(store)
    cluster = FakeCluster()
    restorer = ServeRestorer(store, cluster, cluster.launcher)
    reconciler = Reconciler(store, cluster.launcher, cluster_passes=[restorer])
    assert restorer.health() is ServeHealth.down
    with caplog.at_level(logging.WARNING, logger="service.serve_restore"):
        reconciler.run_once()
    [(entrypoint, submission)] = cluster.jobs
    assert entrypoint == SERVE_RESTORE_ENTRYPOINT == "python -m serving.restore"  # what `trainyard up` runs
    assert "restoring it (Ray job" in caplog.text
    assert restorer.health() is ServeHealth.restoring and restorer.restores == 1
    reconciler.run_once()  # its restore is still pending on Ray: not a second one
    assert len(cluster.jobs) == 1
    cluster.launcher.states[submission] = RayJobState.succeeded
    cluster.serve = ServeState.running
    reconciler.run_once()
    assert len(cluster.jobs) == 1 and restorer.health() is ServeHealth.ok
    # The next outage (a head restart) is restored at once.
    cluster.serve = ServeState.absent
    reconciler.run_once()
    assert len(cluster.jobs) == 2


def test_a_restore_that_did_not_bring_serve_back_is_retried_later_not_every_pass(store: JobStore) -> None:
    add_model(store)
    cluster = FakeCluster(serve=ServeState.failed)
    restorer = ServeRestorer(store, cluster, cluster.launcher)
    restorer.run_once()
    cluster.launcher.states[cluster.jobs[0][1]] = RayJobState.failed
    restorer.run_once()
    assert len(cluster.jobs) == 1 and restorer.health() is ServeHealth.down


def test_ray_down_restores_nothing_and_says_unreachable(store: JobStore) -> None:
    add_model(store)
    cluster = FakeCluster()
    cluster.launcher.reachable = False
    restorer = ServeRestorer(store, cluster, cluster.launcher)
    restorer.run_once()
    assert cluster.jobs == [] and restorer.health() is ServeHealth.unreachable
