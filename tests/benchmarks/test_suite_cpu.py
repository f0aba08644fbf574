"""benchmarks/suite_cpu.py: a command's CPU, put to the kinds of process that spent it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.suite_cpu import kind_of, title_of

REPO = Path(__file__).resolve().parents[2]


def test_processes_are_put_to_their_kind_by_the_title_ray_gives_them() -> None:
    assert kind_of("ray::ServeReplica:trainyard:ClassifierServer") == "serve"
    assert kind_of("ray::ServeController.listen_for_change") == "serve"
    assert kind_of("ray::RayTrainWorker.run_train_fn") == "ray train workers"
    assert kind_of("ray::TrainController.run") == "ray train helpers"
    assert kind_of("/venv/bin/python -m jobs.driver job-20261207130936-81884ff3") == "job drivers"
    assert kind_of("/venv/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server --log_dir=x") == "ray daemons"
    assert kind_of("ray::DashboardAgent") == "ray daemons"
    assert kind_of("ray::JobSupervisor") == "ray job supervisors"
    assert kind_of("/venv/bin/python -m uvicorn --factory service.main:create_app") == "api"
    # Its folders are in pytest's temporary tree, which must not make it a test process.
    s3rver = "node --openssl-legacy-provider /repo/infra/local/s3/serve.js --directory /tmp/pytest-of-root/p/s3"
    assert kind_of(s3rver) == "s3 server"
    assert kind_of("/bin/sleep 1") == "other"


def test_within_a_kind_a_process_is_named_by_what_it_runs() -> None:
    assert title_of("ray::ServeController.listen_for_change") == "ray::ServeController"
    assert title_of("ray::RayTrainWorker") == "ray::RayTrainWorker"
    assert title_of("/venv/bin/python -m jobs.driver job-20261207130936-81884ff3") == "-m jobs.driver"
    assert title_of("/venv/bin/python -u /venv/lib/ray/autoscaler/_private/monitor.py --logs-dir=x") == "python -u"
    assert title_of("/venv/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server --log_dir=x") == (
        "gcs_server --log_dir=x"
    )
    assert title_of("") == "?"


def test_a_commands_busy_child_is_counted(tmp_path: Path) -> None:
    out = tmp_path / "cpu.json"
    spin = "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 1.5: pass"
    busy = f"import subprocess, sys; subprocess.run([sys.executable, '-c', '{spin}'])"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.suite_cpu", "--interval", "0.2", "--out", str(out), "--", sys.executable,
         "-c", busy],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "| other |" in result.stdout, result.stdout
    measured = json.loads(out.read_text())
    other = next(k for k in measured["kinds"] if k["kind"] == "other")
    assert 1.3 <= other["cpu_s"] <= 3.0, measured  # the child's 1.5 s of CPU, and little else
    assert measured["exit_code"] == 0
    spinning = [t for t in measured["titles"] if t["kind"] == "other" and t["title"].endswith("-c")]
    assert spinning and 1.3 <= sum(t["cpu_s"] for t in spinning) <= 3.0, measured["titles"]
    assert "costliest titles" in result.stdout
