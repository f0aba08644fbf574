"""The web console: pages served by the API at /console, over the API's own routes.

Every page is a server-rendered shell (Jinja2) plus a small hand-written ES module (service/static/console):
the browser keeps the API key in sessionStorage and calls the same /v1 routes as the CLI and the SDK, with
the key as its bearer header. The pages themselves hold no data, so they need no key and can be cached; no
CDN, no build step. docs/api.md lists which page uses which route.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from core.spec import JobStatus, Phase

PREFIX = "/console"
_HERE = Path(__file__).resolve().parent.parent
_templates = Environment(
    loader=FileSystemLoader(_HERE / "templates" / "console"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
# Page name -> (template, title).
PAGES = {
    "jobs": ("jobs.html", "Jobs"),
    "new": ("new.html", "New job"),
    "compare": ("compare.html", "Compare jobs"),
    "models": ("models.html", "Models"),
    "job": ("job.html", "Job"),
}
NAV = [
    ("jobs", f"{PREFIX}/"),
    ("new", f"{PREFIX}/new"),
    ("compare", f"{PREFIX}/compare"),
    ("models", f"{PREFIX}/models"),
]

# Scripts, styles and connections from this API only: nothing a page does can reach a CDN or another host, and
# injected markup cannot run a script. Inline style attributes stay allowed (the report's confusion matrix).
CSP = (
    "default-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self' 'unsafe-inline'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


def _page(page: str, **context: object) -> HTMLResponse:
    template, title = PAGES[page]
    html = _templates.get_template(template).render(
        page=page,
        title=title,
        prefix=PREFIX,
        nav=[(PAGES[name][1], url, name == page) for name, url in NAV],
        statuses=[s.value for s in JobStatus],
        phases=[p.value for p in Phase],
        **context,
    )
    # The shells change only with a release; the data they show comes from the API on every visit.
    return HTMLResponse(html, headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP})


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/", status_code=307)


@router.get(f"{PREFIX}/")
def jobs_page() -> HTMLResponse:
    return _page("jobs")


@router.get(PREFIX + "/jobs/{job_id}")
def job_page(job_id: str) -> HTMLResponse:
    return _page("job", job_id=job_id)


@router.get(f"{PREFIX}/new")
def new_job_page() -> HTMLResponse:
    return _page("new")


@router.get(f"{PREFIX}/compare")
def compare_page() -> HTMLResponse:
    return _page("compare")


@router.get(f"{PREFIX}/models")
def models_page() -> HTMLResponse:
    return _page("models")


def mount(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=_HERE / "static" / "console"), name="console-static")
