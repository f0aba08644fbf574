"""How the CLI speaks: human text on a Rich console, or exactly one JSON document on stdout with --json.

With --json, anything for humans (upload and wait progress, messages) goes to stderr, so that
``trainyard … --json | jq`` always sees valid JSON, and `json.loads` of stdout always works.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console

from trainyard.client import Client
from trainyard.errors import TrainyardError

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout, nothing else")]


@dataclass
class State:
    """What the root options decided; commands reach it through `typer.Context.obj`."""

    url: str | None = None
    api_key: str | None = None
    json: bool = False
    _client: Client | None = field(default=None, repr=False)

    def client(self) -> Client:
        if self._client is None:
            self._client = Client(url=self.url, api_key=self.api_key)
        return self._client

    @property
    def console(self) -> Console:
        """Where human output goes: stdout normally, stderr under --json."""
        return Console(stderr=self.json)

    def say(self, text: str) -> None:
        """A plain message, never interpreted as Rich markup (API messages may contain brackets)."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)


def to_jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2) + "\n")
    sys.stdout.flush()


def print_json_line(value: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(value)) + "\n")
    sys.stdout.flush()


def report_error(error: TrainyardError, as_json: bool) -> None:
    """The API's message and the field it names, on stderr; under --json also as JSON on stdout."""
    err = Console(stderr=True)
    err.print(f"error: {error}", style="red", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        body: dict[str, Any] = {
            "code": error.code,
            "message": error.message,
            "field": error.field,
            "status": error.status,
        }
        for extra in ("job_id", "phase"):
            if hasattr(error, extra):
                body[extra] = getattr(error, extra)
        print_json({"error": body})


def state_of(ctx: typer.Context, as_json: bool) -> State:
    """The command's State (made by the root callback), with its --json flag set."""
    state: State = ctx.ensure_object(State)
    state.json = as_json
    return state
