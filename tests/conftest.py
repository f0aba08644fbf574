"""Shared fixtures: the real local stack on loopback (S3-compatible server, Ray head, the API), started once.

Tests that only need S3 ask for `s3`; tests that need Ray ask for `ray_stack`; end-to-end tests that talk to
the API ask for `api_stack` (the stack with its API running) and `stack_api` (an HTTP client carrying the
stack's admin key), and tests that only read a finished, deployed job ask for `finished_job`. All of them
set this process's environment like the stack's, so `core.settings.get_settings()` here sees what the Ray
processes see. tests/utils/__init__.py says how a new end-to-end test reuses them.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.s3 import s3_client
from core.settings import Settings, get_settings
from infra.local.stack import LocalStack, StackConfig
from tests.utils.jobs import FinishedJob, events_of, store_of, wait_phase
from tests.utils.mlflow_server import MlflowServer
from tests.utils.stack import FRUGAL_RAY_ENV, HOLDS, keep_ray_logs, start_ray

# Every process of the suite shares two cores with the rest. PyTorch's OpenMP threads wait at the end of each
# parallel region by spinning (libgomp's default), which burns the core that a peer process needs, and a forward
# pass has hundreds of regions: waiting asleep cut a contended forward pass's CPU 2-12 fold
# (benchmarks/omp_wait.py). Set before any process of the suite imports torch; every stack's processes inherit it.
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

# The run's figures (count, time, 15 slowest) for build/ and the README: see tests/utils/summary.py.
pytest_plugins = ("tests.utils.summary",)

# The shared API reconciles every 2 s (the default is 10 s): a job whose driver died is marked failed within
# seconds, which the driver-death test waits for. Reconciling more often changes nothing else.
SHARED_STACK_ENV = {"TRAINYARD_RECONCILE_INTERVAL_S": "2"}
# A test that asks for any of these runs Ray: it is end-to-end, whatever its module says.
RAY_FIXTURES = frozenset({"ray_stack", "api_stack", "stack_api", "finished_job"})


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if RAY_FIXTURES & fixtures:
            item.add_marker(pytest.mark.e2e)
        if "mlflow_server" in fixtures:  # its own environment: minutes to make the first time (scripts/test)
            item.add_marker(pytest.mark.slow)
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: scripts/test runs two
        # The end-to-end modules first, so the long ones start at once and the many short ones fill the end of
        # the run on whichever worker is free (scripts/test keeps this order: --no-loadscope-reorder). Among them,
        # those that run a stack of their own come before those that use the worker's shared one, which is then
        # started only once they are done: an idle Ray cluster with Serve up costs a tenth of a core, on two
        # cores that every test shares. Stable, so each module stays in one piece.
        end_to_end = {_module(item.nodeid) for item in items if item.get_closest_marker("e2e")}
        shared = {_module(item.nodeid) for item in items if RAY_FIXTURES & set(getattr(item, "fixturenames", ()))}
        items.sort(key=lambda item: (_module(item.nodeid) not in end_to_end, _module(item.nodeid) in shared))


def _module(nodeid: str) -> str:
    return nodeid.split("::")[0]


@functools.cache
def _reads_the_finished_job(module: str) -> bool:
    """Whether a test or fixture of `module` takes `finished_job` as an argument."""
    return bool(re.search(r"[(,]\s*finished_job\s*:", (Path(__file__).parent.parent / module).read_text()))


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_ModulesStayTogether(), "trainyard-xdist-modules")


class _ModulesStayTogether:
    """pytest-xdist scheduling (the controller's): a module's tests run on one worker, so its module-scoped stack
    and jobs are made once; and every module that reads the session's `finished_job` on the same worker, so
    that job is trained once. Each worker has its own session, so its own shared stack."""

    @pytest.hookimpl
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        from xdist.scheduler import LoadScopeScheduling

        class ByModule(LoadScopeScheduling):  # type: ignore[misc]
            def _split_scope(self, nodeid: str) -> str:
                module = _module(nodeid)
                return "finished_job" if _reads_the_finished_job(module) else module

        return ByModule(config, log)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    home = tmp_path_factory.mktemp("trainyard-home")
    config = StackConfig.with_free_ports(home)
    config.env_overrides.update(FRUGAL_RAY_ENV | SHARED_STACK_ENV)
    # A module can hold its job at the start of a phase (a file named after it here) to act while the job waits
    # there; the folder is empty otherwise, and the drivers then never wait.
    (home / HOLDS).mkdir()
    config.env_overrides["TRAINYARD_FAULT_HOLDS_DIR"] = str(home / HOLDS)
    local = LocalStack(config)
    saved = dict(os.environ)
    local.export_env()
    local.start_s3()
    yield local
    keep_ray_logs(local)
    local.down()
    os.environ.clear()
    os.environ.update(saved)
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def ray_stack(stack: LocalStack) -> LocalStack:
    start_ray(stack)
    _SHARED_RAY.append(stack)
    return stack


# The session's shared stack once its Ray is started, and whether Ray and the API are stopped for now.
_SHARED_RAY: list[LocalStack] = []
_PARKED: set[int] = set()


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures are set up
def pytest_runtest_setup(item: pytest.Item) -> None:
    """The shared stack's Ray and API run only while this worker runs end-to-end tests.

    The end-to-end modules come first (`pytest_collection_modifyitems`), so once a worker reaches the others an
    idle cluster with Serve up would only take CPU from them until the session ends; its S3 server stays for the
    tests that ask for `s3`. Should an end-to-end test come later after all, Ray and the API start again.
    """
    end_to_end = item.get_closest_marker("e2e") is not None
    for shared in _SHARED_RAY:
        if not end_to_end and id(shared) not in _PARKED:
            keep_ray_logs(shared)
            shared.stop_api()
            shared.stop_ray()
            _PARKED.add(id(shared))
        elif end_to_end and id(shared) in _PARKED:
            _PARKED.discard(id(shared))
            start_ray(shared)
            if shared in _SHARED_APIS:
                shared.start_api()


@pytest.fixture(scope="session")
def api_stack(ray_stack: LocalStack) -> LocalStack:
    """The session's shared running stack: S3 server, Ray head (2 CPUs) and the API, all on loopback.

    Started once and shared by every end-to-end module that does not kill or reconfigure the stack's
    processes (those start their own: tests/utils/stack.py). A module may stop and start the API (a restart
    keeps the store) but must leave it running; jobs it submits must end (succeed, fail, or be cancelled)
    before its last test returns, so the next module finds the cluster free.
    """
    ray_stack.start_api()  # stopped with the rest of the stack at the end of the session
    _SHARED_APIS.append(ray_stack)
    return ray_stack


_SHARED_APIS: list[LocalStack] = []


@pytest.fixture(autouse=True, scope="module")
def _the_shared_api_outlives_each_module() -> Iterator[None]:
    """A module that stopped the shared API (its own `start_api`/`stop_api` pair, written before `api_stack`
    existed) leaves it running again for the next: `start_api` does nothing when it runs."""
    yield
    for shared in _SHARED_APIS:
        if id(shared) not in _PARKED:
            shared.start_api()


@pytest.fixture(scope="session")
def stack_api(api_stack: LocalStack) -> Iterator[httpx.Client]:
    """An HTTP client on the shared stack's API, carrying its admin key."""
    with api_stack.api_client(timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def finished_job(api_stack: LocalStack) -> FinishedJob:
    """One finished default job on the shared stack: the demo's (`infra/local/demo.py`), run by the demo's own
    code on its generated shapes. The default recipe (LR range test, a head-only epoch, unfrozen DDP on two
    Ray Train workers, evaluation) ending in a deployed model. Read it; never cancel it or delete its model.

    While it trains, the API is restarted once (stopped, and a new process started on the same store), as an
    upgrade would: the job must carry on untouched (tests/e2e/test_whole_loop.py holds it to that).
    """
    from infra.local import demo

    printed = io.StringIO()
    submitted: Future[str] = Future()
    store = store_of(api_stack.database_url)
    with ThreadPoolExecutor(1) as background, contextlib.redirect_stdout(printed):
        running = background.submit(
            demo.run, api_stack, demo.DEMO_JOB | {"name": "demo-shapes"}, on_submit=submitted.set_result
        )
        either: list[Future[Any]] = [submitted, running]
        wait(either, timeout=600, return_when=FIRST_COMPLETED)
        if not submitted.done():  # the demo ended (or hangs) before the API took the job: say why
            pytest.fail(f"the demo submitted no job: {running.exception(timeout=0) if running.done() else 'hung'}")
        job_id = submitted.result()
        during = wait_phase(store, job_id, ("training",))
        api_stack.stop_api()
        api_stack.start_api()
        with api_stack.api_client() as api:
            after_restart = api.get(f"/v1/jobs/{job_id}").json()
        job = running.result(timeout=1200)
    store.engine.dispose()
    assert job is not None, printed.getvalue()
    assert job["status"] == "succeeded", (job.get("error"), printed.getvalue())
    with api_stack.api_client() as api:
        events = events_of(api, job["id"])
    return FinishedJob(
        job=job, events=events, printed=printed.getvalue(), api_restarted={"during": during, "after": after_restart}
    )


@pytest.fixture
def settings(stack: LocalStack) -> Settings:
    return get_settings()


@pytest.fixture
def s3(stack: LocalStack) -> Any:
    return s3_client()


@pytest.fixture(scope="session")
def permissive_s3() -> Iterator[Any]:
    """A moto S3 server, for keys that real S3 accepts but the local stack's s3rver refuses.

    S3 keys are opaque strings, so real buckets can hold `a/../../b` or `a//b`; s3rver maps keys to files
    and rejects them. Tests of how Trainyard handles such hostile keys need a server that stores them as S3
    does: moto's, in memory, on loopback.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    from core.s3 import client_config
    from infra.local.stack import LOOPBACK, free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)
    server.start()
    yield boto3.client(
        "s3",
        endpoint_url=f"http://{LOOPBACK}:{port}",
        aws_access_key_id="moto",
        aws_secret_access_key="moto",
        region_name="us-east-1",
        config=client_config(compatible_server=True),
    )
    server.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real MLflow tracking server on loopback, shared by the session (tests tell their runs apart by job id).

    Started, not waited for: its first start takes tens of seconds, which a test overlaps with its own set-up
    before it calls `wait_ready()`.
    """
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"
