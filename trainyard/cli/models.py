"""`trainyard predict` and `trainyard models`: answers from deployed models, and the list of them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from trainyard.cli import batch
from trainyard.cli.exit_codes import ExitCode
from trainyard.cli.output import JsonFlag, State, print_json, state_of
from trainyard.cli.tables import print_models


def predict(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(metavar="MODEL", help="a model id, as `trainyard models` shows")],
    images: Annotated[
        list[Path],
        typer.Argument(metavar="IMAGE... | FOLDER", exists=True, readable=True, help="image files, or one folder"),
    ],
    top_k: Annotated[int | None, typer.Option(min=1, max=100, help="how many labels per image")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Classify images with a deployed model; a folder of more than a handful runs as one batch on the cluster."""
    state = state_of(ctx, as_json)
    client = state.client()
    if any(path.is_dir() for path in images):
        if len(images) != 1:
            typer.echo("error: pass one folder, or image files (not both)", err=True)
            raise typer.Exit(ExitCode.USAGE)
        found = batch.folder_images(images[0])
        if len(found) > batch.HANDFUL:
            _print_answers(state, model_id, batch.predict_folder(state, model_id, images[0], top_k))
            return
        images = found
    answers = [{"image": str(path), "predictions": client.predict(model_id, path, top_k=top_k)} for path in images]
    _print_answers(state, model_id, answers)


def _print_answers(state: State, model_id: str, answers: list[dict[str, Any]]) -> None:
    if state.json:
        print_json({"model_id": model_id, "results": answers})
        return
    for answer in answers:
        if answer.get("error"):
            state.say(f"{answer['image']}: could not be scored: {answer['error']}")
            continue
        ranked = ", ".join(f"{_get(p, 'label')} {_get(p, 'probability'):.1%}" for p in answer["predictions"])
        state.say(f"{answer['image']}: {ranked}")


def _get(prediction: Any, name: str) -> Any:
    return prediction[name] if isinstance(prediction, dict) else getattr(prediction, name)


def list_models(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List deployed model versions, newest first: id, name@version, aliases, accuracy (--json: everything)."""
    state = state_of(ctx, as_json)
    found = state.client().list_models()
    if state.json:
        print_json({"models": found})
        return
    print_models(state.console, found)
