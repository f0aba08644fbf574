"""From `trainyard submit`'s options to the SDK's `JobOptions`: what was given, with `off` meaning null."""

from __future__ import annotations

import json
from typing import Any, cast

import typer

from trainyard.spec import JobOptions

# An option given as `off`: sent as null (no early stopping, no progressive resizing).
OFF = "off"
# `trainyard submit`'s parameter for each job field whose option is not named after it.
OPTION_FOR_FIELD = {"dataset_uri": "dataset", "use_gpu": "gpu", "deploy": "no_deploy"}


class _Off:
    """Stands for an explicit null between the option's callback and `given_options`."""


NULL = _Off()


def number_or_off(kind: type[int] | type[float]) -> Any:
    """A Typer callback: the option's text as `kind`, or `NULL` for `off`; a usage error (exit 2) otherwise."""

    def parse(value: str | None) -> int | float | _Off | None:
        if value is None:
            return None
        if value.strip().lower() == OFF:
            return NULL
        try:
            return kind(value)
        except ValueError:
            raise typer.BadParameter(f"expected a {kind.__name__} or 'off', got {value!r}") from None

    return parse


def number_or_off_option(kind: type[int] | type[float], metavar: str, help: str) -> Any:
    """A `typer.Option` taking a `kind` or `off` (sent as null)."""
    return typer.Option(callback=number_or_off(kind), metavar=metavar, help=help)


def lr_sweep(value: str | None) -> dict[str, Any] | None:
    """`trials`, `range_test`, or a JSON object such as '{"method": "trials", "trials": 8}'."""
    if value is None:
        return None
    if not value.lstrip().startswith("{"):
        return {"method": value.strip()}
    try:
        parsed = json.loads(value)
    except ValueError as e:
        raise typer.BadParameter(f'not a JSON object ({e}); e.g. \'{{"method": "trials", "trials": 8}}\'') from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter('must be a method name or a JSON object, e.g. \'{"method": "trials"}\'')
    return parsed


def given_options(**values: Any) -> JobOptions:
    """The options the user gave (None: not given, left to the API's default; `NULL`: sent as null)."""
    return cast(JobOptions, {k: (None if v is NULL else v) for k, v in values.items() if v is not None})
