"""Every command the documentation shows works when pasted: README.md, docs/api.md, the report page, examples/.

Against the real stack (S3 server, Ray, Serve, the API), from a folder like a user's: the stack's home is
`./.trainyard` there (as beside the checkout), the photos the lines name (`./my-photos`, `cat.jpg` …) are
small generated ones, and `TRAINYARD_URL` and `TRAINYARD_API_KEY` are set as the docs tell users to. First the
example script trains on `./my-photos` and must print a prediction; its job and model fill in `<job id>` and
`<model id>`. Then each `curl` line must answer the status the API documents for its route, each `trainyard`
line must exit 0, and each Python snippet must run to its end. Lines that start a job without waiting for it
have it cancelled at once, so they hold no Ray resources.

`tests/docs/test_doc_commands_harness.py` checks the extraction and that a broken line fails.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from core.store import JobStore
from infra.local.sample_data import make_shapes
from infra.local.stack import LocalStack
from tests.utils.doc_commands import (
    NOT_RUN,
    SNIPPETS_RUN_ELSEWHERE,
    DocCommand,
    documented_commands,
    python_snippets,
    report_commands,
    run_command,
)
from tests.utils.models import publish_version
from trainyard.cli.batch import HANDFUL

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", REPO / "docs" / "api.md"]
# Every script in examples/ with the arguments that take it to its success path.
EXAMPLES = {"train_local_folder.py": ["my-photos"]}


@pytest.fixture(scope="module")
def live(api_stack: LocalStack) -> LocalStack:
    return api_stack  # the session's shared stack with its API (tests/conftest.py)


def _jpeg(path: Path, size: tuple[int, int], seed: int) -> Path:
    """A noise JPEG (noise: it stays as large as its pixels make it)."""
    noise = random.Random(seed).randbytes(size[0] * size[1] * 3)
    Image.frombytes("RGB", size, noise).save(path, format="JPEG", quality=95)
    return path


@pytest.fixture(scope="module")
def workdir(live: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder beside the stack: `.trainyard` (the stack's home), `my-photos/` and the images named."""
    root = tmp_path_factory.mktemp("user")
    (root / ".trainyard").symlink_to(live.config.home)
    # Enough photos for three head-only steps at the default batch size: at the default 224 px the head alone then
    # classifies them perfectly, and the documented default-parameter jobs (the example script's among them) keep it
    # instead of starting Ray Train, which other modules test.
    make_shapes(root / "my-photos", train_per_class=24, valid_per_class=4, size=64)
    for name in ("cat.jpg", "dog.jpg", "image.jpg"):
        shape = sorted((root / "my-photos" / "valid").rglob("*.png"))[len(name) % 3]
        Image.open(shape).convert("RGB").save(root / name, format="JPEG")
    # The batch lines' inputs: s3://my-bucket/incoming/ (ten photos) and `./photos` (a handful, which
    # `trainyard predict` classifies through the endpoint instead of a Ray job: tests/e2e/test_batch_predictions.py
    # runs a larger folder as a batch with the same command).
    (root / "photos").mkdir()
    s3 = live.s3_client()
    s3.create_bucket(Bucket="my-bucket")
    for i, shape in enumerate(sorted((root / "my-photos" / "train").rglob("*.png"))[:10]):
        photo = root / "photos" / f"{i}.jpg"
        Image.open(shape).convert("RGB").save(photo, format="JPEG")
        s3.upload_file(str(photo), "my-bucket", f"incoming/{i}.jpg")
        if i >= HANDFUL:
            photo.unlink()
    return root


@pytest.fixture(scope="module")
def env(live: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINYARD_", "AWS_"))}
    return {
        **clean,
        # The user's config folder (where `trainyard up` records the stack's home), not this machine's.
        "TRAINYARD_CONFIG": str(tmp_path_factory.mktemp("user-config") / "config.toml"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{clean.get('PATH', '')}",  # `trainyard`, `python`
        "PYTHONPATH": str(REPO),
        "TRAINYARD_URL": live.config.api_url,
        "TRAINYARD_API_KEY": live.api_key,
        "BROWSER": "true",  # `report --open`: a browser that opens nothing
        "COLUMNS": "120",
    }


@pytest.fixture(scope="module")
def finished(workdir: Path, env: dict[str, str]) -> dict[str, str]:
    """The example script trains on ./my-photos to its success path; its job and model are the docs' ids."""
    assert sorted(p.name for p in (REPO / "examples").glob("*.py")) == sorted(EXAMPLES), "add it to EXAMPLES"
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "train_local_folder.py"), *EXAMPLES["train_local_folder.py"]],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    prediction = re.search(r"^(train|valid)/\w+/\w+\.png: (circle|square|triangle) \(\d+\.\d%\)$", result.stdout, re.M)
    assert prediction, result.stdout
    job_id = re.search(r"/v1/jobs/(job-[\w-]+)/report", result.stdout)
    assert job_id, result.stdout
    job = httpx.get(f"{env['TRAINYARD_URL']}/v1/jobs/{job_id.group(1)}", headers=_auth(env)).json()
    return {"<job id>": job["id"], "<model id>": job["model"]["id"]}


def _auth(env: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {env['TRAINYARD_API_KEY']}"}


def _fill(command: DocCommand, ids: dict[str, str]) -> DocCommand:
    line = command.line
    for placeholder, value in ids.items():
        line = line.replace(placeholder, value)
    return DocCommand(command.source, line, command.setup)


def _cancel_new_jobs(store: JobStore, before: set[str], env: dict[str, str]) -> None:
    """Cancel the jobs a line started and left running (it did not wait for them): they must not hold Ray."""
    for job in store.list_jobs(limit=50):
        if job.id not in before and not job.status.terminal:
            cancelled = httpx.post(f"{env['TRAINYARD_URL']}/v1/jobs/{job.id}/cancel", headers=_auth(env))
            assert cancelled.status_code == 200, cancelled.text


def test_every_documented_command_works_as_written(
    live: LocalStack, workdir: Path, env: dict[str, str], finished: dict[str, str]
) -> None:
    store = JobStore.from_url(live.database_url)
    s3 = live.s3_client()
    # What the versions lines act on: `pets` with two versions, and a version of its own to undeploy.
    for answer in ("cat", "dog"):
        publish_version(s3, store, "pets", ["cat", "dog"], answer, exports=True)
    disposable = publish_version(s3, store, "disposable", ["cat", "dog"], "cat")
    openapi = httpx.get(f"{env['TRAINYARD_URL']}/openapi.json").json()

    commands = [c for doc in DOCS for c in documented_commands(doc)]
    assert len(commands) >= 30, commands  # the extraction found the pages' examples
    # Undeploying goes last, and takes the disposable version: the other lines still need the trained model.
    ordered = sorted(commands, key=lambda c: " DELETE " in c.line)
    ran = []
    for command in ordered:
        if command.line in NOT_RUN:
            continue
        ids = {**finished, "<model id>": disposable.id} if " DELETE " in command.line else finished
        before = {job.id for job in store.list_jobs(limit=200)}
        run_command(_fill(command, ids), workdir, env, openapi)
        _cancel_new_jobs(store, before, env)
        ran.append(command.source)
    assert len(ran) == len(commands) - len(NOT_RUN), ran

    snippets = [s for doc in DOCS for s in python_snippets(doc)]
    alone = [s for s in snippets if not any(marker in s.line for marker in SNIPPETS_RUN_ELSEWHERE)]
    assert len(snippets) - len(alone) == len(SNIPPETS_RUN_ELSEWHERE) and alone, "a snippet marker matches nothing"
    for snippet in alone:
        result = subprocess.run(
            [sys.executable, "-c", snippet.line], cwd=workdir, env=env, capture_output=True, text=True, timeout=900
        )
        assert result.returncode == 0, f"{snippet.source}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        assert "Prediction(" in result.stdout or "label" in result.stdout, result.stdout[-2000:]
    store.engine.dispose()


def test_the_report_pages_lines_work_pasted(workdir: Path, env: dict[str, str], finished: dict[str, str]) -> None:
    page = httpx.get(f"{env['TRAINYARD_URL']}/v1/jobs/{finished['<job id>']}/report", headers=_auth(env)).text
    commands = report_commands(page)
    assert [c.kind for c in commands] == ["curl", "trainyard"], commands
    assert '-H "Authorization: Bearer $TRAINYARD_API_KEY"' in commands[0].line
    openapi = httpx.get(f"{env['TRAINYARD_URL']}/openapi.json").json()
    for command in commands:
        result = run_command(command, workdir, env, openapi)
        assert "predictions" in result.stdout or "image.jpg:" in result.stdout, result.stdout


def test_curl_data_binary_of_a_5_mb_photo_without_a_content_type(
    workdir: Path, env: dict[str, str], finished: dict[str, str]
) -> None:
    photo = _jpeg(workdir / "photo.jpg", (2400, 1800), seed=5)
    assert 4_500_000 < photo.stat().st_size < 6_500_000, photo.stat().st_size
    url = f"{env['TRAINYARD_URL']}/v1/models/{finished['<model id>']}/predict"
    # The real curl binary, as a user types it: --data-binary sends application/x-www-form-urlencoded.
    result = subprocess.run(
        ["curl", "-s", "-v", "-H", f"Authorization: Bearer {env['TRAINYARD_API_KEY']}", url, "--data-binary",
         "@photo.jpg", "-w", "\n%{http_code}"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "Content-Type: application/x-www-form-urlencoded" in result.stderr  # curl's default, unchanged
    body, status = result.stdout.rsplit("\n", 1)
    assert status == "200", result.stdout[-2000:]
    answer: dict[str, Any] = httpx.Response(200, content=body.encode()).json()
    assert answer["predictions"] and answer["predictions"][0]["label"] in ("circle", "square", "triangle")


def test_after_up_the_cli_finds_the_stack_from_any_folder(
    live: LocalStack, workdir: Path, env: dict[str, str], tmp_path: Path
) -> None:
    up = subprocess.run(["trainyard", "up"], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    record = Path(env["TRAINYARD_CONFIG"]).parent / "stack-home"
    assert record.read_text().strip() == str(live.config.home.resolve())
    # A shell in another folder, with no TRAINYARD_URL and no key: the CLI finds the stack, its API and its key.
    bare = {k: v for k, v in env.items() if k not in ("TRAINYARD_URL", "TRAINYARD_API_KEY")}
    models = subprocess.run(
        ["trainyard", "models", "--json"], cwd=tmp_path, env=bare, capture_output=True, text=True, timeout=120
    )
    assert models.returncode == 0, models.stderr
    assert json.loads(models.stdout)["models"], models.stdout
