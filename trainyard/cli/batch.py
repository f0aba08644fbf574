"""`trainyard batch-predict` and `trainyard batch-predictions list|status|wait|cancel|retry`.

A batch run scores a whole S3 prefix (or a local folder, uploaded first) on the cluster; `trainyard predict
MODEL ./folder` uses one too when the folder holds more than a handful of images (`predict_folder`).
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from trainyard.batch import raise_for_batch_outcome
from trainyard.cli.exit_codes import ExitCode
from trainyard.cli.output import JsonFlag, State, print_json, report_error, state_of
from trainyard.errors import TrainyardError
from trainyard.models import BatchPrediction

# Up to this many images, `predict ./folder` asks the endpoint image by image; more go to a batch run.
HANDFUL = 8
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

app = typer.Typer(help="Batch prediction runs: list, follow, cancel, retry.", no_args_is_help=True)
RunArg = Annotated[str, typer.Argument(metavar="RUN", help="a batch prediction id (bp-…)")]
ModelArg = Annotated[str, typer.Argument(metavar="MODEL", help="a model id, name, name@alias or name@version")]


def _progress(run: BatchPrediction) -> str:
    p = run.progress
    return f"{p.images_done}/{p.images_total}" if p.images_total is not None else "listing"


def show_run(state: State, run: BatchPrediction) -> None:
    if state.json:
        print_json(run)
        return
    model = run.model
    rows = [
        ("run", run.id),
        ("status", run.status + (f" ({run.phase})" if run.phase else "")),
        ("model", f"{model.get('ref')} -> {model.get('id')}"),
        ("input", str(run.params.get("input_uri"))),
        ("output", run.output_uri),
        ("progress", f"{_progress(run)} images ({run.progress.fraction:.0%})"),
    ]
    if run.result:
        rows.append(("rows", f"{run.result.get('rows')} ({run.result.get('errors')} could not be scored)"))
    if run.scores:
        rows.append(("accuracy", f"{run.scores['accuracy']:.1%} of {run.scores['images']} labelled images"))
    if run.cost:
        rows.append(("cost", f"{run.cost['cpu_seconds']:.0f} CPU-s, ~${run.cost['estimated_usd']:.4f}"))
    if run.error:
        rows.append(("error", f"{run.error.code}: {run.error.message}"))
    for name, value in rows:
        state.say(f"{name:<9} {value}")


def _follow(state: State, run: BatchPrediction) -> BatchPrediction:
    """Wait for the run, a line per phase or tenth of progress; exit 1 when it did not succeed."""
    seen: dict[str, Any] = {}

    def update(now: BatchPrediction) -> None:
        step = (now.status, now.phase, int(now.progress.fraction * 10))
        if step != seen.get("step"):
            seen["step"] = step
            state.console.print(
                f"{now.status} {now.phase or ''}: {_progress(now)} images", markup=False, highlight=False
            )

    try:
        done = state.client().wait_batch_prediction(run.id, raise_on_failure=False, on_update=update)
    except KeyboardInterrupt:
        state.say(f"\nstopped waiting; run {run.id} keeps going: `trainyard batch-predictions wait {run.id}`")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    return done


def _finish(state: State, run: BatchPrediction) -> None:
    show_run(state, run)
    if run.terminal and run.status != "succeeded":
        try:
            raise_for_batch_outcome(run)
        except TrainyardError as error:
            report_error(error, as_json=False)
        raise typer.Exit(ExitCode.JOB_FAILED)


def batch_predict(
    ctx: typer.Context,
    model: ModelArg,
    images: Annotated[str, typer.Argument(help="s3://bucket/prefix, an s3:// CSV manifest, or a local folder")],
    output: Annotated[str | None, typer.Option(help="an empty s3:// prefix for the results")] = None,
    top_k: Annotated[int | None, typer.Option(min=1, max=100, help="labels per image")] = None,
    format: Annotated[str | None, typer.Option(help="jsonl (default), csv or parquet")] = None,
    gpu: Annotated[bool, typer.Option("--gpu", help="run the model on GPU actors")] = False,
    num_workers: Annotated[int | None, typer.Option(help="model actors (default: one per CPU or GPU)")] = None,
    notify_url: Annotated[str | None, typer.Option(help="called when the run ends")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the run until it ends; exit 1 if it fails")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Score every image under an S3 prefix (or a local folder) with a model, as a Ray job on the cluster."""
    state = state_of(ctx, as_json)
    run = state.client().batch_predict(
        model,
        images,
        output_uri=output,
        top_k=top_k,
        format=format,
        use_gpu=True if gpu else None,
        num_workers=num_workers,
        notify_url=notify_url,
        progress=True,
        console=state.console,
    )
    if wait:
        state.console.print(f"submitted batch run {run.id}", markup=False, highlight=False)
        _finish(state, _follow(state, run))
        return
    show_run(state, run)
    if not as_json:
        state.say(f"follow it with: trainyard batch-predictions wait {run.id}")


@app.command("list")
def list_runs(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="only runs with this status")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="at most this many, newest first")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """List batch prediction runs, newest first."""
    state = state_of(ctx, as_json)
    page = state.client().list_batch_predictions(status, limit=limit)  # type: ignore[arg-type]
    if state.json:
        print_json(page)
        return
    table = Table("run", "model", "status", "images", "accuracy", "created", box=None)
    for run in page.batch_predictions:
        accuracy = f"{run.scores['accuracy']:.1%}" if run.scores else ""
        table.add_row(
            run.id,
            str(run.model.get("ref", "")),
            run.status,
            _progress(run),
            accuracy,
            run.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    state.console.print(table)


@app.command()
def status(ctx: typer.Context, run_id: RunArg, as_json: JsonFlag = False) -> None:
    """Show one run: status, progress, scores, cost, output."""
    state = state_of(ctx, as_json)
    show_run(state, state.client().get_batch_prediction(run_id))


@app.command("wait")
def wait_command(ctx: typer.Context, run_id: RunArg, as_json: JsonFlag = False) -> None:
    """Follow a run until it ends; exit 1 if it fails or is cancelled."""
    state = state_of(ctx, as_json)
    _finish(state, _follow(state, state.client().get_batch_prediction(run_id)))


@app.command()
def cancel(ctx: typer.Context, run_id: RunArg, as_json: JsonFlag = False) -> None:
    """Cancel a run (idempotent): its actors are freed; the shards written so far stay."""
    state = state_of(ctx, as_json)
    show_run(state, state.client().cancel_batch_prediction(run_id))


@app.command()
def retry(
    ctx: typer.Context,
    run_id: RunArg,
    wait: Annotated[bool, typer.Option("--wait", help="follow the run until it ends")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Run a failed or cancelled run again, skipping the shards it already wrote."""
    state = state_of(ctx, as_json)
    run = state.client().retry_batch_prediction(run_id)
    if wait:
        _finish(state, _follow(state, run))
    else:
        show_run(state, run)


def folder_images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def predict_folder(state: State, model: str, folder: Path, top_k: int | None) -> list[dict[str, Any]]:
    """A folder of more than a handful of images: upload it, score it as one batch run, return its rows."""
    client = state.client()
    upload = client.upload(folder, progress=True, console=state.console)
    # Beside the upload: the caller's own area, which it may read back (the artifact store may be closed to it).
    output = f"{upload.uri.rstrip('/')}-predictions/{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}/"
    run = client.batch_predict(model, upload.uri, output_uri=output, top_k=top_k, format="jsonl")
    state.console.print(f"{len(folder_images(folder))} images: scoring them as batch run {run.id}", markup=False)
    done = _follow(state, run)
    if done.status != "succeeded":
        _finish(state, done)
    prefix = upload.uri.rstrip("/") + "/"
    return [
        {
            "image": str(folder / row["path"].removeprefix(prefix)),
            "predictions": [
                {"label": label, "probability": p} for label, p in zip(row["labels"], row["probabilities"], strict=True)
            ],
            "error": row["error"],
        }
        for row in client.batch_rows(done)
    ]
