"""The `trainyard` command line: a thin layer over `trainyard.Client` (Typer + Rich)."""

from __future__ import annotations

import tempfile
import webbrowser
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from trainyard.cli import batch, job_options, models, stack
from trainyard.cli.exit_codes import HELP, ExitCode, exit_code_for
from trainyard.cli.export import export_command
from trainyard.cli.output import JsonFlag, State, print_json, print_json_line, report_error, state_of
from trainyard.cli.tables import print_jobs
from trainyard.client import raise_for_outcome
from trainyard.errors import TrainyardError
from trainyard.models import Job, JobStatus
from trainyard.progress import describe_epoch, describe_metrics, describe_state
from trainyard.spec import ARCHS


class _Group(TyperGroup):
    """Turns every SDK error into its message and a documented exit code: never a stack trace."""

    def invoke(self, ctx: Any) -> Any:  # Any: typer vendors its own click, whose Context has no public name
        try:
            return super().invoke(ctx)
        except TrainyardError as error:
            state = ctx.find_object(State) or State()
            report_error(error, state.json)
            raise typer.Exit(exit_code_for(error)) from None
        except BrokenPipeError:
            raise  # `trainyard list | head`: typer exits quietly
        except OSError as error:  # a local file the command reads or writes (--save, an image)
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(ExitCode.USAGE) from None


app = typer.Typer(
    cls=_Group,
    name="trainyard",
    help="Train and deploy image classifiers on Trainyard.",
    epilog=HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

JobArg = Annotated[str, typer.Argument(metavar="JOB", help="a job id, as `trainyard list` shows")]


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="the API's URL (env TRAINYARD_URL; default: the local stack)")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key, sent as a bearer token (env TRAINYARD_API_KEY)")] = None,
) -> None:
    ctx.obj = State(url=url, api_key=api_key)


def _show_job(state: State, job: Job) -> None:
    if state.json:
        print_json(job)
        return
    rows = [
        ("job", job.id + (f"  ({job.name})" if job.name else "")),
        ("status", describe_state(job)),
        ("progress", f"{job.progress:.0%}" + (f"  {describe_epoch(job)}" if job.metrics else "")),
        ("dataset", str(job.params.get("dataset_uri", ""))),
    ]
    if job.lr_sweep and job.lr_sweep.get("suggested_lr"):
        rows.append(("lr (sweep)", f"{job.lr_sweep['suggested_lr']:.3g}"))
    if job.metrics:
        rows.append(("last epoch", describe_metrics(job)))
    if job.evaluation and "accuracy" in job.evaluation:
        rows.append(("accuracy", f"{job.evaluation['accuracy']:.1%}"))
    if job.model:
        rows += [("model", job.model.id), ("predict", job.model.predict_url)]
    for name, value in rows:
        state.say(f"{name:<11} {value}")


def _finish(state: State, job: Job) -> None:
    """Show the job and exit 1 when it did not succeed (its error has already been shown with it)."""
    _show_job(state, job)
    if job.terminal and job.status != "succeeded":
        try:
            raise_for_outcome(job)
        except TrainyardError as error:
            report_error(error, as_json=False)
        raise typer.Exit(ExitCode.JOB_FAILED)


def _wait(state: State, job: Job) -> None:
    try:
        job = state.client().wait(job.id, progress=True, raise_on_failure=False, console=state.console)
    except KeyboardInterrupt:
        state.say(f"\nstopped waiting; job {job.id} keeps running: `trainyard wait {job.id}` to follow it again")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    _finish(state, job)


@app.command()
def submit(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="s3://bucket/prefix, or a local folder (uploaded to S3 first)")],
    name: Annotated[str | None, typer.Option(help="a name to recognise the job by; its model's name")] = None,
    arch: Annotated[str | None, typer.Option(help=f"backbone: {', '.join(ARCHS)}")] = None,
    weights_uri: Annotated[str | None, typer.Option(help="s3:// URI of a torchvision backbone's weights")] = None,
    epochs: Annotated[int | None, typer.Option(help="epochs with the whole network unfrozen")] = None,
    max_epochs: Annotated[
        int | None, typer.Option(help="go on past --epochs while the validation loss falls, up to this many")
    ] = None,
    freeze_epochs: Annotated[int | None, typer.Option(help="head-only epochs on cached features")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate; default: pick it by the --lr-sweep")] = None,
    lr_sweep: Annotated[
        dict[str, Any] | None,
        typer.Option(
            parser=job_options.lr_sweep,
            metavar="SWEEP",
            help="how a missing --lr is picked: range_test (default), trials, or JSON such as "
            '\'{"method": "trials", "trials": 8}\'',
        ),
    ] = None,
    tta: Annotated[
        bool | None, typer.Option("--tta/--no-tta", help="also score validation with test-time augmentation")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="global batch size, split across the training workers")] = None,
    image_size: Annotated[int | None, typer.Option(help="training and serving resolution (px)")] = None,
    progressive_resizing: Annotated[
        str | None,
        job_options.number_or_off_option(
            float,
            "FRACTION|off",
            "the first unfrozen epoch at this fraction of --image-size (default 0.75); off: all at full size",
        ),
    ] = None,
    num_workers: Annotated[int | None, typer.Option(help="Ray Train workers (one per GPU)")] = None,
    patience: Annotated[
        str | None,
        job_options.number_or_off_option(
            int,
            "EPOCHS|off",
            "stop after this many epochs without a lower validation loss (default 1); off: run every epoch",
        ),
    ] = None,
    gpu: Annotated[bool, typer.Option("--gpu", help="train on GPUs (use_gpu)")] = False,
    no_deploy: Annotated[bool, typer.Option("--no-deploy", help="train and publish, but do not deploy")] = False,
    valid_pct: Annotated[
        float | None, typer.Option(help="carve this fraction of train/ as validation when there is no valid/")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    notify_url: Annotated[
        str | None, typer.Option(help="an http(s) URL the service POSTs a signed JSON body to when the job ends")
    ] = None,
    max_cost_usd: Annotated[
        float | None, typer.Option(help="stop training before the job's estimated cost passes this (USD)")
    ] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="repeat a submit safely: same key, same job")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the job until it ends; exit 1 if it fails")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Submit a training job on an S3 dataset or a local folder; options left out take the API's defaults."""
    state = state_of(ctx, as_json)
    options = job_options.given_options(
        name=name,
        arch=arch,
        weights_uri=weights_uri,
        epochs=epochs,
        max_epochs=max_epochs,
        freeze_epochs=freeze_epochs,
        lr=lr,
        lr_sweep=lr_sweep,
        tta=tta,
        batch_size=batch_size,
        image_size=image_size,
        progressive_resizing=progressive_resizing,
        num_workers=num_workers,
        patience=patience,
        use_gpu=True if gpu else None,
        deploy=False if no_deploy else None,
        valid_pct=valid_pct,
        seed=seed,
        notify_url=notify_url,
        max_cost_usd=max_cost_usd,
    )
    job = state.client().submit(
        dataset, idempotency_key=idempotency_key, progress=True, console=state.console, **options
    )
    if wait:
        state.say(f"submitted job {job.id}")
        _wait(state, job)
        return
    _show_job(state, job)
    if not as_json:
        state.say(f"follow it with: trainyard wait {job.id}")


@app.command("wait")
def wait_command(ctx: typer.Context, job_id: JobArg, as_json: JsonFlag = False) -> None:
    """Follow a job until it ends (live on a terminal, one line per change otherwise); exit 1 if it fails."""
    state = state_of(ctx, as_json)
    _wait(state, state.client().get_job(job_id))


@app.command()
def status(ctx: typer.Context, job_id: JobArg, as_json: JsonFlag = False) -> None:
    """Show one job: status, phase, progress, metrics, model."""
    state = state_of(ctx, as_json)
    _show_job(state, state.client().get_job(job_id))


@app.command("list")
def list_command(
    ctx: typer.Context,
    status: Annotated[JobStatus | None, typer.Option(help="only jobs with this status")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="at most this many, newest first")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """List jobs, newest first."""
    state = state_of(ctx, as_json)
    page = state.client().list_jobs(status, limit=limit)
    if state.json:
        print_json(page)
        return
    print_jobs(state.console, page.jobs)


@app.command()
def cancel(ctx: typer.Context, job_id: JobArg, as_json: JsonFlag = False) -> None:
    """Cancel a job (idempotent)."""
    state = state_of(ctx, as_json)
    _show_job(state, state.client().cancel_job(job_id))


@app.command()
def retry(
    ctx: typer.Context,
    job_id: JobArg,
    wait: Annotated[bool, typer.Option("--wait", help="follow the job until it ends")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Run a failed or cancelled job again from its last checkpoint."""
    state = state_of(ctx, as_json)
    job = state.client().retry_job(job_id)
    if wait:
        _wait(state, job)
    else:
        _show_job(state, job)


@app.command()
def revise(
    ctx: typer.Context,
    job_id: JobArg,
    relabel: Annotated[
        list[str] | None, typer.Option("--relabel", help="PATH=LABEL: give an image of the job another class")
    ] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="PATH: leave an image out")] = None,
    retrain: Annotated[bool, typer.Option("--retrain", help="submit a job on the revision, same parameters")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="with --retrain: follow that job until it ends")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Clean a finished job's data: relabel or exclude images; a new dataset revision (and a retrain on it)."""
    state = state_of(ctx, as_json)
    pairs = [item.partition("=") for item in relabel or []]
    if any(not sep or not path or not label for path, sep, label in pairs):
        raise typer.BadParameter("takes PATH=LABEL, e.g. --relabel valid/cat/3.jpg=dog", param_hint="--relabel")
    revision = state.client().revise(
        job_id, relabel={path: label for path, _, label in pairs}, exclude=exclude or [], retrain=retrain
    )
    if state.json and not wait:
        print_json(revision)
        return
    changes = revision.changes
    relabelled, excluded = changes.get("relabelled", 0), changes.get("excluded", 0)
    state.say(f"revision   {revision.id}: {relabelled} relabelled, {excluded} excluded")
    state.say(f"dataset    {revision.dataset_uri} ({revision.images} images)")
    if revision.retrain_job_id:
        state.say(f"retrain    {revision.retrain_job_id}")
        if wait:
            _wait(state, state.client().get_job(revision.retrain_job_id))


@app.command()
def events(
    ctx: typer.Context,
    job_id: JobArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing events until the job ends")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="one JSON document; with --follow one JSON object per line (JSON Lines)")
    ] = False,
) -> None:
    """Print a job's event log."""
    state = state_of(ctx, as_json)
    client = state.client()
    if not follow:
        found = client.events(job_id)
        if state.json:
            print_json({"events": found})
            return
        for event in found:
            state.say(f"{event.at:%H:%M:%S}  {event.kind:<12} {event.message}")
        return
    try:
        for event in client.stream_events(job_id):
            if state.json:
                print_json_line(event)
            else:
                state.say(f"{event.at:%H:%M:%S}  {event.kind:<12} {event.message}")
    except KeyboardInterrupt:
        raise typer.Exit(ExitCode.INTERRUPTED) from None


@app.command()
def report(
    ctx: typer.Context,
    job_id: JobArg,
    open_browser: Annotated[bool, typer.Option("--open", help="open it in a web browser")] = False,
    save: Annotated[Path | None, typer.Option(help="download the page to this file")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Print the URL of a job's report page (LR sweep, training curves, confusion matrix, most-wrong images)."""
    state = state_of(ctx, as_json)
    client = state.client()
    job = client.get_job(job_id)  # a clear "no such job" before anything else
    url = client.report_url(job.id)
    saved: str | None = None
    if open_browser and save is None and client.config.api_key is not None:
        # A browser cannot send the API key: open a downloaded copy (the page is self-contained) instead.
        save = Path(tempfile.gettempdir()) / f"trainyard-report-{job.id}.html"
    if save is not None:
        save.write_text(client.report(job.id), encoding="utf-8")
        saved = str(save)
    if open_browser:
        webbrowser.open(save.resolve().as_uri() if save is not None else url)
    if state.json:
        print_json({"job_id": job.id, "url": url, "saved": saved})
        return
    state.say(url)
    if saved:
        state.say(f"saved to {saved}")


app.command("export")(export_command)
app.command("predict")(models.predict)
app.command("models")(models.list_models)
app.command("batch-predict")(batch.batch_predict)
app.add_typer(batch.app, name="batch-predictions")
app.add_typer(stack.app, name="stack")
stack.add_shortcuts(app)


def main() -> None:
    app()
