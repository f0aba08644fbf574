"""One key's burst against another key's latency: does the per-key rate limit keep a flood from slowing others?

    .venv/bin/python -m benchmarks.rate_limit                      # 10 rounds of a 500-request burst, 64 at once
    .venv/bin/python -m benchmarks.rate_limit --burst 500 --concurrency 64 --rounds 10

Starts the API in its own process (as `api_load.py` does: SQLite in a temporary folder, a launcher that holds
every job), with two tenant keys. Key B (its tenant unlimited, so its probing is never refused) reads its own
job's status in a steady loop from a process of its own, one request every `--pace` seconds, timing each
answer. Each round: a quiet window of B alone, then key A sends `--burst` status reads as fast as
`--concurrency` connections allow, from a third process. Rounds alternate between A under its tenant's default
limit (50/s, burst 100) and A unlimited (the tenant's limit set to 0), in the same API process, so the two are
compared in the same run. Prints A's answers (200s, 429s and whether each
429 carried a whole-second Retry-After) and B's p50/p99 quiet and during the bursts; writes
benchmarks/results/rate_limit-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from collections import Counter
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
from pydantic import BaseModel

from benchmarks.api_load import RESULTS, _percentile, _start_apis
from core.spec import JobParams
from core.store import JobStore
from core.tenancy import Tenancy

# Time between rounds: A's bucket (100 at 50/s) refills in 2 s.
REFILL_S = 3.0


class Phase(BaseModel):
    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float


class BurstResult(BaseModel):
    limited: bool
    requests: int
    seconds: float
    statuses: dict[str, int]
    retry_after_on_every_429: bool


class RateLimitResult(BaseModel):
    burst: int
    concurrency: int
    rounds: int
    pace_s: float
    bursts: list[BurstResult]
    quiet: Phase
    during_limited: Phase
    during_unlimited: Phase
    limited_p99_vs_quiet: float


def _phase(latencies: list[float]) -> Phase:
    values = sorted(latencies)
    ms = [round(_percentile(values, q) * 1000, 1) for q in (0.5, 0.99)]
    return Phase(samples=len(values), p50_ms=ms[0], p99_ms=ms[1], max_ms=round((values[-1] if values else 0) * 1000, 1))


def _probe(url: str, key: str, job_id: str, pace: float, stop_at: float, out: Connection) -> None:
    """Key B: one status read every `pace` seconds; sends back (sent at, seconds, status) for each."""
    samples: list[tuple[float, float, int]] = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        while time.monotonic() < stop_at:
            began = time.monotonic()
            status = http.get(f"/v1/jobs/{job_id}").status_code
            samples.append((began, time.monotonic() - began, status))
            time.sleep(max(0.0, pace - (time.monotonic() - began)))
    out.send(samples)


async def _burst(url: str, key: str, job_id: str, count: int, concurrency: int) -> list[tuple[int, str | None]]:
    """Key A's burst over raw keep-alive connections: a load generator light enough to leave the API its core.

    An HTTP client library costs about a millisecond of CPU per request; on two cores the burster then competes
    with the API and with B's prober, and B's latency would measure the load generator. Here each request is
    bytes written once and an answer read by its Content-Length.
    """
    host, port = url.removeprefix("http://").split(":")
    request = (f"GET /v1/jobs/{job_id} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\r\n").encode()
    answers: list[tuple[int, str | None]] = []

    async def connection(share: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        for _ in range(share):
            writer.write(request)
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
            await reader.readexactly(int(fields.get("content-length", "0")))
            answers.append((int(head[0].split()[1]), fields.get("retry-after")))
        writer.close()
        await writer.wait_closed()

    shares = [count // concurrency + (n < count % concurrency) for n in range(concurrency)]
    await asyncio.gather(*(connection(share) for share in shares if share))
    return answers


def _burst_process(url: str, key: str, job_id: str, count: int, concurrency: int, out: Connection) -> None:
    began = time.monotonic()
    answers = asyncio.run(_burst(url, key, job_id, count, concurrency))
    out.send((began, time.monotonic(), answers))


def _run_burst(
    url: str, key: str, job_id: str, count: int, concurrency: int
) -> tuple[float, float, list[tuple[int, str | None]]]:
    receive, send = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.Process(target=_burst_process, args=(url, key, job_id, count, concurrency, send))
    process.start()
    result: tuple[float, float, list[tuple[int, str | None]]] = receive.recv()
    process.join()
    return result


def run(url: str, database_url: str, burst: int, concurrency: int, rounds: int, pace: float) -> RateLimitResult:
    store = JobStore.from_url(database_url)
    tenancy = Tenancy(store.engine)
    _, key_a = tenancy.create_key("team-a")
    _, key_b = tenancy.create_key("team-b")
    # B probes faster than the default limit lets a key send (one read every 10 ms): its tenant is unlimited, so
    # what B measures is the API's latency, never B's own limit.
    tenancy.update_tenant("team-b", rate_limit_per_s=0)
    # Each tenant's own job to read, made in the store: the benchmark is about reads.
    jobs = {}
    for tenant in ("team-a", "team-b"):
        job, _ = store.create_job(JobParams(dataset_uri="s3://bench/none"), tenant=tenant)
        jobs[tenant] = job.id

    round_s = REFILL_S * 2 + 3.0
    stop_at = time.monotonic() + rounds * round_s + 5
    receive, send = multiprocessing.Pipe(duplex=False)
    prober = multiprocessing.Process(target=_probe, args=(url, key_b, jobs["team-b"], pace, stop_at, send))
    prober.start()
    windows: list[tuple[float, float, bool]] = []
    bursts: list[BurstResult] = []
    quiet_windows: list[tuple[float, float]] = []
    time.sleep(1.0)  # the prober's first requests (its connection) are not part of any window
    for n in range(rounds * 2):
        limited = n % 2 == 0
        tenancy.update_tenant("team-a", rate_limit_per_s=None if limited else 0)
        httpx.get(f"{url}/v1/me", headers={"Authorization": f"Bearer {key_a}"})  # A's next request learns it
        quiet_began = time.monotonic()
        time.sleep(REFILL_S)
        quiet_windows.append((quiet_began, time.monotonic()))
        began, ended, answers = _run_burst(url, key_a, jobs["team-a"], burst, concurrency)
        windows.append((began, ended, limited))
        statuses = Counter(str(status) for status, _ in answers)
        retry_after_ok = all(ra is not None and ra.isdigit() and int(ra) >= 1 for s, ra in answers if s == 429)
        bursts.append(
            BurstResult(
                limited=limited,
                requests=len(answers),
                seconds=round(ended - began, 2),
                statuses=dict(statuses),
                retry_after_on_every_429=retry_after_ok,
            )
        )
        time.sleep(0.5)
    samples: list[tuple[float, float, int]] = receive.recv()
    prober.join()
    store.engine.dispose()
    assert all(status == 200 for _, _, status in samples), "key B was refused: the benchmark is broken"

    def within(spans: list[tuple[float, float]]) -> list[float]:
        return [seconds for sent, seconds, _ in samples if any(a <= sent <= b for a, b in spans)]

    quiet = _phase(within(quiet_windows))
    during_limited = _phase(within([(a, b) for a, b, lim in windows if lim]))
    return RateLimitResult(
        burst=burst,
        concurrency=concurrency,
        rounds=rounds,
        pace_s=pace,
        bursts=bursts,
        quiet=quiet,
        during_limited=during_limited,
        during_unlimited=_phase(within([(a, b) for a, b, lim in windows if not lim])),
        limited_p99_vs_quiet=round(during_limited.p99_ms / max(quiet.p99_ms, 0.001), 2),
    )


def _print(result: RateLimitResult) -> None:
    print(
        f"key A: {result.burst} status reads per burst, {result.concurrency} at once, {result.rounds} rounds each way"
    )
    print(f"{'A limited':<10}{'seconds':>9}{'200':>6}{'429':>6}  Retry-After on every 429")
    for b in result.bursts:
        ok, refused = b.statuses.get("200", 0), b.statuses.get("429", 0)
        print(f"{'yes' if b.limited else 'no':<10}{b.seconds:>9}{ok:>6}{refused:>6}  {b.retry_after_on_every_429}")
    print(f"\nkey B, one status read every {result.pace_s * 1000:.0f} ms:")
    print(f"{'window':<26}{'samples':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, phase in (
        ("quiet", result.quiet),
        ("during bursts, A limited", result.during_limited),
        ("during bursts, A unlimited", result.during_unlimited),
    ):
        print(f"{name:<26}{phase.samples:>8}{phase.p50_ms:>9}{phase.p99_ms:>9}{phase.max_ms:>9}")
    print(f"\nB's p99 during A's limited bursts / quiet: {result.limited_p99_vs_quiet}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=500, help="requests in each of key A's bursts")
    parser.add_argument("--concurrency", type=int, default=64, help="key A's connections")
    parser.add_argument("--rounds", type=int, default=10, help="bursts with A limited (and as many unlimited)")
    parser.add_argument("--pace", type=float, default=0.01, help="seconds between key B's requests")
    parser.add_argument("--out", type=Path, help="where to write the JSON; default benchmarks/results/")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trainyard-rate-") as home:
        processes, urls = _start_apis(Path(home), 1)
        try:
            result = run(
                urls[0],
                f"sqlite:///{Path(home) / 'trainyard.db'}",
                args.burst,
                args.concurrency,
                args.rounds,
                args.pace,
            )
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=30)
    _print(result)
    out = args.out or RESULTS / f"rate_limit-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(result.model_dump_json(indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
