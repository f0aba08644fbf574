"""Train a classifier on a folder of your own images and ask it about one, end to end, with the SDK.

    trainyard up                                           # the local stack (or set TRAINYARD_URL)
    python examples/train_local_folder.py path/to/photos   # train/<class>/*, valid/<class>/*
    python examples/train_local_folder.py --demo           # generate a small shapes dataset instead

The folder is uploaded to S3 first (a second run on the same, unchanged folder uploads nothing), the job's
progress is shown live, and the deployed model classifies one of the validation images.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from trainyard import Client, TrainyardError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, help="train/<class>/* and valid/<class>/* images")
    parser.add_argument("--demo", action="store_true", help="train on generated shapes instead")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--image-size", type=int, default=None, help="pixels a side; the backbone's own resolution by default"
    )
    args = parser.parse_args(argv)
    if args.demo:
        from infra.local.sample_data import make_shapes

        args.folder = make_shapes(Path(tempfile.mkdtemp()) / "shapes", train_per_class=20, valid_per_class=8, size=64)
    if args.folder is None:
        parser.error("pass a folder, or --demo")

    with Client() as client:
        try:
            job = client.submit(
                args.folder, epochs=args.epochs, freeze_epochs=1, image_size=args.image_size, progress=True
            )
            job = job.wait(progress=True)  # raises JobFailed with the phase and the reason
        except TrainyardError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"accuracy {job.evaluation['accuracy']:.1%}" if job.evaluation else "trained")
        print(f"report: {job.report_url()}")
        if job.model is None:
            print("not deployed (deploy=false)")
            return 0
        image = next(p for p in sorted(args.folder.rglob("*.png")) + sorted(args.folder.rglob("*.jp*g")))
        best = job.model.predict(image, top_k=1)[0]
        print(f"{image.relative_to(args.folder)}: {best.label} ({best.probability:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
