"""`trainyard stack up|down|status` (and the shortcuts `trainyard up|down`): the single-machine stack.

Each command hands its arguments, unknown ones included (`down --purge`, `--home DIR`), to
`infra.local.stack.main`, so this CLI never falls behind the stack module's own options.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from trainyard.cli.exit_codes import ExitCode
from trainyard.cli.output import State, print_json
from trainyard.config import stack_home

app = typer.Typer(help="The single-machine stack: S3-compatible server, Ray head and the API on loopback.")

_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}
_FORWARDED = "Other options (--home DIR, down --purge …) go to trainyard-stack as they are."
JsonFlag = Annotated[bool, typer.Option("--json", help="print the stack's state as JSON on stdout, nothing else")]


def _home(args: list[str]) -> Path:
    for i, arg in enumerate(args):
        if arg == "--home" and i + 1 < len(args):
            return Path(args[i + 1])
        if arg.startswith("--home="):
            return Path(arg.split("=", 1)[1])
    return stack_home()


def _state_file(home: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((home / "stack.json").read_text()))
    except (OSError, ValueError):
        return None


def run(ctx: typer.Context, command: str, as_json: bool) -> None:
    from infra.local.stack import main

    state: State = ctx.ensure_object(State)
    state.json = as_json
    args = [command, *ctx.args]
    # Under --json the module's human output goes to stderr, so stdout holds only the JSON document.
    target = sys.stderr if as_json else sys.stdout
    try:
        with contextlib.redirect_stdout(target):
            main(args)
    except SystemExit as e:  # the module's own verdict (argparse: 2), already explained on stderr
        if e.code not in (0, None):
            raise typer.Exit(e.code if isinstance(e.code, int) else ExitCode.USAGE) from None
    except (RuntimeError, TimeoutError, OSError) as e:
        typer.echo(f"error: the local stack could not {command}: {e}", err=True)
        raise typer.Exit(ExitCode.UNAVAILABLE) from None
    if as_json:
        print_json({"command": command, "home": str(_home(ctx.args)), "state": _state_file(_home(ctx.args))})


@app.command(context_settings=_PASS_THROUGH)
def up(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Start the stack (idempotent) and print its URLs. Other options (--home DIR …) go to trainyard-stack."""
    run(ctx, "up", as_json)


@app.command(context_settings=_PASS_THROUGH)
def down(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Stop everything the stack started. Other options (--home DIR, --purge …) go to trainyard-stack."""
    run(ctx, "down", as_json)


@app.command(context_settings=_PASS_THROUGH)
def status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """What is running, and where."""
    run(ctx, "status", as_json)


def add_shortcuts(root: typer.Typer) -> None:
    """`trainyard up` and `trainyard down`, the same commands as under `trainyard stack`."""
    root.command(
        "up", context_settings=_PASS_THROUGH, help=f"Start the local stack (= trainyard stack up). {_FORWARDED}"
    )(up)
    root.command(
        "down", context_settings=_PASS_THROUGH, help=f"Stop the local stack (= trainyard stack down). {_FORWARDED}"
    )(down)
