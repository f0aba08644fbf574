"""Showing a job while it runs: a Rich live display on a terminal, one plain line per change elsewhere.

Both take the job as the API reports it (`Job`) after each poll. Epoch x/y counts head-only and unfrozen
epochs together, as the pipeline runs them; the ETA is Rich's, from the rate `progress` has been moving at.
"""

from __future__ import annotations

from typing import Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from trainyard.models import Job

_METRIC_ORDER = ("train_loss", "valid_loss", "accuracy")


class WaitDisplay(Protocol):
    def update(self, job: Job) -> None: ...
    def __enter__(self) -> WaitDisplay: ...
    def __exit__(self, *exc: object) -> None: ...


def describe_epoch(job: Job) -> str:
    total = job.total_epochs
    return f"epoch {len(job.metrics)}/{total}" if total else ""


def describe_metrics(job: Job) -> str:
    if not job.metrics:
        return ""
    last = job.metrics[-1]
    parts = [f"{k} {last[k]:.4g}" for k in _METRIC_ORDER if isinstance(last.get(k), int | float)]
    return ", ".join(parts)


def describe_state(job: Job) -> str:
    """`running training`, `failed in validating: …`, `succeeded`: the one-word status plus what matters."""
    if job.status == "failed" and job.error:
        where = f" in {job.error.phase}" if job.error.phase else ""
        return f"failed{where}: {job.error.message}"
    if job.status == "running" and job.phase:
        return f"running {job.phase}"
    return job.status


class NullDisplay:
    def update(self, job: Job) -> None:
        pass

    def __enter__(self) -> NullDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class PlainDisplay:
    """One line whenever the status, phase or epoch changes; made for logs and pipes."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._last: tuple[str, str | None, int] | None = None

    def update(self, job: Job) -> None:
        key = (job.status, job.phase, len(job.metrics))
        if key == self._last:
            return
        self._last = key
        fields = [f"job {job.id}", describe_state(job), f"{job.progress:.0%}"]
        if job.metrics:
            fields += [describe_epoch(job), describe_metrics(job)]
        # markup/highlight off: a message from the API is shown as it is, never interpreted.
        self.console.print("  ".join(f for f in fields if f), markup=False, highlight=False, soft_wrap=True)

    def __enter__(self) -> PlainDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class LiveDisplay:
    """Phase, epoch x/y, a progress bar with ETA and the last epoch's metrics, redrawn in place."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self._task = self._progress.add_task("queued", total=1.0)
        self._metrics = Text()
        self._live = Live(Group(self._progress, self._metrics), console=console, refresh_per_second=4)

    def update(self, job: Job) -> None:
        label = " · ".join(p for p in (describe_state(job), describe_epoch(job)) if p)
        self._progress.update(self._task, completed=job.progress, description=label)
        self._metrics.plain = describe_metrics(job)

    def __enter__(self) -> LiveDisplay:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()


def make_display(console: Console | None = None) -> WaitDisplay:
    console = console or Console()
    return LiveDisplay(console) if console.is_terminal else PlainDisplay(console)
