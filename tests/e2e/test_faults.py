"""The fault matrix: real processes killed at chosen moments of real jobs, and what must hold afterwards.

Rows: a Ray Train worker killed in each training stage; the API killed and restarted in each phase; the S3
server stopped during fetch and during checkpointing; a Serve replica killed; a cancel in each phase. Each
kill is SIGKILL unless a row says otherwise, and each test asserts the job's final state, its epoch rows and
events, and that nothing was lost or duplicated.

Jobs are the expensive part, so rows whose faults cannot spoil each other share one: the job whose API is
killed in every phase also loses a training worker in its first unfrozen epoch (an API kill touches no worker,
a worker kill no API); the job that meets S3 down and back during its fetch later loses a worker after its
first Ray Train checkpoint; and one lasting S3 outage is met by a job checkpointing and one fetching.

The module runs its own stack (own ports and home), because it kills the stack's own processes. On tiny data
every stage takes well under a second, too short to land a kill inside it, so the stack sets the test-only
`TRAINYARD_FAULT_DELAYS`: each Ray Train batch sleeps `worker_batch` seconds (an epoch lasts a few seconds)
and the driver holds a few phases at their start. Kills are triggered by the job's own records (an event, an
epoch row, a phase), never by a fixed sleep.
"""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from core.store import EventRecord, JobStore
from infra.local.sample_data import make_shapes, upload_folder
from infra.local.stack import LocalStack
from tests.utils.jobs import poll, store_of, submit, wait_event, wait_job, wait_phase
from tests.utils.ray_state import actor_pids, alive_actors, held_resources, ray_job_status, ray_jobs_for
from tests.utils.stack import HOLDS, own_stack

# Generous limits: on a 2-core machine shared with other test runs a job takes minutes instead of one.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

# Seconds each Ray Train batch sleeps (3 batches per epoch here: an epoch lasts ~3 s), and phases the driver
# holds at their start (fetching is otherwise over in milliseconds).
# lr_sweep is held too: with the feature cache hit it lasts milliseconds, too short for a cancel to land in it.
FAULT_DELAYS = {"worker_batch": 1.0, "fetching": 3.0, "lr_sweep": 3.0}
# 12 training and 6 validation images of 3 classes at 32 px; 1 head-only epoch, then 2 unfrozen on 2 DDP workers.
JOB: dict[str, Any] = {
    "epochs": 2,
    "freeze_epochs": 1,
    "batch_size": 8,  # global: 4 per worker
    "image_size": 32,
    "num_workers": 2,
    "lr": 0.01,
    "deploy": False,
    "patience": None,  # every epoch runs: what is counted is a resumed run's epochs, not early stopping
}
# The same epochs and steps on one worker, for the rows DDP is not what they are about: a Ray Train start
# with one process fewer to spawn. The worker kills keep two ranks (the survivor must fail too).
ONE_WORKER: dict[str, Any] = JOB | {"num_workers": 1, "batch_size": 4}
# boto3 backs off a random 0-50 ms, 0-100 ms, 0-200 ms … between tries on a connection error (botocore's
# non-throttling base of 50 ms), so 6 tries spanned only 1-2 s and an S3 restarted 0.5 s after the driver's
# first listing sometimes came back after the last try. 10 tries span ~13 s on average (at
# most 26 s of backoff): S3 back within the retries is then all but certain, and one kept down still fails fast.
S3_MAX_ATTEMPTS = 10
DATASET = "s3://faults/shapes"
TRAIN_WORKER = "RayTrainWorker"


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    home = tmp_path_factory.mktemp("faults-home")
    env = {
        "TRAINYARD_FAULT_DELAYS": json.dumps(FAULT_DELAYS),
        "TRAINYARD_FAULT_HOLDS_DIR": str(home / HOLDS),
        # The API's reconciler notices a dead or missing driver within this (the default is 10 s).
        "TRAINYARD_RECONCILE_INTERVAL_S": "2",
        "TRAINYARD_S3_MAX_ATTEMPTS": str(S3_MAX_ATTEMPTS),
    }
    (home / HOLDS).mkdir()
    with own_stack(home, env=env) as stack:
        data = make_shapes(tmp_path_factory.mktemp("faults-data"), train_per_class=4, valid_per_class=2, size=32)
        upload_folder(stack.s3_client(), data, "faults", "shapes")
        yield stack


@pytest.fixture(scope="module")
def api(fault_stack: LocalStack) -> Iterator[httpx.Client]:
    with fault_stack.api_client(timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def store(fault_stack: LocalStack) -> JobStore:
    return store_of(fault_stack.database_url)


def _events(store: JobStore, job_id: str, kind: str) -> list[EventRecord]:
    return [e for e in store.events(job_id) if e.kind == kind]


def _epoch_reported(epoch: int) -> Any:
    return lambda e: e.kind == "epoch" and e.data is not None and e.data["epoch"] == epoch


def _kill_a_train_worker(stack: LocalStack) -> int:
    pid = poll(lambda: actor_pids(stack, TRAIN_WORKER) or None, 120, "a Ray Train worker")[-1]
    os.kill(pid, signal.SIGKILL)
    return int(pid)


# --- row 1: a Ray Train worker killed -------------------------------------------------------------------------

# Where the kill lands, and the last checkpointed epoch training must resume after. Epoch 1 is the head-only one:
# the driver trains it on the cached features and checkpoints it itself, before any Ray Train worker exists, so
# there is no training worker to kill during it (a driver killed then is the driver-death test's case). The
# first Ray Train checkpoint is unfrozen epoch 2's.
WORKER_KILLS = {
    "first_unfrozen": None,  # epoch 2 runs: no Ray Train checkpoint yet, so it restarts from the head-only weights
    "later_unfrozen": 2,  # epoch 3 runs; epoch 2's checkpoint exists
}
# The job each kill lands in (module fixtures below, each shared with another row).
WORKER_KILL_JOBS = {"first_unfrozen": "through_api_kills", "later_unfrozen": "through_fetch_outage"}


@pytest.mark.parametrize("stage", list(WORKER_KILLS))
def test_a_killed_train_worker_resumes_from_the_last_checkpoint(
    stage: str, request: pytest.FixtureRequest, fault_stack: LocalStack, store: JobStore
) -> None:
    run = request.getfixturevalue(WORKER_KILL_JOBS[stage])
    job, job_id, killed = run["job"], run["job"]["id"], run["killed_worker"]
    assert job["status"] == "succeeded", job["error"]
    failures = _events(store, job_id, "worker_failed")
    assert len(failures) == 1, [e.message for e in failures]
    assert failures[0].data is not None and failures[0].data["checkpointed_epoch"] == WORKER_KILLS[stage], (
        f"the kill landed elsewhere than {stage}: {failures[0].message}"
    )
    # The other rank fails too (its DDP peer is gone); the one killed is named as such.
    assert "died (its process vanished: killed" in failures[0].message, failures[0].message
    # The restarted workers resumed where the last checkpoint left off (the head-only one has epoch 1).
    starts = [e.data for e in _events(store, job_id, "training_started")]
    checkpointed = WORKER_KILLS[stage]
    resumed_at = 2 if checkpointed is None else checkpointed + 1
    assert starts == [{"epoch": 2, "resumed": False}, {"epoch": resumed_at, "resumed": checkpointed is not None}]
    # Every epoch reported once, in order: none repeated by the resumed run, none skipped.
    assert [(e["epoch"], e["stage"]) for e in job["metrics"]] == [(1, "frozen"), (2, "unfrozen"), (3, "unfrozen")]
    assert [e.data["epoch"] for e in _events(store, job_id, "epoch") if e.data] == [2, 3]
    assert len(_events(store, job_id, "checkpoint")) == 1  # the head-only model, checkpointed once
    assert job["best"]["epoch"] in (1, 2, 3)
    location = job["best"]["checkpoint_uri"].removeprefix("s3://").split("/", 1)
    assert fault_stack.s3_client().head_object(Bucket=location[0], Key=location[1])["ContentLength"] > 100_000
    assert killed not in {a["pid"] for a in alive_actors(fault_stack, TRAIN_WORKER)}
    assert held_resources(fault_stack) == {}


# --- row 6: cancel in each phase ------------------------------------------------------------------------------

CANCEL_PHASES = ("queued", "fetching", "lr_sweep", "training", "evaluating")


@pytest.fixture(scope="module")
def cancelled(fault_stack: LocalStack, api: httpx.Client, store: JobStore) -> dict[str, dict[str, Any]]:
    """One job per phase, all submitted at once (they share the cluster), each cancelled as it enters its phase.

    Every job would deploy a model if it ran to the end, so a deployment left behind would show.
    """
    jobs = {
        phase: submit(api, DATASET, **ONE_WORKER | {"deploy": True, "name": f"cancel-{phase}"})
        for phase in CANCEL_PHASES
    }
    outcome: dict[str, dict[str, Any]] = {}

    def cancel_those_in_their_phase() -> bool:
        for phase, job_id in jobs.items():
            if phase in outcome:
                continue
            record = store.get_job(job_id)
            assert record is not None
            now = record.status.value if record.status.value == "queued" else (record.phase or record.status).value
            if now == phase or record.status.terminal:
                response = api.post(f"/v1/jobs/{job_id}/cancel")
                outcome[phase] = {"id": job_id, "was": now, "response": response.status_code, "job": response.json()}
        return len(outcome) == len(jobs)

    poll(cancel_those_in_their_phase, 1200, "every job reaching the phase it is cancelled in", interval=0.1)
    held = held_resources(fault_stack, timeout=120)
    for result in outcome.values():
        result["ray_status"] = _ray_job_ended(fault_stack, result["id"])
        result["held"] = held
    return outcome


def _ray_job_ended(stack: LocalStack, job_id: str) -> str:
    def ended() -> str | None:
        status = ray_job_status(stack, job_id)
        return status if status in ("STOPPED", "FAILED", "SUCCEEDED") else None

    return poll(ended, 60, f"the Ray job of {job_id} ending")


@pytest.mark.parametrize("phase", CANCEL_PHASES)
def test_cancel_stops_the_ray_job_frees_its_resources_and_deploys_nothing(
    phase: str, cancelled: dict[str, dict[str, Any]], fault_stack: LocalStack, api: httpx.Client, store: JobStore
) -> None:
    result = cancelled[phase]
    assert result["was"] == phase, f"the job was {result['was']} when cancelled, not {phase}"
    assert result["response"] == 200 and result["job"]["status"] == "cancelled"
    assert result["ray_status"] == "STOPPED"
    assert result["held"] == {}, "CPUs/GPUs still held after every cancelled job stopped"
    assert not alive_actors(fault_stack, TRAIN_WORKER)
    job = api.get(f"/v1/jobs/{result['id']}").json()
    assert job["status"] == "cancelled" and job["model"] is None and job["error"] is None
    model_id = result["id"].replace("job-", "mdl-", 1)
    assert store.get_model(model_id) is None
    pointers = fault_stack.s3_client().list_objects_v2(Bucket="trainyard-artifacts", Prefix=f"models/{model_id}")
    assert pointers.get("KeyCount", 0) == 0, "a model pointer was written for a cancelled job"
    kinds = [e.kind for e in store.events(result["id"])]
    assert kinds.count("cancelled") == 1 and "succeeded" not in kinds and "failed" not in kinds
    assert kinds[-1] == "cancelled", f"the job recorded {kinds[kinds.index('cancelled') + 1 :]} after its cancel"


# --- row 3: the API killed and restarted in each phase --------------------------------------------------------

API_KILL_PHASES = ("queued", "fetching", "training", "evaluating")


def _kill_api(stack: LocalStack) -> None:
    os.kill(stack.config.pids.pop("api"), signal.SIGKILL)
    stack.save()


@pytest.fixture(scope="module")
def through_api_kills(fault_stack: LocalStack, api: httpx.Client, store: JobStore) -> dict[str, Any]:
    """One deploying job; the API is SIGKILLed in each phase and restarted (a new process on the same store), and
    one of its Ray Train workers is SIGKILLed in the first unfrozen epoch, before any Ray Train checkpoint."""
    # The short phases are held until the API killed in them is back: a restart takes from 2 to 30 s on two
    # busy cores, longer than fetching or evaluating last, and the next phase's kill must not miss its phase.
    holds = fault_stack.config.home / HOLDS
    held = [holds / phase for phase in ("fetching", "evaluating")]
    for hold in held:
        hold.touch()
    job_id = submit(api, DATASET, **JOB | {"deploy": True, "name": "api-kills"})
    killed_in: list[str] = []
    killed_worker = None
    try:
        for phase in API_KILL_PHASES:
            now = "queued" if phase == "queued" else wait_phase(store, job_id, (phase,))
            if phase == "training":
                # A training worker first, in the first unfrozen epoch (a 10 s window), then the API: an API
                # restart beside that window can starve it on two busy cores, and the kill then comes after the
                # epoch. The workers restart for seconds: the job is still in training.
                wait_event(store, job_id, lambda e: e.kind == "training_started", what="the training workers running")
                killed_worker = _kill_a_train_worker(fault_stack)
                now = wait_phase(store, job_id, (phase,))
            _kill_api(fault_stack)
            killed_in.append(now)
            fault_stack.start_api()
            (holds / phase).unlink(missing_ok=True)  # the job goes on
    finally:
        for hold in held:
            hold.unlink(missing_ok=True)
    job = wait_job(api, job_id)
    # Two reconcile passes of the last API process: a finished job must stay as it is.
    time.sleep(5)  # nothing to wait on: the point is that nothing happens
    after = api.get(f"/v1/jobs/{job_id}").json()
    return {"job": job, "killed_in": killed_in, "after": after, "killed_worker": killed_worker}


def test_an_api_killed_in_each_phase_loses_duplicates_and_strands_nothing(
    through_api_kills: dict[str, Any], fault_stack: LocalStack, api: httpx.Client, store: JobStore
) -> None:
    job = through_api_kills["job"]
    assert through_api_kills["killed_in"] == list(API_KILL_PHASES)
    assert job["status"] == "succeeded", job["error"]
    assert through_api_kills["after"]["status"] == "succeeded"
    assert job["id"] in [j["id"] for j in api.get("/v1/jobs", params={"limit": 200}).json()["jobs"]]
    assert len(ray_jobs_for(fault_stack, job["id"])) == 1, "the job was submitted to Ray more than once"
    events = store.events(job["id"])
    entered = [e.data["phase"] for e in events if e.kind == "phase" and e.data]
    assert entered == ["fetching", "validating", "lr_sweep", "training", "evaluating", "publishing", "deploying"]
    assert [e.kind for e in events].count("succeeded") == 1
    assert [(e["epoch"], e["stage"]) for e in job["metrics"]] == [(1, "frozen"), (2, "unfrozen"), (3, "unfrozen")]
    models = [m for m in api.get("/v1/models").json()["models"] if m["job_id"] == job["id"]]
    assert [m["id"] for m in models] == [job["model"]["id"]]


# --- row 5: a Serve replica killed ----------------------------------------------------------------------------

REPLICA = "ServeReplica:trainyard:ClassifierServer"


def test_a_killed_serve_replica_is_replaced_and_no_request_gets_a_5xx_but_503(
    through_api_kills: dict[str, Any], fault_stack: LocalStack, tmp_path: Path
) -> None:
    model_id = through_api_kills["job"]["model"]["id"]
    data = make_shapes(tmp_path, train_per_class=0, valid_per_class=1, size=32, seed=7)
    image = next((data / "valid" / "circle").iterdir()).read_bytes()
    answers: list[tuple[float, int, str | None]] = []
    stop = threading.Event()

    def client() -> None:  # predicting without pause, as a busy client would, through the API
        with fault_stack.api_client(timeout=120) as http:
            while not stop.is_set():
                response = http.post(f"/v1/models/{model_id}/predict", content=image)
                answers.append((time.monotonic(), response.status_code, response.headers.get("retry-after")))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        poll(lambda: sum(code == 200 for _, code, _ in answers) >= 3, 300, "predictions before the kill")
        [replica] = alive_actors(fault_stack, REPLICA)
        os.kill(replica["pid"], signal.SIGKILL)
        killed_at = time.monotonic()
        replacement = poll(
            lambda: [a for a in alive_actors(fault_stack, REPLICA) if a["pid"] != replica["pid"]] or None,
            300,
            "a replacement replica",
        )
        poll(lambda: sum(code == 200 and at > killed_at for at, code, _ in answers) >= 5, 300, "predictions after")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=150)
    codes = [code for _, code, _ in answers]
    assert set(codes) <= {200, 503}, f"answers while a replica died: {sorted(set(codes))}"
    assert all(retry_after for _, code, retry_after in answers if code == 503), "a 503 without Retry-After"
    assert replacement[0]["pid"] != replica["pid"]
    print(f"replica killed: {len(codes)} predictions, {codes.count(503)} answered 503 (Retry-After), none lost")


# --- row 4: the S3 server stopped -----------------------------------------------------------------------------


def _stop_s3(stack: LocalStack) -> float:
    os.kill(stack.config.pids.pop("s3"), signal.SIGKILL)
    stack.save()
    return time.monotonic()


@pytest.fixture(scope="module")
def s3_kept_down(fault_stack: LocalStack, api: httpx.Client, store: JobStore) -> dict[str, Any]:
    """One outage that lasts, met by two jobs: one training (its next checkpoint upload meets it) and one
    submitted as S3 stops, whose fetch meets it. Both must fail naming S3, neither after long."""
    training = submit(api, DATASET, **ONE_WORKER)
    wait_event(store, training, _epoch_reported(2), what="unfrozen epoch 2")
    stopped = _stop_s3(fault_stack)  # epoch 3 runs for a few seconds, then its checkpoint upload meets the outage
    try:
        fetching = submit(api, DATASET, **ONE_WORKER)  # accepting a job needs no S3; fetching it does
        ended: dict[str, Any] = {}
        for name, job_id in (("fetching", fetching), ("training", training)):
            job = wait_job(api, job_id, timeout=600)
            ended[name] = {"job": job, "after": time.monotonic() - stopped}
    finally:
        fault_stack.start_s3()
    return ended


def test_s3_down_during_fetch_fails_the_job_naming_s3_after_bounded_retries(
    s3_kept_down: dict[str, Any], store: JobStore
) -> None:
    job, gave_up_after = s3_kept_down["fetching"]["job"], s3_kept_down["fetching"]["after"]
    assert job["status"] == "failed"
    assert (job["error"]["code"], job["error"]["phase"]) == ("storage_unavailable", "fetching")
    assert "object store (S3" in job["error"]["message"] and DATASET in job["error"]["message"]
    assert f"after {S3_MAX_ATTEMPTS} tries" in job["error"]["message"]
    assert not _events(store, job["id"], "fetched")
    assert gave_up_after < 150, f"gave up only after {gave_up_after:.0f}s"
    print(f"S3 down during fetch: the job failed {gave_up_after:.1f}s after S3 stopped")


@pytest.fixture(scope="module")
def through_fetch_outage(fault_stack: LocalStack, api: httpx.Client, store: JobStore) -> dict[str, Any]:
    """One job: S3 stops as it starts fetching and is back within its retries, so the fetch goes on; then one of
    its Ray Train workers is SIGKILLed after unfrozen epoch 2 is checkpointed."""
    job_id = submit(api, DATASET, **JOB)
    wait_phase(store, job_id, ("fetching",))
    _stop_s3(fault_stack)
    # Back shortly after the driver's hold ends: its first listing meets the outage and a retry finds S3 again
    # (S3_MAX_ATTEMPTS: the tries span ~13 s on average, so a retry after S3 is back is all but certain).
    time.sleep(FAULT_DELAYS["fetching"] + 0.5)
    fault_stack.start_s3()
    fetched = wait_event(store, job_id, lambda e: e.kind == "fetched", what="the fetch finishing")
    wait_event(store, job_id, _epoch_reported(2), what="unfrozen epoch 2")
    killed_worker = _kill_a_train_worker(fault_stack)
    return {"job": wait_job(api, job_id), "fetched": fetched, "killed_worker": killed_worker}


def test_s3_back_within_the_retries_during_fetch_lets_the_job_go_on(through_fetch_outage: dict[str, Any]) -> None:
    fetched = through_fetch_outage["fetched"]
    assert fetched.data is not None and fetched.data["objects"] == 18
    # The job went on from there: its later worker kill is row 1's business, its success this row's too.
    assert through_fetch_outage["job"]["status"] == "succeeded", through_fetch_outage["job"]["error"]


@pytest.mark.parametrize("restored", [True, False], ids=["restored", "stays_down"])
def test_s3_down_while_checkpointing_resumes_or_fails_naming_s3_never_keeps_a_partial_checkpoint(
    restored: bool, request: pytest.FixtureRequest, fault_stack: LocalStack, api: httpx.Client, store: JobStore
) -> None:
    if restored:
        job_id = submit(api, DATASET, **ONE_WORKER)
        wait_event(store, job_id, _epoch_reported(2), what="unfrozen epoch 2")
        stopped = _stop_s3(fault_stack)  # epoch 3 runs for a few seconds, then its checkpoint upload meets it
        try:
            wait_event(store, job_id, lambda e: e.kind == "worker_failed", timeout=300, what="the failed upload")
            fault_stack.start_s3()
            job = wait_job(api, job_id, timeout=600)
            ended_after = time.monotonic() - stopped
        finally:
            fault_stack.start_s3()
    else:
        kept_down = request.getfixturevalue("s3_kept_down")["training"]
        job, ended_after = kept_down["job"], kept_down["after"]
        job_id = job["id"]
    reported = [e["checkpoint_uri"] for e in job["metrics"] if e.get("checkpoint_uri")]
    reported += [e.data["uri"] for e in _events(store, job_id, "checkpoint") if e.data]
    if restored:
        assert job["status"] == "succeeded", job["error"]
        assert [(e["epoch"], e["stage"]) for e in job["metrics"]] == [(1, "frozen"), (2, "unfrozen"), (3, "unfrozen")]
        assert job["best"]["checkpoint_uri"] in reported
        location = job["best"]["checkpoint_uri"].removeprefix("s3://").split("/", 1)
        body = fault_stack.s3_client().get_object(Bucket=location[0], Key=location[1])["Body"].read()
        assert set(torch.load(io.BytesIO(body), weights_only=True)) >= {"model", "epoch"}  # whole, loadable
    else:
        assert job["status"] == "failed"
        assert (job["error"]["code"], job["error"]["phase"]) == ("storage_unavailable", "training")
        assert "S3" in job["error"]["message"]
        assert job["best"] is None
        assert ended_after < 300, f"gave up only after {ended_after:.0f}s"
    print(f"S3 down while checkpointing ({'restored' if restored else 'stays down'}): {job['status']} "
          f"{ended_after:.1f}s after S3 stopped")  # fmt: skip
