"""Runs beside the tests (its own Ray driver), so the pytest process never joins the stack's cluster.

    python tests/e2e/serve_probe.py ensure                 start Serve's proxy and the classifier app
    python tests/e2e/serve_probe.py stats                  the replica's stats (JSON)
    python tests/e2e/serve_probe.py wait-unloaded MODEL    until no replica stat lists MODEL; then the stats

With one replica (the stack's default `max_replicas`) a handle call reaches the replica that holds the models.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import ray
from ray import serve

from core.settings import get_settings
from serving.deploy import APP_NAME, ensure_serving


def main(command: str, *args: str) -> None:
    ray.init(logging_level=logging.ERROR, log_to_driver=False)
    if command == "ensure":
        ensure_serving(get_settings())
        print(json.dumps({}))
        return
    handle = serve.get_app_handle(APP_NAME)
    stats = handle.stats.remote().result(timeout_s=60)
    if command == "wait-unloaded":
        deadline = time.monotonic() + 60
        while args[0] in stats["loaded"] and time.monotonic() < deadline:
            time.sleep(0.5)
            stats = handle.stats.remote().result(timeout_s=60)
    print(json.dumps(stats))


if __name__ == "__main__":
    main(*sys.argv[1:])
