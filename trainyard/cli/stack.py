"""`trainyard up|down` and `trainyard stack up|down|status`: the single-machine stack.

An S3-compatible server, a Ray head and the API, all on loopback (`infra.local.stack`). Its state (ports, pids)
lives in <home>/stack.json, so `down` works from another shell and the SDK finds the running API.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from infra.local.config import RECORD_NAME, record_stack_home, recorded_stack_home, stack_home, user_config_dir
from trainyard.cli.exit_codes import ExitCode
from trainyard.cli.output import print_json

if TYPE_CHECKING:
    from infra.local.stack import LocalStack

app = typer.Typer(help="The single-machine stack: S3-compatible server, Ray head and the API on loopback.")

JsonFlag = Annotated[bool, typer.Option("--json", help="print the stack's state as JSON on stdout, nothing else")]
HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="the stack's folder (default: $TRAINYARD_HOME, else ./.trainyard if a stack is there, else the one the "
        "last `trainyard up` recorded)",
        show_default=False,
    ),
]
PurgeFlag = Annotated[bool, typer.Option("--purge", help="also delete every job, object, cache file and log")]
YesFlag = Annotated[bool, typer.Option("--yes", help="with --purge: do not ask before deleting")]


def _state_file(home: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((home / "stack.json").read_text()))
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _stack(command: str, home: Path | None, as_json: bool) -> Iterator[LocalStack]:
    """The stack in `home`, for one command: its failures as a message and exit code 4, and with `--json` its
    human output on stderr and one JSON document (the command, the home, the state file) on stdout."""
    from infra.local.stack import LocalStack

    folder = (home or stack_home()).resolve()
    try:
        with contextlib.redirect_stdout(sys.stderr if as_json else sys.stdout):
            yield LocalStack.load(folder)
    except typer.Exit:
        raise
    except (RuntimeError, TimeoutError, OSError) as e:
        typer.echo(f"error: the local stack could not {command}: {e}", err=True)
        raise typer.Exit(ExitCode.UNAVAILABLE) from None
    if as_json:
        print_json({"command": command, "home": str(folder), "state": _state_file(folder)})


@app.command()
def up(home: HomeOption = None, as_json: JsonFlag = False) -> None:
    """Start the stack (idempotent), print its URLs, and record its home for commands run from other folders."""
    with _stack("up", home, as_json) as stack:
        stack.up()
        record_stack_home(stack.config.home)
        print("Trainyard is running:\n" + stack.describe())


@app.command()
def down(home: HomeOption = None, purge: PurgeFlag = False, yes: YesFlag = False, as_json: JsonFlag = False) -> None:
    """Stop everything the stack started; with --purge, also delete its data (asks first)."""
    with _stack("down", home, as_json) as stack:
        stack.down()
        print("Trainyard stack stopped.")
        if purge:
            _purge(stack, ask=not yes)


def _purge(stack: LocalStack, ask: bool) -> None:
    what = stack.data_summary()
    if ask:
        if not sys.stdin.isatty():
            typer.echo(f"not purging {what}: pass --yes to delete without asking", err=True)
            raise typer.Exit(ExitCode.USAGE)
        if input(f"Delete everything under {what}? Type 'yes' to confirm: ").strip() != "yes":
            print("Nothing deleted.")
            return
    stack.purge()
    if recorded_stack_home() is None:  # it was the recorded one: nothing left to find
        with contextlib.suppress(OSError):
            (user_config_dir() / RECORD_NAME).unlink()
    print(f"Deleted {what}.")


@app.command()
def status(home: HomeOption = None, as_json: JsonFlag = False) -> None:
    """What is running, and where."""
    with _stack("status", home, as_json) as stack:
        running = {n: stack._alive(n) for n in ("s3", "api")} | {"ray": stack.ray_ready()}
        print(json.dumps(running))
        print(stack.describe())


def add_shortcuts(root: typer.Typer) -> None:
    """`trainyard up` and `trainyard down`, the same commands as under `trainyard stack`."""
    root.command("up", help="Start the local stack (= trainyard stack up).")(up)
    root.command("down", help="Stop the local stack (= trainyard stack down).")(down)
