"""A job starts fetching as soon as its driver starts: the driver module itself imports no torch and no Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "ray", "matplotlib")


def test_the_driver_imports_only_what_fetching_and_validating_need() -> None:
    # Importing torch, torchvision and Ray Train takes ~7 s on 2 cores: the driver loads them on a thread while it
    # fetches and validates, so none of them may come in with `python -m jobs.driver`'s own imports.
    probe = f"import sys, jobs.driver; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_later_stages_are_one_import_away() -> None:
    # What the loader thread imports: a broken import there would fail every job at the end of validation.
    probe = "import jobs.pipeline; print(jobs.pipeline.Pipeline.__name__)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "Pipeline"


def test_what_only_later_stages_use_is_not_waited_for_at_the_end_of_validation() -> None:
    # The driver waits for jobs.pipeline before it connects to Ray; matplotlib and Ray Train (~1.8 s on 2 cores)
    # load afterwards, on the loader thread (LATER_MODULES), and must import cleanly there.
    later = ("matplotlib", "ray.train", "ray.tune")
    probe = (
        "import sys, importlib, jobs.pipeline as p; "
        f"print(sorted(m for m in {later!r} if m in sys.modules)); "
        "[importlib.import_module(m) for m in p.LATER_MODULES]; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "ok"], out.stdout
