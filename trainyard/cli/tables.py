"""Tables a person can act on: the ids in them are never cut, whatever the terminal's width.

Rich shrinks and cuts any column of a table wider than the terminal, an id's included. Here the id columns get
their full width first; the other columns share what is left, the widest giving way first and wrapping
inside their width. When even that does not fit, each row is printed as a block instead: its ids on one line,
then one line per other field. Every table has its `--json` twin (`print_json`) for scripts.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Column, Table

from trainyard.models import Job, Model
from trainyard.progress import describe_state

# A column that gives way keeps at least this many characters (or its header's length, if longer).
MIN_WIDTH = 6
_GAP = 2  # characters between two columns


@dataclass(frozen=True)
class Col:
    header: str
    is_id: bool = False


def _widths(columns: list[Col], rows: list[list[str]], total: int) -> list[int] | None:
    """Each column's width so that the table fits `total` characters with every id whole; None if impossible."""
    natural = [max([len(c.header), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    room = total - _GAP * (len(columns) - 1) - sum(w for w, c in zip(natural, columns, strict=True) if c.is_id)
    flexible = [i for i, c in enumerate(columns) if not c.is_id]
    widths = list(natural)
    floor = {i: min(natural[i], max(MIN_WIDTH, len(columns[i].header))) for i in flexible}
    while sum(widths[i] for i in flexible) > room:
        widest = max((i for i in flexible if widths[i] > floor[i]), key=lambda i: widths[i], default=None)
        if widest is None:
            return None
        widths[widest] -= 1
    return widths


def print_table(console: Console, columns: list[Col], rows: list[list[str]]) -> None:
    widths = _widths(columns, rows, console.width)
    if widths is None:
        _print_blocks(console, columns, rows)
        return
    table = Table(
        *(Column(c.header, width=w, overflow="fold", no_wrap=c.is_id) for c, w in zip(columns, widths, strict=True)),
        box=None,
        padding=(0, _GAP // 2),
        pad_edge=False,
        show_edge=False,
    )
    for row in rows:
        table.add_row(*row)
    console.print(table, markup=False, highlight=False)


def _print_blocks(console: Console, columns: list[Col], rows: list[list[str]]) -> None:
    for row in rows:
        ids = "  ".join(v for c, v in zip(columns, row, strict=True) if c.is_id and v)
        console.print(ids, markup=False, highlight=False, soft_wrap=True)  # soft_wrap: the terminal wraps, never cuts
        for column, value in zip(columns, row, strict=True):
            if not column.is_id and value:
                console.print(f"  {column.header}: {value}", markup=False, highlight=False, soft_wrap=True)


def print_jobs(console: Console, jobs: list[Job]) -> None:
    """`trainyard list`: each job's id, name, state, progress, creation time and deployed model."""
    rows = []
    for job in jobs:
        created = job.created_at.strftime("%Y-%m-%d %H:%M")
        state = describe_state(job) if job.status != "failed" else f"failed in {job.phase or '?'}"
        rows.append([job.id, job.name or "", state, f"{job.progress:.0%}", created, job.model.id if job.model else ""])
    columns = [Col("job", is_id=True), Col("name"), Col("status"), Col("progress"), Col("created")]
    print_table(console, [*columns, Col("model", is_id=True)], rows)


def print_models(console: Console, models: list[Model]) -> None:
    """`trainyard models`: each version's id, name@version, aliases, arch, accuracy, classes and availability."""
    rows = []
    for model in models:
        accuracy = (model.metrics or {}).get("accuracy")
        version = f"{model.name}@{model.version}" if model.name and model.version is not None else ""
        rows.append(
            [
                model.id,
                version,
                ", ".join(model.aliases),
                model.arch,
                f"{accuracy:.1%}" if isinstance(accuracy, float) else "",
                ", ".join(model.classes),
                "yes" if model.available else f"no: {model.unavailable_reason}",
            ]
        )
    columns = [Col("model", is_id=True), Col("version"), Col("aliases"), Col("arch"), Col("accuracy")]
    print_table(console, [*columns, Col("classes"), Col("available")], rows)
