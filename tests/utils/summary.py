"""The suite's own figures: how many tests ran, how long the run took, its 15 slowest items and modules.

A pytest plugin (loaded by tests/conftest.py). With `--summary-dir DIR` every run writes DIR/test-summary.json
and DIR/test-summary.md; `scripts/test` passes `--summary-dir=build` and `--summary-run=whole|quick|selection`.
A whole or quick run that passes also rewrites its own line between the markers in README.md, so the figures
the README quotes are the last such run's, never typed by hand.

An item's time is its setup, call and teardown together: a module's shared job is paid in the setup of the
first test that asks for it, and that is where a slow module shows.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN = "<!-- test-figures: rewritten by scripts/test after a whole or quick run passes; do not edit -->"
END = "<!-- /test-figures -->"
RUN_LABELS = {"whole": "`scripts/test`", "quick": "`scripts/test --quick`"}
SLOWEST = 15


@dataclass
class Summary:
    run: str
    started_at: str
    wall_s: float
    outcomes: dict[str, int]
    cpus: int
    slowest: list[dict[str, Any]] = field(default_factory=list)
    # Each module's items added up: where a module's shared stack and jobs are paid, whichever test pays them.
    modules: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        bad = ("failed", "error")
        return self.outcomes.get("passed", 0) > 0 and not any(self.outcomes.get(k, 0) for k in bad)

    @property
    def tests(self) -> int:
        return sum(self.outcomes.values())


def minutes(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60:02d} s" if whole >= 60 else f"{seconds:.1f} s"


def figure_line(summary: Summary) -> str:
    """The README's line for one kind of run, e.g. "- `scripts/test`: 470 tests passed in 9 min 41 s ..."."""
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(summary.outcomes.items()) if kind != "passed" and n)
    extra = f" ({counts})" if counts else ""
    return (
        f"- {RUN_LABELS[summary.run]}: {summary.outcomes.get('passed', 0)} tests passed{extra} in "
        f"{minutes(summary.wall_s)} on {summary.cpus} cores ({summary.started_at[:10]})"
    )


# What figure_line writes, for a test that the README's block was written by it.
LINE = re.compile(
    r"^- `scripts/test( --quick)?`: \d+ tests passed( \([^)]*\))? in (\d+ min \d{2}|\d+\.\d) s on \d+ cores"
    r" \(\d{4}-\d{2}-\d{2}\)$"
)


def update_block(text: str, summary: Summary) -> str:
    """`text` (the README) with the line of `summary.run` replaced or added inside the figures block."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    lines = [line for line in text[start:end].strip().splitlines() if line.strip()]
    label = RUN_LABELS[summary.run]
    kept = [line for line in lines if not line.startswith(f"- {label}:")]
    ordered = sorted([*kept, figure_line(summary)], key=lambda line: "--quick" in line)
    return text[:start] + "\n" + "\n".join(ordered) + "\n" + text[end:]


def markdown(summary: Summary) -> str:
    rows = [f"| {minutes(s['seconds'])} | `{s['nodeid']}` |" for s in summary.slowest]
    module_rows = [f"| {minutes(m['seconds'])} | `{m['module']}` |" for m in summary.modules]
    return "\n".join(
        [
            f"# Test run ({summary.run}), {summary.started_at}",
            "",
            f"{summary.tests} tests: "
            + ", ".join(f"{n} {kind}" for kind, n in sorted(summary.outcomes.items()))
            + f"; {minutes(summary.wall_s)} on {summary.cpus} cores.",
            "",
            f"The {len(rows)} slowest items (setup + call + teardown):",
            "",
            "| time | item |",
            "|---|---|",
            *rows,
            "",
            f"The {len(module_rows)} slowest modules (their items added up; xdist runs two at once):",
            "",
            "| time | module |",
            "|---|---|",
            *module_rows,
            "",
        ]
    )


class SummaryPlugin:
    def __init__(self, directory: Path, run: str, readme: Path = README) -> None:
        self.directory, self.run, self.readme = directory, run, readme
        self.started = time.monotonic()
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.outcomes: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        nodeid = report.nodeid
        self.seconds[nodeid] += report.duration
        if report.when == "call" or report.outcome != "passed":
            outcome = "error" if report.when != "call" and report.failed else report.outcome
            if self.outcomes.get(nodeid) not in ("failed", "error"):
                self.outcomes[nodeid] = outcome

    def summary(self) -> Summary:
        slowest = sorted(self.seconds.items(), key=lambda item: -item[1])[:SLOWEST]
        per_module: defaultdict[str, float] = defaultdict(float)
        for nodeid, seconds in self.seconds.items():
            per_module[nodeid.split("::")[0]] += seconds
        modules = sorted(per_module.items(), key=lambda item: -item[1])[:SLOWEST]
        return Summary(
            run=self.run,
            started_at=self.started_at,
            wall_s=round(time.monotonic() - self.started, 1),
            outcomes=dict(Counter(self.outcomes.values())),
            cpus=os.cpu_count() or 1,
            slowest=[{"nodeid": nodeid, "seconds": round(seconds, 1)} for nodeid, seconds in slowest],
            modules=[{"module": module, "seconds": round(seconds, 1)} for module, seconds in modules],
        )

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        summary = self.summary()
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "test-summary.json").write_text(json.dumps(summary.__dict__, indent=2) + "\n")
        (self.directory / "test-summary.md").write_text(markdown(summary))
        terminalreporter.write_line(f"test figures: {self.directory / 'test-summary.md'}")
        if self.run in RUN_LABELS and summary.passed and BEGIN in (text := self.readme.read_text()):
            updated = update_block(text, summary)
            if updated != text:
                self.readme.write_text(updated)
                terminalreporter.write_line(f"README.md's test figures now: {figure_line(summary)}")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trainyard summary")
    group.addoption("--summary-dir", type=Path, help="write test-summary.json and .md here")
    group.addoption(
        "--summary-run",
        choices=["whole", "quick", "selection"],
        default="selection",
        help="which run this is: a passing whole or quick run rewrites its line of README.md's test figures",
    )
    group.addoption("--summary-readme", type=Path, default=README, help="the README whose test figures to rewrite")


def pytest_configure(config: pytest.Config) -> None:
    directory = config.getoption("--summary-dir")
    # Under pytest-xdist only the controller sees every report; its workers write nothing.
    if directory is not None and not hasattr(config, "workerinput"):
        plugin = SummaryPlugin(directory, config.getoption("--summary-run"), config.getoption("--summary-readme"))
        config.pluginmanager.register(plugin, "trainyard-summary")
