"""docs/api.md documents exactly the routes the app serves: every path and method in the live OpenAPI schema
has a `### METHOD /path` section, and every such section names a route the schema has. Its tables of job and
batch prediction parameters name every field of `JobParams` and `BatchParams` with the default the API applies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from core.batch_spec import BatchParams
from core.settings import Settings
from core.spec import JobParams
from service.main import create_app

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
_SECTION = re.compile(r"^### (GET|POST|PUT|PATCH|DELETE) (/\S*)\s*$", re.MULTILINE)
_PARAM_ROW = re.compile(r"^\| `(\w+)` \| ([^|]+?) \|", re.MULTILINE)


def test_api_doc_matches_the_live_openapi_schema(tmp_path: Path) -> None:
    schema = create_app(Settings(home=tmp_path)).openapi()
    served = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    documented = set(_SECTION.findall(DOC.read_text()))
    missing = sorted(f"### {m} {p}" for m, p in served - documented)
    stale = sorted(f"### {m} {p}" for m, p in documented - served)
    assert not missing, f"docs/api.md lacks a section for: {missing}"
    assert not stale, f"docs/api.md documents routes the app does not serve: {stale}"


def _documented(value: object) -> str:
    """A default as the table writes it: JSON scalars, strings in backticks."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"`{value}`"
    return str(value)


def _parameter_table(heading: str) -> dict[str, str]:
    """field -> documented default, from the table in the section `### {heading}` (up to the next section)."""
    text = DOC.read_text()
    section = text.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0]
    return dict(_PARAM_ROW.findall(section))


@pytest.mark.parametrize(
    ("heading", "model"), [("POST /v1/jobs", JobParams), ("POST /v1/models/{ref}/batch-predictions", BatchParams)]
)
def test_every_parameter_is_documented_with_its_default(heading: str, model: type[BaseModel]) -> None:
    rows = _parameter_table(heading)
    for name, field in model.model_fields.items():
        assert name in rows, f"docs/api.md's table under {heading} lacks `{name}`"
        if field.default is PydanticUndefined:
            expected = "required" if field.default_factory is None else rows[name]  # a model: described in words
        else:
            expected = _documented(field.default)
        assert rows[name] == expected, f"docs/api.md gives `{name}` the default {rows[name]!r}, the API {expected!r}"
