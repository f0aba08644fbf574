"""Every console page checked by axe-core (WCAG 2.1 A and AA: labels, names, contrast, landmarks, ARIA) in
headless Chromium, at a laptop's width and a phone's, with the data a finished and a failed job show.

axe-core is fetched from npm once (scripts/fetch-axe, pinned) and injected by the test; the console never
loads it.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser
from service_testkit import Api, ApiFactory, FakeLauncher

from core.spec import Phase
from tests.utils.console import chromium, console_page

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["cat", "dog", "fox"]


@pytest.fixture(scope="module")
def axe_source() -> str:
    path = subprocess.run([ROOT / "scripts" / "fetch-axe"], check=True, capture_output=True, text=True).stdout
    return Path(path.strip()).read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def _finished_job(api: Api, name: str, fail: bool = False) -> str:
    job_id = api.create_job(name=name)["id"]
    store = api.store
    store.set_phase(job_id, Phase.validating, 0.05)
    counts = {"train": dict.fromkeys(CLASSES, 10), "valid": dict.fromkeys(CLASSES, 3)}
    store.set_result(
        job_id,
        "dataset",
        {
            "layout": "folders",
            "classes": CLASSES,
            "splits": {"train": {"source": "train/", "images": 30}, "valid": {"source": "valid/", "images": 9}},
            "counts": counts,
            "skipped": [{"path": "train/cat/notes.txt", "reason": "not an image file"}],
            "num_skipped": 1,
        },
    )
    lrs = [1e-7 * 1.2**k for k in range(90)]
    losses = [1.1 - 0.6 / (1 + math.exp(-(k - 40) / 6)) for k in range(90)]
    sweep = {"chosen_lr": lrs[50], "method": "valley", "suggestions": {"valley": lrs[50], "steep": lrs[40]}}
    store.set_result(job_id, "lr_sweep", sweep | {"lrs": lrs, "losses": losses, "steps": 90, "diverged": False})
    store.set_phase(job_id, Phase.training, 0.4)
    for epoch in (1, 2):
        store.add_epoch(job_id, {"epoch": epoch, "train_loss": 1 / epoch, "valid_loss": 0.8 / epoch, "accuracy": 0.8})
    if fail:
        store.fail(job_id, "training_failed", "distributed training failed: out of memory", Phase.training)
        return job_id
    entry = {"path": "valid/dog/1.jpg", "actual": "dog", "predicted": "cat", "probability": 0.8}
    store.set_result(
        job_id,
        "evaluation",
        {
            "accuracy": 0.89,
            "loss": 0.3,
            "images": 9,
            "classes": CLASSES,
            "per_class": {c: {"precision": 0.9, "recall": 0.9, "support": 3} for c in CLASSES},
            "confusion_matrix": [[3, 0, 0], [1, 2, 0], [0, 0, 3]],
            "most_wrong": [entry],
            "least_certain": [entry | {"path": "valid/fox/2.jpg", "actual": "fox", "predicted": "fox"}],
        },
    )
    store.set_result(job_id, "artifacts", {"dataset.csv": "s3://bucket/jobs/x/dataset.csv"})
    store.succeed(job_id, None)
    return job_id


@pytest.mark.parametrize("width", [1366, 390])
def test_every_console_page_passes_axe(make_api: ApiFactory, browser: Browser, axe_source: str, width: int) -> None:
    api = make_api(launcher=FakeLauncher())
    done, failed = _finished_job(api, "pets"), _finished_job(api, "pets-oom", fail=True)
    pages = {
        "sign in": ("/console/", "#sign-in:not([hidden])", None),
        "jobs": ("/console/", "body[data-loaded=true]", api.admin_key),
        "finished job": (f"/console/jobs/{done}", "body[data-ended=true]", api.admin_key),
        "failed job": (f"/console/jobs/{failed}", "body[data-ended=true]", api.admin_key),
        "new job": ("/console/new", "#field-dataset_uri", api.admin_key),
        "compare": (f"/console/compare?ids={done},{failed}", "body[data-loaded=true]", api.admin_key),
        "models": ("/console/models", "body[data-loaded=true]", api.admin_key),
    }
    found = {}
    for name, (path, ready, key) in pages.items():
        with console_page(browser, key, width=width, bypass_csp=True) as (page, recorder):
            page.goto(api.url + path)
            page.wait_for_selector(ready)
            page.evaluate(axe_source)
            result = page.evaluate(
                "axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']})"
            )
            found[name] = [
                f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
                for v in result["violations"]
            ]
            recorder.assert_clean()
    assert not any(found.values()), {name: v for name, v in found.items() if v}
