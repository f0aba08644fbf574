"""Load on the API: concurrent clients submitting, polling and listing jobs, over HTTP on loopback.

    .venv/bin/python -m benchmarks.api_load                       # starts its own API, 50 clients, 60 s
    .venv/bin/python -m benchmarks.api_load --apis 2              # two API processes on one store
    .venv/bin/python -m benchmarks.api_load --url http://127.0.0.1:8000 --clients 50 --seconds 60

Without `--url` it starts the API in a second process (uvicorn, a SQLite store in a temporary folder) with a
launcher that accepts every job and never runs it, as a Ray cluster with no free resources would: the
numbers are the API's and its store's, not Ray's. `--apis N` starts N such processes on the one store, as the
chart's API replicas share one database, and spreads the clients over them as a load balancer would. With
`--url` it loads that API (e.g. the local stack's, whose Ray head queues the jobs).
`Authorization: Bearer $TRAINYARD_API_KEY` is sent when the key is set.

Each client loops until the time is up: submit a job, then poll its status `--polls` times and list the
newest jobs once, pausing about `--think` seconds between requests (the SDK's `wait` polls once a second). Each
pause is drawn from think x [1 - jitter, 1 + jitter] (default ±50%, the same mean rate): with the same pause
for all, clients answered in the same burst come back in the same burst and stay in lockstep for the whole run
(40 requests within 100 ms), which real clients on other machines do not; `--jitter 0` measures that. Prints
requests/s, p50/p99/max per route and the errors; writes benchmarks/results/api_load-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from pydantic import BaseModel

from trainyard.config import ClientConfig

RESULTS = Path(__file__).parent / "results"
ROUTES = ("POST /v1/jobs", "GET /v1/jobs/{id}", "GET /v1/jobs")


class RouteStats(BaseModel):
    requests: int
    errors: int
    per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float


class LoadResult(BaseModel):
    url: str
    clients: int
    seconds: float
    think_s: float
    jitter: float
    requests: int
    errors: int
    per_second: float
    routes: dict[str, RouteStats]
    error_samples: list[str]


class _Recorder:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.samples: list[str] = []

    async def call(self, client: aiohttp.ClientSession, route: str, method: str, path: str, **kw: Any) -> Any:
        began = time.perf_counter()
        try:
            async with client.request(method, path, **kw) as response:
                text = await response.text()
            ok = response.status < 400
            detail = f"{response.status} {text[:200]}"
        except (aiohttp.ClientError, TimeoutError) as e:
            ok, text, detail = False, "", f"{type(e).__name__}: {e}"
        self.latencies[route].append(time.perf_counter() - began)
        if not ok:
            self.errors[route] += 1
            if len(self.samples) < 10:
                self.samples.append(f"{route}: {detail}")
            return None
        return json.loads(text)


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))] if sorted_values else 0.0


async def _client(
    n: int, http: aiohttp.ClientSession, rec: _Recorder, deadline: float, polls: int, think: float, jitter: float
) -> None:
    # Spread the first requests over one think period, as real clients would not start in lockstep.
    await asyncio.sleep(think * n / 50)
    while time.monotonic() < deadline:
        body = {"dataset_uri": "s3://load-test/pets", "name": f"load-{n}", "epochs": 1}
        job = await rec.call(http, ROUTES[0], "POST", "/v1/jobs", json=body)
        for _ in range(polls):
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(think * random.uniform(1 - jitter, 1 + jitter))
            if job is not None:
                await rec.call(http, ROUTES[1], "GET", f"/v1/jobs/{job['id']}")
        await asyncio.sleep(think * random.uniform(1 - jitter, 1 + jitter))
        await rec.call(http, ROUTES[2], "GET", "/v1/jobs", params={"limit": 20})


async def load(urls: list[str], clients: int, seconds: float, polls: int, think: float, jitter: float) -> LoadResult:
    """Client n loads urls[n % len(urls)]: several API processes share the clients as a load balancer would."""
    headers = {}
    api_key = ClientConfig.resolve(url=urls[0]).api_key  # TRAINYARD_API_KEY, or the client config file
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key.get_secret_value()}"
    rec = _Recorder()
    # aiohttp, not httpx, on the clients' side: the load generator shares this machine's two cores with the API,
    # and 50 httpx clients took half a core (more than the API itself), their own event loop's delays showing
    # up as the API's latency. (aiohttp comes with ray[serve].)
    timeout = aiohttp.ClientTimeout(total=30)
    async with contextlib.AsyncExitStack() as stack:
        sessions = [
            await stack.enter_async_context(
                aiohttp.ClientSession(
                    url, headers=headers, connector=aiohttp.TCPConnector(limit=clients), timeout=timeout
                )
            )
            for url in urls
        ]
        began = time.monotonic()
        deadline = began + seconds
        await asyncio.gather(
            *(_client(n, sessions[n % len(urls)], rec, deadline, polls, think, jitter) for n in range(clients))
        )
        elapsed = time.monotonic() - began
    routes = {}
    for route in ROUTES:
        values = sorted(rec.latencies[route])
        routes[route] = RouteStats(
            requests=len(values),
            errors=rec.errors[route],
            per_second=round(len(values) / elapsed, 1),
            p50_ms=round(_percentile(values, 0.50) * 1000, 1),
            p99_ms=round(_percentile(values, 0.99) * 1000, 1),
            max_ms=round((values[-1] if values else 0.0) * 1000, 1),
        )
    total = sum(r.requests for r in routes.values())
    return LoadResult(
        url=" ".join(urls),
        clients=clients,
        seconds=round(elapsed, 1),
        think_s=think,
        jitter=jitter,
        requests=total,
        errors=sum(r.errors for r in routes.values()),
        per_second=round(total / elapsed, 1),
        routes=routes,
        error_samples=rec.samples,
    )


# --- the API under test, when the benchmark starts its own ----------------------------------------------


class HoldingLauncher:
    """Accepts every job and never runs it: the jobs stay queued, as on a cluster with no free resources.

    It answers as Ray would for the whole cluster, whichever API process asks: a launched job is pending, and
    a job never submitted is unknown. ("pending" for every queued job made each reconcile pass take them all
    for jobs launched by an older release, and write a launch claim for each at once.)
    """

    def __init__(self, store: Any) -> None:
        self.store = store

    def submit(self, job_id: str) -> None:
        pass

    def stop(self, job_id: str) -> None:
        pass

    def state(self, job_id: str) -> Any:
        from service.launcher import RayJobState, job_id_of

        job = self.store.get_job(job_id_of(job_id))
        return RayJobState.pending if job is not None and job.launched_at is not None else RayJobState.missing

    def ping(self) -> bool:
        return True


def _serve_api(home: Path, port: int) -> None:
    import uvicorn

    from core.settings import Settings
    from core.store import JobStore
    from service.main import create_app

    settings = Settings(home=home, database_url=f"sqlite:///{home / 'trainyard.db'}")
    launcher = HoldingLauncher(JobStore.from_url(settings.resolved_database_url))
    app = create_app(settings, launcher=launcher)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, timeout_keep_alive=75)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_apis(home: Path, count: int) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    """`count` API processes on one fresh store, migrated as the stack does (as the chart's replicas share one
    database); its admin key goes to the clients (TRAINYARD_API_KEY)."""
    from core.migrate import migrate
    from core.store import JobStore
    from core.tenancy import Tenancy

    database_url = f"sqlite:///{home / 'trainyard.db'}"
    migrate(database_url)
    store = JobStore.from_url(database_url)
    _, os.environ["TRAINYARD_API_KEY"] = Tenancy(store.engine).create_key("admin", admin=True)
    store.engine.dispose()
    processes, urls = [], []
    for _ in range(count):
        port = _free_port()
        code = f"from benchmarks.api_load import _serve_api; from pathlib import Path; _serve_api(Path({str(home)!r}), {port})"  # noqa: E501
        env = {**os.environ, "TRAINYARD_HOME": str(home)}
        processes.append(subprocess.Popen([sys.executable, "-c", code], env=env))
        urls.append(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    for process, url in zip(processes, urls, strict=True):
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                for p in processes:
                    p.kill()
                raise RuntimeError(f"the API at {url} did not answer /healthz within 60 s; see its output above")
            time.sleep(0.1)
    return processes, urls


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _print(result: LoadResult) -> None:
    print(
        f"{result.clients} clients, {result.seconds} s, think {result.think_s} s ± {result.jitter:.0%}: "
        f"{result.requests} requests, {result.per_second} req/s, {result.errors} errors"
    )
    print(f"{'route':<20}{'requests':>9}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}")
    for route, s in result.routes.items():
        print(f"{route:<20}{s.requests:>9}{s.per_second:>8}{s.p50_ms:>9}{s.p99_ms:>9}{s.max_ms:>9}{s.errors:>8}")
    for sample in result.error_samples:
        print(f"  error: {sample}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an API to load; default: start one with a launcher that never runs jobs")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--polls", type=int, default=5, help="status reads per submitted job")
    parser.add_argument("--think", type=float, default=1.0, help="seconds each client waits between requests")
    parser.add_argument("--jitter", type=float, default=0.5, help="each pause is think x [1-jitter, 1+jitter]")
    parser.add_argument("--apis", type=int, default=1, help="API processes on the one store (without --url)")
    parser.add_argument("--out", type=Path, help="where to write the JSON; default benchmarks/results/")
    args = parser.parse_args()

    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="trainyard-load-") as home:
        if args.url is None:
            processes, urls = _start_apis(Path(home), args.apis)
        else:
            urls = [args.url]
        try:
            result = asyncio.run(load(urls, args.clients, args.seconds, args.polls, args.think, args.jitter))
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=30)
    _print(result)
    out = args.out or RESULTS / f"api_load-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(result.model_dump_json(indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
