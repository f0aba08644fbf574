"""Real local stacks for the end-to-end tests: the session's shared one (tests/conftest.py) and a module's own.

A module that kills or reconfigures the stack's processes (the S3 server, Ray, the API) runs its own stack,
from `own_stack`, on free ports and a home of its own; every other end-to-end module shares the session's.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infra.local.stack import LocalStack, StackConfig

# The suite runs a dozen Ray clusters on two cores, and their idle polling is CPU that every test waits on
# (benchmarks/README.md, "Where the suite's time goes"). Slower polls, for what no test reads: the dashboard
# agent's node statistics (every 5 s by default) and Serve's controller loop (every 0.1 s: a deployment or a
# replica's replacement is noticed up to 0.4 s later).
FRUGAL_RAY_ENV = {"REPORTER_UPDATE_INTERVAL_MS": "60000", "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5"}
# The log monitor tails every worker's log file ten times a second, to copy the lines to the driver's output;
# the tests read what jobs record, and the log files themselves, never a driver's copy.
FRUGAL_RAY_ARGS = ["--include-log-monitor=False"]


def start_ray(stack: LocalStack, extra_args: list[str] | None = None, **kwargs: Any) -> None:
    """`stack.start_ray` without the log monitor, tried twice: on a machine busy with other runs a raylet can
    miss Ray's fixed start-up deadline, and what the failed start left behind is cleared first."""
    args = [*FRUGAL_RAY_ARGS, *(extra_args or [])]
    try:
        stack.start_ray(extra_args=args, **kwargs)
    except RuntimeError:
        stack.stop_ray()
        stack.start_ray(extra_args=args, **kwargs)


# A stack's folder of phase holds (Settings.fault_holds_dir), in its home: a file named after a phase holds drivers
# at that phase's start; an empty folder holds nothing.
HOLDS = "fault-holds"

# What a failed end-to-end run needs to be read afterwards: each job's driver log and Serve's logs. Ray keeps them
# in its temp folder, outside the stack's home (unix socket paths must stay short), and `down` deletes that.
KEPT_RAY_LOGS = ("job-driver-*.log", "serve")


def driver_log(stack: LocalStack, job_id: str, lines: int = 40) -> str:
    """The last lines of a job's driver log, for an assertion message (empty while Ray has none)."""
    logs = stack.config.ray_temp_dir / "session_latest" / "logs"
    for folder in (logs, stack.config.home / "logs" / "ray"):
        path = folder / f"job-driver-{job_id}.log"
        if path.exists():
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def keep_ray_logs(stack: LocalStack) -> None:
    """Copy the drivers' and Serve's logs into the stack's home (pytest keeps its temp folders for three runs)."""
    logs = stack.config.ray_temp_dir / "session_latest" / "logs"
    kept = stack.config.home / "logs" / "ray"
    for pattern in KEPT_RAY_LOGS:
        for source in logs.glob(pattern):
            target = kept / source.name
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                kept.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)


@contextmanager
def own_stack(
    home: Path, *, num_cpus: int = 2, env: dict[str, str] | None = None, ray: bool = True, api: bool = True
) -> Iterator[LocalStack]:
    """A stack of the module's own (S3 server, then Ray and the API unless told not to); down afterwards.

    `env` is set for every process of the stack (TRAINYARD_* settings, credentials), on top of the defaults.
    """
    config = StackConfig.with_free_ports(home, num_cpus=num_cpus)
    config.env_overrides.update(FRUGAL_RAY_ENV | (env or {}))
    stack = LocalStack(config)
    try:
        stack.start_s3()
        if ray:
            start_ray(stack)
        if ray and api:
            stack.start_api()
        yield stack
    finally:
        keep_ray_logs(stack)
        stack.down()
