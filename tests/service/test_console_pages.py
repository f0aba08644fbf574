"""The console's pages and scripts as served: no CDN, no second way to do anything, and shots that are current.

Every `/v1/...` path the scripts call must be a route of the API's own OpenAPI schema and be named in
docs/api.md's console table; nothing a page loads may come from another host.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from service_testkit import Api

from core.settings import Settings
from service.main import create_app

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "service" / "static" / "console"
TEMPLATES = ROOT / "service" / "templates" / "console"
SHOTS = ROOT / "docs" / "screenshots"
_CALL = re.compile(r"[`\"'](/v1/[^`\"'?]*)")


def _called_paths() -> set[str]:
    found = set()
    for script in STATIC.glob("*.js"):
        # job.js keeps its job's URL in `path`: `${path}/report` is /v1/jobs/{job_id}/report.
        text = script.read_text().replace("`${path}", "`/v1/jobs/${jobId}")
        for path in _CALL.findall(text):
            # `${path}/report` where `path` is the job's URL, `${encodeURIComponent(id)}`: a path parameter.
            found.add(re.sub(r"\$\{[^}]*\}", "{}", path))
    return found


def test_every_route_the_console_calls_is_an_api_route_named_in_the_docs(tmp_path: Path) -> None:
    schema_paths = create_app(Settings(home=tmp_path)).openapi()["paths"]
    patterns = {p: re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$") for p in schema_paths}
    doc = (ROOT / "docs" / "api.md").read_text().split("## Documentation and the console", 1)[1]
    called = _called_paths()
    assert "/v1/events" in called and "/v1/jobs/{}/revisions" in called
    for path in called:
        concrete = path.replace("{}", "x")
        matches = [p for p, rx in patterns.items() if rx.match(concrete)]
        assert matches, f"the console calls {path}, which is not an API route"
    for route in ("/v1/events", "/v1/jobs/{job_id}/revisions", "/v1/models/{name}/aliases/{alias}", "/openapi.json"):
        assert route in doc, f"docs/api.md's console table does not name {route}"


def test_pages_and_scripts_load_nothing_from_another_host(api: Api) -> None:
    for page in ("/console/", "/console/new", "/console/compare", "/console/models", "/console/jobs/job-x"):
        response = api.http.get(page)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert not re.search(r'(src|href)="(https?:)?//', response.text), page
        for asset in re.findall(r'(?:src|href)="(/console/static/[^"]+)"', response.text):
            assert api.http.get(asset).status_code == 200, asset
    for script in STATIC.glob("*.*"):
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", script.read_text()), script.name
    assert api.http.get("/", follow_redirects=False).headers["location"] == "/console/"
    assert not any(p.startswith("/console") for p in api.http.get("/openapi.json").json()["paths"])


def _last_change(*paths: Path) -> int:
    out = subprocess.run(
        ["git", "log", "-1", "--format=%ct", "--", *map(str, paths)], cwd=ROOT, capture_output=True, text=True
    )
    return int(out.stdout.strip() or 0)


def test_the_readmes_screenshots_are_committed_and_not_older_than_the_console() -> None:
    readme = (ROOT / "README.md").read_text()
    linked = re.findall(r"\(docs/screenshots/([\w-]+\.png)\)", readme)
    assert sorted(linked) == sorted(f"{p}-{w}.png" for p in ("jobs", "job", "try-it") for w in (1366, 390))
    assert all((SHOTS / name).stat().st_size > 5_000 for name in linked)
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no history to compare")
    # tests/e2e/test_console.py writes build/console/ and, asked, refreshes docs/screenshots/: commit them too.
    assert _last_change(SHOTS) >= _last_change(STATIC, TEMPLATES), (
        "the console changed after docs/screenshots: run TRAINYARD_REFRESH_SCREENSHOTS=1 "
        "pytest tests/e2e/test_console.py and commit docs/screenshots"
    )
