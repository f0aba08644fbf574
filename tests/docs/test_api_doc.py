"""docs/api.md documents exactly the routes the app serves: every path and method in the live OpenAPI schema
has a `### METHOD /path` section, and every such section names a route the schema has."""

from __future__ import annotations

import re
from pathlib import Path

from core.settings import Settings
from service.main import create_app

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
_SECTION = re.compile(r"^### (GET|POST|PUT|PATCH|DELETE) (/\S*)\s*$", re.MULTILINE)


def test_api_doc_matches_the_live_openapi_schema(tmp_path: Path) -> None:
    schema = create_app(Settings(home=tmp_path)).openapi()
    served = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    documented = set(_SECTION.findall(DOC.read_text()))
    missing = sorted(f"### {m} {p}" for m, p in served - documented)
    stale = sorted(f"### {m} {p}" for m, p in documented - served)
    assert not missing, f"docs/api.md lacks a section for: {missing}"
    assert not stale, f"docs/api.md documents routes the app does not serve: {stale}"
