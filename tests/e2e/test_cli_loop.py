"""The `trainyard` CLI as a user runs it: a subprocess against the real stack (S3 server, Ray, Serve, API).

One small job trains from a local folder (uploaded by the CLI) while a single-class folder fails beside it;
every other command then runs against their results. No TRAINYARD_URL is set: the CLI finds the API, the S3
server and its key in the stack's state file, as it would in a shell next to `trainyard up`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from infra.local.sample_data import SHAPES, make_shapes
from infra.local.stack import LocalStack
from trainyard import Client

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TINY = ["--image-size", "32", "--epochs", "1", "--freeze-epochs", "1", "--batch-size", "8", "--num-workers", "1"]


@pytest.fixture(scope="module")
def cli_env(api_stack: LocalStack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINYARD_", "AWS_"))}
    env.update(TRAINYARD_HOME=str(api_stack.config.home), PYTHONPATH=str(REPO), COLUMNS="200")
    return env


def trainyard(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trainyard", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _popen(env: dict[str, str], *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *argv],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-data")
    shapes = make_shapes(root / "shapes", train_per_class=10, valid_per_class=4, size=32)
    single = root / "one-class"
    for split in ("train", "valid"):
        (single / split / "circle").mkdir(parents=True)
        for png in sorted((shapes / split / "circle").iterdir()):
            (single / split / "circle" / png.name).write_bytes(png.read_bytes())
    return {"shapes": shapes, "single": single}


@pytest.fixture(scope="module")
def runs(cli_env: dict[str, str], folders: dict[str, Path]) -> dict[str, Any]:
    # The two failing runs go one after the other beside the training job: at most two Ray drivers at once.
    good = _popen(cli_env, "-m", "trainyard", "submit", str(folders["shapes"]), *TINY, "--name", "cli-e2e", "--wait")
    started: list[subprocess.Popen[str]] = [good]
    try:
        failing = _popen(cli_env, "-m", "trainyard", "submit", str(folders["single"]), *TINY, "--wait", "--json")
        started.append(failing)
        failing_out, failing_err = failing.communicate(timeout=300)
        example = _popen(cli_env, str(REPO / "examples" / "train_local_folder.py"), str(folders["single"]))
        started.append(example)
        example_out, example_err = example.communicate(timeout=300)
        good_out, good_err = good.communicate(timeout=600)
    finally:
        for proc in started:  # never leave a waiting CLI behind when the fixture fails
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return {
        "good": (good.returncode, good_out, good_err),
        "failing": (failing.returncode, failing_out, failing_err),
        "example": (example.returncode, example_out, example_err),
    }


def test_submit_a_local_folder_uploads_shows_progress_and_exits_0(runs: dict[str, Any]) -> None:
    code, out, err = runs["good"]
    assert code == 0, out + err
    assert "42 of 42 files" in out and "to upload to s3://trainyard-uploads/uploads/admin/shapes-" in out
    assert "uploaded 42 files" in out
    assert "running training" in out and "epoch 2/2" in out  # one line per change, not a live display
    assert "status      succeeded" in out and "predict     http://127.0.0.1:" in out
    assert "Traceback" not in out + err and "\x1b[" not in out


def test_a_failing_job_exits_1_with_the_apis_message(runs: dict[str, Any]) -> None:
    code, out, err = runs["failing"]
    assert code == 1, out + err
    job = json.loads(out)  # --json: the job on stdout, progress and the message on stderr
    assert (job["status"], job["error"]["phase"]) == ("failed", "validating")
    assert job["error"]["message"] in err and "failed in validating" in err
    assert "Traceback" not in out + err


def test_the_sdk_example_reports_the_failure_in_one_line(runs: dict[str, Any]) -> None:
    # The example shares the upload with the CLI's failing run (same folder, same prefix) and fails the same way.
    code, out, err = runs["example"]
    assert code == 1, out + err
    assert "failed in validating" in err and "Traceback" not in out + err


def test_a_second_submit_of_the_same_folder_uploads_nothing(
    runs: dict[str, Any], cli_env: dict[str, str], folders: dict[str, Path]
) -> None:
    again = trainyard(cli_env, "submit", str(folders["shapes"]), *TINY, "--json")
    assert again.returncode == 0, again.stderr
    job = json.loads(again.stdout)
    assert "0 of 42 files (0.0 MB) to upload" in again.stderr and "42 already there" in again.stderr
    assert job["params"]["dataset_uri"].startswith("s3://trainyard-uploads/uploads/admin/shapes-")
    cancelled = trainyard(cli_env, "cancel", job["id"], "--json")  # free the cluster for the rest
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["status"] == "cancelled"


def test_every_command_answers_json_and_predict_works(
    runs: dict[str, Any], cli_env: dict[str, str], ray_stack: LocalStack, tmp_path: Path
) -> None:
    api_url = ray_stack.config.api_url
    listed = json.loads(trainyard(cli_env, "list", "--status", "succeeded", "--json").stdout)
    job = next(j for j in listed["jobs"] if j["name"] == "cli-e2e")
    model_id = job["model"]["id"]
    for args in (
        ("status", job["id"]),
        ("events", job["id"]),
        ("models",),
        ("report", job["id"]),
        ("stack", "status"),
    ):
        result = trainyard(cli_env, *args, "--json")
        assert result.returncode == 0, (args, result.stderr)
        json.loads(result.stdout)
    follow = trainyard(cli_env, "events", job["id"], "--follow", "--json")
    kinds = [json.loads(line)["kind"] for line in follow.stdout.splitlines()]
    # The stream ends with the job; what the service did for it after it ended (its exports, its webhook, its
    # MLflow run, its scale-up overhead) is in its log after `succeeded`.
    assert follow.returncode == 0 and "succeeded" in kinds, kinds
    after_end = set(kinds[kinds.index("succeeded") + 1 :])
    assert after_end <= {"exported", "webhook", "webhook_retry", "webhook_failed", "tracking_unavailable",
                         "tracking_resumed", "overhead"}, kinds  # fmt: skip

    held_out = make_shapes(tmp_path, train_per_class=0, valid_per_class=1, size=32, seed=7)
    images = [str(held_out / "valid" / shape / f"{shape}_000.png") for shape in SHAPES]
    predicted = trainyard(cli_env, "predict", model_id, *images, "--top-k", "2", "--json")
    assert predicted.returncode == 0, predicted.stderr
    results = json.loads(predicted.stdout)["results"]
    assert [r["image"] for r in results] == images
    assert all(len(r["predictions"]) == 2 and r["predictions"][0]["label"] in SHAPES for r in results)

    human = trainyard(cli_env, "predict", model_id, images[0])
    assert human.returncode == 0 and human.stdout.startswith(f"{images[0]}: ")

    # The SDK's Model.predict takes a PIL image or bytes as well as a path.
    with Client(url=api_url) as client:
        model = client.get_model(model_id)
        assert model.job_id == job["id"]
        from_pil = model.predict(Image.open(images[0]), top_k=1)
        from_bytes = model.predict(Path(images[0]).read_bytes(), top_k=1)
        assert from_pil[0].label == from_bytes[0].label == results[0]["predictions"][0]["label"]
