"""After a restart: check every model the store lists against the artifact store, and bring Serve back.

    python -m serving.restore        # `trainyard up` runs it with the stack's environment

Ray Serve's applications live only as long as the Ray cluster; the store and the objects outlive it. So a
stack that comes back up finds its models listed but nothing serving them. This starts the classifier
application (models then load on their first request, as after any scale-up) and prints one line per model
that can no longer answer, with the reason, so drift between the store and the objects is seen at start-up.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from core.s3 import s3_client
from core.settings import get_settings
from core.store import JobStore
from serving.registry import unavailable_reason


def main() -> int:
    settings = get_settings()
    store = JobStore.from_url(settings.resolved_database_url)
    s3 = s3_client(settings)
    models = store.list_models()
    missing = {m.id: why.message for m in models if (why := unavailable_reason(s3, settings, m.id, m.artifact_uri))}
    for model_id, reason in missing.items():
        print(f"warning: model {model_id} is listed but cannot answer: {reason}", file=sys.stderr)
    began = time.monotonic()
    if len(missing) < len(models):
        import ray

        from serving.deploy import ensure_serving

        ray.init(logging_level=logging.ERROR, log_to_driver=False)
        ensure_serving(settings)
    report = {
        "models": len(models),
        "unavailable": missing,
        "serving_started_s": round(time.monotonic() - began, 1) if len(missing) < len(models) else None,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
