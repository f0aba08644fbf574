"""The SDK and the CLI cover the job spec: every field of the server's `JobParams` is settable from
`Client.submit` and `trainyard submit`, or listed in `trainyard.spec.NOT_EXPOSED` with its reason.

The walk is over `JobParams.model_fields`, so a field added to the API fails here until the SDK and the CLI
offer it (and a new choice of a `Literal` field, such as an `arch`, until both list it).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import typer
from typer.testing import CliRunner

from core.spec import JobParams
from trainyard import Client
from trainyard.cli import app
from trainyard.cli.job_options import OPTION_FOR_FIELD
from trainyard.spec import NOT_EXPOSED, SUBMIT_ARGUMENT, JobOptions

from .conftest import LiveApi

# A value other than the default for every option, sent by both the SDK and the CLI (below).
EVERY_OPTION: dict[str, Any] = {
    "name": "every-option",
    "arch": "resnet18",
    "weights_uri": "s3://bucket/resnet18.pt",
    "epochs": 3,
    "max_epochs": 5,
    "freeze_epochs": 2,
    "lr": 0.01,
    "lr_sweep": {"method": "trials", "trials": 4},
    "tta": True,
    "batch_size": 16,
    "image_size": 96,
    "progressive_resizing": None,
    "num_workers": 1,
    "patience": None,
    "use_gpu": True,
    "deploy": False,
    "seed": 7,
    "valid_pct": 0.3,
    "notify_url": "https://93.184.216.34/hooks/trainyard",
    "max_cost_usd": 2.5,
}
CLI_ARGS = [
    *("--name", "every-option", "--arch", "resnet18", "--weights-uri", "s3://bucket/resnet18.pt"),
    *(
        "--epochs",
        "3",
        "--max-epochs",
        "5",
        "--freeze-epochs",
        "2",
        "--lr",
        "0.01",
        "--lr-sweep",
        '{"method": "trials", "trials": 4}',
    ),
    *("--tta", "--batch-size", "16", "--image-size", "96", "--progressive-resizing", "off", "--num-workers", "1"),
    *("--patience", "off", "--gpu", "--no-deploy", "--seed", "7", "--valid-pct", "0.3"),
    *("--notify-url", "https://93.184.216.34/hooks/trainyard"),
    *("--max-cost-usd", "2.5"),
]


def _literals(annotation: Any) -> set[Any]:
    """Every value of every `Literal` in a type (through unions, Optional and Annotated; not into models)."""
    if get_origin(annotation) is Literal:
        return set(get_args(annotation))
    if get_origin(annotation) is Annotated:
        return _literals(get_args(annotation)[0])
    return set().union(*(_literals(arg) for arg in get_args(annotation))) if get_args(annotation) else set()


def _submit_options() -> dict[str, Any]:
    command: Any = typer.main.get_command(app)  # typer's own vendored click: no public type to check against
    return {p.name: p for p in command.commands["submit"].params if p.name}


def test_every_job_field_is_settable_from_the_sdk_and_the_cli_or_listed_with_a_reason() -> None:
    sdk = get_type_hints(JobOptions)
    cli = _submit_options()
    for name, field in JobParams.model_fields.items():
        if name in NOT_EXPOSED:
            assert len(NOT_EXPOSED[name]) > 10, f"NOT_EXPOSED[{name!r}] must say why"
            continue
        option = OPTION_FOR_FIELD.get(name, name)
        assert option in cli, (
            f"`trainyard submit` has no option for the job field {name!r}: add one, or list it in "
            "trainyard.spec.NOT_EXPOSED with the reason"
        )
        if name in SUBMIT_ARGUMENT:
            continue
        assert name in sdk, f"Client.submit cannot set the job field {name!r}: add it to trainyard.spec.JobOptions"
        choices = _literals(field.annotation)
        missing_in_sdk = choices - _literals(sdk[name])
        assert not missing_in_sdk, f"JobOptions[{name!r}] lacks the API's choices {missing_in_sdk}"
        help_text = getattr(cli[option], "help", "") or ""
        assert all(str(c) in help_text for c in choices), f"`--{option}`'s help must list {sorted(choices)}"
    assert not set(sdk) - set(JobParams.model_fields), "JobOptions names fields the API does not have"
    assert set(EVERY_OPTION) == set(sdk), "give every JobOptions key a non-default value in EVERY_OPTION"


def test_every_option_reaches_the_job_from_the_sdk_and_from_the_cli(live_api: LiveApi) -> None:
    with Client(url=live_api.url) as client:
        from_sdk = client.submit("s3://bucket/pets", **EVERY_OPTION).params
    result = CliRunner().invoke(app, ["--url", live_api.url, "submit", "s3://bucket/pets", *CLI_ARGS, "--json"])
    assert result.exit_code == 0, result.output
    from_cli = json.loads(result.stdout)["params"]
    for name, value in EVERY_OPTION.items():
        sent = from_sdk[name] if name != "lr_sweep" else {k: from_sdk[name][k] for k in value}
        assert sent == value, (name, from_sdk[name])
    assert from_cli == from_sdk


def test_an_option_that_is_neither_a_number_nor_off_is_a_usage_error() -> None:
    for args in (["--patience", "soon"], ["--progressive-resizing", "half"], ["--lr-sweep", "{not json"]):
        result = CliRunner().invoke(app, ["--url", "http://127.0.0.1:9", "submit", "s3://b/p", *args])
        assert result.exit_code == 2, (args, result.output)
