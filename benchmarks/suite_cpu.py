"""Where a command's CPU goes, by kind of process: Ray's daemons, Serve, jobs, the API, the tests themselves.

    .venv/bin/python -m benchmarks.suite_cpu -- scripts/test          # the whole suite
    .venv/bin/python -m benchmarks.suite_cpu -- scripts/test tests/e2e/test_restart.py

Runs the command and reads every process's CPU time once a second (psutil) while it runs, so it sees the
processes the command starts (Ray's actors and workers among them) and their names as Ray retitles them. A
process that lives less than a second is missed; a process already running when the command started counts
only what it spends after. On two cores the suite keeps both busy from start to end, so its wall time is its
CPU time halved: what this table shows is what a shorter suite has to cut.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psutil

RESULTS = Path(__file__).with_name("results")
TOP_TITLES = 25  # rows of the by-title table (the JSON has them all)
# First match wins: a process is put in the first kind whose pattern its command line matches.
KINDS: list[tuple[str, re.Pattern[str]]] = [
    ("serve", re.compile(r"Serve|ProxyActor|_AutoscalingCoordinator|serving\.restore")),
    ("ray train helpers", re.compile(r"TrainController|PlacementGroupCleaner|DatasetManager|SynchronizationActor")),
    ("ray train workers", re.compile(r"RayTrainWorker")),
    ("job drivers", re.compile(r"jobs\.driver|jobs\.batch\.driver")),
    ("ray job supervisors", re.compile(r"JobSupervisor")),
    (
        "ray daemons",
        re.compile(
            r"gcs_server|raylet|dashboard|DashboardAgent|RuntimeEnvAgent|log_monitor|autoscaler|monitor\.py"
            r"|ray start|_StatsActor|ActorLocationTracker|ray\.util\.client\.server|forkserver"
        ),
    ),
    ("other ray actors and tasks", re.compile(r"ray::|default_worker\.py")),
    ("api", re.compile(r"uvicorn")),
    ("s3 server", re.compile(r"s3rver|moto|/s3/serve\.js")),  # the stack's s3rver: infra/local/s3/serve.js
    ("browser", re.compile(r"chrom")),
    ("mlflow", re.compile(r"mlflow")),
    ("tests (pytest)", re.compile(r"pytest|execnet|exec\(eval\(sys\.stdin")),
    ("lint and types", re.compile(r"ruff|mypy")),
]


def kind_of(command_line: str) -> str:
    for kind, pattern in KINDS:
        if pattern.search(command_line):
            return kind
    return "other"


def title_of(command_line: str) -> str:
    """What a process is, within its kind: Ray's title without the method it runs (`ray::ServeController`), the
    module a Python runs (`-m jobs.driver`), or the program and its first argument by file name."""
    args = command_line.split()
    if not args:
        return "?"
    if args[0].startswith("ray::"):
        return args[0].split(".")[0]
    if "-m" in args[1:3] and args.index("-m") + 1 < len(args):
        return f"-m {args[args.index('-m') + 1]}"
    return " ".join(Path(arg).name for arg in args[:2])


@dataclass
class Process:
    command_line: str
    cpu_at_start: float
    cpu: float


@dataclass
class Sampler:
    """CPU seconds per process (pid and start time, so a reused pid is a new process) since sampling began."""

    processes: dict[tuple[int, float], Process] = field(default_factory=dict)
    first: bool = True

    def sample(self) -> None:
        for proc in psutil.process_iter(["cmdline", "cpu_times", "create_time"]):
            times, created = proc.info["cpu_times"], proc.info["create_time"]
            if times is None or created is None:
                continue  # gone between the listing and the read, or not ours to read
            cpu = times.user + times.system
            command_line = " ".join(proc.info["cmdline"] or [])
            key = (proc.pid, created)
            seen = self.processes.get(key)
            if seen is None:
                self.processes[key] = Process(command_line, cpu if self.first else 0.0, cpu)
                continue
            seen.cpu = cpu
            # Ray retitles a worker once it runs an actor or a task; an idle one is named by what it last ran.
            if command_line and not command_line.startswith("ray::IDLE"):
                seen.command_line = command_line
        self.first = False

    def by_title(self) -> dict[tuple[str, str], tuple[float, int]]:
        """(kind, title) -> (CPU seconds, processes)."""
        found: dict[tuple[str, str], tuple[float, int]] = {}
        for process in self.processes.values():
            spent = process.cpu - process.cpu_at_start
            if spent <= 0 or "benchmarks.suite_cpu" in process.command_line:
                continue
            key = (kind_of(process.command_line), title_of(process.command_line))
            seconds, processes = found.get(key, (0.0, 0))
            found[key] = (seconds + spent, processes + 1)
        return found


def measure(command: list[str], interval: float = 1.0) -> dict[str, object]:
    sampler = Sampler()
    sampler.sample()
    started = time.monotonic()
    child = subprocess.Popen(command)
    while child.poll() is None:
        time.sleep(interval)
        sampler.sample()
    wall = time.monotonic() - started
    titles = sorted(sampler.by_title().items(), key=lambda item: -item[1][0])
    seconds: dict[str, float] = defaultdict(float)
    count: Counter[str] = Counter()
    for (kind, _), (spent, processes) in titles:
        seconds[kind] += spent
        count[kind] += processes
    total = sum(seconds.values())
    return {
        "command": command,
        "exit_code": child.returncode,
        "wall_s": round(wall, 1),
        "cpus": os.cpu_count(),
        "cpu_s": round(total, 1),
        "kinds": [
            {"kind": kind, "cpu_s": round(spent, 1), "share": round(spent / total, 3), "processes": count[kind]}
            for kind, spent in sorted(seconds.items(), key=lambda item: -item[1])
        ],
        "titles": [
            {"kind": kind, "title": title, "cpu_s": round(spent, 1), "processes": processes}
            for (kind, title), (spent, processes) in titles
        ],
    }


def table(result: dict[str, object]) -> str:
    kinds = result["kinds"]
    command = result["command"]
    assert isinstance(kinds, list) and isinstance(command, list)
    lines = [
        f"{' '.join(command)}: exit {result['exit_code']}, {result['wall_s']} s wall, "
        f"{result['cpu_s']} CPU-s on {result['cpus']} cores",
        "",
        "| kind | CPU-min | share | processes |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {k['kind']} | {k['cpu_s'] / 60:.1f} | {k['share']:.0%} | {k['processes']} |" for k in kinds]
    titles = result["titles"]
    assert isinstance(titles, list)
    titles = titles[:TOP_TITLES]
    lines += ["", f"The {TOP_TITLES} costliest titles (a kind's processes grouped by what they run):", ""]
    lines += ["| kind | title | CPU-min | processes |", "|---|---|---:|---:|"]
    lines += [f"| {t['kind']} | `{t['title']}` | {t['cpu_s'] / 60:.1f} | {t['processes']} |" for t in titles]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=None, help="the JSON file (default: benchmarks/results/)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --, e.g. -- scripts/test")
    result = measure(command, args.interval)
    print(table(result))
    out = args.out or RESULTS / f"suite_cpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nJSON: {out}")
    sys.exit(0 if result["exit_code"] == 0 else 1)


if __name__ == "__main__":
    main()
