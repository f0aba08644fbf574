"""The web console on the real stack (S3 server, Ray, Ray Train, Serve, the API), in headless Chromium.

One tiny job is submitted from the console's form and watched to `succeeded` without a reload; every later
test reads that job: its page (every plot and image loads), the try-it box, cleaning its data into a revision
and retraining on it, moving an alias between the two versions, and a second tenant who sees none of it.
Every page runs with the network cut off (tests/utils/console.py). Screenshots land in build/console/; with
TRAINYARD_REFRESH_SCREENSHOTS=1 they are also copied to docs/screenshots/, which the README links.
"""

from __future__ import annotations

import base64
import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from core.s3 import s3_client
from core.spec import S3Location
from core.store import JobStore
from core.tenancy import Tenancy
from infra.local.sample_data import SHAPES, make_shapes, upload_folder
from infra.local.stack import LocalStack
from tests.utils.console import chromium, console_page
from tests.utils.jobs import wait_job

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "console"
COMMITTED_SHOTS = ROOT / "docs" / "screenshots"
JOB_TIMEOUT_MS = 300_000
NAME = "console-shapes"
# Records, in the page, every change of what the test watches (no eval: the console's CSP forbids it); a
# reload would wipe `trace` and `marker`.
TRACE = """(what) => {
  window.marker = "still the same page";
  window.trace = [];
  const read = {
    row: () => { const row = document.querySelector("#jobs tbody tr"); return row ? row.dataset.status : null; },
    job: () => [document.body.dataset.status, Number(document.getElementById("accuracy-chart").dataset.epochs || 0)],
  }[what];
  setInterval(() => {
    const now = read();
    if (JSON.stringify(now) !== JSON.stringify(window.trace[window.trace.length - 1])) window.trace.push(now);
  }, 50);
}"""

FIRST_ROW_SUCCEEDED = "() => document.querySelector('#jobs tbody tr')?.dataset.status === 'succeeded'"


@pytest.fixture(scope="module")
def api(api_stack: LocalStack) -> Iterator[httpx.Client]:
    with api_stack.api_client() as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def dataset(api_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = make_shapes(tmp_path_factory.mktemp("console") / "shapes", train_per_class=8, valid_per_class=4, size=64)
    upload_folder(s3_client(), root, "console-data", "shapes")
    return "s3://console-data/shapes"


def _objects(uri: str) -> dict[str, bytes]:
    s3, location = s3_client(), S3Location.parse(uri)
    listed = s3.list_objects_v2(Bucket=location.bucket, Prefix=location.prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=location.bucket, Key=o["Key"])["Body"].read() for o in listed}


def _shoot(page: Page, name: str, target: Page | Any | None = None) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    (target or page).screenshot(path=str(SHOTS / f"{name}.png"), **({"full_page": True} if target is None else {}))


@pytest.fixture(scope="module")
def first_job(api_stack: LocalStack, api: httpx.Client, browser: Browser, dataset: str) -> dict[str, Any]:
    """Submitted from the form and watched live, on its own page and in the jobs list, to `succeeded`."""
    url, key = api_stack.config.api_url, api_stack.api_key
    with console_page(browser, key) as (jobs, jobs_recorder), console_page(browser, key) as (page, recorder):
        jobs.goto(f"{url}/console/")
        jobs.wait_for_selector("body[data-loaded=true]")
        jobs.evaluate(TRACE, "row")
        page.goto(f"{url}/console/new")
        page.get_by_label("dataset_uri (required)").fill(dataset)
        page.get_by_label("name", exact=True).fill(NAME)
        # Five head-only epochs classify these shapes perfectly: the job keeps the head-only model and starts no
        # Ray Train run (what the console shows is the point here, not fine-tuning).
        for field, value in {"image_size": "64", "batch_size": "8", "epochs": "1", "freeze_epochs": "5"}.items():
            page.get_by_label(field, exact=True).fill(value)
        page.get_by_role("button", name="Submit job").click()
        page.wait_for_url("**/console/jobs/job-*")
        page.wait_for_selector("body[data-status]")
        page.evaluate(TRACE, "job")
        expect(page.locator("#job-status")).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)
        page.wait_for_selector("body[data-ended=true]")
        # The list follows its own event stream: its row may end a moment after the job's page does.
        jobs.wait_for_function(FIRST_ROW_SUCCEEDED, timeout=30_000)
        job_trace, row_trace = page.evaluate("window.trace"), jobs.evaluate("window.trace")
        assert page.evaluate("window.marker") and jobs.evaluate("window.marker")  # neither page reloaded
        jobs_recorder.assert_clean()
        recorder.assert_clean()
    # The job page saw the job run, its curves grow while it ran, and it end: all from its events.
    statuses = [status for status, _ in job_trace]
    assert "running" in statuses and statuses[-1] == "succeeded", job_trace
    epochs_while_running = [n for status, n in job_trace if status == "running"]
    assert epochs_while_running[0] == 0 and max(epochs_while_running) >= 1, job_trace
    # The jobs list got the new row on top from the event stream and followed it to the end.
    assert row_trace[-1] == "succeeded" and "running" in row_trace, row_trace
    job_id = page.url.rsplit("/", 1)[1]
    return wait_job(api, job_id, timeout=10)


def test_a_job_from_the_form_is_followed_live_to_succeeded(first_job: dict[str, Any]) -> None:
    assert first_job["status"] == "succeeded", first_job["error"]
    assert first_job["params"]["image_size"] == 64 and first_job["name"] == NAME
    assert first_job["model"] is not None


@pytest.mark.parametrize("width", [1366, 390])
def test_the_job_page_shows_every_plot_and_image(
    api_stack: LocalStack, browser: Browser, first_job: dict[str, Any], width: int
) -> None:
    with console_page(browser, api_stack.api_key, width=width) as (page, recorder):
        page.goto(f"{api_stack.config.api_url}/console/")
        page.wait_for_selector("body[data-loaded=true]")
        _shoot(page, f"jobs-{width}")
        page.get_by_role("link", name=NAME).first.click()
        page.wait_for_selector("body[data-ended=true]")
        expect(page.locator("#report-evaluation")).to_be_visible()
        # LR sweep with the chosen rate marked, both loss curves, the accuracy curve.
        assert page.locator("#lr-chart svg polyline").count() == 1
        expect(page.locator("#lr-chart svg")).to_contain_text("chosen")
        assert page.locator("#loss-chart svg polyline").count() == 2
        assert page.locator("#accuracy-chart svg polyline").count() == 1
        # The report's confusion matrix, dataset summary and hardest images, every image decoded.
        expect(page.locator("#report-evaluation table.confusion")).to_be_visible()
        expect(page.locator("#report-dataset")).to_contain_text("No files skipped")
        images = page.evaluate("[...document.querySelectorAll('#report-parts img')].map(i => i.naturalWidth)")
        evaluation = first_job["evaluation"]
        assert len(images) == len(evaluation["most_wrong"]) + len(evaluation["least_certain"]) > 0
        assert all(width > 0 for width in images), images
        expect(page.locator('#timeline li[data-phase="deploying"]')).to_have_class("done")
        _shoot(page, f"job-{width}")
        recorder.assert_clean()


@pytest.mark.parametrize("width", [1366, 390])
def test_an_image_dropped_on_try_it_is_classified(
    api_stack: LocalStack, browser: Browser, first_job: dict[str, Any], dataset: str, width: int
) -> None:
    png = next(body for key, body in _objects(dataset).items() if key.endswith(".png") and "/valid/" in key)
    with console_page(browser, api_stack.api_key, width=width) as (page, recorder):
        page.goto(f"{api_stack.config.api_url}/console/models")
        page.wait_for_selector("body[data-loaded=true]")
        page.get_by_label("Model", exact=True).select_option(first_job["model"]["id"])
        page.evaluate(
            """(b64) => {
              const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
              const data = new DataTransfer();
              data.items.add(new File([bytes], "shape.png", { type: "image/png" }));
              const drop = new DragEvent("drop", { dataTransfer: data, bubbles: true });
              document.getElementById("dropzone").dispatchEvent(drop);
            }""",
            base64.b64encode(png).decode(),
        )
        expect(page.locator("#predictions li")).to_have_count(len(SHAPES), timeout=60_000)
        labels = page.locator("#predictions .label").all_inner_texts()
        assert sorted(labels) == sorted(SHAPES)
        expect(page.locator("#latency")).to_contain_text("ms")
        assert page.evaluate("document.getElementById('try-preview').naturalWidth") > 0
        page.locator("#try-it").scroll_into_view_if_needed()
        _shoot(page, f"try-it-{width}", page.locator("#try-it"))
        recorder.assert_clean()


@pytest.fixture(scope="module")
def retrained(
    api_stack: LocalStack, api: httpx.Client, browser: Browser, first_job: dict[str, Any], dataset: str
) -> dict[str, Any]:
    """Two images relabelled and one excluded on the first job's page; the retrain submitted from there."""
    original = _objects(dataset)
    with console_page(browser, api_stack.api_key) as (page, recorder):
        page.goto(f"{api_stack.config.api_url}/console/jobs/{first_job['id']}")
        page.wait_for_selector("body[data-ended=true]")
        menus = page.locator("#report-parts select[data-path]")
        paths = list(dict.fromkeys(menus.evaluate_all("ms => ms.map(m => m.dataset.path)")))
        assert len(paths) >= 3, paths
        chosen = {}
        for path, action in zip(paths[:3], ("relabel", "relabel", "exclude"), strict=True):
            menu = page.locator(f'select[data-path="{path}"]').first
            values = menu.evaluate("m => [...m.options].map(o => o.value)")
            value = next(v for v in values if v.startswith("relabel:")) if action == "relabel" else "exclude"
            menu.select_option(value)
            chosen[path] = value
        expect(page.locator("#clean-summary")).to_have_text("2 to relabel, 1 to exclude.")
        page.get_by_role("button", name="Create revision and retrain").click()
        page.get_by_role("dialog").get_by_role("button", name="Create and retrain").click()
        page.wait_for_url(lambda u: first_job["id"] not in u)
        retrain_id = page.url.rsplit("/", 1)[1]
        expect(page.locator("#job-status")).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)
        expect(page.locator("#accuracy-delta")).to_be_visible()
        recorder.assert_clean()
    revisions = api.get(f"/v1/jobs/{retrain_id}/revisions").json()
    return {
        "job": wait_job(api, retrain_id, timeout=10),
        "revision": revisions["trained_on"],
        "chosen": chosen,
        "original": original,
    }


def test_cleaning_writes_exactly_the_marked_changes_and_the_retrain_trains_on_them(
    api: httpx.Client, first_job: dict[str, Any], retrained: dict[str, Any], dataset: str
) -> None:
    revision, chosen, job = retrained["revision"], retrained["chosen"], retrained["job"]
    assert _objects(dataset) == retrained["original"]  # the original, byte for byte
    listing = api.get(f"/v1/jobs/{first_job['id']}/artifacts/dataset.csv").text
    before = {r["path"]: r["label"] for r in csv.DictReader(io.StringIO(listing))}
    labels_csv = _objects(revision["dataset_uri"])[S3Location.parse(revision["dataset_uri"]).prefix + "labels.csv"]
    after = {r["path"]: r["label"] for r in csv.DictReader(io.StringIO(labels_csv.decode()))}
    changed = {p for p in before if after.get(p) != before[p]}
    assert changed == set(chosen)
    for path, value in chosen.items():
        assert (path not in after) if value == "exclude" else after[path] == value.removeprefix("relabel:")
    # The retrain: the same parameters on the revision, trained from its labels.csv.
    assert job["status"] == "succeeded", job["error"]
    assert job["params"] == first_job["params"] | {"dataset_uri": revision["dataset_uri"]}
    assert job["dataset"]["layout"] == "labels_csv"
    total = lambda j: sum(sum(c.values()) for c in j["dataset"]["counts"].values())  # noqa: E731
    assert total(job) == total(first_job) - 1


def test_moving_an_alias_changes_the_model_list(
    api_stack: LocalStack, browser: Browser, retrained: dict[str, Any]
) -> None:
    with console_page(browser, api_stack.api_key) as (page, recorder):
        page.goto(f"{api_stack.config.api_url}/console/models")
        page.wait_for_selector("body[data-loaded=true]")
        first = page.locator(f'#models tr[data-name="{NAME}"][data-version="1"] td.aliases')
        expect(first).not_to_contain_text("production")
        page.get_by_label("Model name", exact=True).select_option(NAME)
        page.get_by_label("Alias", exact=True).fill("production")
        page.get_by_label("Version", exact=True).select_option("1")
        page.get_by_role("button", name="Move alias").click()
        page.get_by_role("dialog").get_by_role("button", name="Move alias").click()
        expect(first).to_contain_text("production")
        expect(page.locator("#alias-result")).to_contain_text("now points at version 1")
        recorder.assert_clean()


def test_a_second_tenant_sees_none_of_the_first_tenants_jobs(
    api_stack: LocalStack, browser: Browser, first_job: dict[str, Any]
) -> None:
    store = JobStore.from_url(api_stack.database_url)
    try:
        _, key = Tenancy(store.engine).create_key("console-team-b")
    finally:
        store.engine.dispose()
    with console_page(browser, key) as (page, recorder):
        page.goto(f"{api_stack.config.api_url}/console/")
        page.wait_for_selector("body[data-loaded=true]")
        expect(page.locator("#empty")).to_be_visible()
        assert NAME not in page.content()
        page.goto(f"{api_stack.config.api_url}/console/models")
        page.wait_for_selector("body[data-loaded=true]")
        expect(page.locator("#no-models")).to_be_visible()
        page.goto(f"{api_stack.config.api_url}/console/jobs/{first_job['id']}")
        expect(page.locator("#job-name")).to_have_text(f"No job {first_job['id']}")
        recorder.console_errors = [e for e in recorder.console_errors if "404" not in e]  # that page's 404
        recorder.assert_clean()


def test_screenshots_are_written_and_refreshed_when_asked() -> None:
    """build/console/ holds this run's shots; TRAINYARD_REFRESH_SCREENSHOTS=1 copies them to docs/screenshots/
    (linked from the README; tests/service/test_console_pages.py fails when the console changed after them)."""
    names = sorted(p.name for p in SHOTS.glob("*.png"))
    assert names == sorted(f"{page}-{w}.png" for page in ("jobs", "job", "try-it") for w in (1366, 390)), names
    if os.environ.get("TRAINYARD_REFRESH_SCREENSHOTS") != "1":
        return
    COMMITTED_SHOTS.mkdir(parents=True, exist_ok=True)
    for name in names:
        # A palette of 128 colours: a quarter of the bytes in git, and screenshots of flat UI lose nothing visible.
        with Image.open(SHOTS / name) as shot:
            shot.convert("RGB").quantize(128).save(COMMITTED_SHOTS / name, optimize=True)
