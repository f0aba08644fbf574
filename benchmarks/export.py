"""Where to build a model's exports: once at publish, in the driver, or on each download, in the API.

    .venv/bin/python -m benchmarks.export [--arch efficientnet_lite0] [--image-size 224] [--rounds 3]

Measures, each in a fresh process (so imports and memory are what a process really pays):
- publish: what `jobs.export.build_exports` adds to a job's publish stage, where torch is loaded and the model is
  in memory already (median over `--rounds`), and the files' sizes;
- on request: what one download would cost an API process that built the file then: importing torch and the
  model code, loading the model artifact, building the format, and the process's peak memory, beside an API
  process's own (it never imports torch).
And what the MLflow client adds to an API process (it is imported only when tracking is on).
Prints a table and writes benchmarks/results/export-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

_PUBLISH = """
import json, statistics, sys, time
import torch
from core.artifact import artifact_meta
from core.backbones import build_classifier, local_pretrained_weights
from jobs.export import build_exports
arch, size, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(2)
model = build_classifier(arch, 3, local_pretrained_weights(arch)).eval()
meta = artifact_meta("job-bench", arch, ["a", "b", "c"], size, {})
times = []
for _ in range(rounds):
    began = time.perf_counter()
    manifest, built = build_exports(model, meta)
    times.append(time.perf_counter() - began)
sizes = {str(f): round(len(b) / 2**20, 1) for f, b in built.items()}
print(json.dumps({"build_s": round(statistics.median(times), 2), "mib": sizes, "errors": manifest.errors}))
"""

_ON_REQUEST = """
import io, json, resource, sys, time
began = time.perf_counter()
import torch
from core.artifact import artifact_meta, dump_artifact, load_artifact
from core.backbones import build_classifier
from jobs.export import build_exports
imported = time.perf_counter() - began
arch, size = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(2)
artifact = dump_artifact(build_classifier(arch, 3, None), artifact_meta("job-bench", arch, ["a", "b", "c"], size, {}))
began = time.perf_counter()
meta, model = load_artifact(artifact)
manifest, built = build_exports(model, meta)
built_s = time.perf_counter() - began
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"import_s": round(imported, 2), "load_and_build_s": round(built_s, 2), "peak_mib": round(peak)}))
"""

_API = """
import json, resource, sys, time
from service.main import create_app
create_app()
alone = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
began = time.perf_counter()
from mlflow import MlflowClient  # what an API with TRAINYARD_MLFLOW_TRACKING_URI set loads on its first mirror pass
mlflow_s = time.perf_counter() - began
with_mlflow = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
report = {"peak_mib": round(alone), "with_mlflow_mib": round(with_mlflow), "mlflow_import_s": round(mlflow_s, 2)}
print(json.dumps(report))
"""


def _run(code: str, *args: str) -> dict[str, object]:
    argv = [sys.executable, "-c", code, *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    publish = _run(_PUBLISH, args.arch, str(args.image_size), str(args.rounds))
    on_request = _run(_ON_REQUEST, args.arch, str(args.image_size))
    api = _run(_API)
    print(f"{args.arch} at {args.image_size} px")
    print(f"  at publish (driver, model in memory): build {publish['build_s']} s; files MiB {publish['mib']}")
    print(
        f"  the API: {api['peak_mib']} MiB; the MLflow client adds {api['mlflow_import_s']} s of import, "
        f"{api['with_mlflow_mib']} MiB in all"
    )
    print(
        f"  on request (in an API process): import torch {on_request['import_s']} s, load + build "
        f"{on_request['load_and_build_s']} s, peak {on_request['peak_mib']} MiB (the API alone: {api['peak_mib']} MiB)"
    )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"export-{datetime.now():%Y%m%d-%H%M%S}.json"
    report = {"publish": publish, "on_request": on_request, "api": api}
    out.write_text(json.dumps({"arch": args.arch, "image_size": args.image_size, **report}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
