"""`trainyard export MODEL`: the model as a file that runs without Trainyard, its preprocessing JSON beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trainyard.cli.output import State, print_json
from trainyard.models import ExportFormat


def export_command(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(metavar="MODEL", help="a model id, name, name@alias or name@version")],
    format: Annotated[ExportFormat, typer.Option("--format", "-f", help="onnx, torchscript or state_dict")] = "onnx",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", dir_okay=False, help="the file to write (default: pets-v3.onnx …)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document on stdout, nothing else")] = False,
) -> None:
    """Download a model as a file that runs without Trainyard, with its preprocessing JSON beside it."""
    state: State = ctx.ensure_object(State)
    state.json = as_json
    exported = state.client().export(model_id, output, format=format)
    if state.json:
        print_json(exported)
        return
    state.say(f"wrote {exported.path} ({exported.path.stat().st_size:,} bytes)")
    state.say(f"wrote {exported.preprocessing_path}: image size, normalisation and classes it expects")
