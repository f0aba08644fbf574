"""benchmarks/gpu_check.py on CPU, in a process where Ray, boto3 and the service's stack cannot be imported.

The GPU machine it is written for has torch but none of those; this run is what keeps the script and the
modules it imports (the training loop of every Ray Train worker, the replica's forward) from growing a need
for them unnoticed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.gpu_check import COLUMNS, MEASURES, SERVE_BATCHES, TRAIN_BATCHES
from infra.local.sample_data import make_shapes

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("ray", "boto3", "botocore", "fastapi", "starlette", "pydantic_settings", "sqlalchemy", "pyarrow")
# Installs a finder that refuses the blocked packages, then runs the script as `python -m` would.
RUNNER = f"""
import importlib.abc, runpy, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is not on the GPU machine")
sys.meta_path.insert(0, Refuse())
sys.argv = ["gpu_check", *sys.argv[1:]]
runpy.run_module("benchmarks.gpu_check", run_name="__main__")
"""


def test_the_gpu_check_runs_on_cpu_without_ray_or_boto3_and_prints_every_measure(tmp_path: Path) -> None:
    data = make_shapes(tmp_path / "shapes", train_per_class=6, valid_per_class=4, size=48)
    out = tmp_path / "gpu-check.json"
    args = ["--device", "cpu", "--limit", "16", "--image-size", "32", "--data", str(data), "--out", str(out)]
    run = subprocess.run(
        [sys.executable, "-c", RUNNER, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]

    header = next(line for line in run.stdout.splitlines() if line.startswith("| measure"))
    assert [cell.strip() for cell in header.strip("|").split("|")] == list(COLUMNS)
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert {row["measure"] for row in rows} == set(MEASURES)
    settings = [row["setting"] for row in rows]
    for batch in TRAIN_BATCHES:
        assert any(s.startswith(f"batch {batch}, DDP world 1 (gloo)") for s in settings), settings
    for batch in SERVE_BATCHES:
        assert any(s.startswith(f"eager, batch {batch},") for s in settings), settings
        assert any(s.startswith(f"TorchScript graph (serving/graphs.py), batch {batch},") for s in settings), settings
    timed = [row for row in rows if row["measure"] in ("decode + augment", "features", "training", "serving")]
    assert all(row["img/s"] and row["img/s"] > 0 for row in timed), timed
    assert all(row["p50 ms"] > 0 for row in rows if row["measure"] == "serving")
    accuracy = next(row for row in rows if row["measure"] == "accuracy")
    assert "/12 (" in accuracy["detail"]  # counted over the 12 validation images
    assert [row["detail"] for row in rows if row["measure"].startswith("gpu")] == ["n/a", "n/a"]
    assert result["facts"]["device"] == "cpu" and len(result["facts"]["load_average_at_start"]) == 3
